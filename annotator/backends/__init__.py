"""LLM backends: one interface (``LLMBackend``), three transports.

==============  ============================================  ===================================
kind            runs                                          module
==============  ============================================  ===================================
transformers    a local model in process (PyTorch)            ``annotator.backends.local``
vllm            an in-process vLLM engine (GPU or CPU build)  ``annotator.backends.vllm_engine``
openai          any OpenAI-compatible server (``vllm serve``) ``annotator.backends.openai_compat``
rules           regex rules from a YAML, no model (a control) ``annotator.backends.rules``
auto            vllm if ``import vllm`` works and its engine starts, else transformers
==============  ============================================  ===================================

Nothing heavy (torch, transformers, vllm, httpx) is imported until a backend is made.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from annotator.backends.base import BackendStats, BackendUnavailable, Chat, LLMBackend

__all__ = [
    "BACKEND_KINDS",
    "BackendStats",
    "BackendUnavailable",
    "Chat",
    "LLMBackend",
    "backend_options",
    "make_backend",
]

log = logging.getLogger(__name__)

BACKEND_KINDS = ("auto", "transformers", "vllm", "openai", "rules")


def _backend_class(kind: str) -> type[LLMBackend]:
    if kind == "transformers":
        from annotator.backends.local import TransformersBackend

        return TransformersBackend
    if kind == "vllm":
        from annotator.backends.vllm_engine import VLLMBackend

        return VLLMBackend
    if kind == "openai":
        from annotator.backends.openai_compat import OpenAIBackend

        return OpenAIBackend
    if kind == "rules":
        from annotator.backends.rules import RulesBackend

        return RulesBackend
    raise ValueError(f"unknown LLM backend kind {kind!r}; allowed: {', '.join(BACKEND_KINDS)}")


def backend_options(kind: str) -> tuple[str, ...]:
    """The option names ``make_backend(kind, **options)`` accepts."""
    if kind == "auto":
        names = set(backend_options("vllm")) | set(backend_options("transformers"))
        return tuple(sorted(names))
    params = inspect.signature(_backend_class(kind).__init__).parameters
    return tuple(name for name in params if name != "self")


def make_backend(kind: str, **options: Any) -> LLMBackend:
    """A backend of the given kind. Unknown kinds and options are a ValueError naming them and
    the allowed ones. ``auto`` takes the options of both local kinds and gives each the ones it
    accepts; it falls back to transformers (logging why) when vLLM is missing or does not start."""
    if kind not in BACKEND_KINDS:
        raise ValueError(f"unknown LLM backend kind {kind!r}; allowed: {', '.join(BACKEND_KINDS)}")
    allowed = backend_options(kind)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for the {kind!r} LLM backend; "
            f"allowed: {', '.join(allowed)}"
        )
    if kind != "auto":
        return _backend_class(kind)(**options)
    vllm_opts = {k: v for k, v in options.items() if k in backend_options("vllm")}
    try:
        import vllm  # noqa: F401
    except Exception as e:  # ImportError, or a broken install (e.g. CUDA torchvision on CPU)
        log.info("LLM backend auto: vllm not importable (%s); using transformers", e)
    else:
        try:
            return _backend_class("vllm")(**vllm_opts)
        except ValueError:
            raise  # a bad option value is the caller's mistake, not a reason to fall back
        except Exception as e:
            log.warning(
                "LLM backend auto: the vLLM engine did not start (%s); using transformers", e
            )
    tf_opts = {k: v for k, v in options.items() if k in backend_options("transformers")}
    return _backend_class("transformers")(**tf_opts)
