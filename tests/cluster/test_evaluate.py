"""`rogueray evaluate` on tiny real runs (CartPole, NetHack): the summary JSON and CSV match a
recomputation from the per-episode CSV; a checkpoint moved to another place (its run directory
and config gone) still evaluates; the intrinsic return follows the training rule."""

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from cluster.cli import main
from cluster.evaluate import EvaluationError, evaluate, load_for_evaluation, play
from cluster.evaluate_stats import mean_ci, t_quantile_975

ROOT = Path(__file__).resolve().parents[2]
CARTPOLE = str(ROOT / "configs" / "cartpole.yaml")


def test_t_quantiles_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 5, 29, 30, 31, 45, 100, 1000):
        assert t_quantile_975(df) == pytest.approx(stats.t.ppf(0.975, df), abs=1e-5)


def test_mean_ci_is_the_t_interval():
    values = [1.0, 4.0, 2.0, 8.0, 5.0]
    e = mean_ci(values)
    half = 2.776445 * np.std(values, ddof=1) / math.sqrt(5)
    assert (e.n, e.mean) == (5, 4.0)
    assert (e.ci_low, e.ci_high) == pytest.approx((4.0 - half, 4.0 + half))
    assert mean_ci([3.0]).ci_low == mean_ci([3.0]).ci_high == 3.0
    assert mean_ci([None, None]) is None


def _recomputed(episodes_csv: Path) -> dict:
    """{mode: {metric: (n, mean, low, high)}} from the per-episode rows alone."""
    rows = list(csv.DictReader(open(episodes_csv)))
    out = {}
    for mode in sorted({r["mode"] for r in rows}):
        out[mode] = {}
        for column, name in (
            ("return_extrinsic", "return_extrinsic"),
            ("success", "success_rate"),
            ("max_depth", "max_depth"),
            ("length", "length"),
            ("return_intrinsic", "return_intrinsic"),
        ):
            values = [float(r[column]) for r in rows if r["mode"] == mode and r[column] != ""]
            if not values:
                continue
            n, mean = len(values), float(np.mean(values))
            half = 0.0 if n < 2 else t_quantile_975(n - 1) * np.std(values, ddof=1) / math.sqrt(n)
            out[mode][name] = (n, mean, mean - half, mean + half)
    return out


def _check_outputs(out_dir: Path, episodes: int) -> dict:
    report = json.loads((out_dir / "summary.json").read_text())
    expected = _recomputed(out_dir / "episodes.csv")
    assert set(report["modes"]) == set(expected) == {"greedy", "sampled"}
    for mode, metrics in expected.items():
        assert set(report["modes"][mode]) == set(metrics)
        for name, (n, mean, low, high) in metrics.items():
            got = report["modes"][mode][name]
            assert got["n"] == n == episodes
            assert (got["mean"], got["ci_low"], got["ci_high"]) == pytest.approx((mean, low, high))
    summary_rows = list(csv.DictReader(open(out_dir / "summary.csv")))
    assert len(summary_rows) == sum(len(m) for m in expected.values())
    for row in summary_rows:
        n, mean, low, high = expected[row["mode"]][row["metric"]]
        assert float(row["mean"]) == pytest.approx(mean)
        assert (float(row["ci95_low"]), float(row["ci95_high"])) == pytest.approx((low, high))
    return report


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("eval") / "cartpole"
    args = ["train", CARTPOLE, f"run_dir={run_dir}", "mode=serial", "total_env_steps=4000"]
    assert main([*args, "--quiet"]) == 0
    return run_dir


