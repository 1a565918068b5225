"""Full-loop `rogueray train` env steps/s against the number of rollout workers (extrinsic reward,
the issue's shape otherwise: 16 envs per worker, unroll 32, batch 4096, GRU 512, NetHackScore-v0),
runs alternating over the worker counts (1 2 3 4 1 2 3 4 ...), with an optional PNG plot.

    python benchmarks/worker_scaling.py [--workers 1,2,3,4] [--rounds 1] [--steps 30000]
                                        [--plot docs/performance-workers.png] [--out FILE]

On a machine with fewer cores than workers + 1 learner, Ray runs them on logical CPUs over the
same cores: the curve then shows how the loop shares them, not how it scales out. Prints ONE
JSON object: each run, and per worker count the median steps/s."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from timing import emit, log
from train_runs import EXTRINSIC, SHAPE, code_version, loadavg, overrides_of, run_train, steady_rate


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", default="1,2,3,4", help="comma list of rollout.num_workers")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--steps", type=int, default=30_000, help="env steps per run")
    p.add_argument("--timeout-s", type=float, default=600.0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--plot", help="write a PNG of steps/s against workers here")
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args(argv)
    try:
        args.workers = [int(w) for w in args.workers.split(",") if w.strip()]
    except ValueError:
        p.error(f"--workers {args.workers!r}: expected a comma list of integers, e.g. 1,2,3,4")
    if not args.workers or min(args.workers) < 1 or args.rounds < 1:
        p.error("--workers needs counts >= 1 and --rounds >= 1")
    return args


def plot(medians: dict[int, float], runs: list[dict], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    ax.plot(list(medians), list(medians.values()), "o-", label="median")
    ax.plot(
        [r["workers"] for r in runs], [r["steps_per_s"] for r in runs], "x", alpha=0.6,
        label="each run",
    )  # fmt: skip
    ax.set_xlabel("rollout workers (16 envs each)")
    ax.set_ylabel("env steps/s (full training loop)")
    ax.set_xticks(list(medians))
    ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    out = {"benchmark": "worker_scaling", "shape": {**SHAPE, "total_env_steps": args.steps}}
    out.update(workers=args.workers, rounds=args.rounds, cpu_count=os.cpu_count())
    out["loadavg_start"] = loadavg()
    out["code"] = code_version()
    runs = []
    for r in range(args.rounds):
        for n in args.workers:
            log(f"round {r + 1}/{args.rounds}: {n} workers, {args.steps:,d} steps")
            extra = {"total_env_steps": args.steps, "rollout.num_workers": n}
            load = loadavg()
            run = run_train(
                [*overrides_of(SHAPE, EXTRINSIC, extra), *args.set], timeout_s=args.timeout_s
            )
            rate = steady_rate(run["watch"].marks)["steps_per_s"]
            runs.append(
                {"round": r + 1, "workers": n, "steps_per_s": rate, "wall_s": run["wall_s"],
                 "loadavg_before": load, "loadavg_after": loadavg()}
            )  # fmt: skip
            log(f"  {rate or 0:.0f} steps/s")
    medians = {
        n: statistics.median(vals)
        for n in args.workers
        if (vals := [r["steps_per_s"] for r in runs if r["workers"] == n and r["steps_per_s"]])
    }
    out["median_steps_per_s"] = medians
    out["runs"] = runs
    out["loadavg_end"] = loadavg()
    out["total_wall_s"] = round(time.perf_counter() - t0, 1)
    if args.plot and medians:
        title = (
            f"rogueray train, NetHackScore-v0, {os.cpu_count()} cores, "
            f"load {out['loadavg_start'][0]:.1f}-{out['loadavg_end'][0]:.1f}"
        )
        plot(medians, [r for r in runs if r["steps_per_s"]], args.plot, title)
        out["plot"] = args.plot
    emit(out, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
