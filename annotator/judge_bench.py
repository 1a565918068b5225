"""How good is a judge? The metrics, and the loop that asks any backend about the team-labelled
caption set (annotator/judge_set.py) through the real prompts.

Pure metrics (no model): ``auc``, ``pair_agreement``, ``decided_preference``, ``accuracy``.
``annotator.judge_set.load_judge_set`` reads and checks the data; ``run_benchmark`` asks a
backend (anything with the ``LLMBackend`` interface) every (caption, goal) and every pair, and
``summarise`` turns the answers into the report `rogueray judge` prints (cluster/judge_cli.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from annotator.asking import INVALID, ask
from annotator.calibration import Calibrator
from annotator.judge_set import JudgeSet
from annotator.prompts import Prompt, classification_prompt, ranking_prompt

# -- metrics ------------------------------------------------------------------------------------


def auc(scores: Sequence[float], labels: Sequence[int]) -> float | None:
    """Area under the ROC curve of `scores` against 0/1 `labels`: the probability that a random
    positive scores above a random negative, ties counting one half (Mann-Whitney U / (P * N)).
    None when the labels hold only one class."""
    if len(scores) != len(labels):
        raise ValueError("scores and labels differ in length")
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not pos or not neg:
        return None
    # rank-sum with average ranks for ties: O(n log n)
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    rank_sum = sum(r for r, y in zip(ranks, labels, strict=True) if y)
    u = rank_sum - len(pos) * (len(pos) + 1) / 2
    return u / (len(pos) * len(neg))


def decided_preference(first: float, second: float) -> float:
    """The preference a judge's two scores imply: 1 (first higher), 0 (second higher), 0.5."""
    return 1.0 if first > second else 0.0 if first < second else 0.5


def pair_agreement(judged: Sequence[float], truth: Sequence[float]) -> float | None:
    """Mean of 1 - |judged - truth| over pairs, each a preference in {0, 0.5, 1}: a right side
    scores 1, a tie where the team saw a difference (or a side where the team saw a tie) 0.5, the
    wrong side 0. None for no pairs."""
    if len(judged) != len(truth):
        raise ValueError("judged and truth differ in length")
    if not truth:
        return None
    return sum(1.0 - abs(j - t) for j, t in zip(judged, truth, strict=True)) / len(truth)


def accuracy(predicted: Sequence[bool], labels: Sequence[int]) -> float:
    return sum(bool(p) == bool(y) for p, y in zip(predicted, labels, strict=True)) / len(labels)


def precision_recall(
    predicted: Sequence[bool], labels: Sequence[int]
) -> tuple[float | None, float | None]:
    """Precision (of the captions the judge calls helpful, the share the team does too: what a
    hashing reward pays for) and recall (of the team's helpful captions, the share the judge
    finds); None where undefined (no predicted / no team positives)."""
    hits = sum(bool(p) and bool(y) for p, y in zip(predicted, labels, strict=True))
    called, real = sum(map(bool, predicted)), sum(map(bool, labels))
    return (hits / called if called else None), (hits / real if real else None)


def calibrated_positive(
    values: Sequence[float], mode: str, quantile: float, window: int
) -> list[bool]:
    """Which captions the annotator would label helpful: its Calibrator over the values (fed as
    one batch, the steady state of a run that has seen these captions), then value > 0.5 as
    annotator.kinds.CaptionKind.positive."""
    calibrator = Calibrator(mode, quantile, window)
    return [v > 0.5 for v in calibrator(list(values))]


# -- asking a backend ---------------------------------------------------------------------------


@dataclass
class Answers:
    """What the judge said. Scores are P(helpful) (direct) or the parsed 0/1 (reasoned);
    preferences the expected preference for the first caption. None = no valid answer after the
    retries (scored as 0: the annotator would store no label, so the caption earns nothing)."""

    scores: dict[str, list[float | None]] = field(default_factory=dict)
    preferences: list[float | None] = field(default_factory=list)
    asked: int = 0
    invalid: int = 0
    failed: int = 0
    seconds: float = 0.0
    labelled: int = 0


async def _ask(backend, prompts: Sequence[Prompt]) -> list[object]:
    """One batch, read as the annotator reads it (`annotator.asking.ask`, every prompt asked
    greedily): a value per prompt, "invalid" (answered, unusable) or None (request failed)."""
    outs = await ask(backend, list(prompts), [False] * len(prompts))
    return ["invalid" if out is INVALID else out for out in outs]


