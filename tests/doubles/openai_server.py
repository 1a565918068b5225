"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests (stdlib ``http.server`` + threads).

Serves ``GET /v1/models``, ``POST /v1/chat/completions`` and ``POST /v1/completions`` in the shape
vLLM answers them (first-token ``logprobs`` / ``top_logprobs``, ``structured_outputs.choice``).
Answers come from a *scorer*:

- ``TransformersScorer``: the real transformers backend (same numbers as that backend);
- ``ScriptedAnswers``: a test double that returns scripted first-token probabilities, for fast
  tests of the transport (failures, retries, concurrency).

Switches for fault tests: ``stop()`` / ``start()`` (same port), ``delay_s`` (slow answers),
``garbage`` ("text": a 200 that is not JSON, "json": JSON without choices, "logprobs": choices
with unreadable logprobs), ``fail_status`` (e.g. 503 for every POST; ``fail_count``: only the
next n POSTs) with ``retry_after`` (the ``Retry-After`` header sent with it) and
``fail_message`` (the error text, e.g. one echoing the API key as some servers do).

Switches for server variety: ``logprob_shape`` ("openai": the chat ``content`` list / legacy on
completions, as vLLM; "legacy": the legacy completions shape on both endpoints, as older
llama-cpp-python; "null": ``"logprobs": null``, a server without logprobs), ``listed_models``
(what ``GET /v1/models`` lists, e.g. a .gguf path as llama.cpp), ``any_model`` (answer whatever
model a request names, as llama.cpp), ``answer_model`` (the ``model`` field of answers: a
swapped served model), ``canned`` (an answer replayed as is for every POST: a recorded answer
of another server), ``models_status`` (an error status for ``GET /v1/models``).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol


class Scorer(Protocol):
    model_name: str

    def top_logprobs(self, prompt: str | list[dict], k: int) -> list[tuple[str, float]]:
        """The k most likely first tokens (text, logprob). A string is a raw prompt, a list of
        messages is rendered with the chat template."""

    def complete(self, prompt: str | list[dict], max_tokens: int, temperature: float) -> str:
        """The generated text."""


class ScriptedAnswers:
    """Scripted first-token probabilities: the first rule whose key is a substring of the prompt's
    text wins, else ``default``. Probabilities of a rule need not sum to 1 (the rest is spread
    over filler tokens). The generated text is the most probable token."""

    def __init__(
        self,
        rules: Mapping[str, Mapping[str, float]] | None = None,
        default: Mapping[str, float] | None = None,
        model_name: str = "scripted-model",
    ) -> None:
        self.rules = dict(rules or {})
        self.default = dict(default or {"No": 0.7, "Yes": 0.2})
        self.model_name = model_name
        self.calls = 0
        self._lock = threading.Lock()

    def _probs(self, prompt: str | list[dict]) -> dict[str, float]:
        with self._lock:
            self.calls += 1
        text = prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)
        for key, probs in self.rules.items():
            if key in text:
                return dict(probs)
        return dict(self.default)

    def top_logprobs(self, prompt: str | list[dict], k: int) -> list[tuple[str, float]]:
        probs = self._probs(prompt)
        rest = max(0.0, 1.0 - sum(probs.values()))
        for i in range(k):
            probs.setdefault(f"<filler{i}>", rest / (k + 1) if rest > 0 else 1e-9)
        ranked = sorted(probs.items(), key=lambda kv: -kv[1])[:k]
        return [(t, math.log(p)) for t, p in ranked]

    def complete(self, prompt: str | list[dict], max_tokens: int, temperature: float) -> str:
        return max(self._probs(prompt).items(), key=lambda kv: kv[1])[0]


class TransformersScorer:
    """Scores with the real transformers backend (shares its model; one request at a time)."""

    def __init__(self, backend: Any, model_name: str = "smollm2") -> None:
        self.backend = backend
        self.model_name = model_name

    def top_logprobs(self, prompt: str | list[dict], k: int) -> list[tuple[str, float]]:
        (top,) = self.backend.top_logprobs_sync([prompt], k)
        if top is None:
            raise RuntimeError("scoring failed")
        return top

    def complete(self, prompt: str | list[dict], max_tokens: int, temperature: float) -> str:
        (text,) = self.backend.generate_sync(
            [prompt], max_tokens=max_tokens, temperature=temperature
        )
        if text is None:
            raise RuntimeError("generation failed")
        return text


