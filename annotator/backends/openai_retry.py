"""Server etiquette for the ``openai`` backend: which HTTP answers are retried, how long to wait
(``Retry-After`` first, else exponential back-off with jitter), what to tell the user about an
error that will never go away, and keeping the API key out of every message. Pure functions."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from email.utils import parsedate_to_datetime


def retryable(status: int) -> bool:
    """True for answers worth another attempt: 408 (request timeout), 429 (rate limited) and
    5xx except 501/505 (not implemented, version not supported: they will not change). Other
    4xx are the request's or the configuration's fault and are not retried."""
    return status in (408, 429) or (500 <= status <= 599 and status not in (501, 505))


def retry_after_s(value: str | None, now: float) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait: delta-seconds ("4") or an HTTP-date
    ("Wed, 21 Oct 2015 07:28:00 GMT", relative to ``now``, Unix seconds; a past date is 0).
    None when absent or unparseable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None or when.tzinfo is None:
            return None
        return max(0.0, when.timestamp() - now)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def retry_delay(
    attempt: int,
    *,
    initial: float,
    maximum: float,
    retry_after: float | None = None,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before retry number ``attempt`` (1, 2, ...): the server's ``retry_after``
    when it gave one, else ``initial * 2**(attempt-1)`` times a random factor in [0.5, 1); both
    capped at ``maximum``."""
    if retry_after is not None:
        return min(maximum, retry_after)
    delay = min(maximum, initial * 2 ** (attempt - 1))
    return delay * (0.5 + 0.5 * rand())


def advice(status: int, base_url: str, model: str | None) -> str:
    """What to do about an HTTP error answer that retrying will not fix (one console line)."""
    head = f"server at {base_url} answered HTTP {status}"
    if status in (401, 403):
        return (
            f"{head} (not authorised): set the API key in the environment variable named by "
            "annotator.api_key_env, or check that the key is valid for this server"
        )
    if status == 404:
        return (
            f"{head} (not found) for model {model!r}: check annotator.model (GET "
            f"{base_url}/models lists what it serves) and annotator.base_url"
        )
    if status == 400:
        return (
            f"{head} (bad request): the server rejects what the backend asks; a smaller "
            "annotator.top_logprobs (vLLM caps it at --max-logprobs), no structured_choice, or "
            "annotator.endpoint=completions may help"
        )
    if status == 413:
        return f"{head} (request too large): prompts exceed what the server accepts"
    return f"{head}: not retried; check annotator.base_url, annotator.model and the server's log"


class Secret:
    """A string that never shows itself: ``repr``/``str`` give ``'***'``; ``.value`` is it."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self.value)

    def redact(self, text: str) -> str:
        """``text`` with every occurrence of the secret (and of its last 8+ characters, which
        some servers echo as "sk-...abcd1234") replaced by ``***``."""
        if not self.value:
            return text
        text = text.replace(self.value, "***")
        tail = self.value[-8:]
        if len(self.value) > 8 and tail in text:
            text = text.replace(tail, "***")
        return text
