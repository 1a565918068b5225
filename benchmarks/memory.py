"""Memory over a long run: the peak resident memory (RSS) of every process of a `rogueray train`
run (driver, learner, each rollout worker, inference actor, annotator, and each of Ray's own
processes under its own role: ray_gcs_server, ray_raylet, ray_dashboard, ray_dashboard_agent,
ray_runtime_env_agent, ray_log_monitor, ...; train_runs.role_of), sampled with psutil
every few seconds, and its growth per million env steps: the slope of a least-squares line of RSS
against env steps over the second half of the run (the first half holds start-up, the model's
loading and the label store's filling). Also the annotator's label latency during training
(first sighting of a caption to its label, p50/p95) and labels/s, read from the run's
TensorBoard scalars.

The learner's growth is read from the learner itself, not from those samples: within each update
its RSS swings by several hundred MB (one update's working set), so RSS sampled at random points
of that cycle gives a slope that is mostly noise. The learner logs its RSS and glibc's live heap
at the end of every update (`learner/rss_mb`, `learner/heap_mb`, MB; learner/memory_stats.py),
and the JSON's `learner` block fits those per-update values against the env step each was logged
at, over the second half of the updates; the sampled figure is kept beside them, named as such.
The annotator's RSS swings the same way with its LLM batches; its growth is read from the floor
of its live heap after its recent batches (`annotator/heap_floor_mb`, annotator/heap_floor.py),
logged with the driver's env step, in the JSON's `annotator` block.

    python benchmarks/memory.py [--minutes 35] [--steps 10000000] [--every-s 5]
                                [--method classification] [--out results.json]

The issue asks for >= 1e7 env steps; the run stops at --steps or after --minutes, whichever
comes first, and the JSON says which (`reached_target_steps`). Prints ONE JSON object."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from intrinsic_cost import ANNOTATOR_TAGS, METHODS
from timing import emit, log
from train_runs import SHAPE, code_version, last, loadavg, overrides_of, run_train, steady_rate

MB = 1024 * 1024
TARGET_STEPS = 10_000_000
# What the learner logs at the end of every update (learner/metrics.py), in MB.
LEARNER_RSS_TAG, LEARNER_HEAP_TAG = "learner/rss_mb", "learner/heap_mb"
ANNOTATOR_HEAP_TAG = "annotator/heap_floor_mb"  # annotator/metrics.py: HEAP_FLOOR_MB


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=35.0, help="stop the run after this (35)")
    p.add_argument("--steps", type=int, default=TARGET_STEPS, help="total_env_steps (1e7)")
    p.add_argument("--every-s", type=float, default=5.0, help="seconds between samples (5)")
    p.add_argument("--method", default="classification", choices=list(METHODS))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.steps < 1 or args.every_s <= 0:
        p.error("--minutes, --steps and --every-s must be positive")
    return args


def steps_at(marks: list[tuple[float, int]], times: np.ndarray) -> np.ndarray:
    """Env steps at each time, interpolated between status lines (0 before the first)."""
    if not marks:
        return np.zeros_like(times)
    t = np.array([0.0] + [m[0] for m in marks])
    s = np.array([0.0] + [m[1] for m in marks], dtype=float)
    return np.interp(times, t, s)


def growth_per_million(steps: np.ndarray, rss_mb: np.ndarray) -> float | None:
    """Slope (MB per 1e6 env steps) of RSS against steps over the second half of the samples."""
    half = len(steps) // 2
    x, y = steps[half:] / 1e6, rss_mb[half:]
    if len(x) < 3 or np.ptp(x) <= 0:
        return None
    return float(np.polyfit(x, y, 1)[0])


def per_process(memory: list, marks: list) -> list[dict]:
    """One row per process seen: role, pid, samples, first/peak/last RSS (MB), growth."""
    series: dict[int, dict] = {}
    for t, row in memory:
        for pid, (role, rss) in row.items():
            entry = series.setdefault(pid, {"role": role, "t": [], "rss": []})
            entry["role"] = role if role != "ray_idle" else entry["role"]  # actors start idle
            entry["t"].append(t)
            entry["rss"].append(rss / MB)
    rows = []
    for pid, e in series.items():
        rss = np.array(e["rss"])
        steps = steps_at(marks, np.array(e["t"]))
        rows.append(
            {
                "role": e["role"],
                "pid": pid,
                "samples": len(rss),
                "first_mb": float(rss[0]),
                "peak_mb": float(rss.max()),
                "last_mb": float(rss[-1]),
                "growth_mb_per_million_steps": growth_per_million(steps, rss),
            }
        )
    return sorted(rows, key=lambda r: (r["role"], r["pid"]))


def totals(memory: list, marks: list) -> dict:
    """The whole run's RSS summed over its processes: peak and growth per million steps."""
    times = np.array([t for t, _ in memory])
    summed = np.array([sum(rss for _, rss in row.values()) / MB for _, row in memory])
    if not len(summed):
        return {}
    return {
        "peak_mb": float(summed.max()),
        "growth_mb_per_million_steps": growth_per_million(steps_at(marks, times), summed),
    }


