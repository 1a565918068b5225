"""What the annotator hands to the reward models: a judgement of one caption, or a preference
between two. Frozen, small, and free of any LLM detail beyond where the judgement came from."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CaptionLabel:
    """The LLM's judgement of one caption.

    value: 1.0 means "helpful for progress", 0.0 "not helpful"; values in between are soft labels
    (e.g. a calibrated P(yes) from a biased judge).
    """

    caption: str
    value: float


@dataclass(frozen=True)
class PairLabel:
    """The LLM's preference between two captions.

    preference: probability that `first` shows more progress than `second`: 1.0 first, 0.0 second,
    0.5 a tie (neither, or both equally).
    """

    first: str
    second: str
    preference: float
