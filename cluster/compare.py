"""`rogueray compare RUN_DIR...`: the figure a paper shows. Return, success rate and intrinsic
return against env steps, runs grouped by config (the config minus the seed and the keys that
do not change what is learned, BOOKKEEPING_KEYS; or by the keys given with --group-by), each
group's seed mean with a 95 % t band, a markdown table of final figures, and every run's scalars
as CSV and JSON. Reads the TensorBoard event files only (no torch, no Ray).

Curves are the windowed means the driver logs (`episode_window/*`: the last 100 episodes). Seeds
are put on one grid of env steps by linear interpolation, up to the shortest seed's last step.
A run's final figure is its last windowed value."""

from __future__ import annotations

import csv
import json
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cluster.evaluate_stats import Estimate, mean_ci

# (label, tags in order of preference: the first a run has is used). The second names are what
# runs written before the per-episode / window split logged.
METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "return": ("extrinsic return", ("episode_window/return_extrinsic",)),
    "success": ("success rate", ("episode_window/success_rate", "episode/success_rate")),
    "intrinsic": (
        "intrinsic return",
        ("episode_window/return_intrinsic", "episode/return_intrinsic"),
    ),
}
BOOKKEEPING_KEYS = frozenset(
    {
        "seed",
        "run_dir",
        "checkpoint_interval_s",
        "keep_checkpoints",
        "log_interval_s",
        "ray_address",
        "ray_num_cpus",
        "rollout.node_resource",
        "rollout.inference",
        "rollout.inference_device",
        "learner.device",
        "learner.node_resource",
        "reward_model.device",
        "annotator.api_key_env",
        "annotator.label_store",
        "annotator.niceness",
        "annotator.num_gpus",
        "annotator.node_resource",
    }
    | {f"evaluation.{key}" for key in ("interval_env_steps", "episodes", "greedy")}
    | {f"evaluation.{key}" for key in ("max_episode_steps", "clip_frames")}
)
"""Keys that say where and how a run was logged, placed or evaluated, not what it learned:
seeds of one setting that differ only in these are one group."""
LABEL_WIDTH = 60  # characters per legend line; longer group labels wrap
LEGEND_COLUMN_IN = 4.8  # inches a legend column of LABEL_WIDTH characters takes at font size 8
LEGEND_LINE_IN = 0.16  # inches a legend line takes
GRID_POINTS = 200


class CompareError(Exception):
    """Something the user must fix (the CLI prints it and exits 2)."""


@dataclass
class Run:
    path: Path
    name: str
    config: dict[str, Any]
    scalars: dict[str, list[tuple[int, float]]]

    def series(self, metric: str) -> tuple[str, np.ndarray, np.ndarray] | None:
        """(tag, steps, values) of the first tag of `metric` this run logged."""
        if metric == "intrinsic" and self.config.get("reward_model.name") == "none":
            return None  # the learner logs zeros without a reward model
        for tag in METRICS[metric][1]:
            points = self.scalars.get(tag)
            if points:
                steps, values = zip(*points, strict=True)
                return tag, np.asarray(steps, np.float64), np.asarray(values, np.float64)
        return None

    def final(self, metric: str) -> float | None:
        found = self.series(metric)
        return None if found is None else float(found[2][-1])

    @property
    def last_step(self) -> int:
        return max((points[-1][0] for points in self.scalars.values() if points), default=0)


@dataclass
class Group:
    key: tuple
    label: str = ""
    runs: list[Run] = field(default_factory=list)


def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of a run's TensorBoard log: {tag: [(step, value), ...]} in step order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log_dir = run_dir / "tensorboard"
    if not log_dir.is_dir():
        raise CompareError(f"{run_dir} has no tensorboard folder: not a rogueray run directory")
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    events.Reload()
    out = {}
    for tag in events.Tags()["scalars"]:
        points = [(int(e.step), float(e.value)) for e in events.Scalars(tag)]
        out[tag] = sorted(points, key=lambda p: p[0])  # stable: same-step order kept
    return out


def flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def load_run(path: str | Path) -> Run:
    run_dir = Path(path)
    if not run_dir.is_dir():
        raise CompareError(f"{str(run_dir)!r} is not a directory")
    saved = run_dir / "config.yaml"
    config = flat(yaml.safe_load(saved.read_text()) or {}) if saved.is_file() else {}
    return Run(run_dir, run_dir.name, config, read_scalars(run_dir))


