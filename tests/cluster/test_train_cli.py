"""The real entry point with tiny budgets: learning on CartPole through Ray and in serial mode,
and a NetHack run that checkpoints and resumes with its step counter continuing."""

import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cluster.checkpoint import list_checkpoints, load_latest
from cluster.cli import main
from cluster.config import dump_yaml, load_config, shipped_config

ROOT = Path(__file__).resolve().parents[2]
CARTPOLE = str(ROOT / "configs" / "cartpole.yaml")


def _scalar_tags(run_dir: Path) -> set[str]:
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return set(events.Tags()["scalars"])


def _last_mean_return(capsys) -> float:
    line = [ln for ln in capsys.readouterr().out.splitlines() if "done:" in ln][-1]
    window = line.split("mean return (last ")[1]  # the console's window: "(last N) X; ..."
    return float(window.split(") ", 1)[1].split(";")[0])


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
    print(f"{mode} {extra}: CartPole mean return over the last 100 episodes = {mean_return}")
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
    out = capsys.readouterr().out
    # Start-up says each stage as it ends: it can take a minute on a loaded machine.
    assert re.search(
        r"Ray started in \d+ s; starting the learner, 2 rollout workers and the annotator", out
    ), out
    assert re.search(r"processes up in \d+ s", out), out
    first = load_latest(run_dir)
    assert first["counters"]["env_steps"] >= 2000
    assert first["learner"]["version"] > 0
    assert (run_dir / "config.yaml").is_file()
    tags = _scalar_tags(run_dir)
    for tag in ("learner/policy_loss", "perf/env_steps_per_s", "system/workers_alive"):
        assert tag in tags

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

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
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


def test_nan_is_refused_with_exit_2_before_ray(tmp_path, capsys):
    assert main(["train", CARTPOLE, f"run_dir={tmp_path}/run", "learner.learning_rate=nan"]) == 2
    assert capsys.readouterr().err == (
        "rogueray: error: config key 'learner.learning_rate' is nan; allowed: a finite number > 0\n"
    )
    assert not (tmp_path / "run").exists()


def test_print_config_prints_the_resolved_yaml_and_starts_nothing(tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = ["train", CARTPOLE, f"run_dir={run_dir}", "learner.gamma=0.9", "--print-config"]
    assert main(args) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["env"]["id"] == "CartPole-v1"
    assert printed["learner"]["gamma"] == 0.9
    assert printed["run_dir"] == str(run_dir)
    assert not run_dir.exists()


def test_print_config_of_a_resumed_run(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(dump_yaml(load_config(CARTPOLE, [f"run_dir={run_dir}"])))
    assert main(["resume", str(run_dir), "total_env_steps=5000", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["total_env_steps"] == 5000 and printed["env"]["id"] == "CartPole-v1"
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml"]


@pytest.mark.parametrize(
    "flags",
    [
        ["--total_env_steps", "1000", "--learner.learning_rate=3e-4"],
        ["--total-env-steps=1000", "--learner.learning-rate", "3e-4"],
    ],
)
def test_config_keys_given_as_flags_are_overrides(tmp_path, capsys, flags):
    args = ["train", *flags, CARTPOLE, f"--run_dir={tmp_path}/run", "--print-config"]
    assert main(args) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["total_env_steps"] == 1000
    assert printed["learner"]["learning_rate"] == 3e-4
    assert printed["env"]["id"] == "CartPole-v1"


def test_flags_that_are_not_config_keys_are_named(tmp_path, capsys):
    assert main(["train", CARTPOLE, f"run_dir={tmp_path}", "--total_env_step", "5"]) == 2
    assert (
        "unknown config key 'total_env_step' (did you mean 'total_env_steps'?)"
        in capsys.readouterr().err
    )
    assert main(["train", CARTPOLE, f"run_dir={tmp_path}", "--total_env_steps"]) == 2
    assert (
        "flag --total_env_steps needs a value: write total_env_steps=VALUE"
        in capsys.readouterr().err
    )
    for typo, meant in (("--print-confg", "--print-config"), ("--quiett", "--quiet")):
        assert main(["train", CARTPOLE, f"run_dir={tmp_path}", typo]) == 2
        err = capsys.readouterr().err  # the command's own switch, not a key wanting a value
        assert f"unknown flag {typo} for `rogueray train`; did you mean {meant}?" in err, err
    assert main(["resume", str(tmp_path), "--fressh"]) == 2
    assert "unknown flag --fressh for `rogueray resume`; did you mean --fresh?" in (
        capsys.readouterr().err
    )


def test_a_run_directory_given_to_train_suggests_resume(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("total_env_steps: 10\n")
    assert main(["train", str(run_dir)]) == 2
    assert f"to continue that run: rogueray resume {run_dir}" in capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"rogueray {version('rogueray')}\n"


def test_the_default_config_is_found():
    assert shipped_config("default.yaml").is_file()
    # One config per cell of ONI's comparison: every task x reward type, except extrinsic-only
    # on the reward-free task (it would be no reward at all).
    tasks = ("score", "score-reward-free", "staircase-lvl3", "staircase-lvl4", "oracle")
    methods = ("extrinsic", "ellm", "motif", "hashing", "classification", "ranking")
    cells = {f"{t}-{m}.yaml" for t in tasks for m in methods} - {"score-reward-free-extrinsic.yaml"}
    assert {p.name for p in shipped_config("oni").glob("*.yaml")} == cells


def test_help_version_scale_and_labels_do_not_import_torch(tmp_path):
    # What made `rogueray --help` take seconds: torch imported before argparse ran.
    script = f"""
import contextlib, io, sys
from cluster.cli import main
for argv in (["--help"], ["--version"], ["scale", {str(tmp_path)!r}, "2"],
             ["labels", {str(tmp_path)!r}], ["train", "--help"]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            main(argv)
        except SystemExit:
            pass
heavy = sorted(m for m in ("torch", "ray", "nle", "transformers") if m in sys.modules)
print(heavy)
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(("argv", "required"), [(["resume"], "run_dir"), (["annotate"], "dataset")])
def test_key_value_overrides_are_optional(capsys, argv, required):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().endswith(f"error: the following arguments are required: {required}")
    assert "[key=value ...]" in err.split("error:")[0]  # the usage line


def test_bad_config_values_are_named_before_torch_is_imported(tmp_path):
    # model.precision's and reward_model.name's values come from modules that import torch
    # (2 s warm, 10-15 s from a cold disk): the error came after that wait
    run = f"run_dir={tmp_path}/run"
    motif = str(ROOT / "configs" / "oni" / "score-motif.yaml")
    bad = [
        ["model.precision=bogus"],
        ["rollout.inference=bogus"],
        ["reward_model.name=bogus"],
        ["rollout.inference=shared", "mode=serial"],
        [motif, "reward_model.quantile=0.42"],
    ]
    script = f"""
import contextlib, io, sys
from cluster.cli import main
codes = []
for extra in {bad!r}:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        codes.append(main(["train", *extra, {run!r}]))
    assert err.getvalue().startswith("rogueray: error: config key"), err.getvalue()
print(codes, sorted(m for m in ("torch", "ray") if m in sys.modules))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    assert out.strip() == f"{[2] * len(bad)} []"
