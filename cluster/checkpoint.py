"""Checkpoints: written atomically (serialised in memory, temp file, fsync, rename, fsync of the
directory), read back before anything older is deleted, numbered by env steps, the newest K kept.

What a checkpoint may hold: tensors, numbers, strings, None, lists, tuples and dicts. It is loaded
with `torch.load(weights_only=True)`, so a file carrying any other pickled object is refused
(`UnsafeCheckpointError`) instead of running its code. Numpy arrays of plain dtypes load too
(they are data); `plain()` turns numpy scalars into numbers and object arrays into lists on the
way in. The checkpoint dict's entries: "counters", "rng",
"learner", "annotator_backlog", "config" (the run's config as a dict, to check a resume against),
and optionally "annotator" (the annotator's own state, plain data).

Faults and what they do (docs/reliability.md has the whole table):
- a failed write (ENOSPC, EIO, a vanished directory) removes its temp file, keeps every older
  checkpoint and raises `CheckpointWriteError`; the driver says so in one line and tries again;
- an unreadable checkpoint is never loaded, never overwritten and never counted as one of the K
  kept: `find_checkpoint` reports it, `set_aside` renames it to `*.corrupt`;
- when checkpoints exist and none of them loads, `NoLoadableCheckpoint` names them all.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

_NAME = re.compile(r"^checkpoint_(\d{12})\.pt$")


class CheckpointError(Exception):
    """A checkpoint problem the user must act on (the CLI prints it and exits 2)."""


class NoLoadableCheckpoint(CheckpointError):
    pass


class UnsafeCheckpointError(CheckpointError):
    pass


class CheckpointWriteError(CheckpointError):
    """Writing a checkpoint failed; the temp file is gone and the older checkpoints are intact."""

    def __init__(self, message: str, errno: int | None = None):
        super().__init__(message)
        self.errno = errno


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temp files of an interrupted write and files
    set aside as *.corrupt ignored)."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _NAME.match(p.name))


def plain(value: Any) -> Any:
    """`value` with numpy scalars as Python numbers and object arrays as lists, recursively."""
    if isinstance(value, dict):
        items = [(k, plain(v)) for k, v in value.items()]
        if all(new is value[k] for k, new in items):
            return value  # unchanged (keeps an OrderedDict's _metadata)
        return type(value)(items)
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(plain(v) for v in value)
    if isinstance(value, np.ndarray) and value.dtype == object:
        return [plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def save_checkpoint(run_dir: str | Path, state: dict[str, Any], env_steps: int, keep: int) -> Path:
    """Write `state` as the checkpoint of `env_steps`; keep it and the newest keep-1 others.

    Raises CheckpointWriteError (temp file removed, older checkpoints untouched) when the bytes
    cannot be written or do not read back.
    """
    buffer = io.BytesIO()
    torch.save(plain(state), buffer)  # in memory first: a full disk then fails with its errno
    data = buffer.getbuffer()
    folder = checkpoint_dir(run_dir)
    path = folder / f"checkpoint_{env_steps:012d}.pt"
    tmp = folder / f".{path.name}.tmp-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if path.exists() and _load_error(path) is not None:
            set_aside([path])  # never overwrite an unreadable checkpoint
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        problem = _load_error(tmp)
        if problem is not None:
            raise CheckpointWriteError(f"checkpoint {path} did not read back ({problem})")
        os.replace(tmp, path)
        _fsync_dir(folder)  # make the rename itself durable
    except OSError as exc:
        _remove_quietly(tmp)
        reason = exc.strerror or str(exc)
        raise CheckpointWriteError(f"could not write {path}: {reason}", exc.errno) from None
    except BaseException:
        _remove_quietly(tmp)
        raise
    _remove_stale_temp_files(folder)
    others = [p for p in list_checkpoints(run_dir) if p != path]
    # The file just written was read back, so it is always one of the K kept; rotation deletes
    # only what is beyond it and the newest keep-1 others.
    for old in others[: max(0, len(others) - (keep - 1))]:
        try:
            old.unlink(missing_ok=True)
        except OSError:
            pass  # left for the next rotation
    return path


_TEMP = re.compile(r"^\.checkpoint_\d{12}\.pt\.tmp-(\d+)$")


def _remove_stale_temp_files(folder: Path) -> None:
    """Temp files of writes cut short (a driver killed mid-write) whose process is gone: they
    would hold disk space forever."""
    for candidate in folder.iterdir():
        match = _TEMP.match(candidate.name)
        if match is None or int(match.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(match.group(1)), 0)
            continue  # that process still runs: maybe writing right now
        except ProcessLookupError:
            _remove_quietly(candidate)
        except (PermissionError, OverflowError):
            continue


def _fsync_dir(folder: Path) -> None:
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def _numpy_data_globals() -> list:
    """What unpickling a numpy array or scalar of a plain dtype needs (data, not code), so that
    checkpoints holding arrays load with weights_only=True too."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    dtypes = [getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith("DType")]
    return [multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype, *dtypes]


