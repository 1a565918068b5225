"""The OpenAI-compatible wire format, as the ``openai`` backend reads it: base URLs, model lists,
answers, the served model, and the first answer token's log-probabilities in every shape real
servers send. Pure functions over parsed JSON; the transport is ``openai_compat.py``'s.

First-token shapes read by ``first_token_logprobs`` (``choices[0].logprobs`` unless noted):

- OpenAI chat (also vLLM, llama.cpp's ``llama-server``, llama-cpp-python >= 0.2.7x, Ollama):
  ``{"content": [{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob", ...}]}]}``;
  llama.cpp adds ``id``; a missing ``token`` is decoded from ``bytes``.
- legacy completions (``/v1/completions`` of OpenAI, vLLM, llama.cpp, llama-cpp-python; also the
  chat answers of older llama-cpp-python): ``{"tokens": [...], "token_logprobs": [...],
  "top_logprobs": [{token: logprob}, ...]}``, on either endpoint.
- llama.cpp's native ``completion_probabilities`` (in the choice or at the top level, text in
  ``content``): ``[{"token", "logprob", "top_logprobs": [...]}]``, with ``post_sampling_probs``
  ``[{"token", "prob", "top_probs": [{"token", "prob"}]}]`` (probabilities, not logs), and the
  pre-2025 ``[{"content", "probs": [{"tok_str", "prob"}]}]``.

Entries whose value is not a finite number (NaN, inf, null, a string) are skipped. Token texts
lose sentencepiece / GPT-2 BPE word markers (``▁``, ``Ġ`` become a space; ``Ċ`` a newline).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from annotator.backends.base import match_choice

ENDPOINTS = ("chat", "completions")  # /v1/chat/completions, /v1/completions


class InvalidAnswer(Exception):
    """The server answered, but not with something usable (not retried)."""


def normalize_base_url(base_url: Any) -> str:
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
    """The served model names in a GET /v1/models answer; ValueError when it has none."""
    try:
        names = [str(m["id"]) for m in data["data"]]
    except (KeyError, TypeError) as e:
        raise ValueError(f"GET /v1/models answered without a model list: {data!r:.200}") from e
    if not names:
        raise ValueError("GET /v1/models lists no model")
    return names


def _stem(name: str) -> str:
    base = name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return base[: -len(".gguf")] if base.lower().endswith(".gguf") else base


def _is_file_path(name: str) -> bool:
    return "/" in name or "\\" in name or name.lower().endswith(".gguf")


def pick_listed_model(wanted: str | None, names: Sequence[str]) -> str | None:
    """Which listed model serves `wanted` (the configured name; None = the first listed).

    An exact match wins; else a listed file path whose file name (without ``.gguf``) equals the
    configured name's; else, when the server lists exactly one model and it is a file path
    (llama.cpp's ``llama-server`` lists the ``.gguf`` path it loaded and answers whatever name a
    request gives), that one. None when nothing fits (several models, or one named model that is
    not the configured one: vLLM would answer 404)."""
    if not names:
        return None
    if wanted is None or wanted in names:
        return wanted or names[0]
    stem = _stem(wanted)
    by_stem = [n for n in names if _is_file_path(n) and _stem(n) == stem]
    if len(by_stem) == 1:
        return by_stem[0]
    if len(names) == 1 and _is_file_path(names[0]):
        return names[0]
    return None


def first_choice(data: Any) -> Any:
    """The first of an answer's choices; InvalidAnswer when it has none."""
    try:
        return data["choices"][0]
    except (KeyError, IndexError, TypeError) as e:
        raise InvalidAnswer(f"answer has no choices: {data!r:.200}") from e


def served_model(data: Any) -> str | None:
    """The answer's ``model`` field (the model the server says answered), or None."""
    name = data.get("model") if isinstance(data, Mapping) else None
    return name if isinstance(name, str) and name.strip() else None


def answer_text(data: Any) -> str | None:
    """The generated text of a chat, completions or llama.cpp-native answer (None if absent)."""
    if isinstance(data, Mapping) and "choices" not in data and "content" in data:
        text = data.get("content")  # llama.cpp's native /completion
    else:
        choice = first_choice(data)
        if not isinstance(choice, Mapping):
            raise InvalidAnswer(f"answer's choice is not an object: {choice!r:.100}")
        message = choice.get("message")
        text = message.get("content") if isinstance(message, Mapping) else choice.get("text")
    return text if isinstance(text, str) else None


_MARKERS = str.maketrans({"\u2581": " ", "\u0120": " ", "\u010a": "\n"})


def clean_token(token: str) -> str:
    """A token's text with sentencepiece / byte-level BPE markers turned back into whitespace."""
    return token.translate(_MARKERS)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _token_text(item: Mapping[str, Any]) -> str | None:
    for key in ("token", "tok_str", "content"):
        if isinstance(item.get(key), str):
            return item[key]
    raw = item.get("bytes")
    if isinstance(raw, list) and raw and all(isinstance(b, int) and 0 <= b < 256 for b in raw):
        return bytes(raw).decode("utf-8", errors="replace")
    return None