async def _ask_all(
    backend,
    prompts: Sequence[Prompt],
    answers: Answers,
    *,
    batch_size: int,
    max_retries: int,
    progress: Callable[[int], None],
) -> list[float | None]:
    """Every prompt, in batches; an invalid answer is asked again up to `max_retries` times and a
    failed request up to 3 times, as the annotator would (it retries failures forever)."""
    results: list[float | None] = [None] * len(prompts)
    pending = list(range(len(prompts)))
    invalid_tries = [0] * len(prompts)
    failed_tries = [0] * len(prompts)
    while pending:
        retry: list[int] = []
        for start in range(0, len(pending), batch_size):
            idx = pending[start : start + batch_size]
            t0 = time.perf_counter()
            outs = await _ask(backend, [prompts[i] for i in idx])
            answers.seconds += time.perf_counter() - t0
            for i, out in zip(idx, outs, strict=True):
                if out is None:
                    answers.failed += 1
                    failed_tries[i] += 1
                    if failed_tries[i] <= 3:
                        retry.append(i)
                        continue
                elif out == "invalid":
                    answers.asked += 1
                    answers.invalid += 1
                    invalid_tries[i] += 1
                    if invalid_tries[i] <= max_retries:
                        retry.append(i)
                        continue
                else:
                    answers.asked += 1
                    answers.labelled += 1
                    results[i] = float(out)
                progress(1)
        pending = retry
    return results


async def run_benchmark(
    backend,
    data: JudgeSet,
    *,
    style: str,
    batch_size: int = 32,
    max_retries: int = 2,
    pairs: str = "scores",
    progress: Callable[[int], None] = lambda n: None,
) -> Answers:
    """Ask `backend` about every (caption, goal) with the classification prompt of `style`;
    pairs: "scores" (preferences from the two captions' scores, no extra questions), "ranking"
    (the ranking prompt of `style`, asked), or "none"."""
    if pairs not in ("scores", "ranking", "none"):
        raise ValueError(f"pairs must be scores, ranking or none; got {pairs!r}")
    answers = Answers()
    for goal in data.goals:
        prompts = [classification_prompt(c, goal=goal, style=style) for c in data.captions]
        answers.scores[goal] = await _ask_all(
            backend,
            prompts,
            answers,
            batch_size=batch_size,
            max_retries=max_retries,
            progress=progress,
        )
    if pairs == "ranking" and data.pairs:
        prompts = [ranking_prompt(p.first, p.second, goal=p.goal, style=style) for p in data.pairs]
        answers.preferences = await _ask_all(
            backend,
            prompts,
            answers,
            batch_size=batch_size,
            max_retries=max_retries,
            progress=progress,
        )
    elif pairs == "scores":
        index = {c: i for i, c in enumerate(data.captions)}
        for p in data.pairs:
            a = answers.scores[p.goal][index[p.first]]
            b = answers.scores[p.goal][index[p.second]]
            answers.preferences.append(decided_preference(a or 0.0, b or 0.0))
    return answers


def total_questions(data: JudgeSet, pairs: str) -> int:
    return len(data.captions) * len(data.goals) + (len(data.pairs) if pairs == "ranking" else 0)


