"""Strict parsing of LLM answers (text) into label values.

Only the answer slot counts; anything else is invalid (None), never a default label. First-token
logprobs are read by the backends (``annotator.backends.base``, ``openai_wire``), not here.
"""

from __future__ import annotations

import re

from annotator.prompts import CHOICE_VALUES, STYLES, Prompt

_ANSWER_OPEN = re.compile(r"<\s*answer\s*>", re.IGNORECASE)
_ANSWER_BLOCK = re.compile(r"<\s*answer\s*>(.*?)<\s*/\s*answer\s*>", re.IGNORECASE | re.DOTALL)
_TRAILING_PUNCT = ".!,;:"


def normalize_answer(text: str) -> str:
    """Strip whitespace, lowercase, and drop trailing '.', '!', ',', ';', ':'."""
    return text.strip().lower().rstrip(_TRAILING_PUNCT).strip()


def _check_style(style: str) -> None:
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; allowed: {', '.join(map(repr, STYLES))}")


def answer_slot(text: str | None, style: str) -> str | None:
    """The part of a response that holds the answer, or None if there is no single one.

    "reasoned": the content of the only <answer>...</answer> block. Zero blocks, an unclosed
    tag, or two or more tags (even agreeing ones) are invalid: a repeated tag usually means the
    model echoed the format or hedged, and a rejected answer costs a retry, not a wrong label.
    "direct": the whole text.
    """
    _check_style(style)
    if not isinstance(text, str):
        return None
    if style == "direct":
        return text
    blocks = _ANSWER_BLOCK.findall(text)
    if len(blocks) != 1 or len(_ANSWER_OPEN.findall(text)) != 1:
        return None
    return blocks[0]


def _parse(text: str | None, kind: str, style: str) -> float | None:
    slot = answer_slot(text, style)
    if slot is None:
        return None
    return CHOICE_VALUES[(kind, style)].get(normalize_answer(slot))


def parse_classification(text: str | None, style: str) -> float | None:
    """1.0 for yes, 0.0 for no, None for anything else (see answer_slot)."""
    return _parse(text, "classification", style)


def parse_ranking(text: str | None, style: str) -> float | None:
    """Preference for the first message: 1.0 first, 0.0 second, 0.5 tie, None if invalid.

    Answers: "reasoned" <answer>1|2|none</answer>; "direct" first|second|tie.
    """
    return _parse(text, "ranking", style)


def parse_answer(text: str | None, prompt: Prompt) -> float | None:
    """Parse a response to `prompt` according to its kind and style."""
    return _parse(text, prompt.kind, prompt.style)
