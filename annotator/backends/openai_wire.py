"""The OpenAI-compatible wire format, as the ``openai`` backend reads it: base URLs, model lists,
answers and their first-token log-probabilities. Pure functions over parsed JSON; the transport
(timeouts, retries, concurrency) is ``openai_compat.py``'s."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit


class InvalidAnswer(Exception):
    """The server answered, but not with something usable (not retried)."""


def normalise_base_url(base_url: Any) -> str:
    """`base_url` as scheme://host[:port]/.../v1; ValueError naming what is wrong with it."""
    example = "e.g. http://127.0.0.1:8000/v1"
    if not isinstance(base_url, str) or not base_url.strip():
        raise ValueError(f"base_url {base_url!r} is not a URL; {example}")
    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"base_url {base_url!r} is not an http(s) URL with a host; {example}")
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as e:
        raise ValueError(f"base_url {base_url!r} has an invalid port; {example}") from e
    if parts.query or parts.fragment:
        raise ValueError(f"base_url {base_url!r} must not have a query or fragment; {example}")
    path = parts.path.rstrip("/")
    if not path.endswith("/v1"):
        path += "/v1"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def model_names(data: Any) -> list[str]:
    """The served model names in a GET /v1/models answer."""
    try:
        names = [str(m["id"]) for m in data["data"]]
    except (KeyError, TypeError) as e:
        raise ValueError(f"GET /v1/models answered without a model list: {data!r:.200}") from e
    if not names:
        raise ValueError("GET /v1/models lists no model")
    return names


def first_choice(data: Any) -> Any:
    """The first of an answer's choices; InvalidAnswer when it has none."""
    try:
        return data["choices"][0]
    except (KeyError, IndexError, TypeError) as e:
        raise InvalidAnswer(f"answer has no choices: {data!r:.200}") from e


def first_token_logprobs(data: Any, endpoint: str) -> tuple[list[tuple[str, float]], str | None]:
    """The first generated token's top-k (token text, logprob), and the generated text, from a
    chat (`endpoint="chat"`) or completions answer."""
    try:
        choice = first_choice(data)
        logprobs = choice["logprobs"]
        if endpoint == "chat":
            first = logprobs["content"][0]
            top = [(str(t["token"]), float(t["logprob"])) for t in first["top_logprobs"]]
            if not top:
                top = [(str(first["token"]), float(first["logprob"]))]
            text = choice.get("message", {}).get("content")
        else:
            top_map = logprobs["top_logprobs"][0]
            top = [(str(t), float(lp)) for t, lp in top_map.items()]
            text = choice.get("text")
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
        raise InvalidAnswer(
            f"no first-token logprobs in the answer ({type(e).__name__}: {e})"
        ) from e
    return top, text if isinstance(text, str) else None
