"""The real entry point with tiny budgets: learning on CartPole through Ray and in serial mode,
and a NetHack run that checkpoints and resumes with its step counter continuing."""

from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cluster.checkpoint import list_checkpoints, load_latest
from cluster.cli import main

CARTPOLE = str(Path(__file__).resolve().parents[2] / "configs" / "cartpole.yaml")


def _scalar_tags(run_dir: Path) -> set[str]:
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return set(events.Tags()["scalars"])


def _last_mean_return(capsys) -> float:
    line = [ln for ln in capsys.readouterr().out.splitlines() if "done:" in ln][-1]
    return float(line.split("mean return (last 20) ")[1].split(";")[0])


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.parametrize(
    ("mode", "extra"),
    [("ray", []), ("serial", []), ("serial", ["rollout.unrolls_per_sample=2"])],
    ids=["ray", "serial", "serial-2-unrolls-per-sample"],
)
def test_cartpole_learns(tmp_path, capsys, mode, extra):
    run_dir = tmp_path / mode
    args = ["train", CARTPOLE, f"run_dir={run_dir}", f"mode={mode}", "log_interval_s=30", *extra]
    assert main(args) == 0
    mean_return = _last_mean_return(capsys)
    print(f"{mode} {extra}: CartPole mean return over the last 20 episodes = {mean_return}")
    assert mean_return >= 400
    tags = _scalar_tags(run_dir)
    for tag in (
        "episode/return_extrinsic",
        "learner/policy_loss",
        "learner/value_loss",
        "learner/entropy",
        "perf/policy_lag",
        "perf/learner_samples_per_s",
    ):
        assert tag in tags


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.nle
def test_nethack_runs_checkpoints_and_resumes(tmp_path, capsys):
    run_dir = tmp_path / "nethack"
    common = [
        "env.num_envs_per_worker=4",
        "rollout.unroll_length=16",
        "learner.batch_size=128",
        "model.hidden_size=128",
        "log_interval_s=1",
    ]
    assert main(["train", f"run_dir={run_dir}", "total_env_steps=2000", *common]) == 0
    first = load_latest(run_dir)
    assert first["counters"]["env_steps"] >= 2000
    assert first["learner"]["version"] > 0
    assert (run_dir / "config.yaml").is_file()
    tags = _scalar_tags(run_dir)
    for tag in ("learner/policy_loss", "perf/env_steps_per_s", "system/workers_alive"):
        assert tag in tags
    capsys.readouterr()

    assert main(["train", f"run_dir={run_dir}", "total_env_steps=4000", *common]) == 0
    out = capsys.readouterr().out
    assert f"resuming {run_dir} from step {first['counters']['env_steps']:,d}" in out
    second = load_latest(run_dir)
    assert second["counters"]["env_steps"] >= 4000
    assert second["learner"]["version"] > first["learner"]["version"]
    assert len(list_checkpoints(run_dir)) >= 2


def test_unusable_env_fails_before_ray(tmp_path, capsys):
    # Registered, but with continuous actions: found when the env is built, still before Ray.
    assert main(["train", f"run_dir={tmp_path}", "env.id=Pendulum-v1", "model.kind=mlp"]) == 2
    err = capsys.readouterr().err
    assert "Pendulum-v1" in err and "only Discrete is supported" in err
    assert main(["train", f"run_dir={tmp_path}", "env.id=CartPole-v1", "model.kind=nethack"]) == 2
    assert "needs NetHack observations" in capsys.readouterr().err


@pytest.mark.ray
def test_cluster_too_small_is_named(tmp_path, capsys):
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        code = main(
            ["train", CARTPOLE, f"run_dir={tmp_path}", "ray_address=auto", "rollout.num_workers=4"]
        )
    finally:
        ray.shutdown()
    assert code == 2
    assert "the Ray cluster has 2 CPUs; this run needs 5" in capsys.readouterr().err


def test_bad_cli_input_fails_before_ray(tmp_path, capsys):
    assert main(["train", CARTPOLE, f"run_dir={tmp_path}", "rollout.num_workers=0"]) == 2
    assert "rollout.num_workers" in capsys.readouterr().err
    assert main(["resume", str(tmp_path / "missing")]) == 2
    assert "not a rogueray run directory" in capsys.readouterr().err
