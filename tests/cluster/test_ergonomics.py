"""Resume and scale ergonomics: a finished run says so before anything starts and prints the
command that continues it; a refused scale request is withdrawn by the driver; `rogueray scale
RUN --cancel` withdraws a standing one."""

from dataclasses import replace
from pathlib import Path

import pytest

from cluster.checkpoint import list_checkpoints
from cluster.cli import main
from cluster.console import done_line
from cluster.driver import TrainResult, _apply_scale_request
from cluster.scaling import ScaleWatcher, request_workers, requested_workers

CARTPOLE = str(Path(__file__).resolve().parents[2] / "configs" / "cartpole.yaml")
FAST = ["mode=serial", "log_interval_s=60", "rollout.num_workers=1", "model.hidden_size=32"]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_finished_run_says_so_before_starting_anything(tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = ["train", CARTPOLE, f"run_dir={run_dir}", *FAST, "total_env_steps=512"]
    assert main(args) == 0
    before = _snapshot(run_dir)
    capsys.readouterr()

    # mode=ray with an address nothing listens on: reaching Ray would fail, so exit 0 means
    # the answer came before Ray was started or joined.
    ray_nowhere = ["mode=ray", "ray_address=127.0.0.1:9"]
    assert main(["resume", str(run_dir), *ray_nowhere]) == 0
    out = capsys.readouterr().out
    assert "has already reached total_env_steps=512 (512 env steps done)" in out
    assert f"rogueray resume {run_dir} total_env_steps=1024" in out
    assert "a new run goes in another run_dir (run_dir=runs/NEW_NAME)" in out
    assert "done:" not in out
    assert _snapshot(run_dir) == before  # no config.yaml rewritten, no checkpoint

    assert main(args) == 0  # `train` with the same run_dir: the same answer
    assert "has already reached" in capsys.readouterr().out

    # The printed command continues the run.
    assert main(["resume", str(run_dir), "total_env_steps=1024"]) == 0
    out = capsys.readouterr().out
    assert "resuming" in out and "done: 1,024 env steps" in out
    assert len(list_checkpoints(run_dir)) >= 2


def test_a_run_stopped_before_its_own_total_is_continued_by_a_plain_resume(tmp_path, capsys):
    # A run resumed to 120,832 steps and stopped by SIGINT at 89,088; `train` with the default
    # 60,000 finds it past that, and the way on is the run's own total, not a doubled one.
    from cluster.config import load_config
    from cluster.driver import _finished_result

    config = load_config(CARTPOLE, [f"run_dir={tmp_path}", "total_env_steps=60000"])
    checkpoint = {
        "counters": {"env_steps": 89_088, "episodes": 3},
        "learner": {"version": 87},
        "config": {"total_env_steps": 120_832},
    }
    result = _finished_result(config, checkpoint)
    out = capsys.readouterr().out
    assert result.already_done and result.env_steps == 89_088
    assert f"continue it: rogueray resume {tmp_path} (its own total_env_steps=120,832)" in out


class _CpuBoundRunner:
    """The part of a runner the scale poll uses, refusing growth beyond `cpus` as RayRunner
    does on a local Ray (the real refusal is covered in tests/cluster/test_scaling.py)."""

    def __init__(self, workers: int, cpus: int):
        self.workers, self.cpus = workers, cpus
        self.workers_waiting = 0

    @property
    def workers_alive(self) -> int:
        return self.workers

    def resize(self, num_workers: int) -> str:
        if num_workers > self.cpus:
            return f"rollout workers stay at {self.workers}: not enough CPUs"
        before, self.workers = self.workers, num_workers
        return f"rollout workers: {before} -> {num_workers}"


def _run_dir(tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(Path(CARTPOLE).read_text())
    return run_dir


def test_refused_scale_request_is_withdrawn(tmp_path, capsys):
    run_dir = _run_dir(tmp_path)
    watcher = ScaleWatcher(run_dir)
    runner = _CpuBoundRunner(workers=1, cpus=2)
    request_workers(run_dir, 3)
    _apply_scale_request(watcher, runner, quiet=False, configured=1)
    out = capsys.readouterr().out
    assert "stay at 1" in out and "the request was withdrawn" in out
    assert requested_workers(run_dir) is None  # a later start keeps the config's workers
    assert not (run_dir / "scale.json").exists()
    _apply_scale_request(watcher, runner, quiet=False, configured=1)  # the withdrawal: no request
    assert capsys.readouterr().out == ""

    request_workers(run_dir, 2)  # granted: stays, so a restart keeps the size asked for
    _apply_scale_request(watcher, runner, quiet=False, configured=1)
    assert "rollout workers: 1 -> 2" in capsys.readouterr().out
    assert runner.workers == 2 and requested_workers(run_dir) == 2

    request_workers(run_dir, 5)  # refused after a granted one: that one stands again
    _apply_scale_request(watcher, runner, quiet=False, configured=1)
    assert "the request was withdrawn" in capsys.readouterr().out
    assert runner.workers == 2 and requested_workers(run_dir) == 2  # a resume starts with 2
    _apply_scale_request(watcher, runner, quiet=False, configured=1)  # no new request either
    assert capsys.readouterr().out == ""

    # The command's config says 2, a standing request made it 3 at start: a refused 8 leaves 3
    # standing, so that the same `rogueray train` started again also starts with 3.
    (run_dir / "scale.json").unlink()
    runner, watcher = _CpuBoundRunner(workers=3, cpus=4), ScaleWatcher(run_dir)
    request_workers(run_dir, 8)
    _apply_scale_request(watcher, runner, quiet=False, configured=2)
    assert runner.workers == 3 and requested_workers(run_dir) == 3


def test_scale_cancel_withdraws_a_standing_request(tmp_path, capsys):
    run_dir = _run_dir(tmp_path)
    assert main(["scale", str(run_dir), "3"]) == 0
    assert requested_workers(run_dir) == 3
    capsys.readouterr()

    assert main(["scale", str(run_dir), "--cancel"]) == 0
    assert "withdrew the request for 3 rollout workers" in capsys.readouterr().out
    assert requested_workers(run_dir) is None

    assert main(["scale", str(run_dir), "--cancel"]) == 0
    assert "has no standing scale request" in capsys.readouterr().out

    assert main(["scale", str(run_dir)]) == 2
    assert "give NUM_WORKERS, or --cancel" in capsys.readouterr().err
    assert main(["scale", str(run_dir), "2", "--cancel"]) == 2
    assert main(["scale", str(tmp_path / "missing"), "--cancel"]) == 2


@pytest.mark.nle
@pytest.mark.slow
def test_the_done_line_counts_the_labels_and_what_the_reward_model_took(tmp_path, capsys):
    """The console's status lines count labels as they come; the done line says where they
    stand at the end: every label in the store (the annotator stopped), and how many of those
    the reward model took (the rest are handed over first on resume). Real NetHack, serial
    mode, the rules judge."""
    import re

    from annotator.label_store import open_readonly

    overrides = [
        f"run_dir={tmp_path}", "mode=serial", "total_env_steps=3072", "seed=5",
        "env.num_envs_per_worker=4", "rollout.num_workers=1", "rollout.unroll_length=16",
        "learner.batch_size=64", "model.hidden_size=32", "reward_model.name=classification",
        "annotator.backend=rules",
    ]  # fmt: skip
    assert main(["train", *overrides]) == 0
    done = [line for line in capsys.readouterr().out.splitlines() if "] done:" in line][-1]
    found = re.search(
        r"episodes, ([\d,]+) labels? \(([\d,]+) in the reward model's dataset\)", done
    )
    assert found, done
    labels, taken = (int(group.replace(",", "")) for group in found.groups())
    with open_readonly(tmp_path / "labels.sqlite") as store:
        stored = sum(group[2] for group in store.groups())
    assert 0 < labels == stored and taken <= labels, (labels, taken, stored)


def test_the_done_line_says_how_many_captions_wait_for_a_label():
    result = TrainResult(
        env_steps=60_416, updates=59, episodes=144, mean_return=3.14, return_window=100,
        resumed_from=None, run_dir="runs/first", labels=84, labels_in_reward_model=84,
        captions_pending=859,
    )  # fmt: skip
    line = done_line(result)
    assert "84 labels (84 in the reward model's dataset), 859 captions to label on a resume" in line
    assert "to label" not in done_line(replace(result, captions_pending=0))  # nothing waits
    assert "labels" not in done_line(replace(result, labels=None))  # no annotator