def _load(path: str | Path) -> Any:
    with torch.serialization.safe_globals(_numpy_data_globals()):
        return torch.load(path, map_location="cpu", weights_only=True)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load one checkpoint with weights_only=True; UnsafeCheckpointError when it carries pickled
    objects other than tensors and plain data; any other exception when it is unreadable."""
    try:
        state = _load(path)
    except pickle.UnpicklingError as exc:
        unsafe = _unsupported_global(str(exc))
        if unsafe is not None:
            raise UnsafeCheckpointError(
                f"checkpoint {path} holds a pickled Python object ({unsafe}), not only tensors "
                "and plain data; rogueray does not load it because loading it could run code. "
                "Move it out of the checkpoints folder (or resume with --fresh) if it is not "
                "yours; the previous checkpoints are used then"
            ) from None
        raise
    if not isinstance(state, dict) or "counters" not in state:
        raise ValueError("not a rogueray checkpoint (no counters in it)")
    return state


def _unsupported_global(message: str) -> str | None:
    match = re.search(r"unsupported (?:global: )?GLOBAL (\S+)", message, re.IGNORECASE)
    return match.group(1) if match else None


def _load_error(path: Path) -> str | None:
    """Why `path` is not a loadable checkpoint, or None when it loads."""
    try:
        _load(path)
    except Exception as exc:  # noqa: BLE001 - any failure means: not loadable
        return _short(exc)
    return None


def _short(exc: BaseException) -> str:
    """'RuntimeError: PytorchStreamReader failed reading zip archive: failed finding central
    directory': the first sentence of the first line, for a one-line message."""
    lines = str(exc).strip().splitlines()
    first = lines[0].split(". ")[0].rstrip(".")[:160] if lines else ""
    return f"{type(exc).__name__}: {first}".rstrip(": ")


@dataclass
class Found:
    """The newest loadable checkpoint (state None when there is none) and the newer files that
    could not be read, newest first, with the reason."""

    state: dict[str, Any] | None = None
    path: Path | None = None
    unreadable: list[tuple[Path, str]] = field(default_factory=list)


def find_checkpoint(run_dir: str | Path) -> Found:
    """The newest checkpoint that loads. Writes nothing. Raises UnsafeCheckpointError for a
    checkpoint carrying pickled objects."""
    found = Found()
    for path in reversed(list_checkpoints(run_dir)):
        try:
            found.state, found.path = read_checkpoint(path), path
            return found
        except UnsafeCheckpointError:
            raise
        except Exception as exc:  # noqa: BLE001 - unreadable: try the one before it
            found.unreadable.append((path, _short(exc)))
    return found


def no_loadable_checkpoint(run_dir: str | Path, unreadable: list[tuple[Path, str]]) -> str:
    names = "; ".join(f"{p.name} ({why})" for p, why in unreadable)
    return (
        f"no loadable checkpoint in {checkpoint_dir(run_dir)}: {names}. Nothing was changed. "
        "Copy a good checkpoint there, or start this run from step 0 with --fresh (the "
        "unreadable files are then kept as *.corrupt)"
    )


def set_aside(paths: list[Path], suffix: str = ".corrupt") -> list[Path]:
    """Rename each file to <name><suffix> (then .1, .2, ... if taken); returns the new paths."""
    moved = []
    for path in paths:
        target = path.with_name(path.name + suffix)
        n = 0
        while target.exists():
            n += 1
            target = path.with_name(f"{path.name}{suffix}.{n}")
        os.replace(path, target)
        moved.append(target)
    if paths:
        _fsync_dir(paths[0].parent)
    return moved


def load_latest(run_dir: str | Path) -> dict[str, Any] | None:
    """The newest loadable checkpoint's state, or None. Writes nothing (see find_checkpoint)."""
    found = find_checkpoint(run_dir)
    for path, why in found.unreadable:
        log.warning("checkpoint %s is unreadable (%s)", path, why)
    return found.state


def rng_states() -> dict[str, Any]:
    """The driver's RNG states as plain data (tensors, numbers, strings, tuples)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, torch.tensor(internal, dtype=torch.int64), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }


def restore_rng_states(states: dict[str, Any]) -> None:
    version, internal, gauss = states["python"]
    internal = internal.tolist() if isinstance(internal, torch.Tensor) else internal
    random.setstate((version, tuple(int(x) for x in internal), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    keys = keys.numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
    np.random.set_state((kind, keys.astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(states["torch"])


INCOMPATIBLE = ("model.", "env.id", "reward_model.name", "reward_model.width")
"""Config keys a resumed run cannot change: the policy's shape, the env (action space), the
reward model's kind and shape. Everything else is applied on resume and listed on the console."""
IGNORED = ("run_dir",)


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_changes(saved: dict[str, Any], requested: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, saved value, requested value) for every key that differs, sorted by key. Keys only
    one side has (added or renamed by another rogueray version) are not changes."""
    old, new = _flat(saved), _flat(requested)
    return [
        (key, old[key], new[key])
        for key in sorted(set(old) & set(new))
        if key not in IGNORED and old[key] != new[key]
    ]


def incompatible(changes: list[tuple[str, Any, Any]]) -> list[tuple[str, Any, Any]]:
    return [c for c in changes if c[0].startswith(INCOMPATIBLE)]


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return "null" if value is None else str(value)


def describe(changes: list[tuple[str, Any, Any]]) -> str:
    """'learner.learning_rate 0.0003 -> 0.0001, total_env_steps 30000 -> 60000'"""
    return ", ".join(f"{key} {_shown(old)} -> {_shown(new)}" for key, old, new in changes)
