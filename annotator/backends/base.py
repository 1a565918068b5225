"""The one interface every LLM transport implements, and the helpers they share.

A *chat* is what a backend is asked about: either a list of chat messages (``{"role": ...,
"content": ...}`` dicts, or ``(role, content)`` pairs), which the backend renders with the model's
chat template and ends with the assistant turn's header, or a plain string, sent to the model as is
(a raw completion prompt).

Failure semantics: the batch methods never raise because one request failed or the server is
down; that request's slot is ``None``. An answer that arrived but is unusable is not a failure:
``choice_probs`` gives ``{}`` (no choice among the answer's top tokens) and ``generate`` the text
(possibly ``""``), which the caller's parser rejects, counts and retries. They raise only for caller mistakes (bad choices, a closed
backend, a chat where the transport cannot render one).
"""

from __future__ import annotations

import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

Message = Mapping[str, str] | tuple[str, str]
Chat = Sequence[Message] | str


class BackendUnavailable(RuntimeError):
    """The LLM cannot be reached or started (server down, engine failed to start)."""


@dataclass
class BackendStats:
    """Counters a backend keeps; the annotator exports them (e.g. ``invalid_answer_rate``)."""

    requests: int = 0  # prompts asked about (one per chat, however many HTTP tries it took)
    failed: int = 0  # prompts answered with None: the request failed
    retries: int = 0  # extra HTTP attempts (openai backend)
    invalid: int = 0  # answers that arrived but could not be used (garbage, no choice in top-k)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class LLMBackend(ABC):
    """Scores chats with a language model. Implementations: transformers, vllm, openai."""

    #: identifies the model (weights), recorded with every label
    model_id: str
    #: threads of this machine's CPUs the model computes on, or None when it computes elsewhere
    #: (a GPU, a server): what `annotator.busy_share`'s automatic choice weighs
    cpu_threads: int | None = None

    def __init__(self) -> None:
        self.stats = BackendStats()
        self._notices: list[tuple[str, str]] = []
        self._cpu_s: float | None = None  # see cpu_seconds; None until `charged` has run
        self._cpu_lock = threading.Lock()  # `charged` runs in several worker threads at once

    @property
    def cpu_seconds(self) -> float | None:
        """CPU seconds of this machine spent computing answers so far (all threads; the work
        run through `charged`), or None when the model computes elsewhere (`cpu_threads` None)
        or nothing has been charged: what the annotator's rests are measured against (without
        it, the batches' wall-clock time)."""
        return self._cpu_s if self.cpu_threads is not None else None

    def charged(self, work: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`work(*args, **kwargs)` run in the calling thread, its CPU time counted in
        `cpu_seconds`: this thread's, times `cpu_threads` (a thread pool shares the work)."""
        begin = time.thread_time()
        try:
            return work(*args, **kwargs)
        finally:
            spent = (time.thread_time() - begin) * (self.cpu_threads or 1)
            with self._cpu_lock:
                self._cpu_s = (self._cpu_s or 0.0) + spent

    def notice(self, key: str, message: str) -> None:
        """Something the user must know (no logprobs from the server, a changed served model):
        one console line. ``key`` names the kind, so the caller can rate-limit repeats."""
        self._notices.append((key, message))

    def drain_notices(self) -> list[tuple[str, str]]:
        """The (key, message) notices since the last call, oldest first."""
        out, self._notices = self._notices, []
        return out

    @abstractmethod
    async def generate(
        self, chats: Sequence[Chat], *, max_tokens: int, temperature: float = 0.0
    ) -> list[str | None]:
        """The model's answer to each chat (greedy when temperature is 0); None = that one failed."""

    @abstractmethod
    async def choice_probs(
        self, chats: Sequence[Chat], choices: Sequence[str]
    ) -> list[dict[str, float] | None]:
        """For each chat, the probability of each choice as the first answer token, renormalised
        over the choices (values sum to 1). None = that request failed (retry later, not the
        answer's fault); {} = an answer arrived but no choice was among its top-k tokens."""

    @abstractmethod
    async def close(self) -> None:
        """Release the model / connections. Idempotent."""

    async def __aenter__(self) -> LLMBackend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# --------------------------------------------------------------------------------------------
# helpers shared by the transports


def normalize_chat(chat: Chat) -> list[dict[str, str]] | str:
    """A chat as the ``list[dict(role, content)]`` chat templates want, or the raw string."""
    if isinstance(chat, str):
        return chat
    if isinstance(chat, Mapping):
        raise TypeError("a chat is a list of messages or a string, got a single message dict")
    messages = []
    for message in chat:
        if isinstance(message, Mapping):
            role, content = message.get("role"), message.get("content")
        elif isinstance(message, Sequence) and len(message) == 2:
            role, content = message
        else:
            raise TypeError(
                f"a chat message is a {{role, content}} dict or a pair, got {message!r}"
            )
        if not isinstance(role, str) or not isinstance(content, str):
            raise TypeError(f"chat message role and content must be strings, got {message!r}")
        messages.append({"role": role, "content": content})
    if not messages:
        raise ValueError("a chat needs at least one message")
    return messages


def validate_choices(choices: Sequence[str]) -> tuple[str, ...]:
    if isinstance(choices, str):
        raise TypeError(f"choices must be a sequence of strings, not the string {choices!r}")
    out = tuple(choices)
    if not out:
        raise ValueError("choice_probs needs at least one choice")
    keys = [norm_token(c) for c in out]
    if any(not isinstance(c, str) or not norm_token(c) for c in out):
        raise ValueError(f"choices must be non-blank strings, got {out!r}")
    if len(set(keys)) != len(keys):
        raise ValueError(f"choices must differ ignoring case and spaces, got {out!r}")
    return out


def norm_token(text: str) -> str:
    return text.strip().casefold()


def choice_variants(choice: str) -> list[str]:
    """Spellings whose first token counts as answering ``choice``: as given, lower case and
    Capitalised, each with and without a leading space ("yes", " yes", "Yes", " Yes"). Chat models
    answer "Yes" right after the assistant header; completion prompts that end in "Answer:" are
    followed by " yes". (UPPER case is left out: "YES" splits into "Y" + "ES" in many
    vocabularies, and "Y" is not an answer.)"""
    c = choice.strip()
    forms = [c, c.lower(), c[:1].upper() + c[1:]]
    out: list[str] = []
    for form in forms:
        for v in (form, " " + form):
            if v not in out:
                out.append(v)
    return out


def choice_token_ids(tokenizer: Any, choices: Sequence[str]) -> list[list[int]]:
    """For each choice, the distinct first-token ids of its variants (``choice_variants``).
    A token id that starts variants of two different choices is ambiguous and counts for neither;
    a choice left with no token of its own is a ValueError (e.g. "1" and "10")."""
    firsts: list[set[int]] = []
    for c in choices:
        ids = set()
        for v in choice_variants(c):
            enc = tokenizer.encode(v, add_special_tokens=False)
            if enc:
                ids.add(int(enc[0]))
        firsts.append(ids)
    owners: dict[int, int] = {}
    for i, ids in enumerate(firsts):
        for t in ids:
            owners[t] = -1 if t in owners and owners[t] != i else i
    out = [sorted(t for t in ids if owners[t] == i) for i, ids in enumerate(firsts)]
    for c, ids in zip(choices, out, strict=True):
        if not ids:
            raise ValueError(
                f"choice {c!r} shares its first token with another choice in {tuple(choices)!r}; "
                "use choices that start differently (single-token answers work best)"
            )
    return out


def match_choice(token: str, choices: Sequence[str], *, allow_prefix: bool = False) -> int | None:
    """Which choice a token's text stands for when only the text is known (openai transport):
    the choice equal to it once both are stripped and case-folded ("Yes", " yes" -> "yes").
    With ``allow_prefix`` (for answers forced to be a choice), a non-empty prefix of exactly one
    choice also counts. Without it, prefixes do not: a top-k token "Y" starts "YES" as often as
    "yes", and the transformers/vllm backends, which know the tokenizer, do not count it either."""
    t = norm_token(token)
    if not t:
        return None
    keys = [norm_token(c) for c in choices]
    for i, k in enumerate(keys):
        if k == t:
            return i
    if not allow_prefix:
        return None
    hits = [i for i, k in enumerate(keys) if k.startswith(t)]
    return hits[0] if len(hits) == 1 else None


def renormalize(
    choices: Sequence[str], logprobs: Sequence[float], *, min_mass: float = 0.0
) -> dict[str, float] | None:
    """Softmax over per-choice log-probabilities (-inf = choice absent; NaN counts as absent).
    None if all are absent, or if the choices' total probability ``sum(exp(logprobs))`` is below
    ``min_mass`` (the model's likely first token is something else: it did not answer)."""
    logprobs = [lp if not math.isnan(lp) else -math.inf for lp in logprobs]
    finite = [lp for lp in logprobs if math.isfinite(lp)]
    if not finite:
        return None
    if min_mass > 0.0 and sum(math.exp(min(lp, 0.0)) for lp in finite) < min_mass:
        return None
    top = max(finite)
    weights = [math.exp(lp - top) if math.isfinite(lp) else 0.0 for lp in logprobs]
    total = sum(weights)
    return {c: w / total for c, w in zip(choices, weights, strict=True)}


def logsumexp(values: Sequence[float]) -> float:
    if not values:
        return -math.inf
    top = max(values)
    if top == -math.inf:
        return -math.inf
    return top + math.log(sum(math.exp(v - top) for v in values))
