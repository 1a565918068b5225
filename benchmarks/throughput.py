"""Throughput benchmark: raw environment, sampler pipeline, learner and full training loop,
measured on one machine in one run.

    python benchmarks/throughput.py [--env NetHackScoreExtendedActions-v1] [--seconds S]
                                    [--quick] [--profile] [--out results.json]

Prints ONE JSON object on stdout; progress lines go to stderr. Every measurement warms up,
then times `--seconds` split into `--windows` equal sub-windows and reports the median
sub-window rate (the per-window rates are kept under "details").

Measurements (top-level keys; "details" holds per-window rates and the diagnostics below)
  raw_env_steps_per_s_1proc      make_env + random actions, one env in one process
  raw_env_steps_per_s_per_core   the same in os.cpu_count() processes at once, summed
  sampler_steps_per_s_trivial    cpu_count Ray actors around RolloutWorker(UniformPolicy), one
                                 `sample` in flight each; the driver reads only the small stats
                                 object and drops the fragment refs unfetched
  sampler_vs_raw_ratio           sampler_steps_per_s_trivial / raw_env_steps_per_s_per_core,
                                 with target_sampler_vs_raw and meets_target
  sampler_steps_per_s_nethack_net  the same pipeline with build_policy("nethack"), random weights
  learner_samples_per_s          Learner.update on synthetic NetHack fragments on the CPU with
                                 1 torch thread (what Ray gives a num_cpus=1 actor), median
  train_loop_steps_per_s         cluster.driver.train in Ray mode, env steps / wall time of
                                 train(); Ray is started beforehand, so its start-up is excluded
                                 (actor start-up is not; train_loop_steps_per_s_steady is the
                                 rate from the first fragment to the last)

Explaining the ratio (on a shared machine, wall rates follow other users' load):
  sampler_vs_raw_ratio_cpu       steps per CPU-second of one sampler actor process over those of
                                 one raw process: the efficiency ratio, independent of load
  raw_env_steps_per_s_per_core_num_envs and sampler_vs_raw_num_envs_ratio(_cpu): the raw
                                 baseline stepping num_envs envs round-robin per process, as a
                                 rollout worker does (switching NetHack instances costs cache)
  details.sampler_*: actor_busy_fraction, gap_between_calls_ms_median (the round trip with one
                                 sample in flight), in_sample_steps_per_cpu_s; with diagnostics,
                                 sampler_trivial_2_in_flight
  --profile                      adds details.sampler_*.profile: per env step, the time in
                                 env.step, env.reset, policy.forward, _write_obs and the rest of
                                 RolloutWorker.sample, against a bare loop over the same envs
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

DEFAULT_ENV = "NetHackScoreExtendedActions-v1"
TARGET_SAMPLER_VS_RAW = 0.8


def log(message: str) -> None:
    print(f"[throughput {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def window_rates(marks: list[tuple[float, int]], start: float, seconds: float, windows: int):
    """Rates of [start, start + seconds) split into `windows` parts, from (time, cumulative count)
    marks; the count between two marks is interpolated linearly, so that whole fragments
    arriving now and then do not quantise the rate."""
    times = np.array([t for t, _ in marks])
    counts = np.array([c for _, c in marks], dtype=float)
    edges = start + np.linspace(0.0, seconds, windows + 1)
    at = np.interp(edges, times, counts)
    return [float(r) for r in np.diff(at) / np.diff(edges)]


def median(values: list[float]) -> float:
    return float(statistics.median(values))


# ---------------------------------------------------------------------------------------------
# 1-2. Raw environment stepping


def _raw_env_process(env_id, num_envs, seed, warmup_s, seconds, windows, barrier, results):
    """One process: step `num_envs` make_env(env_id) round-robin with uniform random actions,
    resetting finished episodes; report window rates and the process CPU time used."""
    from actors.envs import make_env

    envs = [make_env(env_id, seed=seed + 1000 * i) for i in range(num_envs)]
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
    if barrier is not None:
        barrier.wait()
    episodes = 0
    cpu0 = time.process_time()
    start = time.perf_counter()
    marks = [(start, 0), *run([start + seconds * (k + 1) / windows for k in range(windows)])]
    cpu = time.process_time() - cpu0
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
        }
    )


def measure_raw(env_id: str, processes: int, num_envs: int, args) -> dict:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # the parent may hold torch/Ray threads: never fork it
    results = ctx.Queue()
    barrier = ctx.Barrier(processes)
    procs = [
        ctx.Process(
            target=_raw_env_process,
            args=(env_id, num_envs, args.seed + i, args.warmup, args.seconds, args.windows)
            + (barrier, results),
            daemon=True,
        )
        for i in range(processes)
    ]
    for p in procs:
        p.start()
    out = [results.get(timeout=args.seconds + args.warmup + 300) for _ in procs]
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
        "cpu_utilization": cpu / sum(o["seconds"] for o in out),
        "episodes_reset": sum(o["episodes"] for o in out),
        "processes": processes,
        "envs_per_process": num_envs,
        "start_skew_s": round(max(o["start"] for o in out) - min(o["start"] for o in out), 4),
    }


# ---------------------------------------------------------------------------------------------
# 3-4. Sampler pipeline: RolloutWorker actors on Ray, the driver counting steps from stats


class _SamplerActor:
    """A RolloutWorker with the given policy; `sample` returns (fragment, small stats), called
    with num_returns=2 as cluster/ray_runner.py's _WorkerActor does."""

    def __init__(self, env_id, policy_kind, num_envs, unroll_length, hidden_size, seed, worker_id):
        import torch

        from actors.envs import num_actions, observation_spec
        from actors.rollout import RolloutWorker
        from learner.models import UniformPolicy, build_policy

        torch.manual_seed(seed + worker_id)
        n = num_actions(env_id)
        if policy_kind == "trivial":
            policy = UniformPolicy(n)
        else:
            policy = build_policy("nethack", observation_spec(env_id), n, hidden_size, True)
        self.worker = RolloutWorker(
            env_id=env_id,
            num_envs=num_envs,
            unroll_length=unroll_length,
            policy=policy,
            seed=seed,
            worker_id=worker_id,
        )

    def ready(self) -> int:
        return os.getpid()

    def sample(self):
        begin, cpu_begin = time.monotonic(), time.process_time()
        fragment, episodes = self.worker.sample()
        timing = (begin, time.monotonic(), cpu_begin, time.process_time())
        return fragment, (len(episodes), fragment.num_steps, timing)

    def profile(self, seconds: float, top: int) -> dict:
        return profile_sampler(self.worker, seconds, top)