@pytest.mark.slow
def test_cartpole_evaluation_matches_its_episode_csv(cartpole_run, capsys):
    out = cartpole_run / "evaluation" / "mine"
    assert main(["evaluate", str(cartpole_run), "--episodes", "6", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "greedy" in printed and "sampled" in printed and str(out / "summary.json") in printed
    report = _check_outputs(out, episodes=6)
    assert report["env"] == "CartPole-v1" and report["env_steps"] >= 4000
    greedy = report["modes"]["greedy"]
    assert set(greedy) == {"return_extrinsic", "length"}  # no goal, no depth, no reward model
    rows = list(csv.DictReader(open(out / "episodes.csv")))
    greedy_returns = [r["return_extrinsic"] for r in rows if r["mode"] == "greedy"]
    seeds = [int(r["seed"]) for r in rows if r["mode"] == "sampled"]
    assert seeds == [int(r["seed"]) for r in rows if r["mode"] == "greedy"]  # same episodes

    again = cartpole_run / "evaluation" / "again"
    assert main(["evaluate", str(cartpole_run), "--episodes", "6", "--out", str(again)]) == 0
    rows = list(csv.DictReader(open(again / "episodes.csv")))
    assert [r["return_extrinsic"] for r in rows if r["mode"] == "greedy"] == greedy_returns


@pytest.mark.slow
def test_a_checkpoint_moved_away_from_its_run_still_evaluates(cartpole_run, tmp_path):
    """As on another machine: the run's path does not exist there and no config.yaml came
    along; the config saved inside the checkpoint is used, on the CPU."""
    checkpoint = sorted((cartpole_run / "checkpoints").glob("checkpoint_*.pt"))[-1]
    moved = tmp_path / "elsewhere" / checkpoint.name
    moved.parent.mkdir()
    shutil.copy(checkpoint, moved)
    report, paths = evaluate(moved, episodes=3, out_dir=tmp_path / "out", progress=False)
    assert report["checkpoint"] == str(moved) and report["env"] == "CartPole-v1"
    assert paths["json"].is_file()
    _check_outputs(tmp_path / "out", episodes=3)


def test_errors_are_named(tmp_path, capsys):
    with pytest.raises(EvaluationError, match="neither a run directory nor a checkpoint"):
        load_for_evaluation(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    assert main(["evaluate", str(tmp_path / "empty")]) == 2
    assert "no loadable checkpoint" in capsys.readouterr().err


class _EveryCaptionHelps:
    """A reward model that gives 1 to every caption, the empty one included."""

    def read_rewards(self, captions):
        return np.ones(len(captions), np.float32)


@pytest.mark.slow
@pytest.mark.nle
def test_tiny_nethack_run_evaluates_with_depth_and_intrinsic_return(tmp_path, capsys):
    run_dir = tmp_path / "nethack"
    args = [
        "train",
        f"run_dir={run_dir}",
        "mode=serial",
        "total_env_steps=256",
        "env.num_envs_per_worker=2",
        "rollout.num_workers=1",
        "rollout.unroll_length=16",
        "learner.batch_size=32",
        "model.hidden_size=64",
        "reward_model.name=none",
        "reward.intrinsic_coef=0",
        "--quiet",
    ]
    assert main(args) == 0
    out = tmp_path / "eval"
    cli = ["evaluate", str(run_dir), "--episodes", "3", "--max-episode-steps", "40"]
    assert main([*cli, "--envs", "2", "--out", str(out)]) == 0
    report = _check_outputs(out, episodes=3)
    assert report["env"] == "NetHackScoreExtendedActions-v1" and report["max_episode_steps"] == 40
    for metrics in report["modes"].values():
        assert 1 <= metrics["max_depth"]["mean"] and metrics["length"]["mean"] <= 40

    # The intrinsic return is the training rule's: c_int * r_int * N_ep^-beta summed; with
    # r_int = 1 for every caption and beta = 0 that is c_int per step.
    loaded = load_for_evaluation(run_dir)
    from dataclasses import replace

    from cluster.evaluate import build_policy_and_reward

    config = replace(
        loaded.config, reward=replace(loaded.config.reward, intrinsic_coef=0.5, count_exponent=0)
    )
    policy, _ = build_policy_and_reward(loaded)
    played = []  # what the progress line hears: env steps so far, after each batched step
    results = play(
        config,
        policy,
        _EveryCaptionHelps(),
        mode="greedy",
        episodes=2,
        seed=7,
        num_envs=2,
        max_episode_steps=25,
        on_steps=played.append,
    )
    assert [r.seed for r in results] == [7, 8]
    assert played == sorted(set(played)) and played[-1] == sum(r.length for r in results)
    for result in results:
        assert result.return_intrinsic == pytest.approx(0.5 * result.length)
