"""Checkpoints: atomic, pruned to the newest K without ever deleting the one just written, plain
data only (weights_only loading refuses pickled objects), unreadable files reported and set
aside instead of overwritten, and a failed write leaves no temp file and every older checkpoint."""

import errno
import os
import random

import numpy as np
import pytest
import torch

from cluster import checkpoint as ckpt
from cluster.checkpoint import (
    CheckpointWriteError,
    UnsafeCheckpointError,
    find_checkpoint,
    list_checkpoints,
    load_latest,
    save_checkpoint,
)


def _state(step: int, **extra) -> dict:
    return {"counters": {"env_steps": step}, "w": torch.ones(3) * step, **extra}


def test_keep_last_k_and_load_newest(tmp_path):
    for step in (100, 200, 300, 400):
        save_checkpoint(tmp_path, _state(step), step, keep=2)
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == ["checkpoint_000000000300.pt", "checkpoint_000000000400.pt"]
    assert load_latest(tmp_path)["counters"]["env_steps"] == 400


def test_interrupted_write_is_ignored(tmp_path):
    save_checkpoint(tmp_path, _state(1), 1, keep=3)
    (tmp_path / "checkpoints" / ".checkpoint_000000000002.pt.tmp-123").write_bytes(b"partial")
    assert load_latest(tmp_path)["counters"]["env_steps"] == 1


def test_corrupt_newest_falls_back_to_previous(tmp_path, caplog):
    save_checkpoint(tmp_path, _state(1), 1, keep=3)
    save_checkpoint(tmp_path, _state(2), 2, keep=3)
    list_checkpoints(tmp_path)[-1].write_bytes(b"not a checkpoint")
    assert load_latest(tmp_path)["counters"]["env_steps"] == 1
    assert "unreadable" in caplog.text  # a logged warning: the console belongs to the CLI
    found = find_checkpoint(tmp_path)
    assert [p.name for p, _ in found.unreadable] == ["checkpoint_000000000002.pt"]


def test_truncated_checkpoint_is_unreadable(tmp_path):
    path = save_checkpoint(tmp_path, _state(5, big=torch.zeros(10_000)), 5, keep=3)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    found = find_checkpoint(tmp_path)
    assert found.state is None and found.unreadable[0][0] == path


def test_no_checkpoint(tmp_path):
    assert load_latest(tmp_path) is None


def test_rotation_never_deletes_the_checkpoint_just_written(tmp_path):
    """keep=1 with a corrupt file that sorts newest: the new, verified checkpoint stays."""
    save_checkpoint(tmp_path, _state(100), 100, keep=1)
    corrupt = tmp_path / "checkpoints" / "checkpoint_000000000900.pt"
    corrupt.write_bytes(b"garbage")
    written = save_checkpoint(tmp_path, _state(200), 200, keep=1)
    assert written.exists()
    assert find_checkpoint(tmp_path).path == written or corrupt.exists()
    assert ckpt.read_checkpoint(written)["counters"]["env_steps"] == 200


def test_an_unreadable_checkpoint_is_never_overwritten(tmp_path):
    path = save_checkpoint(tmp_path, _state(7), 7, keep=3)
    path.write_bytes(b"garbage")
    save_checkpoint(tmp_path, _state(7), 7, keep=3)  # the same step again
    assert (path.parent / (path.name + ".corrupt")).read_bytes() == b"garbage"
    assert ckpt.read_checkpoint(path)["counters"]["env_steps"] == 7


