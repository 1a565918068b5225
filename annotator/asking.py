"""Asking an LLM backend about a batch of prompts and reading each answer into a label value:
P(first choice) from the first answer token's probabilities (direct style), or the parsed
`<answer>` tag (reasoned style). First asks are greedy; re-asks of unreadable answers are
sampled, since a greedy re-ask would get the same text back."""

from __future__ import annotations

from collections.abc import Mapping

from annotator.parsing import parse_answer
from annotator.prompts import Prompt

RETRY_TEMPERATURE = 0.7
INVALID = object()  # an answer arrived but did not parse: retried, counted, never a label


async def ask(backend, prompts: list[Prompt], retries: list[bool]) -> list:
    """One request per temperature for the batch: label values, INVALID, or None (request
    failed). First asks are greedy; re-asks of unreadable answers are sampled."""
    chats = [[{"role": r, "content": c} for r, c in p.messages] for p in prompts]
    first = prompts[0]
    if first.style == "direct":
        probs = await backend.choice_probs(chats, first.choices)
        return [
            None if p is None else _direct_value(p, prompt)
            for p, prompt in zip(probs, prompts, strict=True)
        ]
    out: list = [None] * len(prompts)
    for again in (False, True):
        rows = [i for i, retry in enumerate(retries) if retry == again]
        if not rows:
            continue
        texts = await backend.generate(
            [chats[i] for i in rows],
            max_tokens=first.max_tokens,
            temperature=RETRY_TEMPERATURE if again else 0.0,
        )
        for i, text in zip(rows, texts, strict=True):
            value = None if text is None else parse_answer(text, prompts[i])
            out[i] = None if text is None else (INVALID if value is None else value)
    return out


def _direct_value(probs: Mapping[str, float], prompt: Prompt):
    """The expected label value under the choices' probabilities; INVALID for {} (an answer
    whose choices carried too little of the first token's probability)."""
    values = prompt.values
    if not probs:
        return INVALID
    return float(sum(p * values[choice] for choice, p in probs.items() if choice in values))
