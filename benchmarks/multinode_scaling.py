"""Steps/s of a running job before and after a rollout node joins and `rogueray scale` gives it
workers, on a multi-node Ray cluster simulated on this machine (ray.cluster_utils.Cluster).

    python benchmarks/multinode_scaling.py [--config configs/cartpole.yaml] [--seconds 20]
                                           [--workers-before 1] [--workers-after 2]
                                           [--out results.json]

The cluster: a head declaring rogueray_learner (the learner, 1 CPU) and a rollout node declaring
rogueray_rollout with --workers-before CPUs. `rogueray train` joins it (ray_address) with
--workers-before rollout workers placed by rollout.node_resource, as on a real cluster. After
--warmup-s, the job's console status lines are read for --seconds (the "before" window); then a
second rollout node with the missing CPUs joins, `rogueray scale RUN_DIR --workers-after` is
sent, and once the job says it resized and --warmup-s have passed, the "after" window is read.

Prints ONE JSON object on stdout (progress on stderr):
  steps_per_s_before / steps_per_s_after   env steps / wall seconds over each window, from the
                                           steps and arrival times of the job's status lines
  ratio                                    after / before
  window_rates_before / _after             the rate between each pair of successive lines
  cpu_count, loadavg_before / _after       this machine, and how busy it was
All nodes share this machine's cores: with more workers than free cores the "after" rate cannot
rise, and says so. The test of the same path (workers really land on the new node) is
tests/cluster/test_multinode.py.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = re.compile(r"steps ([\d,]+)/")


def _log(text: str) -> None:
    print(f"[multinode_scaling] {text}", file=sys.stderr, flush=True)


class _Job:
    """`rogueray` in a subprocess; its status lines kept as (arrival time, env steps)."""

    def __init__(self, args: list[str]):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cluster.cli", *args], cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self.points: list[tuple[float, int]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            found = STEPS.search(line)
            if found:
                self.points.append((time.monotonic(), int(found.group(1).replace(",", ""))))

    def wait_until(self, what: str, check, timeout_s: float = 600.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not check():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = "".join(self.lines[-20:])
                raise RuntimeError(f"the job ended or stalled waiting for {what}:\n{tail}")
            time.sleep(0.2)

    def window(self, seconds: float) -> dict:
        """Status lines over the next `seconds`: the overall rate and each pair's."""
        start = len(self.points)
        time.sleep(seconds)
        points = self.points[max(start - 1, 0) :]
        if len(points) < 2:
            raise RuntimeError(f"fewer than 2 status lines in {seconds:g} s")
        (t0, s0), (t1, s1) = points[0], points[-1]
        pairs = zip(points, points[1:], strict=False)
        rates = [round((b[1] - a[1]) / (b[0] - a[0]), 1) for a, b in pairs if b[0] > a[0]]
        return {"rate": round((s1 - s0) / (t1 - t0), 1), "rates": rates}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "cartpole.yaml"))
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each window")
    parser.add_argument("--warmup-s", type=float, default=5.0)
    parser.add_argument("--workers-before", type=int, default=1)
    parser.add_argument("--workers-after", type=int, default=2)
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    if not 1 <= args.workers_before < args.workers_after:
        parser.error("need 1 <= --workers-before < --workers-after")
    if args.seconds <= 0 or args.warmup_s < 0:
        parser.error("--seconds must be > 0 and --warmup-s >= 0")
    if not Path(args.config).is_file():
        parser.error(f"--config {args.config}: no such file")
    args.config = str(Path(args.config).resolve())  # the job runs from the repository root
    return args


def run(args: argparse.Namespace) -> dict:
    from ray.cluster_utils import Cluster

    scratch = Path(tempfile.mkdtemp(prefix="rrbench"))  # short: Ray's socket paths live in it
    node_args = {"temp_dir": str(scratch / "ray"), "wait": False}
    cluster, job = Cluster(), None
    try:
        cluster.add_node(
            num_cpus=1, resources={"rogueray_learner": 1}, include_dashboard=False, **node_args
        )
        before, after = args.workers_before, args.workers_after
        cluster.add_node(num_cpus=before, resources={"rogueray_rollout": before}, **node_args)
        cluster.wait_for_nodes(timeout=600)
        run_dir = scratch / "run"
        job = _Job([
            "train", args.config, f"run_dir={run_dir}", "total_env_steps=1000000000",
            f"rollout.num_workers={before}", "rollout.node_resource=rogueray_rollout",
            "learner.node_resource=rogueray_learner", f"ray_address={cluster.address}",
            "log_interval_s=1", "checkpoint_interval_s=100000",
        ])  # fmt: skip
        job.wait_until("training", lambda: bool(job.points) and job.points[-1][1] > 0)
        time.sleep(args.warmup_s)
        _log(f"measuring {before} worker(s) for {args.seconds:g} s")
        load_before, window_before = os.getloadavg()[0], job.window(args.seconds)
        extra = after - before
        cluster.add_node(num_cpus=extra, resources={"rogueray_rollout": extra}, **node_args)
        cluster.wait_for_nodes(timeout=600)
        subprocess.run(
            [sys.executable, "-m", "cluster.cli", "scale", str(run_dir), str(after)],
            cwd=ROOT, check=True, capture_output=True,
        )  # fmt: skip
        resized = f"rollout workers: {before} -> {after}"
        job.wait_until("the resize", lambda: any(resized in line for line in job.lines))
        time.sleep(args.warmup_s)
        _log(f"measuring {after} workers for {args.seconds:g} s")
        load_after, window_after = os.getloadavg()[0], job.window(args.seconds)
    finally:
        if job is not None and job.proc.poll() is None:
            job.proc.terminate()
            job.proc.wait(timeout=300)
        cluster.shutdown()
        shutil.rmtree(scratch, ignore_errors=True)
    return {
        "config": args.config,
        "workers_before": before,
        "workers_after": after,
        "window_s": args.seconds,
        "steps_per_s_before": window_before["rate"],
        "steps_per_s_after": window_after["rate"],
        "ratio": round(window_after["rate"] / max(window_before["rate"], 1e-9), 3),
        "window_rates_before": window_before["rates"],
        "window_rates_after": window_after["rates"],
        "cpu_count": os.cpu_count(),
        "loadavg_before": round(load_before, 2),
        "loadavg_after": round(load_after, 2),
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    text = json.dumps(run(args), indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