class OpenAICompatServer:
    """Usage: ``with OpenAICompatServer(ScriptedAnswers()) as srv: ... srv.base_url ...``"""

    def __init__(self, scorer: Scorer, host: str = "127.0.0.1", port: int = 0) -> None:
        self.scorer = scorer
        self.host = host
        self.port = port
        self.delay_s = 0.0
        self.in_flight = 0  # POSTs being answered now, and the most at once
        self.max_in_flight = 0
        self._in_flight_lock = threading.Lock()
        self.garbage: str | None = None
        self.fail_status: int | None = None
        self.fail_count: int | None = None  # None: every POST fails while fail_status is set
        self.retry_after: str | None = None
        self.fail_message = "injected failure"
        self.authorization: str | None = None  # the Authorization header of the last POST
        self.logprob_shape = "openai"
        self.listed_models: list[str] | None = None
        self.any_model = False
        self.answer_model: str | None = None
        self.canned: dict[str, Any] | None = None
        self.models_status: int | None = None  # GET /v1/models answers this error status
        self.models_requests = 0  # GET /v1/models answered
        self.max_logprobs = 20
        self.requests: list[dict[str, Any]] = []  # bodies of the POSTs answered, in order
        self.failed_posts = 0  # POSTs answered with fail_status
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def start(self) -> OpenAICompatServer:
        """Start (or restart, on the same port) serving."""
        if self._httpd is not None:
            return self
        handler = type("Handler", (_Handler,), {"server_double": self})
        deadline = time.monotonic() + 5
        while True:
            try:
                httpd = ThreadingHTTPServer((self.host, self.port), handler)
                break
            except OSError:  # the old socket may linger briefly after a stop
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        # Non-daemon handler threads, joined on stop: no answer is still inside the model when
        # the interpreter exits (a torch call cut off at exit aborts the process).
        httpd.daemon_threads = False
        httpd.block_on_close = True
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Go down: stop accepting connections (answers already being computed still go out)."""
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> OpenAICompatServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- answers --------------------------------------------------------------------------

    def models(self) -> dict[str, Any]:
        names = self.listed_models or [self.scorer.model_name]
        data = [{"id": n, "object": "model", "owned_by": "tests"} for n in names]
        return {"object": "list", "data": data}

    def answer(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if not self.any_model and body.get("model") != self.scorer.model_name:
            raise _HTTPError(404, f"The model `{body.get('model')}` does not exist.")
        chat = path.endswith("/chat/completions")
        prompt = body.get("messages") if chat else body.get("prompt")
        if chat and not isinstance(prompt, list):
            raise _HTTPError(400, "messages must be a list")
        if not chat and not isinstance(prompt, str):
            raise _HTTPError(400, "this double takes one string prompt per request")
        max_tokens = int(body.get("max_tokens") or 16)
        temperature = float(body.get("temperature") or 0.0)
        if chat:
            k = int(body.get("top_logprobs") or 0) if body.get("logprobs") else 0
        else:
            k = int(body.get("logprobs") or 0)
        if k > self.max_logprobs:
            raise _HTTPError(400, f"logprobs {k} > max_logprobs {self.max_logprobs}")
        choices = (body.get("structured_outputs") or {}).get("choice")
        top = self.scorer.top_logprobs(prompt, max(k, 1)) if (k or choices) else []
        if choices:  # like vLLM: the grammar masks tokens before logprobs are computed
            top = _constrain(top, choices)
            text = _best_choice(top, choices)
        elif max_tokens == 1 and top:
            text = top[0][0]
        else:
            text = self.scorer.complete(prompt, max_tokens, temperature)
        created = int(time.time())
        if chat:
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "length" if max_tokens == 1 else "stop",
            }
            if k and self.logprob_shape == "openai":
                entries = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top]
                chosen = next((e for e in entries if e["token"] == text), entries[0])
                choice["logprobs"] = {"content": [{**chosen, "top_logprobs": entries}]}
            else:
                choice["logprobs"] = _legacy(text, top) if k else None
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "finish_reason": "length"}
            choice["logprobs"] = _legacy(text, top) if k else None
            obj = "text_completion"
        if self.logprob_shape == "null":
            choice["logprobs"] = None
        return {
            "id": f"cmpl-{created}-{len(self.requests)}",
            "object": obj,
            "created": created,
            "model": self.answer_model or body.get("model") or self.scorer.model_name,
            "choices": [choice],
            "usage": {"prompt_tokens": 0, "completion_tokens": 1, "total_tokens": 1},
        }


def _legacy(text: str, top: Sequence[tuple[str, float]]) -> dict[str, Any]:
    """The legacy completions logprobs shape for a one-token answer."""
    return {
        "tokens": [text],
        "token_logprobs": [dict(top).get(text, top[0][1])],
        "top_logprobs": [dict(top)],
        "text_offset": [0],
    }


def _constrain(top: Sequence[tuple[str, float]], choices: Sequence[str]) -> list:
    """Top tokens a choice grammar allows (case-sensitive prefixes of a choice), renormalised;
    when none of them is in the top k, the first choice with probability 1 (a stand-in for the
    grammar's forced token)."""
    kept = [(t, lp) for t, lp in top if t and any(c.startswith(t) for c in choices)]
    if not kept:
        return [(choices[0], 0.0)]
    norm = math.log(sum(math.exp(lp) for _, lp in kept))
    return [(t, lp - norm) for t, lp in kept]


def _best_choice(top: Sequence[tuple[str, float]], choices: Sequence[str]) -> str:
    for token, _ in top:
        for c in choices:
            if token and c.startswith(token):
                return c
    return choices[0]


class _HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Handler(BaseHTTPRequestHandler):
    server_double: OpenAICompatServer
    protocol_version = "HTTP/1.0"  # one request per connection: a stopped server is really gone

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, payload: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        try:
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
            pass

    def _json(self, status: int, obj: Any, headers: Mapping[str, str] | None = None) -> None:
        payload = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        try:
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
            pass

    def do_GET(self) -> None:
        srv = self.server_double
        srv.models_requests += self.path.rstrip("/") == "/v1/models"
        if self.path.rstrip("/") == "/v1/models" and srv.models_status:
            self._json(srv.models_status, {"error": {"message": "injected models failure"}})
        elif self.path.rstrip("/") == "/v1/models":
            self._json(200, srv.models())
        else:
            self._json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        srv = self.server_double
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if srv.delay_s:
            with srv._in_flight_lock:
                srv.in_flight += 1
                srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
            time.sleep(srv.delay_s)
            with srv._in_flight_lock:
                srv.in_flight -= 1
        srv.authorization = self.headers.get("Authorization")
        if srv.fail_status and srv.fail_count != 0:
            if srv.fail_count is not None:
                srv.fail_count -= 1
            srv.failed_posts += 1
            headers = {"Retry-After": srv.retry_after} if srv.retry_after is not None else None
            self._json(srv.fail_status, {"error": {"message": srv.fail_message}}, headers)
            return
        if self.path not in ("/v1/chat/completions", "/v1/completions"):
            self._json(404, {"error": {"message": f"no route {self.path}"}})
            return
        if srv.garbage == "text":
            self._send(200, b"<html>502 Bad Gateway (garbage)</html>", "text/html")
            return
        try:
            body = json.loads(raw)
            answer = srv.canned if srv.canned is not None else srv.answer(self.path, body)
        except _HTTPError as e:
            self._json(e.status, {"error": {"message": str(e)}})
            return
        except (ValueError, TypeError) as e:
            self._json(400, {"error": {"message": f"bad request: {e}"}})
            return
        except Exception as e:  # scorer failure
            self._json(500, {"error": {"message": f"{type(e).__name__}: {e}"}})
            return
        if srv.garbage == "json":
            answer = {"unexpected": "shape", "id": answer["id"]}
        elif srv.garbage == "logprobs":
            answer["choices"][0]["logprobs"] = {"content": "nonsense", "top_logprobs": 7}
        srv.requests.append(body)
        self._json(200, answer)
