"""Raw environment stepping: `make_env` and uniformly random actions in plain processes, the
baseline the sampler pipeline is compared with. The envs are made as rollout workers make them
(`copy_observations=False`: NetHack's observations are NLE's own arrays, not copies), so that
the sampler is not credited with a copy the baseline makes and it skips."""

from __future__ import annotations

import time

import numpy as np
from timing import machine_busy_s, median


def _raw_env_process(env_id, num_envs, seed, warmup_s, seconds, windows, barrier, results):
    """One process: step `num_envs` make_env(env_id) round-robin with uniform random actions,
    resetting finished episodes; report window rates and the CPU time used."""
    from actors.envs import make_env

    envs = [
        make_env(env_id, seed=seed + 1000 * i, copy_observations=False) for i in range(num_envs)
    ]
    for env in envs:
        env.reset()
    rng = np.random.default_rng(seed)
    n = int(envs[0].action_space.n)
    episodes = 0

    def run(edges: list[float]) -> list[tuple[float, int]]:
        """Step until the last edge passes; (time, steps so far) at the first step past each."""
        nonlocal episodes
        steps, marks = 0, []
        while len(marks) < len(edges):
            for i, action in enumerate(rng.integers(0, n, size=num_envs * 64)):
                env = envs[i % num_envs]
                _, _, terminated, truncated, _ = env.step(int(action))
                steps += 1
                if terminated or truncated:
                    env.reset()
                    episodes += 1
                now = time.perf_counter()
                if now >= edges[len(marks)]:
                    marks.append((now, steps))
                    if len(marks) == len(edges):
                        break
        return marks

    run([time.perf_counter() + warmup_s])
    barrier.wait()
    episodes = 0
    cpu0, busy0 = time.process_time(), machine_busy_s()
    start = time.perf_counter()
    marks = [(start, 0), *run([start + seconds * (k + 1) / windows for k in range(windows)])]
    cpu, busy = time.process_time() - cpu0, machine_busy_s() - busy0
    for env in envs:
        env.close()
    times, counts = np.array(marks).T
    results.put(
        {
            "rates": (np.diff(counts) / np.diff(times)).tolist(),
            "steps": int(counts[-1]),
            "seconds": float(times[-1] - start),
            "episodes": episodes,
            "start": start,
            "cpu": cpu,
            "machine_busy": busy,
        }
    )


def measure_raw(env_id: str, processes: int, num_envs: int, args, seconds=None) -> dict:
    """`processes` processes at once, each stepping `num_envs` envs round-robin."""
    import multiprocessing as mp

    seconds = seconds or args.seconds
    ctx = mp.get_context("spawn")  # the parent may hold torch/Ray threads: never fork it
    results = ctx.Queue()
    barrier = ctx.Barrier(processes)
    procs = [
        ctx.Process(
            target=_raw_env_process,
            args=(env_id, num_envs, args.seed + i, args.warmup, seconds, args.windows)
            + (barrier, results),
            daemon=True,
        )
        for i in range(processes)
    ]
    for p in procs:
        p.start()
    out = [results.get(timeout=seconds + args.warmup + 300) for _ in procs]
    for p in procs:
        p.join()
    per_window = np.sum([o["rates"] for o in out], axis=0).tolist()
    total_steps = sum(o["steps"] for o in out)
    cpu = sum(o["cpu"] for o in out)
    return {
        "steps_per_s": median(per_window),
        "window_rates": [round(r, 1) for r in per_window],
        "mean_steps_per_s": sum(o["steps"] / o["seconds"] for o in out),
        # Steps per CPU-second of one process (one core): the rate on an idle core.
        "steps_per_cpu_s": total_steps / cpu,
        # Steps per CPU-second the whole machine spent (the windows coincide to start_skew_s).
        "steps_per_machine_cpu_s": total_steps / max(o["machine_busy"] for o in out),
        "cpu_utilization": cpu / sum(o["seconds"] for o in out),
        "episodes_reset": sum(o["episodes"] for o in out),
        "processes": processes,
        "envs_per_process": num_envs,
        "start_skew_s": round(max(o["start"] for o in out) - min(o["start"] for o in out), 4),
    }


def instance_penalty(env_id: str, counts: list[int], args) -> dict:
    """Steps/s of ONE process stepping 1, 2, 4, ... envs round-robin.

    Every NetHack instance loads its own copy of libnethack.so, so switching instances every step
    refills the core's caches with another copy of the same code: the raw rate falls as a process
    holds more envs. A batched sampler must step several envs per process, so this table is the
    ceiling it works under.
    """
    seconds = max(2.0, args.seconds / 3)
    rows = {}
    for n in counts:
        result = measure_raw(env_id, 1, n, args, seconds=seconds)
        rows[str(n)] = {
            "steps_per_s": result["steps_per_s"],
            "us_per_step": 1e6 / result["steps_per_s"],
        }
    return rows