def group_runs(runs: list[Run], by: list[str] | None = None) -> list[Group]:
    """Runs with the same config apart from BOOKKEEPING_KEYS form a group (seeds of one setting),
    or, given `by`, runs with the same values of those keys; a run without config.yaml is a group
    of its own. Labels name what differs between groups.

    Raises CompareError for a key of `by` that no run's config has, listing those it has."""
    if by:
        known = set().union(*(run.config for run in runs))
        unknown = [key for key in by if key not in known]
        if unknown:
            raise CompareError(
                f"--group-by {', '.join(unknown)}: no run's config has "
                f"{'it' if len(unknown) == 1 else 'them'}; keys that differ between these runs: "
                f"{', '.join(_differing_keys(runs)) or '(none)'}"
            )
    groups: dict[tuple, Group] = {}
    for run in runs:
        if run.config:
            key = tuple(
                sorted(
                    (k, repr(v))
                    for k, v in run.config.items()
                    if (k in by if by else k not in BOOKKEEPING_KEYS)
                )
            )
        else:
            key = (("path", str(run.path)),)
        groups.setdefault(key, Group(key)).runs.append(run)
    items = list(groups.values())
    differing = set()
    if len(items) > 1:
        keys = set().union(*(dict(g.key) for g in items))
        differing = {k for k in keys if len({dict(g.key).get(k) for g in items}) > 1}
    for group in items:
        config = dict(group.key)
        shown = [f"{k}={_short(_plain(config[k]))}" for k in sorted(differing) if k in config]
        if "path" in config:
            shown = [group.runs[0].name]
        elif not shown:
            shown = [_plain(config.get("env.id", "'run'"))]
        group.label = ", ".join(shown)
    return items


def _differing_keys(runs: list[Run]) -> list[str]:
    keys = set().union(*(run.config for run in runs))
    return sorted(k for k in keys if len({repr(run.config.get(k)) for run in runs}) > 1)


