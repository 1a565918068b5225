"""The HTTP side of the ``openai`` backend: one ``httpx`` client per event loop, readiness and
the served model (``GET /v1/models``, then every answer's ``model`` field), POST with retries
(``openai_retry.py``), and notices to the user. ``openai_compat.OpenAIBackend`` builds on it."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from annotator.backends.base import BackendUnavailable, LLMBackend
from annotator.backends.openai_retry import Secret, advice, retry_after_s, retry_delay, retryable
from annotator.backends.openai_wire import InvalidAnswer, model_names, pick_listed_model

log = logging.getLogger(__name__)


class ModelNotServed(BackendUnavailable):
    """The server is up but will not serve the configured model (not listed, or not to us);
    ``key`` names the notice that tells the user."""

    def __init__(self, message: str, key: str = "model_not_served") -> None:
        super().__init__(message)
        self.key = key


class RefusedRequest(InvalidAnswer):
    """An HTTP error answer that retrying will not fix (4xx other than 408/429)."""


class OpenAIHTTP(LLMBackend):
    """Transport shared by the openai backend's requests. Needs the attributes that
    ``OpenAIBackend.__init__`` sets (base_url, timeouts, retries, ``_api_key``: a Secret, ...)."""

    base_url: str
    endpoint: str
    max_concurrency: int
    request_timeout: float
    connect_timeout: float
    max_retries: int
    backoff_initial: float
    backoff_max: float
    model_changes: int
    _api_key: Secret
    _configured_model: str | None
    _request_model: str | None
    _served_model: str | None
    _explicit_model_id: str | None
    _client: Any
    _client_loop: asyncio.AbstractEventLoop | None
    _sem: asyncio.Semaphore | None
    _ready: bool
    _closed: bool
    _told: set[str]

    def __repr__(self) -> str:
        return f"OpenAIBackend(base_url={self.base_url!r}, model={self.model!r})"

    @property
    def model_id(self) -> str:  # type: ignore[override]
        if self._explicit_model_id:
            return self._explicit_model_id
        return f"{self.model or 'unknown model'}@{self.base_url}"

    @property
    def model(self) -> str | None:
        """The served model's name (None until given or discovered)."""
        return self._served_model or self._request_model

    # ---- readiness ------------------------------------------------------------------------

    async def wait_ready(
        self,
        timeout: float = 60.0,
        poll_interval: float = 0.5,
        on_wait: Callable[[str], None] | None = None,
    ) -> list[str]:
        """Poll ``GET /v1/models`` until the server answers with a model list; returns the
        listed names. Settles which model to ask for (``openai_wire.pick_listed_model``): the
        configured ``model`` when listed; else a listed ``.gguf`` path with the same file name,
        or the only listed model when it is a file path (llama.cpp lists the path it loaded
        and answers any name); the first listed when none was configured. A server without
        the route (404) is asked for the configured model as is. Raises ModelNotServed (a
        BackendUnavailable) when the configured model is not served or the server refuses the
        API key (401/403), and BackendUnavailable when no server answers within ``timeout``
        seconds. ``on_wait(error)``, when given, is called once, on the first failed probe that
        will be polled again (a console line: the wait may last ``timeout``)."""
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
                    picked = pick_listed_model(self._configured_model, names)
                    if picked is None:
                        raise ModelNotServed(
                            f"server {self.base_url} serves {names}, not the model "
                            f"{self._configured_model!r} this backend was configured with; set "
                            "annotator.model to one of those"
                        )
                    if picked != self._configured_model and self._configured_model is not None:
                        log.info("model %r is served as %r", self._configured_model, picked)
                    self._request_model = picked
                    self._served_model = self._served_model or picked
                    self._ready = True
                    return names
                if r.status_code in (401, 403):
                    status = r.status_code
                    raise ModelNotServed(advice(status, self.base_url, None), f"http_{status}")
                if r.status_code == 404 and self._configured_model is not None:
                    log.info("%s/models is not served; asking for %r as configured",
                             self.base_url, self._configured_model)  # fmt: skip
                    self._ready = True
                    return [self._configured_model]
                last = f"HTTP {r.status_code}"
            except BackendUnavailable:
                raise
            except Exception as e:  # connection refused, timeout, garbage body
                last = self._api_key.redact(f"{type(e).__name__}: {e}")
            if time.monotonic() + poll_interval > deadline:
                raise BackendUnavailable(
                    f"no OpenAI-compatible server answered GET {self.base_url}/models within "
                    f"{timeout:g} s (last error: {last}); is the server running (e.g. `vllm "
                    "serve MODEL` or `llama-server -m FILE.gguf`) and is base_url right?"
                )
            if on_wait is not None:
                on_wait(last)
                on_wait = None
            await asyncio.sleep(poll_interval)

    async def close(self) -> None:
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.aclose()
            except RuntimeError:  # created in an event loop that is gone
                pass

    async def _post(self, body: dict[str, Any]) -> Any:
        """POST with retries; the parsed JSON body. Raises BackendUnavailable after the last
        retry, RefusedRequest for a non-retryable error answer, InvalidAnswer for an unparseable
        body."""
        import httpx

        path = "/chat/completions" if self.endpoint == "chat" else "/completions"
        url = self.base_url + path
        client = self._ensure_client()
        assert self._sem is not None
        last, hint = "", None
        redact = self._api_key.redact
        async with self._sem:
            for attempt in range(self.max_retries + 1):
                if attempt:
                    self.stats.retries += 1
                    await self._sleep(
                        retry_delay(attempt, initial=self.backoff_initial,
                                    maximum=self.backoff_max, retry_after=hint, rand=random.random)
                    )  # fmt: skip
                hint = None
                if self._closed:
                    raise BackendUnavailable(f"backend for {self.base_url} is closed")
                try:
                    r = await client.post(url, json=body)
                except httpx.TransportError as e:  # connect/read errors and timeouts
                    last = redact(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)
                    continue
                status = r.status_code
                if retryable(status):
                    if status in (429, 503):
                        hint = retry_after_s(r.headers.get("retry-after"), self._now())
                    last = redact(f"HTTP {status}: {r.text[:200]}")
                    continue
                if not 200 <= status < 300:
                    msg = redact(f"HTTP {status} from {url}: {r.text[:300]}")
                    if self._tell_once(f"http_{status}", advice(status, self.base_url, self.model)):
                        log.warning("%s (not retried)", msg)
                    raise RefusedRequest(msg)
                try:
                    return r.json()
                except ValueError as e:
                    raise InvalidAnswer(f"body is not JSON: {redact(r.text[:100])!r}") from e
        raise BackendUnavailable(
            f"POST {url} failed {self.max_retries + 1} times (last error: {last})"
        )

    # ---- model and notices ----------------------------------------------------------------

    def _observe_model(self, name: str | None) -> None:
        """Keep ``model_id`` truthful: the model an answer says it came from."""
        if name is None or name == self._served_model:
            return
        old, self._served_model = self._served_model, name
        if old is None:
            return
        self.model_changes += 1
        self.notice(
            "model_changed",
            f"server at {self.base_url} now answers as model {name!r} (was {old!r}); "
            f"labels from now on are recorded as {self.model_id!r}",
        )

    def _tell_once(self, key: str, message: str) -> bool:
        """A notice (and a warning in the log) the first time ``key`` comes up; True then."""
        if key in self._told:
            return False
        self._told.add(key)
        message = self._api_key.redact(message)
        log.warning("%s", message)
        self.notice(key, message)
        return True

    # ---- setup ----------------------------------------------------------------------------

    def _ensure_client(self) -> Any:
        import httpx

        loop = asyncio.get_running_loop()
        if self._client is not None and self._client_loop is not loop:
            self._client = None  # a client is bound to the loop it was made in; make a new one
        if self._client is None:
            key = self._api_key.value
            headers = {"Authorization": f"Bearer {key}"} if key else {}
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

    async def _ensure_ready(self) -> bool:
        """Before the first request: which model the server serves (``wait_ready``)."""
        if self._ready:
            return True
        try:
            await self.wait_ready(timeout=self.request_timeout, poll_interval=0.5)
            return True
        except ModelNotServed as e:
            self._tell_once(e.key, str(e))
        except BackendUnavailable as e:
            log.warning("cannot reach the server to discover its model: %s", e)
        return False
