"""Where inference runs and in what precision: full-loop `rogueray train` throughput with the
policy in each worker (float32, and `model.precision=auto`, bfloat16 where the CPU has it) against
one shared inference actor batching every worker's steps (`rollout.inference=shared`).

    python benchmarks/inference_placement.py [--rounds 2] [--steps 40000] [--variants ...]
                                             [--set KEY=VALUE ...] [--out results.json]

Runs alternate (ABC ABC ...) so that other users' load hits every variant alike; each is a fresh
`rogueray train` in Ray mode with the issue's shape (2 workers x 16 envs, unroll 32, batch 4096,
GRU 512, NetHackScore-v0), extrinsic reward only. Its rate is env steps/s from the first status
line to the last (start-up and the final checkpoint excluded). Prints ONE JSON object: every
run, each variant's median, and each median's ratio to the first variant's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from timing import emit, log
from train_runs import EXTRINSIC, SHAPE, loadavg, overrides_of, run_train, steady_rate

VARIANTS = {
    "worker_float32": {"rollout.inference": "worker", "model.precision": "float32"},
    "worker_auto": {"rollout.inference": "worker", "model.precision": "auto"},
    "shared_float32": {"rollout.inference": "shared", "model.precision": "float32"},
    "shared_auto": {"rollout.inference": "shared", "model.precision": "auto"},
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=2, help="alternations (2)")
    p.add_argument("--steps", type=int, default=40_000, help="env steps per run (40,000)")
    p.add_argument("--variants", default="worker_float32,worker_auto,shared_auto",
                   help=f"comma list of {', '.join(VARIANTS)}; the first is 1.0")  # fmt: skip
    p.add_argument("--timeout-s", type=float, default=900.0, help="a run is stopped after this")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra override for every run")  # fmt: skip
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown or not args.variants:
        p.error(f"--variants: unknown {unknown}; allowed: {', '.join(VARIANTS)}")
    if args.rounds < 1 or args.steps < 1:
        p.error("--rounds and --steps must be >= 1")
    return args


def one_run(variant: str, args) -> dict:
    overrides = overrides_of(SHAPE, EXTRINSIC, VARIANTS[variant], {"total_env_steps": args.steps})
    before = loadavg()
    run = run_train([*overrides, *args.set], timeout_s=args.timeout_s)
    steady = steady_rate(run["watch"].marks)
    return {
        "variant": variant,
        "steps_per_s": steady["steps_per_s"],
        "timed_s": steady["timed_s"],
        "wall_s": run["wall_s"],
        "returncode": run["returncode"],
        "loadavg_before": before,
        "loadavg_after": loadavg(),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    runs = []
    for round_ in range(args.rounds):
        for variant in args.variants:
            log(f"round {round_ + 1}/{args.rounds}: {variant}")
            runs.append(one_run(variant, args))
            log(f"  {runs[-1]['steps_per_s']} env steps/s")
    medians = {
        v: statistics.median(r["steps_per_s"] for r in runs if r["variant"] == v)
        for v in args.variants
    }
    base = medians[args.variants[0]]
    out = {
        "benchmark": "inference_placement",
        "shape": {**SHAPE, "total_env_steps": args.steps, "extra_overrides": args.set},
        "variants": {v: VARIANTS[v] for v in args.variants},
        "runs": runs,
        "median_steps_per_s": medians,
        "ratio_of_medians": {v: m / base for v, m in medians.items()},
        "wall_s": time.perf_counter() - t0,
    }
    emit(out, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
