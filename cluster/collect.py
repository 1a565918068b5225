"""`rogueray collect`: a dataset of the captions a policy (a run's checkpoint, or uniformly random
actions) sees, for offline Motif (Klissarov et al. 2023, section 3: the LLM annotates pairs of
captions from a dataset of observations). Played by the same `RolloutWorker` as training.

A dataset directory holds:
- `manifest.json`: format, version, env id, policy, seed, steps collected, starts, and every
  data file with its size in bytes and sha256; written last (atomically) after each chunk, so
  it only ever names complete files.
- `captions.json`: the caption table, a JSON list of distinct strings; a caption's id is its
  index. Append-only: ids never change.
- `counts.npy`: int64 [U], how often each caption of the table was seen.
- `steps/chunk-NNNNN.npy`: int32 [T, B], the caption id of each step (time-major, B envs side by
  side; -1 where the env gave no caption), one file per `unroll_length * num_envs` steps.

Resumable: a second `collect` into the same directory continues from the manifest (its settings
must match), with fresh dungeons (the worker's incarnation is the number of earlier starts);
episodes in progress when a run stopped are not continued."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

FORMAT = "rogueray-caption-dataset"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CAPTIONS = "captions.json"
COUNTS = "counts.npy"
SETTINGS = ("env_id", "policy", "seed", "num_envs", "unroll_length", "max_episode_steps",
            "normalize_captions")  # fmt: skip
"""Manifest keys a resumed collection must repeat (it continues the same data)."""


class DatasetError(Exception):
    """A dataset directory that cannot be used; the message names it and what to do."""


@dataclass
class Dataset:
    """A loaded dataset: its directory, manifest (dict), caption table and counts (int64 [U])."""

    path: Path
    manifest: dict[str, Any]
    captions: list[str]
    counts: np.ndarray

    @property
    def steps(self) -> int:
        return int(self.manifest["steps"])

    def caption_ids(self) -> np.ndarray:
        """Every step's caption id, int32 [steps] (chunks flattened in time-major order)."""
        chunks = [np.load(self.path / name).reshape(-1) for name in self.manifest["chunks"]]
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int32)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def load_dataset(path: str | Path) -> Dataset:
    """Read and check a dataset directory. Raises DatasetError when the directory or its
    manifest is missing, the manifest is not valid JSON or not a dataset's, or a file it names
    is missing or of another size than recorded."""
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(
            f"dataset {str(root)!r} is not a directory; make one with `rogueray collect {root}`"
        )
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise DatasetError(
            f"{str(root)!r} has no {MANIFEST}: not a rogueray dataset (make one with "
            f"`rogueray collect {root}`)"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DatasetError(
            f"{manifest_path} is not valid JSON ({exc}); the dataset cannot be read. Move the "
            "directory aside and collect again"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DatasetError(f"{manifest_path} is not a rogueray dataset manifest")
    if int(manifest.get("version", 0)) > FORMAT_VERSION:
        raise DatasetError(
            f"{manifest_path} has format version {manifest['version']}; this rogueray reads up "
            f"to {FORMAT_VERSION}"
        )
    for name, entry in manifest.get("files", {}).items():
        file = root / name
        if not file.is_file() or file.stat().st_size != entry["bytes"]:
            raise DatasetError(
                f"{file} is missing or not the {entry['bytes']} bytes {MANIFEST} records: the "
                "dataset is damaged; move it aside and collect again"
            )
    try:
        captions = json.loads((root / CAPTIONS).read_text(encoding="utf-8"))
        counts = np.load(root / COUNTS, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{root}: the caption table or counts do not load ({exc})") from None
    return Dataset(root, manifest, list(captions), counts.astype(np.int64))


def _policy_for(source: str, env_id: str):
    """(policy module, manifest description): uniform random, or a run's checkpoint."""
    from actors.envs import num_actions
    from learner.models import UniformPolicy

    if source == "random":
        return UniformPolicy(num_actions(env_id)), {"kind": "random"}
    from cluster.evaluate import EvaluationError, build_policy_and_reward, load_for_evaluation

    try:
        loaded = load_for_evaluation(source, env_id)
        policy, _ = build_policy_and_reward(loaded)
    except EvaluationError as exc:
        raise DatasetError(f"--policy {source}: {exc}") from None
    policy_id = {"kind": "checkpoint", "path": str(Path(source).resolve())}
    return policy, {**policy_id, "checkpoint": loaded.checkpoint.name}


def _start_manifest(root: Path, settings: dict[str, Any], target: int) -> dict[str, Any]:
    """The manifest to continue: the directory's own (settings checked) or a new one."""
    if (root / MANIFEST).exists():
        manifest = load_dataset(root).manifest
        for key in SETTINGS:
            if manifest.get(key) != settings[key]:
                raise DatasetError(
                    f"{root} was collected with {key}={manifest.get(key)!r}, not "
                    f"{settings[key]!r}; resume with the same settings or use a new directory"
                )
        manifest["target_steps"] = max(target, int(manifest["steps"]))
        return manifest
    from importlib.metadata import PackageNotFoundError, version

    try:
        rogueray_version = version("rogueray")
    except PackageNotFoundError:
        rogueray_version = "unknown"
    return {"format": FORMAT, "version": FORMAT_VERSION, "rogueray_version": rogueray_version,
            **settings, "steps": 0, "target_steps": target, "starts": 0, "episodes": 0,
            "chunks": [], "files": {}}  # fmt: skip


def collect(
    path: str | Path,
    *,
    env_id: str,
    policy: str = "random",
    steps: int,
    seed: int = 0,
    num_envs: int = 8,
    unroll_length: int = 128,
    max_episode_steps: int | None = None,
    normalize_captions: bool = False,
    progress: Callable[[int], None] = lambda n: None,
    done_before: Callable[[int], None] = lambda n: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> Dataset:
    """Collect until the dataset holds at least `steps` env steps (summed over envs), in chunks
    of `unroll_length * num_envs`; each chunk is on disk, with the manifest, before the next
    starts. `policy`: "random" or a run directory / checkpoint file. `progress(n)` is called
    with the steps of each chunk, `done_before(n)` once with the steps already there;
    `should_stop()` is asked between chunks. Raises DatasetError (bad directory, settings
    differ from the dataset's, unusable checkpoint) and ValueError (bad env id)."""
    from actors.envs import validate_env_id
    from actors.rollout import RolloutWorker

    validate_env_id(env_id)
    if steps < 1 or num_envs < 1 or unroll_length < 1:
        raise DatasetError("--steps, --num-envs and --unroll-length must be >= 1")
    root = Path(path)
    if root.exists() and not root.is_dir():
        raise DatasetError(f"dataset {str(root)!r} exists and is not a directory")
    module, described = _policy_for(policy, env_id)
    settings = {"env_id": env_id, "policy": described, "seed": seed, "num_envs": num_envs,
                "unroll_length": unroll_length, "max_episode_steps": max_episode_steps,
                "normalize_captions": normalize_captions}  # fmt: skip
    manifest = _start_manifest(root, settings, steps)
    (root / "steps").mkdir(parents=True, exist_ok=True)
    data = load_dataset(root) if manifest["chunks"] else None
    captions = data.captions if data else []
    counts = data.counts if data else np.zeros(0, np.int64)
    done_before(int(manifest["steps"]))
    if manifest["steps"] >= steps:
        return load_dataset(root)
    worker = RolloutWorker(env_id=env_id, num_envs=num_envs, unroll_length=unroll_length,
                           policy=module, seed=seed, incarnation=int(manifest["starts"]),
                           max_episode_steps=max_episode_steps,
                           normalize_captions=normalize_captions)  # fmt: skip
    manifest["starts"] += 1
    try:
        while manifest["steps"] < steps and not should_stop():
            fragment, episodes = worker.sample()
            captions, counts = _save_chunk(root, manifest, fragment, captions, counts)
            manifest["episodes"] += len(episodes)
            progress(fragment.actions.size)
    finally:
        worker.close()
    log.info("dataset %s: steps %d, distinct captions %d", root, manifest["steps"], len(captions))
    return load_dataset(root)


def _save_chunk(root: Path, manifest: dict, fragment, captions: list[str], counts: np.ndarray):
    """Write one fragment's caption ids (mapped onto the table), then the table, the counts and
    the manifest, each atomically; returns the updated (captions, counts)."""
    index = {c: i for i, c in enumerate(captions)}
    local = np.array([index.setdefault(c, len(index)) for c in fragment.captions] + [-1], np.int64)
    ids = local[fragment.caption_ids].astype(np.int32)  # -1 stays -1 (the appended entry)
    captions = list(index)
    seen = np.bincount(ids[ids >= 0], minlength=len(captions)).astype(np.int64)
    counts = np.concatenate([counts, np.zeros(len(captions) - len(counts), np.int64)]) + seen
    name = f"steps/chunk-{len(manifest['chunks']):05d}.npy"
    files = {
        name: _npy_bytes(ids),
        CAPTIONS: json.dumps(captions, ensure_ascii=False).encode("utf-8"),
        COUNTS: _npy_bytes(counts),
    }
    for file, blob in files.items():
        _write_atomic(root / file, blob)
        manifest["files"][file] = {"bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
    manifest["chunks"].append(name)
    manifest["steps"] += int(ids.size)
    _write_atomic(root / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode("utf-8"))
    return captions, counts
