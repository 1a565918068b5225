"""Ray's GCS memory against actor calls: the inference actor of a run (cluster/inference_pool.py,
CartPole's policy) called in a tight loop the way a rollout worker calls it (`RemotePolicy`, a
named-actor handle, one `act` per env step), first as the run creates it, then created as before
`NO_TASK_EVENTS` (cluster/placement.py: Ray's task events on). gcs_server's and the raylet's RSS
are sampled every `--calls / 8` calls, after a pause that lets the callers' task events (sent once
a second) reach the GCS; the growth is the least-squares slope, in MB per 100,000 calls.

    python benchmarks/ray_task_events.py [--calls 24000] [--out results.json]

A local Ray of its own (a private temp dir), started by cluster.placement.start_ray as a run
starts it, and shut down at the end, its temp dirs removed. Prints ONE JSON object."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from timing import emit, log

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
MB = 1024 * 1024


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=24_000, help="act calls per variant (24000)")
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args(argv)
    if args.calls < 8:
        p.error("--calls must be at least 8")
    return args


def ray_rss() -> dict[str, float]:
    """RSS (MB) of this driver's gcs_server and raylet (the Ray it started)."""
    import psutil

    out = {}
    for proc in psutil.Process().children(recursive=True):
        try:
            program = os.path.basename(proc.cmdline()[0]) if proc.cmdline() else ""
            if program in ("gcs_server", "raylet"):
                out[program] = proc.memory_info().rss / MB
        except (psutil.Error, IndexError):
            continue
    return out


def measure(policy, calls: int, envs: int) -> dict:
    """`calls` act calls through `policy` (a RemotePolicy); RSS before and every calls/8."""
    import torch

    obs = {"vector": torch.zeros(1, envs, 4)}
    state, starts = policy.initial_state(envs), torch.zeros(1, envs, dtype=torch.bool)
    policy(obs, state, starts)
    points, every, t0 = [], calls // 8, time.perf_counter()
    for i in range(calls + 1):
        if i % every == 0:
            time.sleep(1.5)  # task events leave a caller once a second
            points.append((i, ray_rss()))
        if i < calls:
            policy(obs, state, starts)
    out = {"calls": calls, "s": round(time.perf_counter() - t0, 1)}
    x = np.array([i for i, _ in points], dtype=float)
    for name in ("gcs_server", "raylet"):
        y = np.array([rss.get(name, np.nan) for _, rss in points])
        out[name] = {
            "first_last_mb": [float(y[0]), float(y[-1])],
            "growth_mb_per_100k_calls": float(np.polyfit(x / 1e5, y, 1)[0]),
        }
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.pop("RAY_ADDRESS", None)
    ray_tmp = tempfile.mkdtemp(prefix="rr", dir="/tmp")  # short: Ray's socket paths
    os.environ["RAY_TMPDIR"] = ray_tmp
    import ray

    from cluster.components import env_spec
    from cluster.config import load_config
    from cluster.inference import InferenceActor, RemotePolicy, inference_actor_name
    from cluster.inference_pool import InferencePool
    from cluster.placement import start_ray
    from cluster.worker_settings import InferenceSettings

    run_dir = tempfile.mkdtemp(prefix="rogueray-bench-")
    config = load_config(
        REPO / "configs/cartpole.yaml",
        [f"run_dir={run_dir}", "mode=ray", "rollout.num_workers=1", "model.recurrent=true"],
    )
    settings, spec = InferenceSettings.from_config(config), env_spec(config)
    envs, state_size = config.env.num_envs_per_worker, settings.model.state_size
    out = {"benchmark": "ray_task_events", "ray": ray.__version__, "envs_per_call": envs}
    start_ray(config)
    try:
        node = ray.get_runtime_context().get_node_id()
        pool = InferencePool(settings, spec)  # as a run creates it
        pool.ensure(node, num_cpus=0)
        policy = RemotePolicy(pool.name_prefix, state_size, worker_id=0)
        policy.find_actor()
        log(f"{args.calls:,d} act calls, the run's inference actor")
        out["as_the_run_creates_it"] = measure(policy, args.calls, envs)
        before = f"task-events-on-{os.getpid()}"  # the options before NO_TASK_EVENTS
        kept = (  # a handle kept: an actor with none left is gone
            ray.remote(num_cpus=0, max_restarts=-1)(InferenceActor)
            .options(name=inference_actor_name(before, node))
            .remote(settings, spec)
        )
        policy = RemotePolicy(before, state_size, worker_id=0)
        policy.find_actor()
        log(f"{args.calls:,d} act calls, task events on")
        out["task_events_on"] = measure(policy, args.calls, envs)
        del kept
    finally:
        ray.shutdown()
        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    emit(out, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
