"""ONI's comparison at CPU scale: the six reward types (extrinsic only, ELLM, offline Motif,
ONI-retrieval = hashing, ONI-classification, ONI-ranking) on ONI's tasks, several seeds, one
budget, each LLM-fed method once with the embedded judge and once with the rules control.

    python benchmarks/comparison.py --out-dir runs/comparison [--tasks score-reward-free,
        staircase-lvl3] [--seeds 0 1 2] [--steps 20000] [--judges smollm2,rules]
        [--methods extrinsic,ellm,motif,hashing,classification,ranking] [--set KEY=VALUE ...]

Every run is `rogueray train configs/oni/<task>-<method>.yaml` as a user runs it (a child
process), with the budget, seed and the laptop shape (`--set` adds overrides). Extrinsic-only
and ELLM ask no judge, so they run once per seed; the others once per judge. Offline Motif's
reward is prepared per task and judge first, with the CLI's own steps: `rogueray collect` (random
policy, `--motif-steps`), `rogueray annotate --both-orders` (`--motif-pairs`; each pair asked
both ways, as the embedded judge prefers whichever caption it reads first) and `rogueray
fit-reward`.

Writes `OUT_DIR/<task>/<judge>/<method>-s<seed>/` run directories (judge "none" for the two
judge-free methods), then `rogueray compare` per task and judge into `OUT_DIR/<task>/<judge>-plot/`
(figure and table), and prints ONE JSON object: per task, judge and method, the final windowed
extrinsic return and success rate of each seed and their mean with a 95 % t interval. A run
already finished in OUT_DIR is read, not run again, so the command resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cluster.compare import load_run  # noqa: E402
from cluster.evaluate_stats import mean_ci  # noqa: E402

METHODS = ("extrinsic", "ellm", "motif", "hashing", "classification", "ranking")
NO_JUDGE = ("extrinsic", "ellm")  # ask no LLM: one run per seed, shared by both judges
JUDGES = {
    "smollm2": ["annotator.backend=auto", "annotator.model=smollm2-135m"],
    "rules": ["annotator.backend=rules"],
}
ALIASES = {"staircase-lvl2": ("staircase-lvl3", "NetHackStaircaseLvl2ExtendedActions-v1")}
"""A task ONI did not run, on its sibling's configs with another env id: level 2 instead of 3,
sparse enough (a random agent succeeds in 0.7 % of episodes) yet reachable at a CPU budget."""
LAPTOP = [
    "rollout.num_workers=2",
    "env.num_envs_per_worker=16",
    "learner.batch_size=1024",
    "log_interval_s=5",  # the windowed curves rogueray compare draws are logged this often
    "checkpoint_interval_s=100000",
]


def config_path(task: str, method: str) -> Path:
    """configs/oni/<task>-<method>.yaml; on the reward-free task, extrinsic-only is Score's
    config with the extrinsic coefficient at 0 (no reward at all: the floor)."""
    if task == "score-reward-free" and method == "extrinsic":
        return REPO / "configs/oni/score-extrinsic.yaml"
    task = ALIASES.get(task, (task,))[0]
    return REPO / f"configs/oni/{task}-{method}.yaml"


def env_of(task: str) -> str:
    import yaml

    if task in ALIASES:
        return ALIASES[task][1]
    return yaml.safe_load(config_path(task, "hashing").read_text())["env"]["id"]


def cli(*args: str, log_path: Path) -> None:
    """`rogueray ARGS` in a child process, its output to `log_path`; raises on failure."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    with open(log_path, "w") as log:
        proc = subprocess.run(
            [sys.executable, "-m", "cluster.cli", *args], stdout=log, stderr=subprocess.STDOUT,
            env=env, cwd=REPO, check=False,
        )  # fmt: skip
    if proc.returncode != 0:
        tail = log_path.read_text().splitlines()[-15:]
        command = " ".join(args)
        raise RuntimeError(f"rogueray {command} failed ({proc.returncode}):\n" + "\n".join(tail))