def _plain(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == "'" else text


def _short(value: str) -> str:
    """A path as its last three parts (.../score/rules/motif_reward.pt); anything else as is."""
    parts = value.split("/")
    return value if len(parts) <= 4 else ".../" + "/".join(parts[-3:])


def seed_curves(group: Group, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(grid, mean, half-width of the 95 % t band, seeds) on a common step grid; empty arrays
    when no run of the group logged the metric."""
    series = [s for run in group.runs if (s := run.series(metric)) is not None]
    if not series:
        return np.array([]), np.array([]), np.array([]), 0
    start = max(steps[0] for _, steps, _ in series)
    stop = min(steps[-1] for _, steps, _ in series)
    union = np.unique(np.concatenate([steps for _, steps, _ in series]))
    union = union[(union >= start) & (union <= stop)]
    if stop <= start:
        grid = np.array([stop])
    elif union.size <= GRID_POINTS:  # short runs: the steps they logged at
        grid = union
    else:
        grid = np.linspace(start, stop, GRID_POINTS)
    curves = np.stack([np.interp(grid, steps, values) for _, steps, values in series])
    mean = curves.mean(axis=0)
    half = np.zeros_like(mean)
    if len(series) > 1:
        for j in range(grid.size):
            e = mean_ci(curves[:, j])
            half[j] = e.ci_high - e.mean
    return grid, mean, half, len(series)


def final_estimates(group: Group) -> dict[str, Estimate | None]:
    out = {}
    for metric in METRICS:
        finals = [f for run in group.runs if (f := run.final(metric)) is not None]
        out[metric] = mean_ci(finals)
    out["env_steps"] = mean_ci([run.last_step for run in group.runs])
    return out


def _cell(e: Estimate | None, integer: bool = False) -> str:
    if e is None:
        return "-"
    fmt = (lambda v: f"{v:,.0f}") if integer else (lambda v: f"{v:.3f}")
    if e.n < 2:
        return fmt(e.mean)
    return f"{fmt(e.mean)} ± {fmt(e.ci_high - e.mean)}"


def markdown_table(groups: list[Group]) -> str:
    """Final figures: seed mean ± half-width of the 95 % t interval (plain mean for one seed)."""
    lines = [
        "| group | seeds | env steps | final return | final success rate | final intrinsic return |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for group in groups:
        f = final_estimates(group)
        label = group.label.replace("|", "\\|")
        lines.append(
            f"| {label} | {len(group.runs)} | {_cell(f['env_steps'], integer=True)} | "
            f"{_cell(f['return'])} | {_cell(f['success'])} | {_cell(f['intrinsic'])} |"
        )
    return "\n".join(lines) + "\n"


def plot(groups: list[Group], png: Path, svg: Path) -> list[str]:
    """Draws the panels that have data into `png` and `svg`; returns the metrics drawn."""
    import matplotlib.pyplot as plt

    fig, metrics = draw(groups)
    fig.savefig(png, dpi=150)
    fig.savefig(svg)
    plt.close(fig)
    return metrics


def draw(groups: list[Group]):
    """(matplotlib Figure, metrics drawn): one panel per metric some run logged, one line per
    group, and a legend below that names every group in full."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in METRICS if any(r.series(m) for g in groups for r in g.runs)]
    if not metrics:
        raise CompareError("none of the runs logged episode returns yet: nothing to draw")
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(5.2 * len(metrics), 4.0), squeeze=False, layout="constrained"
    )
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, metric in zip(axes[0], metrics, strict=True):
        for i, group in enumerate(groups):
            grid, mean, half, seeds = seed_curves(group, metric)
            if seeds == 0:
                continue
            color = colors[i % len(colors)]
            label = textwrap.fill(
                f"{group.label} ({seeds} seed{'s' if seeds > 1 else ''})",
                LABEL_WIDTH,
                break_on_hyphens=False,
            )
            marker = "o" if grid.size < 20 else None  # a run with few points still shows
            ax.plot(grid, mean, color=color, label=label, linewidth=1.6, marker=marker, ms=3)
            if seeds > 1:
                low, high = mean - half, mean + half
                if metric == "success":  # a rate's band stays within [0, 1]
                    low, high = np.clip(low, 0, 1), np.clip(high, 0, 1)
                ax.fill_between(grid, low, high, color=color, alpha=0.2, linewidth=0)
        ax.set_title(METRICS[metric][0])
        ax.set_xlabel("env steps")
        ax.grid(alpha=0.3)
        ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 3))
    handles, labels = _legend_entries(axes[0])
    width = fig.get_figwidth()
    ncol = max(1, min(len(labels), int(width // LEGEND_COLUMN_IN)))
    lines = [label.count("\n") + 1 for label in labels]
    rows = [sum(lines[i::ncol]) for i in range(ncol)]  # fill order is by column
    fig.set_figheight(4.0 + LEGEND_LINE_IN * (max(rows) + len(labels) / ncol + 2))
    # "outside": the constrained layout makes room below the panels for the whole legend, however
    # many groups and however long their labels (wrapped at LABEL_WIDTH), so none is cut off.
    fig.legend(
        handles,
        labels,
        loc="outside lower center",
        ncol=ncol,
        frameon=False,
        fontsize=8,
        title="mean over seeds; band: 95 % t interval; curves: means of the last 100 episodes",
        title_fontsize=7,
    )
    return fig, metrics


def _legend_entries(axes) -> tuple[list, list[str]]:
    """Each group's line once, from whichever panel drew it (a group may lack a metric)."""
    entries: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    return list(entries.values()), list(entries)


def export_scalars(runs: list[Run], folder: Path) -> list[Path]:
    """<folder>/<run>.csv (tag, step, value; long format) and <run>.json ({tag: [[step, value]]})."""
    folder.mkdir(parents=True, exist_ok=True)
    written, used = [], set()
    for run in runs:
        name, n = run.name, 1
        while name in used:
            n += 1
            name = f"{run.name}-{n}"
        used.add(name)
        with open(folder / f"{name}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["tag", "step", "value"])
            for tag in sorted(run.scalars):
                writer.writerows([tag, step, value] for step, value in run.scalars[tag])
        (folder / f"{name}.json").write_text(
            json.dumps({"run_dir": str(run.path), "scalars": run.scalars}) + "\n"
        )
        written += [folder / f"{name}.csv", folder / f"{name}.json"]
    return written


def compare(
    run_dirs: list[str], out_dir: str | Path, group_by: list[str] | None = None
) -> dict[str, Any]:
    if not run_dirs:
        raise CompareError("give at least one run directory")
    out = Path(out_dir)
    try:  # before reading any run: a bad --out is found at once
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CompareError(f"cannot make the output folder {out}: {exc.strerror or exc}") from None
    runs = [load_run(path) for path in run_dirs]
    groups = group_runs(runs, group_by)
    png, svg, table_path = out / "comparison.png", out / "comparison.svg", out / "table.md"
    drawn = plot(groups, png, svg)
    table = markdown_table(groups)
    table_path.write_text(table)
    exported = export_scalars(runs, out / "scalars")
    return {
        "png": png,
        "svg": svg,
        "table": table,
        "table_path": table_path,
        "groups": groups,
        "metrics": drawn,
        "exported": exported,
    }


def describe_groups(groups: list[Group]) -> str:
    return "\n".join(f"  {g.label}: {', '.join(str(r.path) for r in g.runs)}" for g in groups)