def measure_sampler(policy_kind: str, args, in_flight_per_actor: int = 1) -> dict:
    import ray

    actor_cls = ray.remote(num_cpus=1)(_SamplerActor)
    t0 = time.monotonic()
    actors = [
        actor_cls.remote(
            args.env, policy_kind, args.num_envs, args.unroll, args.hidden, args.seed, i
        )
        for i in range(args.workers)
    ]
    ray.get([a.ready.remote() for a in actors])
    startup_s = time.monotonic() - t0

    in_flight: dict = {}  # stats ref -> actor index; fragment refs are dropped at once

    def submit(index: int) -> None:
        _fragment_ref, stats_ref = actors[index].sample.options(num_returns=2).remote()
        in_flight[stats_ref] = index

    for index in range(len(actors)):
        for _ in range(in_flight_per_actor):
            submit(index)
    returned = [0] * len(actors)
    steps = 0
    marks: list[tuple[float, int]] = []
    timings: list[list[tuple]] = [[] for _ in actors]  # (begin, end, cpu0, cpu1, steps)
    start = None  # the timed window opens `warmup` s after every actor has returned once
    deadline = float("inf")
    while True:
        ready, _ = ray.wait(list(in_flight), num_returns=1)
        now = time.monotonic()
        for ref in ready:
            index = in_flight.pop(ref)
            _episodes, num_steps, timing = ray.get(ref)
            returned[index] += 1
            if now < deadline:
                submit(index)
            steps += num_steps
            marks.append((now, steps))
            timings[index].append((*timing, num_steps))
        if start is None and min(returned) > 0:
            start = now + args.warmup
            deadline = start + args.seconds
        if now >= deadline and not in_flight:
            break
        if now >= deadline + 60:
            raise RuntimeError("sampler actors did not return within 60 s of the deadline")
    rates = window_rates(marks, start, args.seconds, args.windows)
    result = {
        "steps_per_s": median(rates),
        "window_rates": [round(r, 1) for r in rates],
        "mean_steps_per_s": window_rates(marks, start, args.seconds, 1)[0],
        "samples_in_flight_per_actor": in_flight_per_actor,
        "fragments_returned": sum(returned),
        "actor_startup_s": round(startup_s, 2),
        **actor_timing(timings, start, start + args.seconds),
    }
    if args.profile:
        log(f"  profiling RolloutWorker.sample inside one actor ({policy_kind})")
        result["profile"] = ray.get(actors[0].profile.remote(args.profile_seconds, 15))
    for actor in actors:
        ray.kill(actor)
    time.sleep(0.5)  # let the actor processes exit before the next measurement
    return result


