"""The sampler pipeline: rollout workers as Ray actors (the product's own actor class), the
driver keeping samples in flight and taking each fragment as the learner does: it gets the
fragment and releases its observations' shared-memory slot (actors/observation_slots.py), or,
with `shared=False` (a learner on another node), the observations come through the object
store and are mapped from it."""

from __future__ import annotations

import os
import time

import numpy as np
import ray
from raw_env_rates import measure_raw
from timing import log, machine_busy_s, median, window_rates

from actors.observation_slots import release_observations
from cluster.config import RolloutConfig
from cluster.placement import NO_TASK_EVENTS
from cluster.worker_actor import WorkerActor, freeze_start_up_objects, stop_workers

IN_FLIGHT = RolloutConfig().samples_in_flight  # samples requested per worker at once


class _SamplerActor(WorkerActor):
    """cluster/worker_actor.py's worker actor around a RolloutWorker with the given policy; its
    `sample` is the product's, with the call's wall and CPU times added to the small stats."""

    def __init__(self, env_id, policy_kind, shape, unroll_length, hidden_size, seed, worker_id):
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
        num_envs, unrolls = shape
        self.policy = None  # the policy runs here, not in an inference actor
        self._sharing = None  # as WorkerActor: decided at the first sample
        self.worker = RolloutWorker(
            env_id=env_id,
            num_envs=num_envs,
            unroll_length=unroll_length,
            unrolls_per_sample=unrolls,
            policy=policy,
            seed=seed,
            worker_id=worker_id,
        )
        freeze_start_up_objects()  # as the product's worker actor

    def ready(self) -> int:
        return os.getpid()

    @ray.method(num_returns=2)
    def sample(self, consumer_node=None):
        begin, cpu_begin = time.monotonic(), time.process_time()
        fragment, (episodes, num_steps) = super().sample(0, consumer_node)
        timing = (begin, time.monotonic(), cpu_begin, time.process_time())
        shape = (self.worker.num_envs, self.worker.unrolls_per_sample)
        return fragment, (len(episodes), num_steps, timing, shape)

    def profile(self, seconds: float, top: int) -> dict:
        return profile_sampler(self.worker, seconds, top)


def start_actors(policy_kind: str, shape: tuple[int, int], args) -> tuple[list, float]:
    """`args.workers` actors of `shape` = (envs per worker, unrolls per sample), ready to sample;
    returns them and their start-up seconds. Created without task events, as the run's worker
    actors are (cluster/placement.py): with them, Ray reports every `sample` call to its GCS."""
    actor_cls = ray.remote(num_cpus=1, **NO_TASK_EVENTS)(_SamplerActor)
    t0 = time.monotonic()
    actors = [
        actor_cls.remote(args.env, policy_kind, shape, args.unroll, args.hidden, args.seed, i)
        for i in range(args.workers)
    ]
    ray.get([a.ready.remote() for a in actors])
    return actors, time.monotonic() - t0


def stop_actors(actors: list) -> None:
    stop_workers(actors)  # their envs closed first: NLE's directories are removed
    time.sleep(0.5)  # let the actor processes exit before the next measurement


def measure_sampler(
    policy_kind: str, shape: tuple[int, int], args, in_flight: int = IN_FLIGHT, shared: bool = True
) -> dict:
    """Start actors, time one window of sampling (and profile one actor), stop them."""
    actors, startup_s = start_actors(policy_kind, shape, args)
    result = sampler_window(actors, args, in_flight, shared)
    result["actor_startup_s"] = round(startup_s, 2)
    if args.profile:
        log(f"  profiling RolloutWorker.sample inside one actor ({policy_kind})")
        result["profile"] = ray.get(actors[0].profile.remote(args.profile_seconds, 15))
    stop_actors(actors)
    return result


def sampler_window(actors: list, args, in_flight: int = IN_FLIGHT, shared: bool = True) -> dict:
    """Keep `in_flight` samples per actor going (the product's rollout.samples_in_flight by
    default); time `args.seconds` after `args.warmup`.
    `shared`: observations through shared memory (a consumer on the workers' node); actors
    keep the way their first sample was given."""
    pending: dict = {}  # stats ref -> (actor index, fragment ref)
    node = ray.get_runtime_context().get_node_id() if shared else None

    def submit(index: int) -> None:
        fragment_ref, stats_ref = actors[index].sample.remote(node)
        pending[stats_ref] = index, fragment_ref

    for index in range(len(actors)):
        for _ in range(in_flight):
            submit(index)
    returned = [0] * len(actors)
    steps = 0
    marks: list[tuple[float, int]] = []
    timings: list[list[tuple]] = [[] for _ in actors]  # (begin, end, cpu0, cpu1, steps)
    start = None  # the timed window opens `warmup` s after every actor has returned once
    deadline = float("inf")
    machine: list[tuple[float, int]] = []  # (busy CPU-s, steps) at the window's two ends
    shape = None
    while True:
        ready, _ = ray.wait(list(pending), num_returns=1)
        now = time.monotonic()
        for ref in ready:
            index, fragment_ref = pending.pop(ref)
            num_steps, timing, shape = ray.get(ref)[1:]
            release_observations(ray.get(fragment_ref).obs)
            returned[index] += 1
            if now < deadline:
                submit(index)
            steps += num_steps
            marks.append((now, steps))
            timings[index].append((*timing, num_steps))
        if start is None and min(returned) > 0:
            start = now + args.warmup
            deadline = start + args.seconds
        if start is not None and len(machine) == (0 if now < deadline else 1) and now >= start:
            machine.append((machine_busy_s(), steps))
        if now >= deadline and not pending:
            break
        if now >= deadline + 60:
            raise RuntimeError("sampler actors did not return within 60 s of the deadline")
    rates = window_rates(marks, start, args.seconds, args.windows)
    (busy0, steps0), (busy1, steps1) = machine
    return {
        "steps_per_s": median(rates),
        "window_rates": [round(r, 1) for r in rates],
        "mean_steps_per_s": window_rates(marks, start, args.seconds, 1)[0],
        # Steps per CPU-second the whole machine spent: actors, driver, raylet, everything.
        "steps_per_machine_cpu_s": (steps1 - steps0) / (busy1 - busy0),
        "envs_per_worker": shape[0],
        "unrolls_per_sample": shape[1],
        "samples_in_flight_per_actor": in_flight,
        "observations": "shared memory" if shared else "object store",
        "fragments_returned": sum(returned),
        **actor_timing(timings, start, start + args.seconds),
    }


