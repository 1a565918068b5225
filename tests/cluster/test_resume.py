"""Resume never silently goes wrong: unreadable checkpoints stop it (exit 2, files named, nothing
changed) unless --fresh is given, a corrupt newest file never costs the good ones, a changed
network is refused before anything is written, a pickled object is refused, and the update
counter always matches the learner state it was saved with. Tiny serial CartPole runs."""

import os
from pathlib import Path

import pytest
import torch

from cluster.checkpoint import list_checkpoints, load_latest, read_checkpoint
from cluster.cli import main

CARTPOLE = str(Path(__file__).resolve().parents[2] / "configs" / "cartpole.yaml")
FAST = ["mode=serial", "log_interval_s=60", "rollout.num_workers=1"]


def _train(run_dir: Path, steps: int, *extra: str) -> int:
    return main(
        ["train", CARTPOLE, f"run_dir={run_dir}", *FAST, f"total_env_steps={steps}", *extra]
    )


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_all_checkpoints_unreadable_stops_until_fresh(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert _train(run_dir, 1024, "checkpoint_interval_s=0.001", "keep_checkpoints=2") == 0
    first, second = list_checkpoints(run_dir)
    first.write_bytes(first.read_bytes()[:100])  # truncated
    second.write_bytes(b"\0" * 64)  # garbage
    before = _snapshot(run_dir)
    capsys.readouterr()

    assert main(["resume", str(run_dir), "total_env_steps=2048"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rogueray: error: no loadable checkpoint")
    assert first.name in err and second.name in err and "--fresh" in err
    assert _snapshot(run_dir) == before  # nothing written: not config.yaml, not a checkpoint

    assert main(["resume", str(run_dir), "total_env_steps=2048", "--fresh"]) == 0
    out = capsys.readouterr().out
    assert "--fresh: starting from step 0" in out
    folder = run_dir / "checkpoints"
    assert (folder / (first.name + ".corrupt")).read_bytes() == before[first.name]
    assert (folder / (second.name + ".corrupt")).read_bytes() == before[second.name]
    saved = load_latest(run_dir)
    assert saved["counters"]["env_steps"] == 2048  # from step 0, not from the bad files


@pytest.mark.slow
def test_corrupt_newest_with_keep_1_keeps_the_good_checkpoint(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert _train(run_dir, 1024, "keep_checkpoints=1") == 0
    (good,) = list_checkpoints(run_dir)
    corrupt = good.with_name("checkpoint_000000009999.pt")  # sorts newest, cannot be read
    corrupt.write_bytes(b"half a checkpoint")
    capsys.readouterr()

    args = ["resume", str(run_dir), "total_env_steps=2048", "checkpoint_interval_s=0.001"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"checkpoint {corrupt} is unreadable" in out and "kept as" in out
    assert "resuming" in out and "from step 1,024" in out
    (kept,) = list_checkpoints(run_dir)  # the newest loadable one, not the corrupt file
    assert read_checkpoint(kept)["counters"]["env_steps"] == 2048
    assert (corrupt.parent / (corrupt.name + ".corrupt")).read_bytes() == b"half a checkpoint"


@pytest.mark.slow
def test_changed_network_is_refused_before_anything_is_written(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert _train(run_dir, 512) == 0
    before = _snapshot(run_dir)
    capsys.readouterr()

    assert main(["resume", str(run_dir), "model.hidden_size=32", "total_env_steps=1024"]) == 2
    err = capsys.readouterr().err
    assert "rogueray: error: cannot resume" in err and "model.hidden_size 64 -> 32" in err
    assert _snapshot(run_dir) == before  # config.yaml untouched

    args = ["resume", str(run_dir), "learner.learning_rate=1e-4", "total_env_steps=1024"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "changed since the last run: learner.learning_rate 0.001 -> 0.0001" in out
    assert "learning_rate: 0.0001" in (run_dir / "config.yaml").read_text()
    assert load_latest(run_dir)["config"]["learner"]["learning_rate"] == 1e-4


@pytest.mark.slow
def test_checkpoint_with_a_pickled_object_is_refused(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert _train(run_dir, 512) == 0
    (good,) = list_checkpoints(run_dir)
    state = torch.load(good, weights_only=True)
    state["payload"] = os.system  # unpickling it would import and hand out os.system
    evil = good.with_name("checkpoint_000000001000.pt")
    torch.save(state, evil)
    capsys.readouterr()

    assert main(["resume", str(run_dir), "total_env_steps=1024"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rogueray: error: checkpoint") and str(evil) in err
    assert "could run code" in err
    assert evil.exists() and good.exists()


@pytest.mark.slow
@pytest.mark.ray
def test_update_counter_matches_the_learner_state_across_resumes(tmp_path, capsys):
    """Ray mode keeps learner updates in flight; every checkpoint (and every resumed run) counts
    exactly the updates its learner state holds."""
    run_dir = tmp_path / "run"
    extra = ["mode=ray", "log_interval_s=60", "checkpoint_interval_s=0.001",
             "keep_checkpoints=100000", "rollout.num_workers=2"]  # fmt: skip
    for cycle in (1, 2):
        args = ["train", CARTPOLE, f"run_dir={run_dir}", *extra, f"total_env_steps={cycle * 2048}"]
        assert main(args) == 0
        done = [ln for ln in capsys.readouterr().out.splitlines() if "done:" in ln][-1]
        every = [read_checkpoint(path) for path in list_checkpoints(run_dir)]
        assert len(every) >= 4  # checkpoints taken mid-run, with updates in flight
        for saved in every:
            assert saved["counters"]["updates"] == saved["learner"]["version"]
        assert f"{every[-1]['learner']['version']:,d} updates" in done