def actor_timing(timings, start: float, end: float) -> dict:
    """Where the actors' time went in [start, end): inside RolloutWorker.sample or not."""
    busy, steps, sample_s, sample_cpu, gaps = 0.0, 0, 0.0, 0.0, []
    process_steps, process_cpu = 0, 0.0
    for calls in timings:
        inside = [c for c in calls if start <= c[0] and c[1] <= end]
        for b, e, cpu0, cpu1, n in inside:
            steps, sample_s, sample_cpu = steps + n, sample_s + (e - b), sample_cpu + cpu1 - cpu0
        for (_, e, _, _, _), (b, *_) in zip(inside, inside[1:], strict=False):
            gaps.append(b - e)
        if len(inside) >= 2:  # first call's start to last call's start: whole actor process
            process_steps += sum(c[4] for c in inside[:-1])
            process_cpu += inside[-1][2] - inside[0][2]
        for b, e, *_ in calls:
            busy += max(0.0, min(e, end) - max(b, start))
    actors = len(timings)
    return {
        # Share of the window the actors spent inside sample(); the rest is returning the
        # fragment, the driver's round trip, waiting for the next call, or being descheduled.
        "actor_busy_fraction": busy / ((end - start) * actors),
        # Steps per second of time inside sample(), summed over actors: the rate with no gaps.
        "in_sample_steps_per_s": actors * steps / sample_s if sample_s else None,
        # Steps per CPU-second of one actor (per core, like raw "steps_per_cpu_s"): inside
        # sample() only, and for the whole actor process (serialising fragments, Ray threads).
        "in_sample_steps_per_cpu_s": steps / sample_cpu if sample_cpu else None,
        "actor_steps_per_cpu_s": process_steps / process_cpu if process_cpu else None,
        "sample_call_ms_median": 1e3 * median([c[1] - c[0] for cs in timings for c in cs]),
        "gap_between_calls_ms_median": 1e3 * median(gaps) if gaps else None,
    }


def profile_sampler(worker, seconds: float, top: int) -> dict:
    """Where the time of worker.sample() goes, per env step, measured inside the actor.

    1. Timers wrapped around each env's step/reset, the policy's forward and _write_obs
       (instance attributes, so the product code runs unchanged); the rest of sample() is
       action sampling (torch.distributions.Categorical), per-env bookkeeping, the recurrent
       state reset and the fragment copy.
    2. The same env instances stepped round-robin by a bare loop, for comparison.
    3. cProfile of a few sample() calls (it inflates Python-heavy code: compare, don't add).
    """
    import cProfile
    import pstats

    clock = time.perf_counter
    spent = dict.fromkeys(("env.step", "env.reset", "policy.forward", "_write_obs"), 0.0)

    def timed(name, fn):
        def wrapper(*a, **kw):
            t = clock()
            try:
                return fn(*a, **kw)
            finally:
                spent[name] += clock() - t

        return wrapper

    for env in worker.envs:
        env.step, env.reset = timed("env.step", env.step), timed("env.reset", env.reset)
    worker.policy.forward = timed("policy.forward", worker.policy.forward)
    worker._write_obs = timed("_write_obs", worker._write_obs)

    def per_step(value: float, steps: int) -> float:
        return round(1e6 * value / steps, 2)

    worker.sample()  # warm
    spent.update(dict.fromkeys(spent, 0.0))
    steps, t0, cpu0 = 0, clock(), time.process_time()
    while clock() - t0 < seconds:
        worker.sample()
        steps += worker.unroll_length * worker.num_envs
    wall, cpu = clock() - t0, time.process_time() - cpu0
    parts = {k: per_step(v, steps) for k, v in spent.items()}
    parts["rest of sample()"] = per_step(wall - sum(spent.values()), steps)
    sampler = {
        "us_per_env_step_wall": per_step(wall, steps),
        "us_per_env_step_cpu": per_step(cpu, steps),
        "parts_us_per_env_step": parts,
    }

    rng = np.random.default_rng(0)
    n = int(worker.envs[0].action_space.n)
    spent.update(dict.fromkeys(spent, 0.0))
    raw_steps, t0, cpu0 = 0, clock(), time.process_time()
    while clock() - t0 < seconds:
        for env, action in zip(worker.envs, rng.integers(0, n, worker.num_envs), strict=True):
            _, _, terminated, truncated, _ = env.step(int(action))
            if terminated or truncated:
                env.reset()
        raw_steps += worker.num_envs
    wall, cpu = clock() - t0, time.process_time() - cpu0
    bare_loop = {
        "us_per_env_step_wall": per_step(wall, raw_steps),
        "us_per_env_step_cpu": per_step(cpu, raw_steps),
        "parts_us_per_env_step": {
            "env.step": per_step(spent["env.step"], raw_steps),
            "env.reset": per_step(spent["env.reset"], raw_steps),
        },
    }

    profiler = cProfile.Profile()
    calls = 3
    profiler.enable()
    for _ in range(calls):
        worker.sample()
    profiler.disable()
    profiled_steps = calls * worker.unroll_length * worker.num_envs
    rows = [
        (tt, ct, nc, f"{os.path.basename(filename)}:{line}({name})")
        for (filename, line, name), (_cc, nc, tt, ct, _) in pstats.Stats(profiler).stats.items()
    ]
    return {
        "num_envs": worker.num_envs,
        "sample": sampler,
        "same_envs_bare_loop": bare_loop,
        "cprofile_top_self_us_per_env_step": [
            {"fn": w, "self": per_step(tt, profiled_steps), "cum": per_step(ct, profiled_steps)}
            for tt, ct, _nc, w in sorted(rows, reverse=True)[:top]
        ],
    }


