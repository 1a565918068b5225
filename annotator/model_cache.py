"""The model cache's folder mechanics: where it is, locks, work folders, atomic publication.

A model folder only ever appears by an atomic rename of a finished temporary folder
(``publish``), so an interrupted run leaves nothing half-written behind; concurrent processes
serialise on a lock file per model (``lock``). A conversion works in ``.work-<model>``
(``work_dir``); a kill leaves that folder behind, and the next start removes it once the lock
its process held is free (``remove_stale_work_dirs``). Standard library only.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

CACHE_ENV = "ROGUERAY_CACHE"
MANIFEST = "rogueray-model.json"
WORK_PREFIX = ".work-"
_NEEDED_FREE_BYTES = 700 * 1024 * 1024  # wheel 93 MB + gguf 98 MB + safetensors 269 MB + slack


class ModelStoreError(RuntimeError):
    """A model could not be obtained or converted; the message says what failed and what to do."""


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rogueray" / "models"


def prepare_cache(cache_dir: Path | str | None) -> Path:
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ModelStoreError(
            f"cannot create the model cache folder {cache}: {e}; set {CACHE_ENV} to a writable "
            "folder or pass cache_dir"
        ) from e
    return cache


def lock_path(cache: Path, name: str) -> Path:
    return cache / f".{name}.lock"


@contextlib.contextmanager
def lock(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: the atomic rename still keeps the result consistent
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def work_dir(cache: Path, name: str) -> Iterator[Path]:
    """The work folder for building `name`, used under that name's lock: a folder left there
    belongs to a process that died holding the lock, so it is removed first, and this one is
    removed when the work ends (a kill -9 leaves it for `remove_stale_work_dirs`)."""
    work = cache / f"{WORK_PREFIX}{name}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _try_lock(path: Path, stack: contextlib.ExitStack) -> bool:
    """Take the lock at `path` without waiting (held until `stack` closes); False when another
    open lock holds it, i.e. a process is building that model now."""
    try:
        import fcntl
    except ImportError:
        return False  # no way to know: leave every work folder alone
    try:
        fh = stack.enter_context(open(path, "a"))
    except OSError:  # e.g. a read-only cache: not ours to clean
        return False
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    stack.callback(fcntl.flock, fh, fcntl.LOCK_UN)
    return True


def remove_stale_work_dirs(cache: Path | str) -> list[Path]:
    """Remove the work folders that interrupted conversions left in `cache`; returns them.

    A `.work-<name>` folder is stale when the lock `.<name>.lock`, which its process held while
    it worked, is free: locks die with their process. Work folders of older versions (random
    names) are stale when no lock of the cache is held at all.
    """
    cache = Path(cache)
    removed: list[Path] = []
    try:
        work_dirs = sorted(p for p in cache.glob(f"{WORK_PREFIX}*") if p.is_dir())
    except OSError:
        return removed
    if not work_dirs:
        return removed
    legacy = []
    for work in work_dirs:
        lock = lock_path(cache, work.name[len(WORK_PREFIX) :])
        if not lock.is_file():
            legacy.append(work)
            continue
        with contextlib.ExitStack() as stack:
            if _try_lock(lock, stack):
                shutil.rmtree(work, ignore_errors=True)
                removed.append(work)
    if legacy:
        with contextlib.ExitStack() as stack:
            if all(_try_lock(lock, stack) for lock in sorted(cache.glob(".*.lock"))):
                for work in legacy:
                    shutil.rmtree(work, ignore_errors=True)
                    removed.append(work)
    return removed


def is_complete(folder: Path) -> bool:
    return all(
        (folder / name).is_file()
        for name in ("config.json", "model.safetensors", "tokenizer.json", MANIFEST)
    )


def check_free_space(cache: Path) -> None:
    free = shutil.disk_usage(cache).free
    if free < _NEEDED_FREE_BYTES:
        raise ModelStoreError(
            f"not enough disk space in {cache}: {free / 2**20:.0f} MiB free, about "
            f"{_NEEDED_FREE_BYTES / 2**20:.0f} MiB needed to download and convert the model; free "
            f"space or set {CACHE_ENV} to a folder on another disk"
        )


def publish(tmp: Path, target: Path) -> None:
    """Atomically move a finished folder into place, replacing an incomplete leftover."""
    if target.exists():
        trash = target.with_name(f".trash-{target.name}-{os.getpid()}-{time.time_ns()}")
        target.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)
    try:
        tmp.rename(target)
    except OSError:
        if not is_complete(target):
            raise


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
