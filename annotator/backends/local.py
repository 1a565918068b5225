"""The ``transformers`` backend: a local model run in process with PyTorch (CPU or GPU).

``choice_probs`` reads the softmax of the logits after the last prompt token at the first token
of each choice. A choice's probability is the summed probability of the first tokens of its
spellings "yes", " yes", "Yes", " Yes" (``base.choice_variants``: a chat model answers "Yes"/"No"
right after the assistant header, a completion prompt ending in "Answer:" continues with " yes";
upper case is left out, as "YES" splits into "Y" + "ES" in many vocabularies), renormalised over
the choices. A token that starts spellings of two choices counts for neither. The whole
vocabulary is seen; when the choices carry less than ``min_choice_mass`` of the first token's
probability the answer is invalid (``{}``). It is None
only when the prompt is too long (``max_prompt_tokens``) or its batch failed. The output layer
runs in float32 whatever the model's dtype.

Shared-prefix KV cache (``prefix_cache=True``, the default; ``prefix_cache.py``). Every chat is
rendered and tokenized whole; the token lists are grouped by common prefix (lexicographic order;
a group is split where that saves recomputed tokens); each group's prefix is run once and its
keys/values kept in a small LRU (``PREFIX_CACHE_ENTRIES``), and only the suffixes run,
``batch_size`` at a time, after it.
Groups whose common prefix is shorter than ``MIN_PREFIX_TOKENS`` (and everything, with
``prefix_cache=False``) take the plain path: prompts sorted by length, left-padded, one full
forward pass per batch. At least one token of every prompt is always in the suffix. In float32 the
two paths agree to ~1e-6 in probability; in bfloat16 to bf16 noise (~1e-2).

The blocking torch work runs in a worker thread (``asyncio.to_thread``), one call at a time, so
the event loop stays responsive. The synchronous ``*_sync`` methods are public for callers
without an event loop (e.g. the OpenAI-compatible test server).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from annotator.backends.base import (
    Chat,
    LLMBackend,
    choice_token_ids,
    normalize_chat,
    renormalize,
    validate_choices,
)
from annotator.backends.prefix_cache import PrefixCache, PrefixUnsupported, last_hidden_after_prefix
from annotator.backends.prefix_groups import prefix_groups

log = logging.getLogger(__name__)

_DTYPES = ("bfloat16", "float32", "float16")


class TransformersBackend(LLMBackend):
    """Options:

    model: a model spec for ``model_store.resolve_model`` ("smollm2-135m", an HF folder, a .gguf).
    dtype: "bfloat16" (default; about 2x faster than float32 on CPU), "float32", "float16".
    device: torch device, default "cpu".
    torch_threads: if given, ``torch.set_num_threads`` (process-wide) before loading.
    batch_size: prompts per forward pass (default 32).
    max_prompt_tokens: longer prompts are answered None (default 2048).
    model_id: what labels record; default the model folder's manifest id or folder name.
    cache_dir: model cache for resolve_model.
    prefix_cache: compute the prompts' shared token prefix once and run only the suffixes
        (default True; see the module docstring). False: every prompt runs whole.
    min_choice_mass: least share of the first token's probability the choices' spellings must
        carry, else the answer is invalid ({}, counted in ``stats.invalid``; default 0.1).
    """

    #: prefixes whose keys/values are kept (LRU)
    PREFIX_CACHE_ENTRIES = 4
    #: a common prefix shorter than this is not worth caching: those prompts run whole
    MIN_PREFIX_TOKENS = 16

    def __init__(
        self,
        model: str | Path = "smollm2-135m",
        *,
        dtype: str = "bfloat16",
        device: str = "cpu",
        torch_threads: int | None = None,
        batch_size: int = 32,
        max_prompt_tokens: int = 2048,
        model_id: str | None = None,
        cache_dir: str | Path | None = None,
        prefix_cache: bool = True,
        min_choice_mass: float = 0.1,
    ) -> None:
        super().__init__()
        _check_options(min_choice_mass, dtype, batch_size, torch_threads)
        self.min_choice_mass = float(min_choice_mass)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a per-load bar in the middle of training's console

        from annotator.model_store import model_id_of, resolve_model

        if torch_threads is not None:
            torch.set_num_threads(torch_threads)
        self.model_dir = resolve_model(model, cache_dir=cache_dir)
        self.model_id = model_id or model_id_of(self.model_dir)
        self.batch_size = batch_size
        self.max_prompt_tokens = max_prompt_tokens
        self._torch = torch
        self._device = torch.device(device)
        self.cpu_threads = torch.get_num_threads() if self._device.type == "cpu" else None
        tok = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
        tok.padding_side = "left"
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        self.tokenizer = tok
        self.model = AutoModelForCausalLM.from_pretrained(
            self.model_dir, dtype=getattr(torch, dtype), local_files_only=True
        ).to(self._device)
        self.model.eval()
        self._lock = threading.Lock()
        self._closed = False
        self._choice_ids_cache: dict[tuple[str, ...], list[list[int]]] = {}
        self._head_weight: Any = None
        self._head_bias: Any = None
        self.prefix_cache = bool(prefix_cache)
        self._kv_cache = PrefixCache(
            self._device, min_tokens=self.MIN_PREFIX_TOKENS, max_entries=self.PREFIX_CACHE_ENTRIES
        )
        self._prefixes = self._kv_cache.entries
        #: how the prefix cache was used: prefixes computed from scratch, extended from a cached
        #: one, reused as cached; prompts scored after a cached prefix / run whole
        self.prefix_stats = self._kv_cache.stats
        self.prefix_stats.update(rows_cached=0, rows_whole=0)

    # ---- async interface ------------------------------------------------------------------

    async def choice_probs(
        self, chats: Sequence[Chat], choices: Sequence[str]
    ) -> list[dict[str, float] | None]:
        return await asyncio.to_thread(self.charged, self.choice_probs_sync, chats, choices)

    async def generate(
        self, chats: Sequence[Chat], *, max_tokens: int, temperature: float = 0.0
    ) -> list[str | None]:
        return await asyncio.to_thread(
            self.charged, self.generate_sync, chats, max_tokens=max_tokens, temperature=temperature
        )

    async def close(self) -> None:
        with self._lock:
            self._closed = True
            self.model = None
            self._head_weight = self._head_bias = None
            self._prefixes.clear()

    # ---- synchronous work -----------------------------------------------------------------

    def render(self, chat: Chat) -> str:
        """A chat as the prompt text the model sees (chat template + assistant header)."""
        c = normalize_chat(chat)
        if isinstance(c, str):
            return c
        return self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)

    def choice_probs_sync(
        self, chats: Sequence[Chat], choices: Sequence[str]
    ) -> list[dict[str, float] | None]:
        choices = validate_choices(choices)
        ids = self._choice_ids(choices)
        texts = [self.render(c) for c in chats]
        ids_t = [self._torch.tensor(i, dtype=self._torch.long) for i in ids]

        def score(logprobs: Any) -> list[dict[str, float] | None]:
            out: list[dict[str, float]] = []
            for row in logprobs:
                per_choice = [float(row[i].logsumexp(0)) for i in ids_t]
                result = renormalize(choices, per_choice, min_mass=self.min_choice_mass)
                if result is None:  # the model's likely answer is something else: invalid
                    self.stats.invalid += 1
                    result = {}
                out.append(result)
            return out

        return self._run_last_logprobs(texts, score)

    def top_logprobs_sync(
        self, chats: Sequence[Chat], k: int
    ) -> list[list[tuple[str, float]] | None]:
        """The k most likely first answer tokens (decoded text, log-probability) per chat."""
        texts = [self.render(c) for c in chats]
        decode = self.tokenizer.decode

        def score(logprobs: Any) -> list[list[tuple[str, float]]]:
            top = logprobs.topk(k, dim=-1)
            return [
                [(decode([int(i)]), float(v)) for v, i in zip(vals, idx, strict=True)]
                for vals, idx in zip(top.values, top.indices, strict=True)
            ]

        return self._run_last_logprobs(texts, score)

    def generate_sync(
        self, chats: Sequence[Chat], *, max_tokens: int, temperature: float = 0.0
    ) -> list[str | None]:
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        texts = [self.render(c) for c in chats]
        torch = self._torch
        tok = self.tokenizer
        results: list[str | None] = [None] * len(texts)
        order, lengths = self._sorted_by_length(texts)
        kwargs: dict[str, Any] = {"max_new_tokens": max_tokens, "pad_token_id": tok.pad_token_id}
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=1.0, top_k=0)
        else:
            kwargs.update(do_sample=False)
        self.stats.requests += len(texts)
        for batch in self._batches(order, lengths):
            try:
                with self._lock:
                    self._check_open()
                    enc = tok([texts[i] for i in batch], return_tensors="pt", padding=True,
                              add_special_tokens=False).to(self._device)  # fmt: skip
                    with torch.inference_mode():
                        out = self.model.generate(**enc, **kwargs)
                new = out[:, enc["input_ids"].shape[1] :]
                for i, row in zip(batch, new, strict=True):
                    results[i] = tok.decode(row, skip_special_tokens=True).strip()
            except RuntimeError as e:
                if self._closed:
                    raise
                log.warning("generate: a batch of %d prompts failed: %s", len(batch), e)
        self.stats.failed += sum(r is None for r in results)
        return results

    # ---- internals ------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"backend for {self.model_id} is closed")

    def _head_fp32(self, hidden: Any) -> Any:
        """Logits of the last position computed in float32: a bf16 output layer rounds logits of
        magnitude 16-32 to steps of 0.125, which moves choice probabilities by a few percent."""
        torch = self._torch
        if self._head_weight is None:
            head = self.model.get_output_embeddings()
            self._head_weight = head.weight.detach().float()
            bias = getattr(head, "bias", None)
            self._head_bias = None if bias is None else bias.detach().float()
        logits = torch.nn.functional.linear(hidden.float(), self._head_weight, self._head_bias)
        softcap = getattr(self.model.config, "final_logit_softcapping", None)
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        return logits

    def _choice_ids(self, choices: tuple[str, ...]) -> list[list[int]]:
        if choices not in self._choice_ids_cache:
            self._choice_ids_cache[choices] = choice_token_ids(self.tokenizer, choices)
        return self._choice_ids_cache[choices]

    def _sorted_by_length(self, texts: list[str]) -> tuple[list[int], list[int]]:
        if not texts:
            return [], []
        lengths = [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]
        order = sorted(range(len(texts)), key=lambda i: lengths[i])
        return order, lengths

    def _batches(self, order: list[int], lengths: list[int]) -> list[list[int]]:
        """Batches of similar length; too-long prompts are left out (their answer stays None)."""
        keep = self._keep(lengths, order)
        return [keep[s : s + self.batch_size] for s in range(0, len(keep), self.batch_size)]

    def _run_last_logprobs(self, texts: list[str], score: Any) -> list[Any]:
        """Forward passes over all prompts; ``score(logprobs[n, vocab] float32)`` -> one result
        per row. Prompts sharing a cached prefix run their suffixes only; the others run whole."""
        results: list[Any] = [None] * len(texts)
        self.stats.requests += len(texts)
        ids: list[list[int]] = (
            self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        )
        keep = self._keep([len(x) for x in ids], range(len(ids)))
        groups, whole = (
            prefix_groups(ids, keep, self.MIN_PREFIX_TOKENS) if self.prefix_cache else ([], keep)
        )

        def finish(batch: list[int], logprobs: Any) -> None:
            for i, r in zip(batch, score(logprobs), strict=True):
                results[i] = None if r is not None and _has_nan(r) else r

        for n, (rows, prefix) in enumerate(groups):
            if left := self._score_rows(rows, ids, finish, prefix):  # the cache is unsupported
                whole = whole + left + [i for r, _ in groups[n + 1 :] for i in r]
                break
        self._score_rows(whole, ids, finish, None)
        self.stats.failed += sum(r is None for r in results)
        return results

    def _score_rows(
        self, rows: list[int], ids: list[list[int]], finish: Any, prefix: tuple[int, ...] | None
    ) -> list[int]:
        """Score the prompts ``rows`` (indices into ``ids``), shortest first, ``batch_size`` at a
        time: after the cached ``prefix``, or whole when it is None; ``finish(batch, logprobs)``
        takes each batch's results. A batch that fails is logged and its answers stay None.
        Returns the rows left unscored because the model's cache turned out not to support
        prefixes (the prefix cache is then switched off); [] otherwise."""
        rows = sorted(rows, key=lambda i: len(ids[i]))
        for s in range(0, len(rows), self.batch_size):
            batch = rows[s : s + self.batch_size]
            try:
                with self._lock:
                    self._check_open()
                    if prefix is None:
                        logprobs = self._last_logprobs_whole([ids[i] for i in batch])
                    else:
                        kv, m = self._kv_cache.kv(self.model, prefix, len(rows))
                        logprobs = self._last_logprobs_after_prefix(kv, m, [ids[i] for i in batch])
                    self.prefix_stats["rows_whole" if prefix is None else "rows_cached"] += len(
                        batch
                    )
                finish(batch, logprobs)
            except PrefixUnsupported as e:
                log.warning("prefix cache disabled: %s", e)
                with self._lock:
                    self.prefix_cache = False
                    self._prefixes.clear()
                return rows[s:]
            except RuntimeError as e:
                if self._closed:
                    raise
                log.warning("forward pass over %d prompts failed: %s", len(batch), e)
        return []

    def _keep(self, lengths: list[int], indices: Any) -> list[int]:
        """The indices of prompts to run; too-long prompts are left out (their answer stays None)."""
        keep = []
        for i in indices:
            if lengths[i] > self.max_prompt_tokens:
                log.warning(
                    "prompt of %d tokens exceeds max_prompt_tokens=%d; answered None",
                    lengths[i],
                    self.max_prompt_tokens,
                )
            elif lengths[i] > 0:
                keep.append(i)
        return keep

    def _last_logprobs_whole(self, rows: list[list[int]]) -> Any:
        """Plain path: the prompts left-padded, one forward pass, fp32 log-softmax of the last
        position."""
        torch = self._torch
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, r in enumerate(rows):
            input_ids[j, width - len(r) :] = torch.tensor(r, dtype=torch.long)
            mask[j, width - len(r) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            hidden = self.model.base_model(
                input_ids=input_ids.to(self._device),
                attention_mask=mask.to(self._device),
                position_ids=positions.to(self._device),
                use_cache=False,
            ).last_hidden_state[:, -1, :]
            return self._head_fp32(hidden).log_softmax(-1).cpu()

    def _last_logprobs_after_prefix(
        self, kv: list[tuple[Any, Any]], m: int, rows: list[list[int]]
    ) -> Any:
        """Cached path: every row starts with the m tokens whose keys/values ``kv`` holds; fp32
        log-softmax after each row's last real token (``prefix_cache.last_hidden_after_prefix``)."""
        with self._torch.inference_mode():
            hidden = last_hidden_after_prefix(
                self.model, self._device, self.tokenizer.pad_token_id, kv, m, rows
            )
            return self._head_fp32(hidden).log_softmax(-1).cpu()


def _check_options(
    min_choice_mass: float, dtype: str, batch_size: int, torch_threads: int | None
) -> None:
    """Raises ValueError naming the first option outside what is allowed."""
    if not 0.0 <= min_choice_mass < 1.0:
        raise ValueError(f"min_choice_mass must be in [0, 1), got {min_choice_mass!r}")
    if dtype not in _DTYPES:
        raise ValueError(f"dtype {dtype!r} is not supported; allowed: {', '.join(_DTYPES)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if torch_threads is not None and torch_threads < 1:
        raise ValueError(f"torch_threads must be >= 1, got {torch_threads}")


def _has_nan(result: Any) -> bool:
    if isinstance(result, dict):
        return any(math.isnan(v) for v in result.values())
    return False