# ---------------------------------------------------------------------------------------------
# 5. Learner update on synthetic fragments


def synthetic_fragments(obs_spec: dict, num_fragments: int, num_envs: int, steps: int, rng):
    from actors.fragment import Fragment
    from learner.models import MAX_GLYPH

    def obs_array(key, shape, dtype):
        full = (steps + 1, num_envs, *shape)
        if key == "glyphs":
            return rng.integers(0, MAX_GLYPH, size=full).astype(dtype)
        if key == "blstats":
            stats = rng.integers(0, 100, size=full).astype(dtype)
            stats[..., 0] = rng.integers(0, 79, size=full[:2])  # hero x
            stats[..., 1] = rng.integers(0, 21, size=full[:2])  # hero y
            return stats
        return rng.integers(0, 256, size=full).astype(dtype)

    fragments = []
    for w in range(num_fragments):
        tb = (steps, num_envs)
        done = rng.random(tb) < 0.002
        fragments.append(
            Fragment(
                obs={k: obs_array(k, shape, dtype) for k, (shape, dtype) in obs_spec.items()},
                actions=rng.integers(0, 23, size=tb).astype(np.int64),
                logp=np.full(tb, -np.log(23), np.float32),
                values=rng.normal(size=tb).astype(np.float32),
                rewards=(rng.random(tb) < 0.05).astype(np.float32),
                terminated=done,
                truncated=np.zeros(tb, bool),
                final_values=np.zeros(tb, np.float32),
                caption_ids=np.full(tb, -1, np.int32),
                caption_counts=np.zeros(tb, np.int32),
                captions=(),
                initial_state=np.zeros((num_envs, 512), np.float32),
                policy_version=0,
                worker_id=w,
            )
        )
    return fragments