def test_pickled_object_is_refused_naming_the_file(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    path = folder / "checkpoint_000000000010.pt"
    torch.save({"counters": {}, "payload": os.system}, path)  # loading it would import os.system
    with pytest.raises(UnsafeCheckpointError, match="checkpoint_000000000010.pt") as info:
        find_checkpoint(tmp_path)
    assert "posix.system" in str(info.value) or "os.system" in str(info.value)


def test_checkpoints_are_plain_data_and_rng_states_round_trip(tmp_path):
    random.seed(3)
    np.random.seed(4)
    torch.manual_seed(5)
    state = _state(1, rng=ckpt.rng_states(), scalar=np.float32(2.5))
    path = save_checkpoint(tmp_path, state, 1, keep=1)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    loaded = torch.load(path, weights_only=True)  # the strict loader, no allow-list needed
    ckpt.restore_rng_states(loaded["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    assert loaded["scalar"] == 2.5 and type(loaded["scalar"]) is float


def test_failed_write_removes_its_temp_file_and_keeps_older(tmp_path, monkeypatch):
    first = save_checkpoint(tmp_path, _state(1), 1, keep=1)
    real_write = os.write

    def full_disk(fd, data):
        real_write(fd, bytes(data[:10]))  # a partial write, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt.os, "write", full_disk)
    with pytest.raises(CheckpointWriteError, match="No space left on device") as info:
        save_checkpoint(tmp_path, _state(2), 2, keep=1)
    assert info.value.errno == errno.ENOSPC
    assert sorted(os.listdir(tmp_path / "checkpoints")) == [first.name]
    monkeypatch.setattr(ckpt.os, "write", real_write)
    second = save_checkpoint(tmp_path, _state(2), 2, keep=1)
    assert list_checkpoints(tmp_path) == [second]


def test_config_changes_split_compatible_from_incompatible():
    saved = {"model": {"hidden_size": 64}, "env": {"id": "CartPole-v1"}, "learner": {"learning_rate": 3e-4}, "run_dir": "a"}  # fmt: skip
    wanted = {"model": {"hidden_size": 32}, "env": {"id": "CartPole-v1"}, "learner": {"learning_rate": 1e-4}, "run_dir": "b"}  # fmt: skip
    changes = ckpt.config_changes(saved, wanted)
    assert [k for k, _, _ in changes] == ["learner.learning_rate", "model.hidden_size"]
    assert [k for k, _, _ in ckpt.incompatible(changes)] == ["model.hidden_size"]
    assert ckpt.describe(changes[:1]) == "learner.learning_rate 0.0003 -> 0.0001"


@pytest.mark.parametrize("name", ["hashing", "classification", "ranking"])
def test_reward_model_state_is_plain_data(tmp_path, name):
    """The learner's state holds the reward model's: it must load with the strict loader and
    restore a model that gives the same rewards."""
    from actors.messages import CaptionLabel, PairLabel
    from cluster.annotation import build_reward_model
    from cluster.config import load_config

    config = load_config(None, [f"reward_model.name={name}", "reward.intrinsic_coef=0.1",
                                "reward_model.width=small", "reward_model.steps_per_label_batch=2",
                                "reward_model.label_batch_size=2",
                                "reward_model.batch_size=4"])  # fmt: skip
    model = build_reward_model(config)
    if name == "ranking":
        model.add_labels([PairLabel("a b", "c d", 1.0), PairLabel("e", "f", 0.5)])
    else:
        model.add_labels([CaptionLabel("You see a door", 1.0), CaptionLabel("It's dark", 0.0)])
    path = save_checkpoint(tmp_path, _state(1, reward_model=model.state_dict()), 1, keep=1)
    again = build_reward_model(config)
    again.load_state_dict(torch.load(path, weights_only=True)["reward_model"])
    captions = ["You see a door", "It's dark", "a b"]
    assert list(again.rewards(captions)) == list(model.rewards(captions))


def test_temp_files_of_dead_writers_are_removed(tmp_path):
    """A driver killed mid-write leaves a temp file; the next write removes it, but never the
    temp file of a process that still runs."""
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    save_checkpoint(tmp_path, _state(1), 1, keep=3)
    folder = tmp_path / "checkpoints"
    stale = folder / f".checkpoint_000000000002.pt.tmp-{dead}"
    live = folder / f".checkpoint_000000000002.pt.tmp-{os.getppid()}"
    stale.write_bytes(b"x" * 1000)
    live.write_bytes(b"y")
    save_checkpoint(tmp_path, _state(3), 3, keep=3)
    assert not stale.exists() and live.exists()
