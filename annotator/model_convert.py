"""Converting a GGUF model into an HF safetensors folder that transformers and vLLM load
(dequantised to bf16; ``shared/design/llm-on-cpu.md`` section 2.2), with its manifest. Needs
``transformers``, ``gguf`` and ``accelerate``, imported only when converting."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from annotator.model_cache import MANIFEST, ModelStoreError


def convert_gguf(gguf_path: Path, out: Path) -> None:
    """GGUF -> HF safetensors folder (bf16), as in llm-on-cpu.md 2.2."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
    except ImportError as e:
        raise ModelStoreError(
            f"converting a GGUF model needs transformers, gguf and accelerate ({e}); "
            "pip install transformers gguf accelerate"
        ) from e
    src, name = str(gguf_path.parent), gguf_path.name
    try:
        tok = AutoTokenizer.from_pretrained(src, gguf_file=name, local_files_only=True)
        quantized = AutoModelForCausalLM.from_pretrained(
            src,
            gguf_file=name,
            dtype=torch.bfloat16,
            quantization_config=GgufConfig(dequantize=True),
            local_files_only=True,
        )
        cfg = quantized.config
        # Some transformers versions keep the GGUF quantization config on the (already
        # dequantised) model, and save_pretrained refuses it: rebuild a plain model.
        if getattr(cfg, "quantization_config", None) is not None:
            with contextlib.suppress(AttributeError):
                del cfg.quantization_config
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
        result = model.load_state_dict(quantized.state_dict(), strict=False)
        missing = [k for k in result.missing_keys if "lm_head" not in k]
        if missing or result.unexpected_keys:
            raise ModelStoreError(
                f"converting {gguf_path}: weights do not match the architecture "
                f"(missing {missing[:5]}, unexpected {result.unexpected_keys[:5]})"
            )
        model.tie_weights()
        del quantized
        model.save_pretrained(out)
        tok.save_pretrained(out)
    except ModelStoreError:
        raise
    except OSError as e:
        raise ModelStoreError(f"converting {gguf_path} into {out} failed: {e} (disk full?)") from e
    except Exception as e:
        raise ModelStoreError(
            f"transformers could not convert {gguf_path}: {type(e).__name__}: {e}; is it a GGUF "
            "of an architecture transformers supports (llama, mistral, qwen2, ...)?"
        ) from e


def write_manifest(out: Path, **fields: str) -> None:
    import importlib.metadata as md

    info = dict(fields)
    for pkg in ("transformers", "gguf", "torch"):
        with contextlib.suppress(md.PackageNotFoundError):
            info[f"{pkg}_version"] = md.version(pkg)
    (out / MANIFEST).write_text(json.dumps(info, indent=2) + "\n")