def measure_learner(args) -> dict:
    import torch

    from cluster.components import env_spec, make_learner
    from cluster.config import load_config

    config = load_config(
        None,
        [
            f"env.id={args.env}",
            f"env.num_envs_per_worker={args.num_envs}",
            f"rollout.unroll_length={args.unroll}",
            f"learner.batch_size={args.learner_batch}",
            f"model.hidden_size={args.hidden}",
            "model.kind=nethack",
            "learner.device=cpu",
            f"run_dir={os.path.join(tempfile.gettempdir(), 'rogueray-throughput-unused')}",
        ],
    )
    spec = env_spec(config)
    learner = make_learner(config, spec)
    per_fragment = args.unroll * args.num_envs
    fragments = synthetic_fragments(
        spec.obs_spec,
        args.learner_batch // per_fragment,
        args.num_envs,
        args.unroll,
        np.random.default_rng(args.seed),
    )
    samples = args.learner_batch
    threads = torch.get_num_threads()
    torch.set_num_threads(args.learner_threads)
    try:
        for _ in range(1 if args.quick else 2):  # warm-up
            learner.update(*fragments)
        times, cpu_times = [], []
        start = time.perf_counter()
        while time.perf_counter() - start < args.seconds or len(times) < 3:
            t, cpu = time.perf_counter(), time.process_time()
            learner.update(*fragments)
            times.append(time.perf_counter() - t)
            cpu_times.append(time.process_time() - cpu)
    finally:
        torch.set_num_threads(threads)
    return {
        "samples_per_s": median([samples / t for t in times]),
        "samples_per_cpu_s": median([samples / t for t in cpu_times]),
        "update_s_median": round(median(times), 4),
        "updates_timed": len(times),
        "batch_samples": samples,
        # Ray gives the learner actor (num_cpus=1) OMP_NUM_THREADS=1, hence 1 by default.
        "torch_threads": args.learner_threads,
        "device": str(learner.device),
    }


# ---------------------------------------------------------------------------------------------
# 6. Full training loop


def train_overrides(args, run_dir: str) -> list[str]:
    return [
        f"run_dir={run_dir}",
        "mode=ray",
        f"total_env_steps={args.train_steps}",
        f"env.id={args.env}",
        f"env.num_envs_per_worker={args.num_envs}",
        f"rollout.num_workers={args.train_workers}",
        f"rollout.unroll_length={args.unroll}",
        f"learner.batch_size={args.learner_batch}",
        f"model.hidden_size={args.hidden}",
        # Written as floats: YAML 1.1 reads "1e9" as a string.
        "log_interval_s=1000000000.0",
        "checkpoint_interval_s=1000000000.0",
    ]


def ray_num_cpus(args) -> int:
    """Logical CPUs for the one local Ray of this benchmark: cpu_count, or what the training run
    needs if that is more (cluster.ray_runner.start_ray sizes its own Ray the same way)."""
    from cluster.config import load_config

    needed = args.train_workers + 1
    try:
        from cluster.ray_runner import cpus_needed
    except ImportError:  # older product code: workers + learner
        pass
    else:
        unused = os.path.join(tempfile.gettempdir(), "rogueray-throughput-unused")
        needed = cpus_needed(load_config(None, train_overrides(args, unused)))
    return max(os.cpu_count() or 1, needed)


def measure_train(args) -> dict:
    import cluster.ray_runner as ray_runner
    from cluster.config import load_config
    from cluster.driver import train

    marks: dict = {}

    class TimedRunner(ray_runner.RayRunner):
        """Records when fragments come back, to separate actor start-up from steady state."""

        def collect(self):
            fragments, episodes, steps = super().collect()
            now = time.perf_counter()
            total = marks.get("last", (0.0, 0))[1] + steps
            if steps and "first" not in marks:
                marks["first"] = (now, total)
            marks["last"] = (now, total)
            return fragments, episodes, steps

    with tempfile.TemporaryDirectory(prefix="rogueray-throughput-") as run_dir:
        overrides = train_overrides(args, run_dir)
        config = load_config(None, overrides)
        original = ray_runner.RayRunner
        ray_runner.RayRunner = TimedRunner
        try:
            t0 = time.perf_counter()
            result = train(config, quiet=True)
            wall = time.perf_counter() - t0
        finally:
            ray_runner.RayRunner = original
    steady = first_fragment_s = after_last_fragment_s = None
    if "first" in marks:  # else the driver no longer builds its runner from the module attribute
        (t_first, s_first), (t_last, s_last) = marks["first"], marks["last"]
        steady = (s_last - s_first) / (t_last - t_first) if t_last > t_first else None
        first_fragment_s, after_last_fragment_s = t_first - t0, t0 + wall - t_last
    return {
        "steps_per_s": result.env_steps / wall,
        "wall_s": round(wall, 2),
        "steps_per_s_steady": steady,
        # Actor start-up (imports, env and policy construction) and the first fragment.
        "first_fragment_s": first_fragment_s,
        # Waiting for the last updates, the final checkpoint, closing the actors.
        "after_last_fragment_s": after_last_fragment_s,
        "env_steps": result.env_steps,
        "updates": result.updates,
        "episodes": result.episodes,
        "overrides": [o for o in overrides if not o.startswith("run_dir=")],
    }


