"""The annotator's live heap against labels, the annotator alone: the product's annotator
(cluster.annotation.build_annotator, the default config: embedded SmolLM2 in transformers,
classification) fed like a long training run, with PyTorch's kernel caches as a run's annotator
process has them (`bounded`: cluster/kernel_caches.py's KERNEL_CACHE_ENTRIES each) and at PyTorch's
default (`default`: 1,024 each), one child process each, in turn.

A child submits `--new` distinct captions (NetHack-like, 5-25 words, so that the bounded tables
of first sightings, sightings and the backlog fill) every 0.25 s, and sets each batch's size to a
random 4-32 rows, as the batch sizer does on a machine whose load moves. After each answered
batch it reads glibc's live heap; every `--mark` labels it prints the floor (the lowest of the
last 20 readings, as annotator/heap_floor.py). Growth is the least-squares slope of the floors
over the second half, in MB per 1,000 labels.

    python benchmarks/annotator_memory.py [--labels 5000] [--mark 1000] [--variants bounded,default]

About 2.5 min per 5,000 labels per variant on 2 quiet cores. Prints ONE JSON object."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from timing import emit, log

REPO = Path(__file__).resolve().parents[1]
STALL_S = 600.0  # a child that has labelled nothing by then gives up
WORDS = "jackal newt kobold gnome lord sewer rat fox goblin hill orc lichen gold door".split()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--labels", type=int, default=5000, help="labels per variant (5000)")
    p.add_argument("--mark", type=int, default=1000, help="labels between floors (1000)")
    p.add_argument("--new", type=int, default=200, help="distinct captions per submit (200)")
    p.add_argument("--variants", default="bounded,default", help="bounded,default")
    p.add_argument("--out", help="also write the JSON here")
    p.add_argument("--child", help=argparse.SUPPRESS)  # a run dir: be one variant's child
    args = p.parse_args(argv)
    unknown = set(args.variants.split(",")) - {"bounded", "default"}
    if unknown or args.mark < 1 or args.labels < 4 * args.mark:
        p.error("variants are bounded and default; --labels must be at least 4 x --mark")
    return args


def child(args) -> None:
    """One variant: label until --labels, one JSON line per mark on stdout."""
    sys.path.insert(0, str(REPO))
    from annotator import metrics as am
    from annotator.pacing import BatchSizer
    from cluster.annotation import build_annotator
    from cluster.config import load_config
    from learner.memory_stats import heap_mb

    rng = random.Random(0)
    measured = BatchSizer.measured

    def varied(self, *a):  # batches of 4-32 rows, as on a machine whose load moves
        measured(self, *a)
        self.size = rng.randrange(4, 33)

    BatchSizer.measured = varied
    # Alone on the machine: never resting (busy_share=1), it labels as fast as it can.
    overrides = [f"run_dir={args.child}", "annotator.busy_share=1"]
    annotator = build_annotator(load_config(None, overrides))
    if heap_mb() is None:
        raise SystemExit("glibc's mallinfo2 is not available here: no live-heap reading")

    def caption(i: int) -> str:
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(0, 20)))
        return f"You hit the {rng.choice(WORDS)}. {words} T:{i} $:{i % 997}"

    async def run() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(annotator.run(stop))
        sent, labels, next_mark, readings, start = 0, 0, args.mark, [], time.monotonic()
        while labels < args.labels:
            if time.monotonic() - start > STALL_S and labels == 0:
                raise SystemExit(f"no label within {STALL_S:g} s: is the LLM loading or failing?")
            annotator.submit({caption(sent + k): 1 + k % 3 for k in range(args.new)})
            sent += args.new
            annotator.poll_labels()
            await asyncio.sleep(0.25)
            now = int(annotator.stats().get(am.LABELS_TOTAL, 0) or 0)
            if now > labels:
                readings = [*readings[-19:], heap_mb()]
                labels = now
            if labels >= next_mark:
                row = {"labels": labels, "s": time.monotonic() - start, "floor_mb": min(readings)}
                print(json.dumps(row), flush=True)
                next_mark += args.mark
        stop.set()
        await task

    asyncio.run(run())


def measure(variant: str, args) -> dict:
    env = dict(os.environ)
    sys.path.insert(0, str(REPO))
    from cluster.kernel_caches import KERNEL_CACHE_VARS, kernel_cache_env

    for name in KERNEL_CACHE_VARS:
        env.pop(name, None)
    if variant == "bounded":
        env.update(kernel_cache_env())
    with tempfile.TemporaryDirectory() as run_dir:
        command = [sys.executable, __file__, "--child", run_dir, "--labels", str(args.labels),
                   "--mark", str(args.mark), "--new", str(args.new)]  # fmt: skip
        timeout_s = STALL_S + args.labels  # at least 1 label/s once labelling
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"{variant} child exited {done.returncode}: {done.stderr[-2000:]}")
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    half = rows[len(rows) // 2 :]
    slope = np.polyfit([r["labels"] for r in half], [r["floor_mb"] for r in half], 1)[0]
    return {
        "floors": rows,
        "growth_mb_per_1k_labels_second_half": 1000 * float(slope),
        "labels_per_s": rows[-1]["labels"] / rows[-1]["s"],
    }


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.child:
        return child(args)
    out = {"labels": args.labels, "load_before": os.getloadavg()[0], "variants": {}}
    for variant in args.variants.split(","):
        log(f"annotator alone, kernel caches {variant}: {args.labels} labels")
        out["variants"][variant] = measure(variant, args)
    out["load_after"] = os.getloadavg()[0]
    emit(out, args.out)


if __name__ == "__main__":
    main()
