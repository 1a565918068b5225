"""Checkpoints are atomic, pruned to the newest K, and a corrupt newest file falls back."""

import torch

from cluster.checkpoint import list_checkpoints, load_latest, save_checkpoint


def test_keep_last_k_and_load_newest(tmp_path):
    for step in (100, 200, 300, 400):
        save_checkpoint(tmp_path, {"step": step, "w": torch.ones(3) * step}, step, keep=2)
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == ["checkpoint_000000000300.pt", "checkpoint_000000000400.pt"]
    assert load_latest(tmp_path)["step"] == 400


def test_interrupted_write_is_ignored(tmp_path):
    save_checkpoint(tmp_path, {"step": 1}, 1, keep=3)
    (tmp_path / "checkpoints" / ".checkpoint_000000000002.pt.tmp-123").write_bytes(b"partial")
    assert load_latest(tmp_path)["step"] == 1


def test_corrupt_newest_falls_back_to_previous(tmp_path, capsys):
    save_checkpoint(tmp_path, {"step": 1}, 1, keep=3)
    save_checkpoint(tmp_path, {"step": 2}, 2, keep=3)
    list_checkpoints(tmp_path)[-1].write_bytes(b"not a checkpoint")
    assert load_latest(tmp_path)["step"] == 1
    assert "unreadable" in capsys.readouterr().out


def test_no_checkpoint(tmp_path):
    assert load_latest(tmp_path) is None