# ---------------------------------------------------------------------------------------------


def run_ray_measurements(args, out: dict, details: dict) -> None:
    if "sampler" not in args.skip:
        log(f"sampler, trivial policy, {args.workers} actors")
        details["sampler_trivial"] = measure_sampler("trivial", args)
        out["sampler_steps_per_s_trivial"] = details["sampler_trivial"]["steps_per_s"]
        log(f"  {out['sampler_steps_per_s_trivial']:.0f} steps/s")
        if args.diagnostics:
            log("sampler, trivial policy, 2 samples in flight per actor (diagnostic)")
            details["sampler_trivial_2_in_flight"] = measure_sampler("trivial", args, 2)
            log(f"  {details['sampler_trivial_2_in_flight']['steps_per_s']:.0f} steps/s")
    if "nethack" not in args.skip:
        log(f"sampler, NetHack network, {args.workers} actors")
        details["sampler_nethack_net"] = measure_sampler("nethack", args)
        out["sampler_steps_per_s_nethack_net"] = details["sampler_nethack_net"]["steps_per_s"]
        log(f"  {out['sampler_steps_per_s_nethack_net']:.0f} steps/s")
    if "learner" not in args.skip:
        log(f"learner update, synthetic batch, {args.learner_threads} torch thread(s)")
        details["learner"] = measure_learner(args)
        out["learner_samples_per_s"] = details["learner"]["samples_per_s"]
        log(f"  {out['learner_samples_per_s']:.0f} samples/s")
    if "train" not in args.skip:
        log(f"training loop, {args.train_steps} env steps")
        train = details["train_loop"] = measure_train(args)
        out["train_loop_steps_per_s"] = train["steps_per_s"]
        out["train_loop_steps_per_s_steady"] = train["steps_per_s_steady"]
        out["train_loop_wall_s"] = train["wall_s"]
        log(f"  {train['steps_per_s']:.0f} steps/s over {train['wall_s']:.1f} s")


def start_ray(num_cpus: int) -> float:
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    logging.getLogger("ray").setLevel(logging.ERROR)
    t0 = time.perf_counter()
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
    )
    return time.perf_counter() - t0