def _entry_logprob(item: Mapping[str, Any]) -> float | None:
    if "logprob" in item:
        return _number(item["logprob"])
    p = _number(item.get("prob"))
    return math.log(p) if p is not None and 0.0 < p <= 1.0 else None


def _pairs(items: Any) -> list[tuple[str, float]]:
    """(token, logprob) pairs of a top list ([{token, logprob|prob}]) or map ({token: logprob});
    unreadable or non-finite entries are skipped."""
    out: list[tuple[str, float]] = []
    if isinstance(items, Mapping):
        for token, lp in items.items():
            value = _number(lp)
            if isinstance(token, str) and value is not None:
                out.append((clean_token(token), value))
        return out
    if not isinstance(items, list):
        raise InvalidAnswer(f"top tokens are neither a list nor a map: {items!r:.100}")
    for item in items:
        if not isinstance(item, Mapping):
            continue
        token, value = _token_text(item), _entry_logprob(item)
        if token is not None and value is not None:
            out.append((clean_token(token), value))
    return out


def _from_entry(entry: Any) -> list[tuple[str, float]]:
    """The top list of one per-token entry (chat ``content[0]``, llama.cpp native), falling back
    to the sampled token itself when the server sent no alternatives."""
    if not isinstance(entry, Mapping):
        raise InvalidAnswer(f"first-token entry is not an object: {entry!r:.100}")
    top: list[tuple[str, float]] = []
    for key in ("top_logprobs", "top_probs", "probs"):
        if entry.get(key) is not None:
            top = _pairs(entry[key])
            break
    return top or _pairs([entry])


def _from_legacy(logprobs: Mapping[str, Any]) -> list[tuple[str, float]]:
    tops = logprobs.get("top_logprobs")
    if isinstance(tops, list) and tops and tops[0] is not None:
        top = _pairs(tops[0])
        if top:
            return top
    tokens, values = logprobs.get("tokens"), logprobs.get("token_logprobs")
    if isinstance(tokens, list) and isinstance(values, list) and tokens and values:
        return _pairs({tokens[0]: values[0]}) if isinstance(tokens[0], str) else []
    raise InvalidAnswer(f"legacy logprobs without a first token: {logprobs!r:.200}")


def first_token_logprobs(data: Any) -> list[tuple[str, float]] | None:
    """The first generated token's top-k ``(token text, logprob)`` (natural log), from any shape
    in the module docstring, on either endpoint. None when the answer carries no logprobs at all
    (``"logprobs": null`` or absent: the server does not give them). InvalidAnswer when they are
    there but unreadable. An empty list: readable, but no entry had a finite number."""
    if isinstance(data, Mapping) and "choices" not in data and "content" in data:
        holder: Any = data  # llama.cpp's native /completion answer
    else:
        holder = first_choice(data)
    if not isinstance(holder, Mapping):
        raise InvalidAnswer(f"answer's choice is not an object: {holder!r:.100}")
    logprobs = holder.get("logprobs")
    if logprobs is None:
        logprobs = holder.get("completion_probabilities")
        if logprobs is None and holder is not data and isinstance(data, Mapping):
            logprobs = data.get("completion_probabilities")
    if logprobs is None:
        return None
    try:
        if isinstance(logprobs, list):  # llama.cpp native
            if not logprobs:
                raise InvalidAnswer("completion_probabilities is empty")
            return _from_entry(logprobs[0])
        if not isinstance(logprobs, Mapping):
            raise InvalidAnswer(f"logprobs is not an object: {logprobs!r:.100}")
        if "content" in logprobs:
            content = logprobs["content"]
            if content is None:
                return None  # e.g. {"content": null, "refusal": null}: nothing was given
            if not isinstance(content, list) or not content:
                raise InvalidAnswer(f"logprobs.content is not a token list: {content!r:.100}")
            return _from_entry(content[0])
        if "top_logprobs" in logprobs or "tokens" in logprobs:
            return _from_legacy(logprobs)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
        raise InvalidAnswer(f"unreadable logprobs ({type(e).__name__}: {e})") from e
    raise InvalidAnswer(f"logprobs in an unknown shape: {logprobs!r:.200}")


_EDGE_PUNCT = ".,;:!?\"'`*()[]{}<>"


def text_choice(text: str | None, choices: Sequence[str]) -> int | None:
    """Which choice an answer's text gives: its first word, stripped of surrounding punctuation
    and case-folded, equal to a choice or a prefix of exactly one ("Yes." and "y" give "yes")."""
    if not isinstance(text, str):
        return None
    words = clean_token(text).split()
    if not words:
        return None
    word = words[0].strip(_EDGE_PUNCT)
    return match_choice(word, choices, allow_prefix=True) if word else None
