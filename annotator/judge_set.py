"""The team-labelled caption set a judge is measured on (benchmarks/judge_set/): captions with
a 0/1 label per goal, and caption pairs with the team's preference; read and checked here, used
by annotator/judge_bench.py and `rogueray judge`. The labelling guide is
docs/judge-labelling.md."""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from annotator.prompts import GOALS

SET_DIR = Path(__file__).resolve().parent.parent / "benchmarks" / "judge_set"
"""Where the team's set lives in a source checkout (not in a wheel: pass --set DIR then)."""

MIN_CAPTIONS = 300
PREFERENCES = (0.0, 0.5, 1.0)


class JudgeSetError(ValueError):
    """The benchmark data cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class Pair:
    first: str
    second: str
    goal: str
    preference: float
    """The team's preference for the first caption: 1 first, 0 second, 0.5 neither."""


@dataclass
class JudgeSet:
    captions: list[str]
    sources: list[str]
    labels: dict[str, list[int]]
    """goal -> the team's 0/1 label of each caption (same order as captions)."""
    pairs: list[Pair] = field(default_factory=list)

    @property
    def goals(self) -> list[str]:
        return list(self.labels)

    def subset(
        self, goals: Iterable[str] | None = None, limit: int | None = None, seed: int = 0
    ) -> JudgeSet:
        """The same set restricted to some goals and/or `limit` captions drawn at random (a
        fixed `seed`, so every judge gets the same sample), keeping the pairs whose captions are
        both drawn."""
        keep_goals = list(self.labels) if goals is None else list(goals)
        for g in keep_goals:
            if g not in self.labels:
                raise JudgeSetError(
                    f"goal {g!r} is not labelled in the set; labelled: {', '.join(self.labels)}"
                )
        idx = list(range(len(self.captions)))
        if limit is not None and limit < len(idx):
            idx = sorted(random.Random(seed).sample(idx, limit))
        kept = {self.captions[i] for i in idx}
        return JudgeSet(
            captions=[self.captions[i] for i in idx],
            sources=[self.sources[i] for i in idx],
            labels={g: [self.labels[g][i] for i in idx] for g in keep_goals},
            pairs=[
                p
                for p in self.pairs
                if p.goal in keep_goals and p.first in kept and p.second in kept
            ],
        )


def load_judge_set(
    directory: str | Path = SET_DIR, *, min_captions: int = MIN_CAPTIONS
) -> JudgeSet:
    """captions.csv (caption, source, then one 0/1 column per goal of annotator.prompts.GOALS)
    and pairs.csv (first, second, goal, preference in {0, 0.5, 1}); checked, JudgeSetError
    naming the file and line otherwise."""
    directory = Path(directory)
    cap_path, pair_path = directory / "captions.csv", directory / "pairs.csv"
    if not cap_path.is_file():
        raise JudgeSetError(
            f"no judge set at {str(directory)!r} (captions.csv missing); the set ships in the "
            "source tree as benchmarks/judge_set/, give its folder with --set"
        )
    captions, sources, labels = _read_captions(cap_path)
    if len(captions) < min_captions:
        raise JudgeSetError(f"{cap_path}: {len(captions)} captions; at least {min_captions} needed")
    pairs = _read_pairs(pair_path, set(captions), labels) if pair_path.is_file() else []
    return JudgeSet(captions, sources, labels, pairs)


def _read_captions(cap_path: Path) -> tuple[list[str], list[str], dict[str, list[int]]]:
    """captions.csv as (captions, sources, goal -> 0/1 labels); JudgeSetError naming the line."""
    with cap_path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        if header[:2] != ["caption", "source"]:
            raise JudgeSetError(f"{cap_path}: the header must start with caption,source")
        goals = header[2:]
        unknown = [g for g in goals if g not in GOALS]
        if unknown or not goals:
            raise JudgeSetError(
                f"{cap_path}: goal column(s) {unknown or '(none)'} are not goals of "
                f"annotator/prompts.py ({', '.join(GOALS)})"
            )
        captions, sources, labels = [], [], {g: [] for g in goals}
        seen: set[str] = set()
        for line, row in enumerate(reader, start=2):
            caption = row["caption"]
            if caption in seen:
                raise JudgeSetError(f"{cap_path}:{line}: duplicate caption {caption!r}")
            seen.add(caption)
            captions.append(caption)
            sources.append(row["source"] or "")
            for g in goals:
                value = row.get(g)
                if value not in ("0", "1"):
                    raise JudgeSetError(
                        f"{cap_path}:{line}: goal {g!r} of {caption!r} must be 0 or 1, got {value!r}"
                    )
                labels[g].append(int(value))
    return captions, sources, labels


def _read_pairs(pair_path: Path, seen: set[str], labels: dict[str, list[int]]) -> list[Pair]:
    """pairs.csv, every pair's goal a goal of `labels` and both captions in `seen`;
    JudgeSetError naming the line."""
    pairs: list[Pair] = []
    with pair_path.open(newline="", encoding="utf-8") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            try:
                pref = float(row["preference"])
            except (KeyError, TypeError, ValueError):
                pref = math.nan
            if pref not in PREFERENCES:
                raise JudgeSetError(f"{pair_path}:{line}: preference must be 0, 0.5 or 1")
            if row.get("goal") not in labels:
                raise JudgeSetError(
                    f"{pair_path}:{line}: goal {row.get('goal')!r} is not a "
                    f"goal column of captions.csv"
                )
            for side in ("first", "second"):
                if row.get(side) not in seen:
                    raise JudgeSetError(
                        f"{pair_path}:{line}: {side} caption {row.get(side)!r} is not in "
                        "captions.csv"
                    )
            pairs.append(Pair(row["first"], row["second"], row["goal"], pref))
    return pairs