def parse_args(argv=None):
    cpus = os.cpu_count() or 1
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default=DEFAULT_ENV)
    p.add_argument("--seconds", type=float, help="timed window per measurement (10; quick 2)")
    p.add_argument("--warmup", type=float, help="warm-up seconds per measurement (3; quick 0.5)")
    p.add_argument("--windows", type=int, help="sub-windows for the median (5; quick 2)")
    p.add_argument("--quick", action="store_true", help="smoke run, under a minute")
    p.add_argument("--out", help="also write the JSON here")
    p.add_argument("--workers", type=int, default=cpus, help="sampler actors (cpu_count)")
    p.add_argument("--raw-procs", type=int, default=cpus, help="raw per-core processes")
    p.add_argument("--num-envs", type=int, default=16, help="envs per rollout worker")
    p.add_argument("--unroll", type=int, default=32)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--learner-batch", type=int, default=1024, help="samples per update")
    p.add_argument(
        "--learner-threads",
        type=int,
        default=1,
        help="torch threads for the learner measurement (1: what Ray's learner actor gets)",
    )
    p.add_argument("--train-steps", type=int, help="env steps of the train loop (20k; quick 5k)")
    p.add_argument("--train-workers", type=int, default=cpus)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--skip",
        default="",
        help="comma list of: raw,sampler,nethack,learner,train (for partial runs)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="cProfile RolloutWorker.sample inside a sampler actor and add per-step costs",
    )
    p.add_argument("--profile-seconds", type=float, default=5.0, help="per profiled part")
    p.add_argument(
        "--diagnostics",
        action=argparse.BooleanOptionalAction,
        help="extra baselines that explain the ratio: raw with num_envs envs per process and "
        "the sampler with 2 samples in flight (default: on, off with --quick)",
    )
    args = p.parse_args(argv)
    quick = args.quick
    args.seconds = args.seconds or (2.0 if quick else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if quick else 3.0)
    args.windows = args.windows or (2 if quick else 5)
    args.train_steps = args.train_steps or (5_000 if quick else 20_000)
    if args.diagnostics is None:
        args.diagnostics = not quick
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from actors.envs import validate_env_id

    validate_env_id(args.env)
    t_begin = time.perf_counter()
    cpus = os.cpu_count() or 1
    out: dict = {
        "env": args.env,
        "machine": {
            "cpu_count": cpus,
            "sched_affinity": len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else None,
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        },
        "params": {
            "quick": args.quick,
            "seconds": args.seconds,
            "warmup_s": args.warmup,
            "windows": args.windows,
            "sampler_workers": args.workers,
            "raw_procs": args.raw_procs,
            "num_envs_per_worker": args.num_envs,
            "unroll_length": args.unroll,
            "hidden_size": args.hidden,
            "learner_batch_samples": args.learner_batch,
            "learner_torch_threads": args.learner_threads,
            "train_env_steps": args.train_steps,
            "train_workers": args.train_workers,
            "seed": args.seed,
            "diagnostics": args.diagnostics,
        },
    }
    details: dict = {}
    # Anything product code prints must not mix with the JSON on stdout.
    with contextlib.redirect_stdout(sys.stderr):
        if "raw" not in args.skip:
            log("raw env, 1 process, 1 env")
            details["raw_1proc"] = measure_raw(args.env, 1, 1, args)
            out["raw_env_steps_per_s_1proc"] = details["raw_1proc"]["steps_per_s"]
            log(f"  {out['raw_env_steps_per_s_1proc']:.0f} steps/s")
            log(f"raw env, {args.raw_procs} processes, 1 env each")
            details["raw_per_core"] = measure_raw(args.env, args.raw_procs, 1, args)
            out["raw_env_steps_per_s_per_core"] = details["raw_per_core"]["steps_per_s"]
            log(f"  {out['raw_env_steps_per_s_per_core']:.0f} steps/s")
            if args.diagnostics:
                # The sampler's workers step num_envs envs each; so does this baseline.
                log(f"raw env, {args.raw_procs} processes, {args.num_envs} envs each")
                raw_envs = measure_raw(args.env, args.raw_procs, args.num_envs, args)
                details["raw_per_core_num_envs"] = raw_envs
                out["raw_env_steps_per_s_per_core_num_envs"] = raw_envs["steps_per_s"]
                log(f"  {raw_envs['steps_per_s']:.0f} steps/s")
        if args.skip >= {"sampler", "nethack", "train"}:
            if "learner" not in args.skip:
                run_ray_measurements(args, out, details)  # the learner alone needs no Ray
        else:
            import ray

            ray_cpus = ray_num_cpus(args)
            out["machine"]["ray_num_cpus"] = ray_cpus
            ray_init_s = start_ray(ray_cpus)
            details["ray_init_s"] = round(ray_init_s, 2)
            log(f"Ray started in {ray_init_s:.1f} s")
            try:
                run_ray_measurements(args, out, details)
            finally:
                ray.shutdown()
    raw = out.get("raw_env_steps_per_s_per_core")
    sampler = out.get("sampler_steps_per_s_trivial")
    if raw and sampler:
        out["sampler_vs_raw_ratio"] = sampler / raw
        out["target_sampler_vs_raw"] = TARGET_SAMPLER_VS_RAW
        out["meets_target"] = bool(sampler / raw >= TARGET_SAMPLER_VS_RAW)
        raw_envs = out.get("raw_env_steps_per_s_per_core_num_envs")
        if raw_envs:
            out["sampler_vs_raw_num_envs_ratio"] = sampler / raw_envs
        # Load-independent: steps per CPU-second of one sampler actor process (all of it) over
        # those of one raw process. Other users' jobs change the wall rates, not these.
        actor_cpu = details["sampler_trivial"]["actor_steps_per_cpu_s"]
        if actor_cpu:
            out["sampler_vs_raw_ratio_cpu"] = actor_cpu / details["raw_per_core"]["steps_per_cpu_s"]
            if "raw_per_core_num_envs" in details:
                raw_envs_cpu = details["raw_per_core_num_envs"]["steps_per_cpu_s"]
                out["sampler_vs_raw_num_envs_ratio_cpu"] = actor_cpu / raw_envs_cpu
    out["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    out["total_wall_s"] = round(time.perf_counter() - t_begin, 1)
    out["details"] = details
    out = _rounded(out)
    text = json.dumps(out, indent=2)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text, flush=True)
    return 0


def _rounded(value):
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


if __name__ == "__main__":
    sys.exit(main())
