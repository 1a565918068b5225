"""The ``openai`` backend: any OpenAI-compatible HTTP server (``vllm serve``, llama.cpp's
``llama-server``, llama-cpp-python's server, hosted APIs).

Each chat is one HTTP request; up to ``max_concurrency`` are in flight. Every attempt has a
timeout; connection errors, timeouts, 408, 429 and 5xx are retried ``max_retries`` times, waiting
what a 429/503's ``Retry-After`` asks or else an exponential back-off with jitter, both capped at
``backoff_max`` (``openai_retry.py``). After the last retry the answer is None; no exception
escapes. Other 4xx and unparseable bodies are not retried: the answer is invalid (``{}`` / ``""``),
and each such status is told to the user once (``notice("http_<status>", what to do)``).

choice_probs asks for one token and the top-k log-probabilities of the first answer token, read
in whichever shape the server sends (``openai_wire.first_token_logprobs``). A top token counts for
a choice when its stripped, case-folded text equals the choice ("Yes", " yes", "▁yes" -> "yes";
not "Y"); the choices' probabilities are summed and renormalised. The answer is invalid (``{}``,
``stats.invalid``) when the choices carry less than ``min_choice_mass`` of the first token's
probability (none in the top k counts as 0). Choices should be single-token words (yes/no, A/B).

A server that answers ``"logprobs": null`` gives no probabilities: the backend says so once
(``notice("no_logprobs", ...)``) and from then on asks for ``TEXT_MODE_MAX_TOKENS`` tokens without
logprobs and reads the answer's first word: a hard ``{choice: 1.0, others: 0.0}`` (``text_mode``).

``model_id`` is ``"<served model>@<base_url>"`` (or the ``model_id`` option): the served name is
discovered from ``GET /v1/models`` before the first request and then taken from every answer's
``model`` field; a change is counted (``model_changes``) and told (``notice("model_changed")``).

``structured_choice=True`` also sends vLLM's ``structured_outputs: {"choice": [...]}``, which vLLM
applies before it computes logprobs: the top tokens are then only spellings the grammar allows
(e.g. "yes", "y", not "Yes"), each counted for the one choice it starts, and a forced answer whose
top tokens match nothing gets probability 1. Use it when an answer is required, not for calibrated
probabilities; servers other than vLLM may reject it (HTTP 400).

The ``completions`` endpoint sends plain strings as they are; chats need ``chat_template_model``
(a model spec whose tokenizer has the chat template).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from annotator.backends.base import (
    BackendUnavailable,
    Chat,
    logsumexp,
    match_choice,
    normalize_chat,
    renormalize,
    validate_choices,
)
from annotator.backends.openai_http import OpenAIHTTP, RefusedRequest
from annotator.backends.openai_retry import Secret
from annotator.backends.openai_wire import (
    ENDPOINTS,
    InvalidAnswer,
    answer_text,
    first_token_logprobs,
    normalize_base_url,
    served_model,
    text_choice,
)

log = logging.getLogger(__name__)


class _NoChoice(InvalidAnswer):
    """A readable answer whose choices carry too little probability (the model's own doing)."""


class OpenAIBackend(OpenAIHTTP):
    """Options:

    base_url: the server, e.g. "http://127.0.0.1:8000/v1" ("/v1" is added when missing).
    model: the model name to ask for; default the first one ``GET /v1/models`` lists.
    api_key: sent as a Bearer token; never shown (repr, logs, errors).
    endpoint: "chat" (default, /v1/chat/completions) or "completions" (/v1/completions).
    max_concurrency: requests in flight at once (default 32).
    request_timeout: seconds for one HTTP attempt (default 60); connect_timeout (default 5).
    max_retries: retries after the first attempt (default 4); backoff_initial (0.5 s) doubles
        each retry up to backoff_max (10 s), times a random factor in [0.5, 1); a 429/503's
        Retry-After (seconds or HTTP-date) replaces it, also capped at backoff_max.
    top_logprobs: k of the first token's top-k (default 5).
    min_choice_mass: least share of the first token's probability the choices must carry, else
        the answer is invalid (default 0.1; 0 accepts any answer naming a choice).
    structured_choice: constrain the answer with vLLM's structured_outputs (see the module doc).
    chat_template_model: model spec whose tokenizer renders chats for the completions endpoint.
    model_id: what labels record; default "<served model>@<base_url>".
    extra_body: dict merged into every request body.
    """

    #: tokens asked per answer once the server has shown it gives no logprobs (text mode)
    TEXT_MODE_MAX_TOKENS = 5

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        endpoint: str = "chat",
        max_concurrency: int = 32,
        request_timeout: float = 60.0,
        connect_timeout: float = 5.0,
        max_retries: int = 4,
        backoff_initial: float = 0.5,
        backoff_max: float = 10.0,
        top_logprobs: int = 5,
        min_choice_mass: float = 0.1,
        structured_choice: bool = False,
        chat_template_model: str | Path | None = None,
        model_id: str | None = None,
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.base_url = normalize_base_url(base_url)
        _check_options(
            endpoint=endpoint,
            max_concurrency=max_concurrency,
            top_logprobs=top_logprobs,
            max_retries=max_retries,
            timeouts=(request_timeout, connect_timeout),
            min_choice_mass=min_choice_mass,
        )
        self.endpoint = endpoint
        self.max_concurrency = max_concurrency
        self.request_timeout = float(request_timeout)
        self.connect_timeout = float(connect_timeout)
        self.max_retries = int(max_retries)
        self.backoff_initial = float(backoff_initial)
        self.backoff_max = float(backoff_max)
        self.top_logprobs = top_logprobs
        self.min_choice_mass = float(min_choice_mass)
        self.structured_choice = bool(structured_choice)
        self.extra_body = dict(extra_body or {})
        #: True once the server answered without logprobs: answers are read from their text
        self.text_mode = False
        #: times an answer named another model than the one before
        self.model_changes = 0
        self._configured_model = model
        self._request_model = model  # the name sent in requests
        self._served_model: str | None = None  # the name the server says answered
        self._explicit_model_id = model_id
        self._api_key = Secret(api_key or "")
        self._chat_template_model = chat_template_model
        self._tokenizer: Any = None
        self._client: Any = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._sem: asyncio.Semaphore | None = None
        self._ready = False
        self._closed = False
        self._told: set[str] = set()
        self._sleep = asyncio.sleep  # the waits between attempts (tests pass a fake clock)
        self._now = time.time  # Unix seconds, for Retry-After dates

    # ---- LLMBackend -----------------------------------------------------------------------

    async def choice_probs(
        self, chats: Sequence[Chat], choices: Sequence[str]
    ) -> list[dict[str, float] | None]:
        choices = validate_choices(choices)
        prepared = await self._prepared(chats)
        if prepared is None:
            return [None] * len(chats)
        return list(await asyncio.gather(*(self._one_choice(p, choices) for p in prepared)))

    async def generate(
        self, chats: Sequence[Chat], *, max_tokens: int, temperature: float = 0.0
    ) -> list[str | None]:
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        prepared = await self._prepared(chats)
        if prepared is None:
            return [None] * len(chats)
        return list(
            await asyncio.gather(
                *(self._one_generate(p, max_tokens, temperature) for p in prepared)
            )
        )

    # ---- requests -------------------------------------------------------------------------

    async def _one_choice(self, prompt: Any, choices: tuple[str, ...]) -> dict[str, float] | None:
        text_mode = self.text_mode
        body = self._body(
            prompt, max_tokens=self.TEXT_MODE_MAX_TOKENS if text_mode else 1, temperature=0.0
        )
        if not text_mode and self.endpoint == "chat":
            body.update(logprobs=True, top_logprobs=self.top_logprobs)
        elif not text_mode:
            body.update(logprobs=self.top_logprobs)
        if self.structured_choice:
            body["structured_outputs"] = {"choice": list(choices)}
        self.stats.requests += 1
        try:
            data = await self._post(body)
            self._observe_model(served_model(data))
            text = answer_text(data)
            top = None if text_mode else first_token_logprobs(data)
            if top is None:  # the server gives no logprobs: read the answer's text
                self._enter_text_mode(choices)
                i = text_choice(text, choices)
                if i is None:
                    raise _NoChoice(f"answer text {text!r} names none of {choices}")
                return {c: float(j == i) for j, c in enumerate(choices)}
            return self._from_top(top, text, choices)
        except (_NoChoice, RefusedRequest) as e:  # the refusal was told in _post
            self.stats.invalid += 1
            log.debug("choice_probs: %s", e)
            return {}  # an answer, but not a usable one: invalid, not a failed request
        except InvalidAnswer as e:
            self.stats.invalid += 1
            self._tell_once(
                "unreadable_answer",
                f"server at {self.base_url} sent an answer the openai backend cannot read "
                f"({e}); such answers count as invalid. Please report the server and version.",
            )
            return {}
        except BackendUnavailable as e:
            self.stats.failed += 1
            log.warning("choice_probs: %s", e)
            return None

    def _from_top(
        self, top: list[tuple[str, float]], text: str | None, choices: tuple[str, ...]
    ) -> dict[str, float]:
        per_choice = [-math.inf] * len(choices)
        for token, lp in top:
            i = match_choice(token, choices, allow_prefix=self.structured_choice)
            if i is not None:
                per_choice[i] = logsumexp([per_choice[i], lp])
        result = renormalize(choices, per_choice, min_mass=self.min_choice_mass)
        if result is None and self.structured_choice:
            i = text_choice(text, choices)
            if i is not None:
                result = {c: float(j == i) for j, c in enumerate(choices)}
        if result is None:
            mass = sum(math.exp(min(lp, 0.0)) for lp in per_choice if lp > -math.inf)
            raise _NoChoice(
                f"choices {choices} carry {mass:.3g} of the first token's probability "
                f"(< min_choice_mass {self.min_choice_mass:g}); top tokens {top}"
            )
        return result

    def _enter_text_mode(self, choices: tuple[str, ...]) -> None:
        if self.text_mode:
            return
        self.text_mode = True
        self._tell_once(
            "no_logprobs",
            f"server at {self.base_url} gives no logprobs; labels now come from the answer text "
            f"(hard {'/'.join(choices)}, {self.TEXT_MODE_MAX_TOKENS} tokens per answer). For "
            "graded probabilities use a server that returns logprobs (vLLM, llama-server).",
        )

    async def _one_generate(self, prompt: Any, max_tokens: int, temperature: float) -> str | None:
        body = self._body(prompt, max_tokens=max_tokens, temperature=temperature)
        self.stats.requests += 1
        try:
            data = await self._post(body)
            self._observe_model(served_model(data))
            text = answer_text(data)
            if text is None:
                raise InvalidAnswer("answer has no text")
            return text.strip()
        except InvalidAnswer as e:
            self.stats.invalid += 1
            log.debug("generate: unusable answer: %s", e)
            return ""  # an answer without text: it will not parse, so it counts as invalid
        except BackendUnavailable as e:
            self.stats.failed += 1
            log.warning("generate: %s", e)
            return None

    def _body(self, prompt: Any, *, max_tokens: int, temperature: float) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self._request_model,
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        body["messages" if self.endpoint == "chat" else "prompt"] = prompt
        body.update(self.extra_body)
        return body

    async def _prepared(self, chats: Sequence[Chat]) -> list | None:
        """The chats rendered for the endpoint, or None (all failed) when no server answers."""
        prepared = [self._prepare(c) for c in chats]
        if prepared and not await self._ensure_ready():
            self.stats.requests += len(prepared)
            self.stats.failed += len(prepared)
            return None
        return prepared

    def _prepare(self, chat: Chat) -> Any:
        c = normalize_chat(chat)
        if self.endpoint == "chat":
            return [{"role": "user", "content": c}] if isinstance(c, str) else c
        return c if isinstance(c, str) else self._render(c)

    def _render(self, messages: list[dict[str, str]]) -> str:
        if self._tokenizer is None:
            if self._chat_template_model is None:
                raise ValueError(
                    "the completions endpoint needs plain-string prompts, or chat_template_model "
                    "(a model spec whose tokenizer has the chat template) to render chats"
                )
            from transformers import AutoTokenizer

            from annotator.model_store import resolve_model

            self._tokenizer = AutoTokenizer.from_pretrained(
                resolve_model(self._chat_template_model), local_files_only=True
            )
        return self._tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )


def _check_options(
    *,
    endpoint: str,
    max_concurrency: int,
    top_logprobs: int,
    max_retries: int,
    timeouts: tuple[float, float],
    min_choice_mass: float,
) -> None:
    """Raises ValueError naming the first transport option outside what is allowed."""
    if endpoint not in ENDPOINTS:
        raise ValueError(f"endpoint {endpoint!r} is not supported; allowed: chat, completions")
    for name, value in (("max_concurrency", max_concurrency), ("top_logprobs", top_logprobs)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if max_retries < 0:
        raise ValueError(f"max_retries must be >= 0, got {max_retries}")
    if min(timeouts) <= 0:
        raise ValueError("request_timeout and connect_timeout must be > 0")
    if not 0.0 <= min_choice_mass < 1.0:
        raise ValueError(f"min_choice_mass must be in [0, 1), got {min_choice_mass!r}")
