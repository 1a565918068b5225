"""ELLM-style similarity reward (Du et al. 2023, "Guiding Pretraining in Reinforcement Learning
with Large Language Models", section 3): r_int = cos(E(caption), E(goal)) where that similarity
exceeds a threshold T, else 0. ELLM asks an LLM for goals and takes the best match over them; as
in ONI's ELLM baseline (Zheng et al. 2024, section 5), the goal here is fixed per task: one
sentence per annotator goal (GOAL_SENTENCES), or the config's own. ONI embedded with FastText
word vectors; this uses a sentence embedding (reward_models/embedding.py, all-MiniLM-L6-v2).

Count scaling is not applied here: like every reward model, this returns r_int per caption and
the learner multiplies it by N_ep(caption)^-beta (reward.count_exponent; learner/reward.py,
`training_reward`). No LLM is asked (`wants_labels = False`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from reward_models.base import FrozenRewardModel, check_option
from reward_models.embedding import EMBEDDERS, Embedder, make_embedder

GOAL_SENTENCES: dict[str, str] = {
    "default": "You kill a monster, pick up gold or go down the stairs to a deeper level.",
    "combat": "You kill the monster.",
    "gold": "You pick up gold pieces.",
    "stairs": "You go down the stairs to a deeper dungeon level.",
}
"""One sentence per goal of annotator/prompts.py (the same keys), written like a NetHack message
that reports progress toward it: the embedding compares it with messages."""

DEFAULT_THRESHOLD = 0.4
"""T on the cosine similarity, chosen after looking at the similarities of the judge set's
captions (benchmarks/judge_set/): above 0.4 it pays 6.8 % of (caption, goal) items where the team
labels 7.1 % helpful (README, the judge table). Not tuned per task."""


class EllmRewardModel(FrozenRewardModel):
    """`ellm`: r_int(c) = s(c) if s(c) > threshold else 0, s(c) = <E(c), E(goal)> in [-1, 1]
    (E unit-norm, so the dot product is the cosine). A blank caption (no message) earns 0.

    Options: goal (a GOAL_SENTENCES key), goal_sentence (overrides the goal's sentence),
    threshold (T in [-1, 1)), embedding (a name in reward_models.embedding.EMBEDDERS),
    cache_size (captions whose embeddings are kept), device (torch device of the embedding).

    Cache: an LRU of caption -> embedding (float32 [D], 1.5 KB for D=384), at most `cache_size`
    captions; the least recently used one is dropped first. It is not checkpointed (it is
    recomputed on demand). Raises ValueError naming a bad option, and
    reward_models.embedding.EmbeddingUnavailable (with the pip command) when the embedding's
    package is missing.
    """

    label_kind: ClassVar[str] = "caption"

    def __init__(
        self,
        *,
        goal: str = "default",
        goal_sentence: str | None = None,
        threshold: float = DEFAULT_THRESHOLD,
        embedding: str = "all-minilm-l6-v2",
        cache_size: int = 20_000,
        device: str = "cpu",
        embedder: Embedder | None = None,
    ) -> None:
        check_option("goal", goal in GOAL_SENTENCES, goal, f"one of {', '.join(GOAL_SENTENCES)}")
        check_option(
            "goal_sentence",
            goal_sentence is None or (isinstance(goal_sentence, str) and goal_sentence.strip()),
            goal_sentence,
            "None or a non-blank sentence",
        )
        check_option(
            "threshold",
            isinstance(threshold, int | float) and -1.0 <= threshold < 1.0,
            threshold,
            "a number in [-1, 1) (a cosine similarity)",
        )
        check_option(
            "embedding", embedding in EMBEDDERS, embedding, f"one of {', '.join(EMBEDDERS)}"
        )
        check_option(
            "cache_size",
            isinstance(cache_size, int) and cache_size >= 1,
            cache_size,
            "an integer >= 1",
        )
        self.goal = goal
        self.sentence = goal_sentence.strip() if goal_sentence else GOAL_SENTENCES[goal]
        self.threshold = float(threshold)
        self.cache_size = cache_size
        self.embedder = embedder or make_embedder(embedding, device=device)
        self._goal_vector: np.ndarray | None = None
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.embedded = 0
        """Captions embedded so far (cache misses), for tests and diagnostics."""

    def similarities(self, captions: Sequence[str]) -> np.ndarray:
        """s(c) = cos(E(c), E(goal sentence)): float32 [N]; 0 for a blank caption."""
        if self._goal_vector is None:
            self._goal_vector = self.embedder.embed([self.sentence])[0]
        vectors = self._embeddings(captions)
        sims = vectors @ self._goal_vector if len(captions) else np.zeros(0, np.float32)
        blank = np.array([not c.strip() for c in captions], dtype=bool)
        return np.where(blank, 0.0, sims).astype(np.float32)

    def _embeddings(self, captions: Sequence[str]) -> np.ndarray:
        """E(c) for each caption, float32 [N, D], through the LRU cache."""
        missing = [c for c in dict.fromkeys(captions) if c not in self._cache and c.strip()]
        if missing:
            self.embedded += len(missing)
            for caption, vector in zip(missing, self.embedder.embed(missing), strict=True):
                self._cache[caption] = vector
        zero = np.zeros(self.embedder.dim, np.float32)
        rows = []
        for caption in captions:
            vector = self._cache.get(caption)
            if vector is not None:
                self._cache.move_to_end(caption)
            rows.append(zero if vector is None else vector)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return np.stack(rows) if rows else np.zeros((0, self.embedder.dim), np.float32)

    def _unique_rewards(self, captions: list[str]) -> np.ndarray:
        sims = self.similarities(captions)
        return np.where(sims > self.threshold, sims, 0.0).astype(np.float32)

    @property
    def cached(self) -> int:
        """Captions whose embedding is in the cache now (<= cache_size)."""
        return len(self._cache)

    def state_dict(self) -> dict[str, Any]:
        """What the reward depends on, for the record; the cache is not saved."""
        return {"goal_sentence": self.sentence, "threshold": self.threshold}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore: the reward follows this run's options (a resumed run may change
        the sentence or the threshold, as the hashing model's threshold may change)."""
