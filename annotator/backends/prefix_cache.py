"""The transformers backend's shared-prefix KV cache: keys/values of prompt prefixes computed once
at batch size 1, kept in a small LRU, and the prompts' suffixes run after them.

The annotator's prompts are a long system message (~300 tokens, the same for every prompt of one
kind/style/goal) followed by a short user message with the caption (~20 tokens). The backend
groups the tokenized prompts by common prefix (``prefix_groups.py``); each group's prefix is run
here once and its keys/values kept in an LRU keyed by the prefix's token ids. Then only the
suffixes run, right-padded, on a fresh ``DynamicCache`` built from the cached tensors expanded to
the batch (the cached tensors are never modified), with position ids continuing after the
prefix; each row's answer is read after its last real token. A cached prefix serves any prompt
that shares part of it (keys/values of the first m tokens depend only on those m tokens), so
prompts whose shared part ends inside a caption ("<message>You ...") still reuse the entry.

Imports torch and transformers only when called (``import annotator.backends`` stays light).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from annotator.backends.prefix_groups import common_prefix_length

KV = list[tuple[Any, Any]]
"""Per layer, the (keys, values) tensors, each [batch, heads, tokens, head_dim]."""


class PrefixUnsupported(RuntimeError):
    """The model's cache is not a plain per-layer key/value cache (e.g. sliding-window layers)."""


class PrefixCache:
    """An LRU of prefix keys/values (``entries``: token ids -> KV at batch 1) with counters
    (``stats``: "computed", "extended", "reused"; callers may add their own keys).

    ``min_tokens``: a shared start shorter than this is not reused, and missing tokens fewer than
    this are not worth extending an entry for. ``max_entries``: entries kept."""

    def __init__(self, device: Any, *, min_tokens: int, max_entries: int) -> None:
        self.device = device
        self.min_tokens = min_tokens
        self.max_entries = max_entries
        self.entries: OrderedDict[tuple[int, ...], KV] = OrderedDict()
        self.stats = {"computed": 0, "extended": 0, "reused": 0}

    def kv(self, model: Any, prefix: tuple[int, ...], n_rows: int) -> tuple[KV, int]:
        """Keys/values (per layer, batch 1) covering at least the first m tokens of ``prefix``,
        and m. The cached entry sharing most of ``prefix`` is reused as is, or extended when the
        missing tokens are worth it; with no entry sharing ``min_tokens``, the prefix is
        computed from scratch. New prefixes enter the LRU (an extension replaces the entry it
        extends when that entry lies wholly inside it).

        Missing tokens are worth extending when there are at least ``min_tokens`` of them and
        either several rows share them or they are a quarter of the prefix or more (another
        goal's or kind's system message). A single prompt of an already cached family misses only
        its caption and the chat footer: those run in its suffix and no entry is added, so a
        stream of single prompts does not push the other families out of the LRU.
        Raises PrefixUnsupported for a model whose cache is not plain keys/values per layer."""
        best, m = None, 0
        for key in self.entries:
            n = common_prefix_length(key, prefix)
            if n > m:
                best, m = key, n
        if best is not None and m >= self.min_tokens:
            self.entries.move_to_end(best)
            base = self.entries[best]
            gap = len(prefix) - m
            if gap < self.min_tokens or (n_rows == 1 and 4 * gap < len(prefix)):
                self.stats["reused"] += 1
                return base, m
            kv = self._run(model, [(k[:, :, :m], v[:, :, :m]) for k, v in base], prefix[m:], m)
            self.stats["extended"] += 1
            if m == len(best):
                del self.entries[best]
        else:
            kv = self._run(model, None, prefix, 0)
            self.stats["computed"] += 1
        self.entries[prefix] = kv
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)
        return kv, len(prefix)

    def _run(self, model: Any, base: KV | None, tokens: tuple[int, ...], start: int) -> KV:
        """Run ``tokens`` (batch 1) after ``start`` tokens whose keys/values ``base`` holds; the
        per-layer keys/values of all start + len(tokens) tokens."""
        import torch
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        if base is None:
            cache = DynamicCache(config=model.config)
        else:
            cache = DynamicCache(ddp_cache_data=base)
        total = start + len(tokens)
        with torch.inference_mode():
            model.base_model(
                input_ids=torch.tensor([tokens], dtype=torch.long, device=self.device),
                attention_mask=torch.ones((1, total), dtype=torch.long, device=self.device),
                position_ids=torch.arange(start, total, device=self.device).unsqueeze(0),
                past_key_values=cache,
                use_cache=True,
            )
        layers = getattr(cache, "layers", None)
        if not layers or any(
            type(layer) is not DynamicLayer or layer.keys is None or layer.keys.shape[-2] != total
            for layer in layers
        ):
            raise PrefixUnsupported(
                f"{type(model).__name__}'s cache is not a plain key/value cache per layer"
            )
        return [(layer.keys, layer.values) for layer in layers]


def last_hidden_after_prefix(
    model: Any, device: Any, pad_token_id: int, kv: KV, m: int, rows: list[list[int]]
) -> Any:
    """The last hidden state [n, hidden] after each row's last real token. Every row starts with
    the m tokens whose keys/values ``kv`` holds (batch 1, possibly longer than m); the suffixes
    run right-padded on a fresh cache of the prefix expanded to the batch. Call it under
    ``torch.inference_mode()``."""
    import torch
    from transformers import DynamicCache

    n = len(rows)
    lengths = [len(r) - m for r in rows]
    width = max(lengths)
    input_ids = torch.full((n, width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((n, m + width), dtype=torch.long)
    mask[:, :m] = 1
    for j, r in enumerate(rows):
        input_ids[j, : lengths[j]] = torch.tensor(r[m:], dtype=torch.long)
        mask[j, m : m + lengths[j]] = 1
    positions = (m + torch.arange(width, dtype=torch.long)).expand(n, -1)
    # DynamicLayer.update concatenates, so the cache gets its own copies: kv stays untouched
    cache = DynamicCache(
        ddp_cache_data=[
            (k[:, :, :m].expand(n, -1, -1, -1), v[:, :, :m].expand(n, -1, -1, -1)) for k, v in kv
        ]
    )
    last = torch.tensor(lengths, dtype=torch.long) - 1
    out = model.base_model(
        input_ids=input_ids.to(device),
        attention_mask=mask.to(device),
        position_ids=positions.to(device),
        past_key_values=cache,
        use_cache=True,
    ).last_hidden_state
    return out[torch.arange(n, device=out.device), last.to(out.device)]