def say(message: str) -> None:
    print(f"[comparison {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def prepare_motif(task: str, judge: str, out: Path, args) -> Path:
    """The fitted Motif reward for `task` labelled by `judge`: collect once per task (shared),
    annotate and fit per judge. Returns the reward file."""
    collected = out / task / "motif-dataset"
    done = collected / "manifest.json"
    if not done.exists() or json.loads(done.read_text()).get("steps", 0) < args.motif_steps:
        say(f"{task}: collecting {args.motif_steps} random-policy steps for Motif")
        cli("collect", str(collected), "--env", env_of(task), "--steps", str(args.motif_steps),
            "--no-progress", log_path=out / task / "motif-collect.log")  # fmt: skip
    dataset = out / task / judge / "motif-dataset"
    reward = dataset / "reward" / "motif_reward.pt"
    if reward.exists():
        return reward
    if not dataset.exists():
        dataset.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(collected, dataset)
    say(f"{task}/{judge}: annotating {args.motif_pairs} pairs, then fitting the Motif reward")
    config = str(config_path(task, "motif"))
    # Each pair asked in both orders and averaged: SmolLM2 prefers whichever caption comes first.
    cli("annotate", str(dataset), *JUDGES[judge], "--config", config, "--pairs",
        str(args.motif_pairs), "--both-orders", "--no-progress",
        log_path=dataset.parent / "motif-annotate.log")  # fmt: skip
    cli("fit-reward", str(dataset), "--width", args.motif_width, "--no-progress",
        log_path=dataset.parent / "motif-fit.log")  # fmt: skip
    return reward


def train_one(task: str, judge: str, method: str, seed: int, out: Path, args) -> Path:
    run_dir = out / task / judge / f"{method}-s{seed}"
    if (run_dir / "finished").exists():
        return run_dir
    overrides = [f"run_dir={run_dir}", f"seed={seed}", f"total_env_steps={args.steps}", *LAPTOP]
    overrides.append(f"env.id={env_of(task)}")
    if judge in JUDGES:
        overrides += JUDGES[judge]
    if task == "score-reward-free" and method == "extrinsic":
        overrides.append("reward.extrinsic_coef=0")
    if method == "motif":
        overrides.append(f"reward_model.path={prepare_motif(task, judge, out, args)}")
    say(f"{task}/{judge}: {method} seed {seed}")
    start = time.monotonic()
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    cli("train", str(config_path(task, method)), *overrides, *args.set,
        log_path=run_dir.parent / f"{method}-s{seed}.log")  # fmt: skip
    (run_dir / "finished").write_text(f"{time.monotonic() - start:.1f} s\n")
    return run_dir


def final(run_dir: Path, metric: str) -> float | None:
    """The run's last windowed value of `metric` ("return" or "success"), as compare reads it."""
    series = load_run(run_dir).series(metric)
    return None if series is None else float(series[2][-1])


def summarise(cells: dict[tuple[str, str, str], list[Path]]) -> dict:
    table: dict = {}
    for (task, judge, method), runs in sorted(cells.items()):
        row = {}
        for metric in ("return", "success"):
            values = [v for v in (final(r, metric) for r in runs) if v is not None]
            if values:
                estimate = mean_ci(values)
                row[metric] = {
                    "seeds": values,
                    "mean": estimate.mean,
                    "ci95": [estimate.ci_low, estimate.ci_high],
                }
        table.setdefault(task, {}).setdefault(judge, {})[method] = row
    return table


def markdown(table: dict, metric: str, label: str) -> str:
    """One markdown table of `metric`: a row per method, a column per task and judge, each cell
    the seeds' mean and its 95 % t interval."""
    columns = [
        (task, judge) for task, judges in table.items() for judge in judges if judge != "none"
    ]
    head = " | ".join(f"{task}, {judge} judge" for task, judge in columns)
    lines = [f"| {label} | {head} |", "|---" * (len(columns) + 1) + "|"]
    for method in METHODS:
        cells = []
        for task, judge in columns:
            row = table[task].get(judge, {}).get(method) or table[task].get("none", {}).get(method)
            cell = (row or {}).get(metric)
            cells.append(
                "-" if cell is None
                else f"{cell['mean']:.3g} [{cell['ci95'][0]:.3g}, {cell['ci95'][1]:.3g}]"
            )  # fmt: skip
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out-dir", required=True, type=Path)
    p.add_argument("--tasks", default="score-reward-free,staircase-lvl2",
                   help=f"configs/oni task names, or {', '.join(ALIASES)}")  # fmt: skip
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--judges", default=",".join(JUDGES))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=20_000, help="env steps per run (20,000)")
    p.add_argument("--motif-steps", type=int, default=20_000, help="steps collected per task")
    p.add_argument("--motif-pairs", type=int, default=250, help="pairs annotated per judge")
    p.add_argument("--motif-width", choices=("oni", "small"), default="small",
                   help="fit-reward's network (small: ~4x cheaper per step on a CPU)")  # fmt: skip
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    args.tasks = [t for t in args.tasks.split(",") if t]
    args.methods = [m for m in args.methods.split(",") if m]
    args.judges = [j for j in args.judges.split(",") if j]
    for task in args.tasks:
        if not config_path(task, "hashing").exists():
            p.error(f"--tasks: no configs/oni/{task}-*.yaml")
    if bad := [m for m in args.methods if m not in METHODS]:
        p.error(f"--methods: unknown {bad}; allowed: {', '.join(METHODS)}")
    if bad := [j for j in args.judges if j not in JUDGES]:
        p.error(f"--judges: unknown {bad}; allowed: {', '.join(JUDGES)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    out = args.out_dir.resolve()
    t0 = time.monotonic()
    cells: dict[tuple[str, str, str], list[Path]] = {}
    for task in args.tasks:
        for seed in args.seeds:  # seed-major: a stopped run still has every method's first seeds
            for method in args.methods:
                judges = ["none"] if method in NO_JUDGE else args.judges
                for judge in judges:
                    run = train_one(task, judge, method, seed, out, args)
                    cells.setdefault((task, judge, method), []).append(run)
    for task in args.tasks:
        for judge in args.judges:
            runs = [r for (t, j, _), rs in cells.items() if t == task and j in (judge, "none")
                    for r in rs]  # fmt: skip
            plot = out / task / f"{judge}-plot"
            log_path = out / task / f"{judge}-compare.log"
            cli("compare", *map(str, runs), "--out", str(plot), log_path=log_path)
    result = {
        "benchmark": "comparison",
        "tasks": args.tasks,
        "steps_per_run": args.steps,
        "seeds": args.seeds,
        "shape": LAPTOP + args.set,
        "motif": {"collected_steps": args.motif_steps, "pairs": args.motif_pairs},
        "final": summarise(cells),
        "wall_s": round(time.monotonic() - t0, 1),
    }
    tables = [
        markdown(result["final"], "return", "final extrinsic return (in-game score)"),
        markdown(result["final"], "success", "final success rate"),
    ]
    (out / "table.md").write_text("\n\n".join(tables) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
