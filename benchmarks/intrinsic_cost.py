"""What the intrinsic reward costs: full-loop `rogueray train` throughput with extrinsic reward
only against ONI's classification, hashing and ranking reward models (the embedded SmolLM2
judge labelling captions meanwhile), in one run on one machine.

    python benchmarks/intrinsic_cost.py [--rounds 2] [--steps 30000] [--methods ...]
                                        [--out results.json]

Runs alternate (ABCD ABCD ...), so a change in other users' load hits every method alike. Each
run is `rogueray train` in Ray mode with the issue's shape (2 workers x 16 envs, unroll 32,
batch 4096, GRU 512, NetHackScore-v0; tests use smaller), started from scratch; its rate is
env steps per second from the first status line with steps to the last (actor start-up, model
loading and the final checkpoint excluded; the whole run's rate is kept beside it). Prints ONE
JSON object: each run's figures, each method's median, the ratio of each median to
extrinsic-only's, the median of the per-round ratios, and the annotator's labels, labels/s and
label latency (p50/p95, from TensorBoard) for the methods that ask the LLM."""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from timing import emit, log
from train_runs import (
    EXTRINSIC,
    SHAPE,
    code_version,
    last,
    loadavg,
    overrides_of,
    run_train,
    steady_rate,
)

METHODS = {
    "extrinsic": EXTRINSIC,
    "classification": {"reward_model.name": "classification", "reward.intrinsic_coef": 0.4},
    "hashing": {"reward_model.name": "hashing", "reward.intrinsic_coef": 0.4},
    "ranking": {"reward_model.name": "ranking", "reward.intrinsic_coef": 0.4},
    # Ablations of classification's defaults: the annotator at the training loop's priority,
    # and also 32 reward-model steps per label delivery (the defaults before 2026-11-30).
    "classification_nice0": {
        "reward_model.name": "classification",
        "reward.intrinsic_coef": 0.4,
        "annotator.niceness": 0,
    },
    # The small reward-model width (configs/default.yaml's, what `rogueray train` runs).
    "classification_small": {
        "reward_model.name": "classification",
        "reward.intrinsic_coef": 0.4,
        "reward_model.width": "small",
    },
    # The judge at the lowest priority (Linux nice 19: about 1/70 of a nice-0 process's share of
    # a contended core), with ONI's and with the small reward-model width.
    "classification_nice19": {
        "reward_model.name": "classification",
        "reward.intrinsic_coef": 0.4,
        "annotator.niceness": 19,
    },
    "classification_nice19_small": {
        "reward_model.name": "classification",
        "reward.intrinsic_coef": 0.4,
        "annotator.niceness": 19,
        "reward_model.width": "small",
    },
    # Everything but the LLM: the rules judge labels in microseconds.
    "classification_rules": {
        "reward_model.name": "classification",
        "reward.intrinsic_coef": 0.4,
        "annotator.backend": "rules",
    },
    # The plumbing alone: labels (rules judge) reach the reward model, which never trains.
    "classification_rules_untrained": {
        "reward_model.name": "classification",
        "reward.intrinsic_coef": 0.4,
        "annotator.backend": "rules",
        "reward_model.label_batch_size": 10**9,  # 32 steps per 10**9 labels: none
    },
    # The judge alone: the LLM labels as at the defaults; the reward model never trains.
    "classification_untrained": {
        "reward_model.name": "classification",
        "reward.intrinsic_coef": 0.4,
        "reward_model.label_batch_size": 10**9,
    },
    # The judge's busy share set (the default, null, chooses 0.1 for the embedded LLM's one
    # thread on 2 CPUs): 1 never rests (the defaults before 2026-12-01).
    "classification_busy100": {
        "reward_model.name": "classification",
        "reward.intrinsic_coef": 0.4,
        "annotator.busy_share": 1.0,
    },
    "classification_busy50": {
        "reward_model.name": "classification",
        "reward.intrinsic_coef": 0.4,
        "annotator.busy_share": 0.5,
    },
    "classification_busy25": {
        "reward_model.name": "classification",
        "reward.intrinsic_coef": 0.4,
        "annotator.busy_share": 0.25,
    },
    "classification_before": {
        "reward_model.name": "classification",
        "reward.intrinsic_coef": 0.4,
        "annotator.niceness": 0,
        "reward_model.label_batch_size": 1,
    },
}
ANNOTATOR_TAGS = {
    "labels_total": "annotator/labels_total",
    "labels_per_s": "annotator/labels_per_s",
    "label_latency_p50_s": "annotator/label_latency_p50_s",
    "label_latency_p95_s": "annotator/label_latency_p95_s",
    "first_label_delay_s": "annotator/first_label_delay_s",
}
REWARD_MODEL_TAGS = {
    "reward_model_gradient_steps": "reward_model/gradient_steps",
    "reward_model_dataset_size": "reward_model/dataset_size",
}
TARGET_CLASSIFICATION_COST = 0.10  # the issue: ONI classification costs under 10 %


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=2, help="ABCD alternations (2)")
    p.add_argument("--steps", type=int, default=30_000, help="env steps per run (30,000)")
    p.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"comma list, extrinsic first (default: {','.join(METHODS)})",
    )
    p.add_argument(
        "--warmup-steps",
        type=int,
        default=0,
        help="the rate counts from the first status line past this many env steps, for every "
        "method alike (leaves the LLM's loading, which overlaps training's start, out)",
    )
    p.add_argument("--timeout-s", type=float, default=600.0, help="a run is stopped after this")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra rogueray override for every run (e.g. env.num_envs_per_worker=4)",
    )
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown or not args.methods or args.methods[0] != "extrinsic":
        p.error(f"--methods: {args.methods} must start with extrinsic; allowed: {list(METHODS)}")
    if args.rounds < 1 or args.steps < 1:
        p.error("--rounds and --steps must be >= 1")
    for item in args.set:
        if "=" not in item:
            p.error(f"--set {item!r}: expected KEY=VALUE, e.g. env.num_envs_per_worker=4")
    return args


