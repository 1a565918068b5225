"""`rogueray compare`: the table of final figures matches the event files of two tiny real runs,
the figure is written as PNG and SVG, runs are grouped by config minus seed and run_dir, and every
run's scalars are exported as CSV and JSON."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cluster.cli import main
from cluster.compare import CompareError, compare, draw, group_runs, load_run
from cluster.config import dump_yaml, load_config
from cluster.evaluate_stats import t_quantile_975

ROOT = Path(__file__).resolve().parents[2]
CARTPOLE = str(ROOT / "configs" / "cartpole.yaml")


def _last(run_dir: Path, tag: str) -> tuple[int, float]:
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    last = events.Scalars(tag)[-1]
    return last.step, last.value


def _table_rows(table: str) -> list[list[str]]:
    lines = [ln for ln in table.strip().splitlines()[2:]]
    return [[cell.strip() for cell in ln.strip("|").split("|")] for ln in lines]


@pytest.mark.slow
def test_table_matches_the_event_files_of_two_tiny_runs(tmp_path, capsys):
    runs = []
    for seed in (0, 1):
        run_dir = tmp_path / f"seed{seed}"
        args = [CARTPOLE, f"run_dir={run_dir}", f"seed={seed}", "mode=serial"]
        assert main(["train", *args, "total_env_steps=5000", "log_interval_s=0.2", "--quiet"]) == 0
        runs.append(run_dir)
    out = tmp_path / "figure"
    assert main(["compare", *map(str, runs), "--out", str(out)]) == 0
    printed = capsys.readouterr().out

    finals = [_last(run, "episode_window/return_extrinsic") for run in runs]
    values = [value for _, value in finals]
    mean = float(np.mean(values))
    half = t_quantile_975(1) * float(np.std(values, ddof=1)) / math.sqrt(2)
    table = (out / "table.md").read_text()
    assert table in printed
    (row,) = _table_rows(table)
    group, seeds, steps, final_return, success, intrinsic = row
    assert (group, seeds) == ("CartPole-v1", "2")
    assert final_return == f"{mean:.3f} ± {half:.3f}"
    assert steps.startswith(f"{np.mean([s for s, _ in finals]):,.0f}")
    assert success == "-" and intrinsic == "-"  # no goal, no reward model

    assert (out / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "comparison.svg").read_text().lstrip().startswith("<?xml")
    import matplotlib.image

    height, width, _ = matplotlib.image.imread(out / "comparison.png").shape
    assert width > 400 and height > 300

    exported = json.loads((out / "scalars" / "seed0.json").read_text())["scalars"]
    window = exported["episode_window/return_extrinsic"]
    assert window[-1] == list(finals[0])
    rows = list(csv.DictReader(open(out / "scalars" / "seed0.csv")))
    assert sum(1 for r in rows if r["tag"] == "episode_window/return_extrinsic") == len(window)
    # one window point per step: per-episode points live under episode/return_extrinsic
    assert len({step for step, _ in window}) == len(window)


def _fake_run(root: Path, name: str, overrides: list[str], returns: list[float]) -> Path:
    from torch.utils.tensorboard import SummaryWriter

    run_dir = root / name
    config = load_config(CARTPOLE, [f"run_dir={run_dir}", *overrides])
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(dump_yaml(config))
    writer = SummaryWriter(str(run_dir / "tensorboard"))
    for i, value in enumerate(returns):
        writer.add_scalar("episode_window/return_extrinsic", value, (i + 1) * 1000)
        writer.add_scalar("episode_window/success_rate", value / 100, (i + 1) * 1000)
    writer.close()
    return run_dir


def test_runs_are_grouped_by_config_without_seed_and_run_dir(tmp_path):
    lr = "learner.learning_rate"
    paths = [
        _fake_run(tmp_path, "a0", [f"{lr}=0.001", "seed=0"], [10, 20, 30]),
        _fake_run(tmp_path, "a1", [f"{lr}=0.001", "seed=1"], [12, 22, 34]),
        _fake_run(tmp_path, "b0", [f"{lr}=0.0003", "seed=0"], [5, 6, 7]),
    ]
    groups = group_runs([load_run(p) for p in paths])
    assert [(g.label, [r.name for r in g.runs]) for g in groups] == [
        ("learner.learning_rate=0.001", ["a0", "a1"]),
        ("learner.learning_rate=0.0003", ["b0"]),
    ]
    result = compare([str(p) for p in paths], tmp_path / "out")
    rows = {row[0]: row for row in _table_rows(result["table"])}
    half = t_quantile_975(1) * float(np.std([30, 34], ddof=1)) / math.sqrt(2)
    assert rows["learner.learning_rate=0.001"][3] == f"32.000 ± {half:.3f}"
    assert rows["learner.learning_rate=0.0003"][3] == "7.000"  # one seed: no interval
    assert rows["learner.learning_rate=0.0003"][4] == "0.070"
    assert result["metrics"] == ["return", "success"]
    assert yaml.safe_load((paths[0] / "config.yaml").read_text())["seed"] == 0


def test_seeds_that_differ_only_in_bookkeeping_are_one_group(tmp_path):
    # The comparison's reruns of one seed had another log_interval_s and rollout.inference;
    # they split 3 seeds into groups of 2 and 1.
    paths = [
        _fake_run(tmp_path, "s0", ["seed=0", "log_interval_s=30"], [1, 2]),
        _fake_run(tmp_path, "s1", ["seed=1", "rollout.inference=worker"], [2, 3]),
        _fake_run(
            tmp_path, "s2", ["seed=2", "annotator.niceness=0", "checkpoint_interval_s=9"], [3]
        ),
    ]
    groups = group_runs([load_run(p) for p in paths])
    assert [[r.name for r in g.runs] for g in groups] == [["s0", "s1", "s2"]]


def test_group_by_names_the_keys_that_make_groups(tmp_path):
    lr, ent = "learner.learning_rate", "learner.entropy_coef"
    paths = [
        _fake_run(tmp_path, "a", [f"{lr}=0.001", f"{ent}=0.01"], [1]),
        _fake_run(tmp_path, "b", [f"{lr}=0.001", f"{ent}=0.02"], [2]),
        _fake_run(tmp_path, "c", [f"{lr}=0.002", f"{ent}=0.01"], [3]),
    ]
    runs = [load_run(p) for p in paths]
    grouped = group_runs(runs, by=[lr])
    assert [(g.label, [r.name for r in g.runs]) for g in grouped] == [
        (f"{lr}=0.001", ["a", "b"]),
        (f"{lr}=0.002", ["c"]),
    ]
    with pytest.raises(CompareError, match=rf"--group-by learner.lr: .*: {ent}, {lr}"):
        group_runs(runs, by=["learner.lr"])


def test_the_legend_names_every_group_in_full_inside_the_figure(tmp_path):
    # Long labels ran off both sides of the figure, and only 3 of 8 groups showed.
    long = "reward_model.goal_sentence=" + "descend the stairs as deep as possible " * 3
    paths = [
        _fake_run(tmp_path, f"g{i}", [f"{long}{i}", f"learner.learning_rate={i + 1}e-4"], [i, i])
        for i in range(8)
    ]
    groups = group_runs([load_run(p) for p in paths])
    fig, _ = draw(groups)
    fig.canvas.draw()
    legend = fig.legends[0]
    shown = [" ".join(text.get_text().split()) for text in legend.get_texts()]
    assert shown == [f"{g.label} (1 seed)" for g in groups]
    inside = fig.bbox.padded(1)  # pixels
    assert inside.containsx(legend.get_window_extent().x0)
    assert inside.containsx(legend.get_window_extent().x1)
    assert legend.get_window_extent().y0 >= 0
    for ax in fig.axes:  # the panels keep their room above the legend
        assert ax.get_window_extent().y0 > legend.get_window_extent().y1


def test_not_a_run_directory_is_an_error(tmp_path, capsys):
    assert main(["compare", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "no tensorboard folder" in capsys.readouterr().err
