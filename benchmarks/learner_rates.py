"""The learner's update rate on synthetic NetHack fragments, beside a tight forward + backward
loop of the same network on the same device, and the whole training loop through the CLI's
`train` in Ray mode."""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np
from timing import median

UNUSED_RUN_DIR = os.path.join(tempfile.gettempdir(), "rogueray-throughput-unused")


def synthetic_fragments(spec, num_fragments: int, num_envs: int, steps: int, state_size: int, rng):
    """Fragments with random NetHack-shaped observations (hero inside the map) and actions."""
    from actors.messages import Fragment
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
                obs={k: obs_array(k, shape, dtype) for k, (shape, dtype) in spec.obs_spec.items()},
                actions=rng.integers(0, spec.num_actions, size=tb).astype(np.int64),
                logp=np.full(tb, -np.log(spec.num_actions), np.float32),
                values=rng.normal(size=tb).astype(np.float32),
                rewards=(rng.random(tb) < 0.05).astype(np.float32),
                terminated=done,
                truncated=np.zeros(tb, bool),
                final_values=np.zeros(tb, np.float32),
                caption_ids=np.full(tb, -1, np.int32),
                caption_counts=np.zeros(tb, np.int32),
                captions=(),
                initial_state=np.zeros((num_envs, state_size), np.float32),
                policy_version=0,
                worker_id=w,
            )
        )
    return fragments


def learner_config(args):
    from cluster.config import load_config

    return load_config(
        None,
        [
            f"env.id={args.env}",
            f"env.num_envs_per_worker={args.num_envs}",
            f"rollout.unroll_length={args.unroll}",
            f"learner.batch_size={args.learner_batch}",
            f"model.hidden_size={args.hidden}",
            "model.kind=nethack",
            f"learner.device={args.learner_device}",
            f"run_dir={UNUSED_RUN_DIR}",
        ],
    )


def measure_learner(args) -> dict:
    """Learner.update on one synthetic batch, then the bare network on the same batch."""
    import torch

    from cluster.components import env_spec, make_learner

    config = learner_config(args)
    spec = env_spec(config)
    learner = make_learner(config, spec)
    fragments = synthetic_fragments(
        spec,
        args.learner_batch // (args.unroll * args.num_envs),
        args.num_envs,
        args.unroll,
        learner.policy.state_size,
        np.random.default_rng(args.seed),
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(args.learner_threads)
    try:
        update = _timed(lambda: learner.update(*fragments), args)
        tight = _timed(_tight_loop(learner.policy, fragments, learner.device), args)
    finally:
        torch.set_num_threads(threads)
    samples = args.learner_batch
    result = {
        "samples_per_s": median([samples / t for t in update["wall"]]),
        "samples_per_cpu_s": median([samples / t for t in update["cpu"]]),
        "update_s_median": round(median(update["wall"]), 4),
        "updates_timed": len(update["wall"]),
        # The same network's forward + backward + Adam step on the same batch, already on the
        # device: no collation, no transfer, no V-trace. The learner's overhead is the gap.
        "tight_loop_samples_per_s": median([samples / t for t in tight["wall"]]),
        "batch_samples": samples,
        # Ray gives the learner actor (num_cpus=1) OMP_NUM_THREADS=1, hence 1 by default.
        "torch_threads": args.learner_threads,
        "device": str(learner.device),
    }
    result["vs_tight_loop_ratio"] = result["samples_per_s"] / result["tight_loop_samples_per_s"]
    return result


def _tight_loop(policy, fragments, device):
    import torch

    from learner.batch import collate

    batch = collate(fragments)
    obs = {k: torch.as_tensor(v, device=device) for k, v in batch.obs.items()}
    state = torch.as_tensor(batch.initial_state, device=device)
    done = torch.as_tensor(batch.terminated, device=device)
    starts = torch.cat([torch.zeros_like(done[:1]), done], dim=0)
    actions = torch.as_tensor(batch.actions, device=device)
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-4)

    def step() -> None:
        logits, values, _ = policy(obs, state, starts)
        logp = torch.log_softmax(logits[:-1], -1).gather(-1, actions[..., None])
        loss = -logp.mean() + values.square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()  # wait for the device, as the learner's metrics do

    return step


def _timed(fn, args) -> dict:
    for _ in range(1 if args.quick else 2):  # warm-up
        fn()
    wall, cpu = [], []
    start = time.perf_counter()
    while time.perf_counter() - start < args.seconds or len(wall) < 3:
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return {"wall": wall, "cpu": cpu}


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
    needs if that is more (cluster.placement.start_ray sizes its own Ray the same way)."""
    import loky

    from cluster.config import load_config
    from cluster.placement import cpus_needed

    needed = cpus_needed(load_config(None, train_overrides(args, UNUSED_RUN_DIR)))
    return max(loky.cpu_count(), needed)


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
