"""Where the sampler's distance from raw stepping lies: the same `RolloutWorker.sample()` loop
(trivial policy) in plain processes and inside Ray actors, each alternated with raw stepping of
as many envs per process (benchmarks/raw_env_rates.py) on the same cores.

    python benchmarks/sampler_context.py [--pairs 3] [--procs 2] [--seconds 12] [--out F]

Neither side makes Ray calls while it is timed: an actor runs the loop inside one method call,
so the Ray figure is the cost of stepping inside a Ray worker process, without the round trips
that `benchmarks/throughput.py`'s sampler adds. Prints one JSON object; not part of CI.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing as mp
import os
import sys
import time

import ray

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from raw_env_rates import measure_raw  # noqa: E402
from throughput import DEFAULT_ENV, start_ray  # noqa: E402
from timing import emit, log, median  # noqa: E402


def sample_loop(env_id: str, shape: tuple[int, int], seed: int, warmup: float, seconds: float,
                start_at: float | None = None) -> tuple[float, float]:  # fmt: skip
    """Build a worker of `shape` (envs, unrolls per sample) and run `sample()` for `seconds`
    after `warmup`; returns (env steps per second, per CPU-second of this process)."""
    from actors.envs import num_actions
    from actors.rollout import RolloutWorker
    from cluster.worker_actor import freeze_start_up_objects
    from learner.models import UniformPolicy

    worker = RolloutWorker(
        env_id=env_id, num_envs=shape[0], unroll_length=32, unrolls_per_sample=shape[1],
        policy=UniformPolicy(num_actions(env_id)), seed=seed, worker_id=seed,
    )  # fmt: skip
    freeze_start_up_objects()  # as the product's worker actor
    begin = time.perf_counter()
    while time.perf_counter() - begin < warmup:
        worker.sample()
    while start_at is not None and time.time() < start_at:
        time.sleep(0.001)
    cpu, begin, steps = time.process_time(), time.perf_counter(), 0
    while time.perf_counter() - begin < seconds:
        steps += worker.sample()[0].num_steps
    rates = steps / (time.perf_counter() - begin), steps / (time.process_time() - cpu)
    worker.close()  # NLE removes its directories (a process ending by os._exit would not)
    gc.unfreeze()  # a Ray actor runs a loop per pair: the next one freezes its own objects
    return rates


def _plain_process(args, seed, barrier, results) -> None:
    barrier.wait()  # ray is imported (this module's), as in an actor's process, not started
    results.put(sample_loop(args.env, args.shape, seed, args.warmup, args.seconds))


def plain(args) -> tuple[float, float]:
    """`args.procs` spawned processes at once; (summed steps/s, mean steps per CPU-second)."""
    ctx = mp.get_context("spawn")
    results, barrier = ctx.Queue(), ctx.Barrier(args.procs)
    procs = [
        ctx.Process(target=_plain_process, args=(args, i, barrier, results))
        for i in range(args.procs)
    ]
    for p in procs:
        p.start()
    out = [results.get(timeout=args.warmup + args.seconds + 300) for _ in procs]
    for p in procs:
        p.join()
    return _together(out)


def in_actors(actors, args) -> tuple[float, float]:
    start_at = time.time() + args.warmup + 1.0  # every actor starts its timed loop together
    return _together(ray.get([a.run.remote(args.warmup, args.seconds, start_at) for a in actors]))


def _together(out: list[tuple[float, float]]) -> tuple[float, float]:
    """`sample_loop`'s results of processes run at once: (summed steps/s, mean per CPU-s)."""
    return sum(o[0] for o in out), sum(o[1] for o in out) / len(out)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default=DEFAULT_ENV)
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--procs", type=int, default=2, help="processes (and actors) at once")
    p.add_argument("--num-envs", type=int, default=16)
    p.add_argument("--unrolls-per-sample", type=int, default=4)
    p.add_argument("--seconds", type=float, default=12.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--out")
    args = p.parse_args(argv)
    args.shape, args.seed, args.windows = (args.num_envs, args.unrolls_per_sample), 0, 1
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    start_ray(args.procs)  # throughput.py's: the actors at the product's niceness, 0, as raw's
    from cluster.placement import NO_TASK_EVENTS

    class Looper:
        def __init__(self, seed: int):
            self.seed = seed

        def run(self, warmup: float, seconds: float, start_at: float):
            return sample_loop(args.env, args.shape, self.seed, warmup, seconds, start_at)

    actor_cls = ray.remote(num_cpus=1, **NO_TASK_EVENTS)(Looper)
    actors = [actor_cls.remote(i) for i in range(args.procs)]
    rows = []
    for k in range(args.pairs):
        raw = measure_raw(args.env, args.procs, args.num_envs, args)
        row = {"raw": raw["steps_per_s"], "raw_per_cpu_s": raw["steps_per_cpu_s"]}
        for name, measure in (("plain", lambda: plain(args)), ("ray", lambda: in_actors(actors, args))):  # fmt: skip
            rate, per_cpu = measure()
            row |= {name: rate, f"{name}_per_cpu_s": per_cpu, f"{name}_vs_raw": rate / row["raw"]}
        rows.append(row)
        log(f"pair {k + 1}/{args.pairs}: raw {row['raw']:.0f}, plain processes "
            f"{row['plain']:.0f} ({row['plain_vs_raw']:.3f}), Ray actors {row['ray']:.0f} "
            f"({row['ray_vs_raw']:.3f}) env steps/s")  # fmt: skip
    summary = {
        f"{name}_vs_raw": median([r[f"{name}_vs_raw"] for r in rows]) for name in ("plain", "ray")
    }
    out = {"benchmark": "sampler_context", "env": args.env, "shape": "{}x{}".format(*args.shape)}
    emit(out | {"procs": args.procs, "summary": summary, "pairs": rows}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