def _round(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(x, nd)


def summarise(
    data: JudgeSet,
    answers: Answers,
    *,
    calibration: str,
    quantile: float,
    window: int,
) -> dict:
    """The report: per goal AUC, accuracy and positive rate at the configured calibration, the
    team's positive rate; overall (all (caption, goal) items pooled); pair agreement; invalid
    answer rate; labels per second (valid answers / seconds spent in the backend)."""
    per_goal: dict[str, dict] = {}
    all_scores: list[float] = []
    all_labels: list[int] = []
    all_pred: list[bool] = []
    for goal in data.goals:
        scores = [0.0 if s is None else s for s in answers.scores[goal]]
        labels = data.labels[goal]
        pred = calibrated_positive(scores, calibration, quantile, window)
        precision, recall = precision_recall(pred, labels)
        per_goal[goal] = {
            "auc": _round(auc(scores, labels)),
            "accuracy": _round(accuracy(pred, labels)),
            "precision": _round(precision),
            "recall": _round(recall),
            "positive_rate": _round(sum(pred) / len(pred)),
            "team_positive_rate": _round(sum(labels) / len(labels)),
            "no_answer": sum(s is None for s in answers.scores[goal]),
        }
        all_scores += scores
        all_labels += labels
        all_pred += pred
    judged = [0.5 if p is None else _decide(p) for p in answers.preferences]
    truth = [p.preference for p in data.pairs][: len(judged)]
    by_goal_pairs = {
        goal: _round(
            pair_agreement(
                [j for j, p in zip(judged, data.pairs, strict=False) if p.goal == goal],
                [p.preference for p in data.pairs[: len(judged)] if p.goal == goal],
            )
        )
        for goal in data.goals
    }
    return {
        "captions": len(data.captions),
        "pairs": len(data.pairs),
        "calibration": calibration,
        "calibration_quantile": quantile if calibration == "quantile" else None,
        "per_goal": per_goal,
        "overall": {
            "auc": _round(auc(all_scores, all_labels)),
            "accuracy": _round(accuracy(all_pred, all_labels)),
            "precision": _round(precision_recall(all_pred, all_labels)[0]),
            "recall": _round(precision_recall(all_pred, all_labels)[1]),
            "positive_rate": _round(sum(all_pred) / len(all_pred)),
            "team_positive_rate": _round(sum(all_labels) / len(all_labels)),
        },
        "pair_agreement": _round(pair_agreement(judged, truth)) if judged else None,
        "pair_agreement_per_goal": by_goal_pairs if judged else {},
        "invalid_rate": _round(answers.invalid / answers.asked if answers.asked else 0.0),
        "failed_requests": answers.failed,
        "labels_per_s": _round(answers.labelled / answers.seconds if answers.seconds else None, 2),
    }


def _decide(preference: float) -> float:
    """A soft preference (e.g. 0.62 from choice probabilities) as the side it leans to."""
    return 1.0 if preference > 0.5 else 0.0 if preference < 0.5 else 0.5


def format_table(report: Mapping, title: str, notes: Sequence[str] = ()) -> str:
    """The report as a plain-text table, one row per goal plus the overall row, its summary line,
    then `notes` (lines of the caller's), then FOOTER: what the columns and the rate mean."""
    head = (
        f"{'goal':<10} {'AUC':>6} {'acc':>6} {'prec':>6} {'recall':>6} {'pos':>6} {'team':>6} "
        f"{'pairs':>6}"
    )
    lines = [title, head, "-" * len(head)]

    def f(x: float | None) -> str:
        return "   n/a" if x is None else f"{x:6.3f}"

    pairs = report.get("pair_agreement_per_goal", {})
    for goal, row in report["per_goal"].items():
        lines.append(
            f"{goal:<10} {f(row['auc'])} {f(row['accuracy'])} {f(row['precision'])} "
            f"{f(row['recall'])} {f(row['positive_rate'])} "
            f"{f(row['team_positive_rate'])} {f(pairs.get(goal))}"
        )
    o = report["overall"]
    lines.append(
        f"{'overall':<10} {f(o['auc'])} {f(o['accuracy'])} {f(o['precision'])} "
        f"{f(o['recall'])} {f(o['positive_rate'])} "
        f"{f(o['team_positive_rate'])} {f(report.get('pair_agreement'))}"
    )
    rate = report["labels_per_s"]
    lines.append(
        f"{plural(report['captions'], 'caption')}, {plural(report['pairs'], 'pair')}; "
        f"calibration {report['calibration']}"
        + (f" (q={report['calibration_quantile']})" if report["calibration_quantile"] else "")
        + f"; invalid answers {100 * report['invalid_rate']:.1f} %; "
        + ("labels/s n/a" if rate is None else f"{rate:,.1f} labels/s")
        + " in the backend"
    )
    lines += [*notes, FOOTER]
    return "\n".join(lines)


FOOTER = (
    "pos / team: share the judge / the team calls helpful; pairs: pair agreement; n/a: not "
    "defined (one class only, none called helpful, no pairs)\n"
    "labels/s: valid answers per second in the backend; the progress line's /s: questions per "
    "second of wall time, set-up included"
)
"""The table's last lines: what its columns and its rate mean."""


def plural(n: int, word: str) -> str:
    """'1 caption', '2 captions' (n with thousands separators)."""
    return f"{n:,d} {word}{'' if n == 1 else 's'}"
