"""What is annotated, as one strategy object per kind, named in the vocabulary every package
shares (`reward_models`' ``label_kind``): a **caption** gets a label (ONI-classification and
-retrieval), a **pair** of captions gets a preference (ONI-ranking). Each kind knows what to ask
(its prompt), what an answer's value becomes (its label type), how it is identified (a caption,
or the order-free pair) and where the label store keeps it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from actors.messages import CaptionLabel, PairLabel
from annotator.label_store import LabelStore
from annotator.prompts import Prompt, classification_prompt, ranking_prompt
from reward_models import pair_key

Label = CaptionLabel | PairLabel


class CaptionKind:
    """Items are captions (str); values are P(helpful) in [0, 1]."""

    name = "caption"

    def prompt(self, item: str, *, goal: str, style: str) -> Prompt:
        return classification_prompt(item, goal=goal, style=style)

    def label(self, item: str, value: float) -> CaptionLabel:
        return CaptionLabel(item, value)

    def key(self, item: str) -> Any:
        return item

    def key_of(self, label: CaptionLabel) -> Any:
        return label.caption

    def stored(self, store: LabelStore) -> list[CaptionLabel]:
        return [CaptionLabel(c, v) for c, v in store.caption_labels().items()]

    def put(self, store: LabelStore, labels: Sequence[Label], raws: Sequence[str]) -> None:
        store.put_captions(labels, raw_answers=raws)

    @staticmethod
    def positive(label: CaptionLabel) -> bool:
        return label.value > 0.5


class PairKind:
    """Items are (first, second) caption tuples; values are the preference for the first
    (1 first, 0 second, 0.5 tie). A pair and its reverse are one item."""

    name = "pair"

    def prompt(self, item: tuple[str, str], *, goal: str, style: str) -> Prompt:
        return ranking_prompt(item[0], item[1], goal=goal, style=style)

    def label(self, item: tuple[str, str], value: float) -> PairLabel:
        return PairLabel(item[0], item[1], value)

    def key(self, item: tuple[str, str]) -> Any:
        return pair_key(*item)

    def key_of(self, label: PairLabel) -> Any:
        return pair_key(label.first, label.second)

    def stored(self, store: LabelStore) -> list[PairLabel]:
        return store.pair_labels()

    def put(self, store: LabelStore, labels: Sequence[Label], raws: Sequence[str]) -> None:
        store.put_pairs(labels, raw_answers=raws)

    @staticmethod
    def positive(label: PairLabel) -> bool:
        return label.preference > 0.5


KINDS = {"caption": CaptionKind(), "pair": PairKind()}


def annotation_kind(name: str) -> CaptionKind | PairKind:
    """The kind named `name` ("caption" or "pair"); ValueError naming the allowed ones."""
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(
            f"annotation kind must be one of {', '.join(KINDS)}; got {name!r}"
        ) from None