def sampler_pairs(shape: tuple[int, int], pairs: int, args, one_env: bool) -> dict:
    """Alternate raw stepping and the sampler `pairs` times on the same cores, so that both see
    the same machine (other users' load drifts by tens of percent within minutes), and take
    the median of the per-pair ratios. Raw runs with one env per process (when `one_env`) and
    with the sampler's envs per process; the idle actors wait meanwhile."""
    envs = shape[0]
    actors, startup_s = start_actors("trivial", shape, args)
    rows = []
    try:
        for k in range(pairs):
            row = {}
            if one_env:
                row["raw_1_env"] = measure_raw(args.env, args.raw_procs, 1, args)
            row["raw_same_envs"] = (
                row["raw_1_env"]
                if envs == 1 and one_env
                else measure_raw(args.env, args.raw_procs, envs, args)
            )
            row["sampler"] = sampler_window(actors, args)
            rows.append(row)
            raw, sampled = row["raw_same_envs"]["steps_per_s"], row["sampler"]["steps_per_s"]
            log(
                f"  pair {k + 1}/{pairs}: raw {envs} envs/process {raw:.0f}, sampler "
                f"{sampled:.0f} steps/s: {sampled / raw:.3f} of raw"
            )
        extra = {}
        if args.profile:
            log("  profiling RolloutWorker.sample inside one actor")
            extra["profile"] = ray.get(actors[0].profile.remote(args.profile_seconds, 15))
        if args.diagnostics and one_env:
            log("  1 sample in flight per actor")
            extra["sampler_1_in_flight"] = sampler_window(actors, args, in_flight=1)
    finally:
        stop_actors(actors)
    if args.diagnostics and one_env:
        log("  observations through the object store (a learner on another node)")
        extra["sampler_object_store"] = measure_sampler("trivial", shape, args, shared=False)

    def med(fn) -> float:
        return median([fn(row) for row in rows])

    rate = lambda row, key: row[key]["steps_per_s"]  # noqa: E731
    cpu = lambda row, key: row[key]["steps_per_machine_cpu_s"]  # noqa: E731
    summary = {
        "shape": "{}x{}".format(*shape),
        "pairs": pairs,
        "steps_per_s": med(lambda r: rate(r, "sampler")),
        "raw_same_envs_steps_per_s": med(lambda r: rate(r, "raw_same_envs")),
        "vs_raw_same_envs_ratio": med(lambda r: rate(r, "sampler") / rate(r, "raw_same_envs")),
        "vs_raw_same_envs_machine_cpu_ratio": med(
            lambda r: cpu(r, "sampler") / cpu(r, "raw_same_envs")
        ),
    }
    if one_env:
        summary |= {
            "raw_1_env_steps_per_s": med(lambda r: rate(r, "raw_1_env")),
            "vs_raw_ratio": med(lambda r: rate(r, "sampler") / rate(r, "raw_1_env")),
            "vs_raw_machine_cpu_ratio": med(lambda r: cpu(r, "sampler") / cpu(r, "raw_1_env")),
        }
    return {"summary": summary, "pairs": rows, "actor_startup_s": round(startup_s, 2), **extra}


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

    1. Timers wrapped around each env's step/reset and the policy's forward (instance
       attributes, so the product code runs unchanged); the rest of sample() is the action
       draw (the policy's `act`, after its forward), the observation writes, the episode and
       caption bookkeeping (actors/episodes.py) and building the fragment.
    2. The same env instances stepped round-robin by a bare loop, for comparison.
    3. cProfile of a few sample() calls (it inflates Python-heavy code: compare, don't add).
    """
    import cProfile
    import pstats

    clock = time.perf_counter
    spent = dict.fromkeys(("env.step", "env.reset", "policy.forward"), 0.0)

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

    def per_step(value: float, steps: int) -> float:
        return round(1e6 * value / steps, 2)

    def sample() -> None:  # as a consumer takes it: its shared-memory slot handed back
        release_observations(worker.sample()[0].obs)

    sample()  # warm
    spent.update(dict.fromkeys(spent, 0.0))
    steps, t0, cpu0 = 0, clock(), time.process_time()
    while clock() - t0 < seconds:
        sample()
        steps += worker.unroll_length * worker.num_envs * worker.unrolls_per_sample
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
        sample()
    profiler.disable()
    profiled_steps = calls * worker.unroll_length * worker.num_envs * worker.unrolls_per_sample
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
