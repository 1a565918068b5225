"""`rogueray annotate DATASET`: offline Motif's LLM preferences (Klissarov et al. 2023, section 3)
over pairs of a dataset's captions, through the annotator's own pieces: the pair prompt
(annotator/prompts.py, via annotator/kinds.py "pair"), the reading of answers
(annotator/asking.py) and the SQLite label store (annotator/label_store.py), here
`DATASET/labels.sqlite`.

Pairs are drawn by reward_models/pair_sampling.py: uniformly over unordered pairs of distinct
captions of the dataset, empty captions left out (Motif drops empty messages), skipping pairs
already answered. They are asked in chunks; each chunk's answers are committed before the next
chunk is asked, so an interrupted run resumed later never asks a pair twice. What an answer
becomes (Motif's four outcomes):
- first / second / tie: a pair label with preference 1 / 0 / 0.5 in the label store (direct
  style: the expected preference under the answer token's probabilities, a soft target);
- unknown (no readable answer after `annotator.max_retries` re-asks of a reasoned answer; a
  direct answer whose choices carry too little probability is not re-asked): one line in
  `DATASET/unknown_pairs.jsonl`, so it is never asked again, and never trained on.
A request that fails outright (server down) leaves its pairs unanswered, to be asked again.

`both_orders=True` asks every pair in both orders and keeps the mean of the two preferences for
the same caption, (p(a, b) + 1 - p(b, a)) / 2, which cancels a judge's preference for a position
(the embedded SmolLM2 prefers the first message on every pair it was shown); either order
unreadable makes the pair unknown. Those labels are kept under their own prompt version
(BOTH_ORDERS_SUFFIX appended), apart from single-order ones. Motif asked one order."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from actors.messages import PairLabel
from annotator.asking import INVALID, ask
from annotator.kinds import annotation_kind
from annotator.label_store import LabelStore
from reward_models.pair_sampling import PairKey, pair_key, sample_pairs

log = logging.getLogger(__name__)

LABEL_STORE = "labels.sqlite"
UNKNOWN = "unknown_pairs.jsonl"
FAILED_REQUEST_TRIES = 3
BOTH_ORDERS_SUFFIX = "+both-orders"


@dataclass
class AnnotationReport:
    """What one `annotate_dataset` call did; `done` counts every answered pair of the group."""

    target: int
    done_before: int
    asked_pairs: int = 0
    labelled: int = 0
    ties: int = 0
    unknown: int = 0
    failed: int = 0
    stopped: bool = False

    @property
    def done(self) -> int:
        return self.done_before + self.labelled + self.unknown


def read_unknown(path: Path, group: tuple[str, str]) -> set[PairKey]:
    """Pair keys recorded as unknown for group (model id, prompt version); a line cut short by
    a crash is ignored."""
    keys: set[PairKey] = set()
    if not path.is_file():
        return keys
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if (row.get("model_id"), row.get("prompt_version")) == group:
            keys.add(pair_key(row["first"], row["second"]))
    return keys


def _append_unknown(path: Path, group: tuple[str, str], pairs: list[tuple[str, str]]) -> None:
    if not pairs:
        return
    lines = [
        json.dumps({"model_id": group[0], "prompt_version": group[1], "first": a, "second": b},
                   ensure_ascii=False) + "\n"
        for a, b in pairs
    ]  # fmt: skip
    with open(path, "a", encoding="utf-8") as f:
        f.writelines(lines)
        f.flush()
        os.fsync(f.fileno())


def candidate_captions(captions: list[str]) -> list[str]:
    """The captions pairs are drawn from: distinct, empty ones left out (as Motif)."""
    return [c for c in dict.fromkeys(captions) if c.strip()]


async def _answer_chunk(backend, prompts, *, batch_size: int, max_retries: int) -> list:
    """A value per prompt (float), INVALID (unknown after the re-asks) or None (request failed
    FAILED_REQUEST_TRIES times). Re-asks are sampled (annotator.asking); direct-style answers
    are not re-asked (a re-ask reads the same probabilities)."""
    out: list = [None] * len(prompts)
    tries_invalid = [0] * len(prompts)
    tries_failed = [0] * len(prompts)
    pending, retry_flags = list(range(len(prompts))), [False] * len(prompts)
    while pending:
        again = []
        for start in range(0, len(pending), batch_size):
            rows = pending[start : start + batch_size]
            values = await ask(backend, [prompts[i] for i in rows], [retry_flags[i] for i in rows])
            for i, value in zip(rows, values, strict=True):
                out[i] = value
                if value is None:
                    tries_failed[i] += 1
                    retry = tries_failed[i] < FAILED_REQUEST_TRIES
                elif value is INVALID:
                    tries_invalid[i] += 1
                    retry = prompts[i].style != "direct" and tries_invalid[i] <= max_retries
                    retry_flags[i] = True
                else:
                    retry = False
                if retry:
                    again.append(i)
        pending = again
    return out


@dataclass
class AnnotationPlan:
    """The pairs still to ask for one label group (model id, prompt version): `todo`, drawn
    after the `done_before` pairs the group has answered (labelled or unknown)."""

    path: Path
    group: tuple[str, str]
    target: int
    done_before: int
    todo: list[tuple[str, str]]


def plan_annotation(
    path: str | Path, captions: list[str], store: LabelStore, *, pairs: int, seed: int = 0
) -> AnnotationPlan:
    """The pairs to ask so that `pairs` pairs of the store's group are answered; empty `todo`
    when that many are answered already, or when every pair of `captions` is. Reads the store
    and DATASET/unknown_pairs.jsonl; loads no LLM."""
    kind = annotation_kind("pair")
    group = (store.model_id, store.prompt_version)
    done = {kind.key_of(label) for label in kind.stored(store)}
    done |= read_unknown(Path(path) / UNKNOWN, group)
    rng = np.random.default_rng([seed, len(done)])
    todo = sample_pairs(candidate_captions(captions), max(0, pairs - len(done)), rng, done)
    return AnnotationPlan(Path(path), group, pairs, len(done), todo)


async def annotate_dataset(
    plan: AnnotationPlan,
    *,
    backend,
    store: LabelStore,
    goal: str,
    style: str,
    chunk_size: int = 64,
    batch_size: int = 32,
    max_retries: int = 2,
    both_orders: bool = False,
    progress: Callable[[int], None] = lambda n: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> AnnotationReport:
    """Ask `backend` (an annotator backend) about the plan's pairs, `chunk_size` pairs per
    committed chunk into `store` (the plan's group). `progress(n)` gets the pairs answered in
    each chunk; `should_stop()` is asked between chunks. Returns the counts."""
    kind = annotation_kind("pair")
    unknown_path = plan.path / UNKNOWN
    report = AnnotationReport(target=plan.target, done_before=plan.done_before)
    todo = plan.todo
    for start in range(0, len(todo), chunk_size):
        if should_stop():
            report.stopped = True
            break
        chunk = todo[start : start + chunk_size]
        asked = chunk + [(b, a) for a, b in chunk] if both_orders else chunk
        prompts = [kind.prompt(item, goal=goal, style=style) for item in asked]
        values = await _answer_chunk(
            backend, prompts, batch_size=batch_size, max_retries=max_retries
        )
        if both_orders:
            pairs_of = zip(values[: len(chunk)], values[len(chunk) :], strict=True)
            values = [_mean_of_orders(v, w) for v, w in pairs_of]
        _commit(store, kind, unknown_path, plan.group, chunk, values, report)
        progress(sum(v is not None for v in values))
    log.info("annotate %s: %s", plan.path, report)
    return report


def _mean_of_orders(forward, backward):
    """The preference for the first caption from both orders' answers (see the docstring)."""
    if forward is None or backward is None:
        return None
    if forward is INVALID or backward is INVALID:
        return INVALID
    return (float(forward) + 1.0 - float(backward)) / 2.0


def _commit(store, kind, unknown_path, group, chunk, values, report: AnnotationReport) -> None:
    labels = [kind.label(item, float(v)) for item, v in zip(chunk, values, strict=True)
              if v is not None and v is not INVALID]  # fmt: skip
    unknown = [item for item, v in zip(chunk, values, strict=True) if v is INVALID]
    _append_unknown(unknown_path, group, unknown)  # first: a crash in between re-asks labels,
    kind.put(store, labels, [None] * len(labels))  # never stores an unknown as a label
    report.asked_pairs += len(chunk)
    report.labelled += len(labels)
    report.ties += sum(isinstance(x, PairLabel) and x.preference == 0.5 for x in labels)
    report.unknown += len(unknown)
    report.failed += sum(v is None for v in values)
