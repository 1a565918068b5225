"""Strict parsing of LLM answers and of first-token logprobs into label values.

Only the answer slot counts; anything else is invalid (None), never a default label.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

from annotator.prompts import CHOICE_VALUES, STYLES, Prompt

_ANSWER_OPEN = re.compile(r"<\s*answer\s*>", re.IGNORECASE)
_ANSWER_BLOCK = re.compile(r"<\s*answer\s*>(.*?)<\s*/\s*answer\s*>", re.IGNORECASE | re.DOTALL)
_TRAILING_PUNCT = ".!,;:"
# Word-boundary markers that some backends leave on raw token strings (sentencepiece, GPT-2 BPE).
_TOKEN_MARKERS = ("\u2581", "\u0120")


def normalise_answer(text: str) -> str:
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
    return CHOICE_VALUES[(kind, style)].get(normalise_answer(slot))


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


def _normalise_token(token: str) -> str:
    for marker in _TOKEN_MARKERS:
        token = token.replace(marker, " ")
    return normalise_answer(token)


def choice_distribution(
    logprobs: Mapping[str, float], choices: Iterable[str], *, min_mass: float = 0.0
) -> dict[str, float] | None:
    """Probabilities of `choices` from a first-token top-k {token_text: logprob} dict.

    Tokens are matched after strip + lowercase (" Yes", "yes" and "YES" all count for "yes"),
    their probabilities summed per choice and renormalised over the choices. None when the
    choices' total probability is zero (no choice in the top-k) or below `min_mass`.
    """
    keys = [normalise_answer(c) for c in choices]
    if not keys or len(set(keys)) != len(keys):
        raise ValueError(f"choices must be non-empty and distinct, got {keys!r}")
    mass = dict.fromkeys(keys, 0.0)
    for token, logprob in logprobs.items():
        key = _normalise_token(token)
        if key in mass and not math.isnan(logprob):
            mass[key] += min(math.exp(logprob), 1.0)
    total = sum(mass.values())
    if total <= 0.0 or total < min_mass:
        return None
    return {key: p / total for key, p in mass.items()}


def choice_probability(
    logprobs: Mapping[str, float],
    choices: Iterable[str],
    positive: str,
    *,
    min_mass: float = 0.0,
) -> float | None:
    """P(positive) renormalised over `choices`; None if no choice is in the top-k."""
    keys = [normalise_answer(c) for c in choices]
    pos = normalise_answer(positive)
    if pos not in keys:
        raise ValueError(f"positive {positive!r} is not one of the choices {keys!r}")
    dist = choice_distribution(logprobs, keys, min_mass=min_mass)
    return None if dist is None else dist[pos]


def classification_probability_from_logprobs(
    logprobs: Mapping[str, float], *, min_mass: float = 0.0
) -> float | None:
    """P(yes) over {yes, no} for a direct classification prompt."""
    return choice_probability(logprobs, ("yes", "no"), "yes", min_mass=min_mass)


def ranking_preference_from_logprobs(
    logprobs: Mapping[str, float], *, min_mass: float = 0.0
) -> float | None:
    """P(first) + 0.5 * P(tie) over {first, second, tie} for a direct ranking prompt."""
    values = CHOICE_VALUES[("ranking", "direct")]
    dist = choice_distribution(logprobs, values, min_mass=min_mass)
    if dist is None:
        return None
    return sum(values[key] * p for key, p in dist.items())


def label_from_logprobs(
    logprobs: Mapping[str, float], prompt: Prompt, *, min_mass: float = 0.0
) -> float | None:
    """Expected label value under the first-token distribution over `prompt.choices`
    (P(yes) for classification, preference for the first message for ranking). Only "direct"
    prompts put the answer in the first token."""
    if prompt.style != "direct":
        raise ValueError(f"logprob scoring needs style 'direct', got {prompt.style!r}")
    values = prompt.values
    dist = choice_distribution(logprobs, prompt.choices, min_mass=min_mass)
    if dist is None:
        return None
    return sum(values[key] * p for key, p in dist.items())
