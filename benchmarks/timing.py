"""Shared helpers of the throughput benchmark: progress lines, windowed rates, and the CPU time
the whole machine spent, which separates a pipeline's cost from other users' load."""

from __future__ import annotations

import os
import statistics
import sys
import time

import numpy as np


def log(message: str) -> None:
    print(f"[throughput {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def window_rates(marks: list[tuple[float, int]], start: float, seconds: float, windows: int):
    """Rates of [start, start + seconds) split into `windows` parts, from (time, cumulative count)
    marks; the count between two marks is interpolated linearly, so that whole fragments
    arriving now and then do not quantise the rate."""
    times = np.array([t for t, _ in marks])
    counts = np.array([c for _, c in marks], dtype=float)
    edges = start + np.linspace(0.0, seconds, windows + 1)
    at = np.interp(edges, times, counts)
    return [float(r) for r in np.diff(at) / np.diff(edges)]


def machine_busy_s() -> float:
    """CPU-seconds every core of this machine has spent busy since boot (user, nice, system, irq,
    softirq; not idle, iowait or time stolen by the hypervisor). The difference over a window
    is what everything running here cost: the measured processes and their helpers (Ray's
    raylet and driver included)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:8]]
    user, nice, system, _idle, _iowait, irq, softirq = fields
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def rounded(value):
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def emit(out: dict, path: str | None) -> None:
    """The benchmark's one JSON object (numbers rounded) on stdout, and in `path` when given."""
    import json

    text = json.dumps(rounded(out), indent=2)
    if path:
        with open(path, "w") as f:
            f.write(text + "\n")
    print(text, flush=True)