def by_role(rows: list[dict]) -> dict:
    """Per role: the largest peak and the largest growth among its long-lived processes."""
    out: dict = {}
    longest = max((r["samples"] for r in rows), default=0)
    for r in rows:
        if r["samples"] < longest // 2:  # short-lived helpers: no slope worth reading
            continue
        entry = out.setdefault(r["role"], {"processes": 0, "peak_mb": 0.0, "growth": []})
        entry["processes"] += 1
        entry["peak_mb"] = max(entry["peak_mb"], r["peak_mb"])
        if r["growth_mb_per_million_steps"] is not None:
            entry["growth"].append(r["growth_mb_per_million_steps"])
    for entry in out.values():
        growth = entry.pop("growth")
        entry["max_growth_mb_per_million_steps"] = max(growth) if growth else None
    return out


def series_growth(points: list[tuple[int, float]]) -> float | None:
    """Growth (MB per 1e6 env steps) of a per-update series [(env step, MB), ...]: the slope over
    its second half, as for the sampled RSS."""
    if not points:
        return None
    steps, values = np.array(points, dtype=float).T
    return growth_per_million(steps, values)


def first_last(points: list[tuple[int, float]]) -> list[float] | None:
    return [points[0][1], points[-1][1]] if points else None


def longest_sampled(rows: list[dict], role: str) -> dict | None:
    """The process of `role` sampled most often (a restarted actor leaves a short-lived row)."""
    return max((r for r in rows if r["role"] == role), key=lambda r: r["samples"], default=None)


def learner_memory(scalars: dict, rows: list[dict]) -> dict:
    """The learner's growth from its own per-update readings (RSS and live heap at the end of each
    update), beside the figure from RSS sampled at random points of its update cycle."""
    rss, heap = scalars.get(LEARNER_RSS_TAG, []), scalars.get(LEARNER_HEAP_TAG, [])
    sampled = longest_sampled(rows, "learner")
    return {
        "updates_read": len(rss),
        "learner_rss_at_update_end_growth_mb_per_1m_steps": series_growth(rss),
        "learner_heap_growth_mb_per_1m_steps": series_growth(heap),
        "learner_rss_sampled_at_random_points_growth_mb_per_1m_steps": (
            sampled["growth_mb_per_million_steps"] if sampled else None
        ),
        "rss_at_update_end_first_last_mb": first_last(rss),
        "heap_first_last_mb": first_last(heap),
        "peak_rss_sampled_mb": sampled["peak_mb"] if sampled else None,
    }


def annotator_memory(scalars: dict, rows: list[dict]) -> dict:
    """The annotator's growth from the floor of its live heap after its batches, beside the
    figure from its RSS sampled at random points of its batches."""
    heap = scalars.get(ANNOTATOR_HEAP_TAG, [])
    sampled = longest_sampled(rows, "annotator")
    return {
        "heap_floor_readings": len(heap),
        "annotator_heap_floor_growth_mb_per_1m_steps": series_growth(heap),
        "annotator_rss_sampled_at_random_points_growth_mb_per_1m_steps": (
            sampled["growth_mb_per_million_steps"] if sampled else None
        ),
        "heap_floor_first_last_mb": first_last(heap),
        "peak_rss_sampled_mb": sampled["peak_mb"] if sampled else None,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    overrides = overrides_of(SHAPE, METHODS[args.method], {"total_env_steps": args.steps})
    out = {"benchmark": "memory", "shape": {**SHAPE, "extra_overrides": args.set}}
    out.update(method=args.method, target_steps=args.steps, time_limit_min=args.minutes)
    out.update(sample_every_s=args.every_s, loadavg_start=loadavg())
    out["code"] = code_version()
    log(f"{args.method}, up to {args.steps:,d} steps or {args.minutes:.0f} min")
    t0 = time.perf_counter()
    run = run_train(
        [*overrides, *args.set], timeout_s=args.minutes * 60, sample_every_s=args.every_s
    )
    watch = run["watch"]
    steps = watch.done_steps or watch.marks[-1][1]
    out["env_steps"] = steps
    out["reached_target_steps"] = steps >= args.steps
    out["stopped_by"] = "total_env_steps" if steps >= args.steps else "time limit"
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    out["steps_per_s"] = steady_rate(watch.marks)["steps_per_s"]
    rows = per_process(watch.memory, watch.marks)
    out["total"] = totals(watch.memory, watch.marks)
    out["by_role"] = by_role(rows)
    out["learner"] = learner_memory(run["scalars"], rows)
    out["annotator"] = {k: last(run["scalars"], tag) for k, tag in ANNOTATOR_TAGS.items()}
    out["annotator"] |= annotator_memory(run["scalars"], rows)
    p50 = [v for _, v in run["scalars"].get(ANNOTATOR_TAGS["label_latency_p50_s"], [])]
    out["annotator"]["label_latency_p50_s_median_over_run"] = float(np.median(p50)) if p50 else None
    out["processes"] = rows
    out["loadavg_end"] = loadavg()
    emit(out, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
