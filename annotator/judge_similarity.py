"""The ELLM-style similarity reward (reward_models/ellm.py) measured as a judge on the team's set:
P(helpful) of a (caption, goal) is the cosine similarity s of the caption's and the goal
sentence's embeddings, so its AUC against the team's labels sits in the same table as the LLM
judges'. Nothing is asked; `rogueray judge --embedding NAME` runs this (cluster/judge_cli.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

from annotator.judge_bench import Answers, decided_preference
from reward_models.ellm import EllmRewardModel
from reward_models.embedding import Embedder, make_embedder


def similarity_answers(
    data,
    *,
    embedding: str = "all-minilm-l6-v2",
    progress: Callable[[int], None] = lambda n: None,
    embedder: Embedder | None = None,
) -> Answers:
    """For every goal of `data` (an annotator.judge_set.JudgeSet) and every caption, s in [-1, 1]
    from the reward model's own `similarities` (one EllmRewardModel per goal, its goal's
    sentence, sharing one embedder: `embedder`, else `make_embedder(embedding)`); pair
    preferences from the two captions' s (as --pairs scores). `seconds` is the time spent
    embedding after the model has loaded, so labels/s is (captions x goals) / it. Raises
    EmbeddingUnavailable (with the pip command) where the embedding is not installed."""
    embedder = embedder or make_embedder(embedding)
    embedder.embed(["load the model before the clock starts"])
    answers = Answers()
    for goal in data.goals:
        model = EllmRewardModel(goal=goal, threshold=-1.0, embedding=embedding, embedder=embedder)
        start = time.perf_counter()
        sims = model.similarities(data.captions)
        answers.seconds += time.perf_counter() - start
        answers.scores[goal] = [float(s) for s in sims]
        answers.asked += len(sims)
        answers.labelled += len(sims)
        progress(len(sims))
    index = {c: i for i, c in enumerate(data.captions)}
    for p in data.pairs:
        scores = answers.scores[p.goal]
        answers.preferences.append(
            decided_preference(scores[index[p.first]], scores[index[p.second]])
        )
    return answers


def at_threshold(answers: Answers, threshold: float) -> Answers:
    """The same answers shifted to s - threshold + 0.5, so that calibration "none" (value > 0.5)
    is the reward's own decision s > threshold. The shift keeps every order: AUC and pair
    agreement are those of s itself."""
    shifted = {
        goal: [None if s is None else s - threshold + 0.5 for s in scores]
        for goal, scores in answers.scores.items()
    }
    return replace(answers, scores=shifted)
