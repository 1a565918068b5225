"""What Ray costs per `sample` call, apart from sampling: actors that return the same fragment
again and again (one a RolloutWorker made at start-up), called as the sampler benchmark calls
them, against the same fragment without its observations (what crosses Ray when they go
through shared memory, actors/observation_slots.py) and against returning nothing. Part of
`benchmarks/throughput.py --diagnostics`."""

from __future__ import annotations

import time
from dataclasses import fields, replace

import numpy as np
import ray
from timing import machine_busy_s

from cluster.placement import NO_TASK_EVENTS


class _ReturningActor:
    """Returns what a rollout worker of `shape` returned once on every call: the fragment
    (`what` "fragment"), the fragment with no observations ("without_observations"), or None
    ("nothing")."""

    def __init__(self, env_id: str, shape: tuple[int, int], unroll_length: int, what: str):
        from actors.envs import num_actions
        from actors.rollout import RolloutWorker
        from learner.models import UniformPolicy

        num_envs, unrolls = shape
        worker = RolloutWorker(
            env_id=env_id,
            num_envs=num_envs,
            unroll_length=unroll_length,
            unrolls_per_sample=unrolls,
            policy=UniformPolicy(num_actions(env_id)),
        )
        fragment, episodes = worker.sample()
        worker.close()
        steps = unroll_length * num_envs * unrolls
        returned = {
            "fragment": fragment,
            "without_observations": replace(fragment, obs={}),
            "nothing": None,
        }[what]
        self.returned = returned, (0 if returned is None else len(episodes), steps)
        arrays = [*fragment.obs.values(), *(getattr(fragment, f.name) for f in fields(fragment))]
        self.megabytes = sum(a.nbytes for a in arrays if isinstance(a, np.ndarray)) / 2**20

    @ray.method(num_returns=2)
    def sample(self):
        return self.returned

    def cpu_s(self) -> float:
        return time.process_time()

    def fragment_mb(self) -> float:
        return self.megabytes


def fragment_return_cost(env_id: str, shape: tuple[int, int], args, calls: int = 400) -> dict:
    """Per call, ms: CPU of the actors, of this driver and of the whole machine, and wall time
    (the window's over its calls: with several actors answering at once, not one call's
    latency), for `args.workers` actors returning a fragment of `shape`, the same fragment
    without observations, and None."""
    out = {}
    for what in ("fragment", "without_observations", "nothing"):
        cls = ray.remote(num_cpus=1, **NO_TASK_EVENTS)(_ReturningActor)
        actors = [cls.remote(env_id, shape, args.unroll, what) for _ in range(args.workers)]
        _calls(actors, calls // 4)  # warm
        actors_cpu = sum(ray.get([a.cpu_s.remote() for a in actors]))
        machine, driver, wall = machine_busy_s(), time.process_time(), time.perf_counter()
        _calls(actors, calls)
        actors_cpu = sum(ray.get([a.cpu_s.remote() for a in actors])) - actors_cpu
        per_call = {
            "wall_ms": time.perf_counter() - wall,
            "actors_cpu_ms": actors_cpu,
            "driver_cpu_ms": time.process_time() - driver,
            "machine_cpu_ms": machine_busy_s() - machine,
        }
        out[what] = {k: round(1e3 * v / calls, 3) for k, v in per_call.items()}
        out["fragment_mb"] = round(ray.get(actors[0].fragment_mb.remote()), 2)
        for actor in actors:  # no envs to close
            ray.kill(actor)
        time.sleep(0.5)
    out["shape"] = "{}x{}".format(*shape)
    out["calls"] = calls
    return out


def _calls(actors: list, calls: int) -> None:
    """`calls` sample calls (at least one per actor), one in flight per actor; the driver reads
    the small stats object and drops the fragment, as benchmarks/sampler_rates.py's window
    does."""
    pending = {actor.sample.remote()[1]: index for index, actor in enumerate(actors)}
    submitted = len(actors)
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            index = pending.pop(ref)
            ray.get(ref)
            if submitted < calls:
                pending[actors[index].sample.remote()[1]] = index
                submitted += 1