def one_run(method: str, args) -> dict:
    overrides = overrides_of(SHAPE, METHODS[method], {"total_env_steps": args.steps})
    load_before = loadavg()
    run = run_train([*overrides, *args.set], timeout_s=args.timeout_s)
    watch = run["watch"]
    steady = steady_rate(watch.marks, skip_steps=args.warmup_steps)
    steps = watch.done_steps or (watch.marks[-1][1] if watch.marks else 0)
    row = {
        "method": method,
        "steps_per_s": steady["steps_per_s"],
        "timed_s": steady["timed_s"],
        "whole_run_steps_per_s": steps / run["wall_s"],
        "wall_s": run["wall_s"],
        "env_steps": steps,
        "first_status_s": watch.marks[0][0] - watch.started if watch.marks else None,
        "returncode": run["returncode"],
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
    }
    if method != "extrinsic":
        tags = {**ANNOTATOR_TAGS, **REWARD_MODEL_TAGS}
        row.update({k: last(run["scalars"], tag) for k, tag in tags.items()})
    return row


def summarise(runs: list[dict], methods: list[str]) -> dict:
    """Medians per method, ratio of medians to extrinsic-only, and per-round paired ratios."""
    by_method = {m: [r for r in runs if r["method"] == m] for m in methods}
    medians = {
        m: statistics.median(r["steps_per_s"] for r in rows if r["steps_per_s"])
        for m, rows in by_method.items()
        if any(r["steps_per_s"] for r in rows)
    }
    base = medians.get("extrinsic")
    ratios = {m: v / base for m, v in medians.items()} if base else {}
    paired = {}
    for m in methods[1:]:
        pairs = [
            a["steps_per_s"] / b["steps_per_s"]
            for a, b in zip(by_method[m], by_method["extrinsic"], strict=False)
            if a["steps_per_s"] and b["steps_per_s"]
        ]
        paired[m] = statistics.median(pairs) if pairs else None
    out = {"median_steps_per_s": medians, "ratio_of_medians_to_extrinsic": ratios}
    out["median_paired_ratio_to_extrinsic"] = paired
    out["cost_vs_extrinsic"] = {m: 1 - r for m, r in ratios.items() if m != "extrinsic"}
    if "classification" in out["cost_vs_extrinsic"]:
        out["classification_under_target_cost"] = (
            out["cost_vs_extrinsic"]["classification"] < TARGET_CLASSIFICATION_COST
        )
    for key in [*ANNOTATOR_TAGS, *REWARD_MODEL_TAGS]:
        out[f"median_{key}"] = {
            m: statistics.median(vals)
            for m, rows in by_method.items()
            if (vals := [r[key] for r in rows if r.get(key) is not None])
        }
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    out = {
        "benchmark": "intrinsic_cost",
        "shape": {**SHAPE, "total_env_steps": args.steps, "extra_overrides": args.set},
        "warmup_steps": args.warmup_steps,
        "methods": {m: METHODS[m] for m in args.methods},
        "rounds": args.rounds,
        "order": "alternating: "
        + " ".join(["".join("ABCDEFG"[: len(args.methods)])] * args.rounds),
        "loadavg_start": loadavg(),
        "code": code_version(),
    }
    runs = []
    for r in range(args.rounds):
        for method in args.methods:
            log(f"round {r + 1}/{args.rounds}: {method}, {args.steps:,d} steps")
            row = one_run(method, args)
            runs.append({"round": r + 1, **row})
            log(
                f"  {row['steps_per_s'] or 0:.0f} steps/s (whole run {row['whole_run_steps_per_s']:.0f})"
            )
    out.update(summarise(runs, args.methods))
    out["runs"] = runs
    out["loadavg_end"] = loadavg()
    out["total_wall_s"] = round(time.perf_counter() - t0, 1)
    emit(out, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
