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

Shared-prefix KV cache (``prefix_cache=True``, the default). The annotator's prompts are a long
system message (~300 tokens, the same for every prompt of one kind/style/goal) followed by a short
user message with the caption (~20 tokens). Every chat is rendered and tokenized whole; the token
lists are grouped by common prefix (lexicographic order; a group is split where that saves
recomputed tokens); each group's prefix is run once at batch size 1 and its keys/values kept in a
small LRU (``PREFIX_CACHE_ENTRIES``, keyed by the prefix's token ids). Then only the suffixes run,
right-padded, ``batch_size`` at a time, on a fresh ``DynamicCache`` built from the cached tensors
expanded to the batch (the cached tensors are never modified), with position ids continuing after
the prefix; each row's answer is read after its last real token. A cached prefix serves any prompt
that shares part of it (keys/values of the first m tokens depend only on those m tokens), so
prompts whose shared part ends inside a caption ("<message>You ...") still reuse the entry.
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
from collections import OrderedDict
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
from annotator.backends.prefix_groups import common_prefix_length, prefix_groups

log = logging.getLogger(__name__)

_DTYPES = ("bfloat16", "float32", "float16")


class _PrefixUnsupported(RuntimeError):
    """The model's cache is not a plain per-layer key/value cache (e.g. sliding-window layers)."""


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
        if not 0.0 <= min_choice_mass < 1.0:
            raise ValueError(f"min_choice_mass must be in [0, 1), got {min_choice_mass!r}")
        self.min_choice_mass = float(min_choice_mass)
        if dtype not in _DTYPES:
            raise ValueError(f"dtype {dtype!r} is not supported; allowed: {', '.join(_DTYPES)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if torch_threads is not None and torch_threads < 1:
            raise ValueError(f"torch_threads must be >= 1, got {torch_threads}")
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
        self._prefixes: OrderedDict[tuple[int, ...], list[tuple[Any, Any]]] = OrderedDict()
        #: how the prefix cache was used: prefixes computed from scratch, extended from a cached
        #: one, reused as cached; prompts scored after a cached prefix / run whole
        self.prefix_stats = {
            "computed": 0,
            "extended": 0,
            "reused": 0,
            "rows_cached": 0,
            "rows_whole": 0,
        }

    # ---- async interface ------------------------------------------------------------------

    async def choice_probs(
        self, chats: Sequence[Chat], choices: Sequence[str]
    ) -> list[dict[str, float] | None]:
        return await asyncio.to_thread(self.choice_probs_sync, chats, choices)

    async def generate(
        self, chats: Sequence[Chat], *, max_tokens: int, temperature: float = 0.0
    ) -> list[str | None]:
        return await asyncio.to_thread(
            self.generate_sync, chats, max_tokens=max_tokens, temperature=temperature
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

        pending = list(groups)
        while pending:
            rows, prefix = pending.pop(0)
            rows = sorted(rows, key=lambda i: len(ids[i]))
            for s in range(0, len(rows), self.batch_size):
                batch = rows[s : s + self.batch_size]
                try:
                    with self._lock:
                        self._check_open()
                        kv, m = self._prefix_kv(prefix, len(rows))
                        logprobs = self._last_logprobs_after_prefix(kv, m, [ids[i] for i in batch])
                        self.prefix_stats["rows_cached"] += len(batch)
                    finish(batch, logprobs)
                except _PrefixUnsupported as e:
                    log.warning("prefix cache disabled: %s", e)
                    with self._lock:
                        self.prefix_cache = False
                        self._prefixes.clear()
                    whole = whole + rows[s:] + [i for r, _ in pending for i in r]
                    pending = []
                    break
                except RuntimeError as e:
                    if self._closed:
                        raise
                    log.warning("forward pass over %d prompts failed: %s", len(batch), e)

        whole = sorted(whole, key=lambda i: len(ids[i]))
        for s in range(0, len(whole), self.batch_size):
            batch = whole[s : s + self.batch_size]
            try:
                with self._lock:
                    self._check_open()
                    logprobs = self._last_logprobs_whole([ids[i] for i in batch])
                    self.prefix_stats["rows_whole"] += len(batch)
                finish(batch, logprobs)
            except RuntimeError as e:
                if self._closed:
                    raise
                log.warning("forward pass over %d prompts failed: %s", len(batch), e)
        failed = sum(r is None for r in results)
        self.stats.failed += failed
        return results

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
        """Cached path: every row starts with the m tokens whose keys/values ``kv`` holds (batch
        1, possibly longer than m); the suffixes run right-padded on a fresh cache of the prefix
        expanded to the batch, and each row is read after its last real token."""
        from transformers import DynamicCache

        torch = self._torch
        n = len(rows)
        lengths = [len(r) - m for r in rows]
        width = max(lengths)
        input_ids = torch.full((n, width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((n, m + width), dtype=torch.long)
        mask[:, :m] = 1
        for j, r in enumerate(rows):
            input_ids[j, : lengths[j]] = torch.tensor(r[m:], dtype=torch.long)
            mask[j, m : m + lengths[j]] = 1
        positions = (m + torch.arange(width, dtype=torch.long)).expand(n, -1)
        # DynamicLayer.update concatenates, so the cache gets its own copies: kv stays untouched
        cache = DynamicCache(
            ddp_cache_data=[
                (k[:, :, :m].expand(n, -1, -1, -1), v[:, :, :m].expand(n, -1, -1, -1))
                for k, v in kv
            ]
        )
        last = torch.tensor(lengths, dtype=torch.long) - 1
        with torch.inference_mode():
            out = self.model.base_model(
                input_ids=input_ids.to(self._device),
                attention_mask=mask.to(self._device),
                position_ids=positions.to(self._device),
                past_key_values=cache,
                use_cache=True,
            ).last_hidden_state
            hidden = out[torch.arange(n, device=out.device), last.to(out.device)]
            return self._head_fp32(hidden).log_softmax(-1).cpu()

    def _prefix_kv(self, prefix: tuple[int, ...], n_rows: int) -> tuple[list[tuple[Any, Any]], int]:
        """Keys/values (per layer, batch 1) covering at least the first m tokens of ``prefix``,
        and m. The cached entry sharing most of ``prefix`` is reused as is, or extended when the
        missing tokens are worth it; with no entry sharing MIN_PREFIX_TOKENS, the prefix is
        computed from scratch. New prefixes enter the LRU (an extension replaces the entry it
        extends when that entry lies wholly inside it).

        Missing tokens are worth extending when there are at least MIN_PREFIX_TOKENS of them and
        either several rows share them or they are a quarter of the prefix or more (another
        goal's or kind's system message). A single prompt of an already cached family misses only
        its caption and the chat footer: those run in its suffix and no entry is added, so a
        stream of single prompts does not push the other families out of the LRU."""
        best, m = None, 0
        for key in self._prefixes:
            n = common_prefix_length(key, prefix)
            if n > m:
                best, m = key, n
        if best is not None and m >= self.MIN_PREFIX_TOKENS:
            self._prefixes.move_to_end(best)
            base = self._prefixes[best]
            gap = len(prefix) - m
            if gap < self.MIN_PREFIX_TOKENS or (n_rows == 1 and 4 * gap < len(prefix)):
                self.prefix_stats["reused"] += 1
                return base, m
            kv = self._run_prefix([(k[:, :, :m], v[:, :, :m]) for k, v in base], prefix[m:], m)
            self.prefix_stats["extended"] += 1
            if m == len(best):
                del self._prefixes[best]
        else:
            kv = self._run_prefix(None, prefix, 0)
            self.prefix_stats["computed"] += 1
        self._prefixes[prefix] = kv
        while len(self._prefixes) > self.PREFIX_CACHE_ENTRIES:
            self._prefixes.popitem(last=False)
        return kv, len(prefix)

    def _run_prefix(
        self, base: list[tuple[Any, Any]] | None, tokens: tuple[int, ...], start: int
    ) -> list[tuple[Any, Any]]:
        """Run ``tokens`` (batch 1) after ``start`` tokens whose keys/values ``base`` holds; the
        per-layer keys/values of all start + len(tokens) tokens."""
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        torch = self._torch
        if base is None:
            cache = DynamicCache(config=self.model.config)
        else:
            cache = DynamicCache(ddp_cache_data=base)
        total = start + len(tokens)
        with torch.inference_mode():
            self.model.base_model(
                input_ids=torch.tensor([tokens], dtype=torch.long, device=self._device),
                attention_mask=torch.ones((1, total), dtype=torch.long, device=self._device),
                position_ids=torch.arange(start, total, device=self._device).unsqueeze(0),
                past_key_values=cache,
                use_cache=True,
            )
        layers = getattr(cache, "layers", None)
        if not layers or any(
            type(layer) is not DynamicLayer or layer.keys is None or layer.keys.shape[-2] != total
            for layer in layers
        ):
            raise _PrefixUnsupported(
                f"{type(self.model).__name__}'s cache is not a plain key/value cache per layer"
            )
        return [(layer.keys, layer.values) for layer in layers]


def _has_nan(result: Any) -> bool:
    if isinstance(result, dict):
        return any(math.isnan(v) for v in result.values())
    return False
