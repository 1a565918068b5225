"""Does the LLM-derived intrinsic reward help where extrinsic reward is sparse?

Runs the same task, budget and seeds with extrinsic reward only and with an ONI reward model,
through the real training loop (Ray, rollout workers, annotator with the embedded LLM), and
prints one JSON object: per run the success rate over the first and last thirds of episodes, the
mean depth reached and the labels collected; per method the mean over seeds.

    python benchmarks/sparse_reward.py --steps 100000 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cluster.config import load_config
from cluster.driver import train

TASK = "NetHackStaircaseLvl2ExtendedActions-v1"
METHODS = {
    "extrinsic": ["reward_model.name=none", "reward.intrinsic_coef=0"],
    "hashing": ["reward_model.name=hashing", "reward.intrinsic_coef=0.4"],
}


def _episode_returns(run_dir: Path) -> np.ndarray:
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return np.array([e.value for e in events.Scalars("episode/return_extrinsic")])


def _scalar_last(run_dir: Path, tag: str) -> float | None:
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    if tag not in events.Tags()["scalars"]:
        return None
    return float(events.Scalars(tag)[-1].value)


def run_one(method: str, seed: int, steps: int, root: Path, extra: list[str]) -> dict:
    run_dir = root / f"{method}-{seed}"
    overrides = [
        f"run_dir={run_dir}", f"seed={seed}", f"total_env_steps={steps}", f"env.id={TASK}",
        "env.num_envs_per_worker=16", "rollout.num_workers=2", "learner.batch_size=1024",
        "learner.learning_rate=3e-4", "model.hidden_size=256", "reward.extrinsic_coef=10",
        "annotator.goal=stairs", "log_interval_s=30", *METHODS[method], *extra,
    ]  # fmt: skip
    start = time.monotonic()
    result = train(load_config(None, overrides), quiet=True)
    returns = _episode_returns(run_dir)
    third = max(len(returns) // 3, 1)
    return {
        "method": method,
        "seed": seed,
        "env_steps": result.env_steps,
        "episodes": int(len(returns)),
        "success_rate_all": float(np.mean(returns > 0)) if len(returns) else None,
        "success_rate_first_third": float(np.mean(returns[:third] > 0)) if len(returns) else None,
        "success_rate_last_third": float(np.mean(returns[-third:] > 0)) if len(returns) else None,
        "labels": _scalar_last(run_dir, "annotator/labels_total"),
        "positive_fraction": _scalar_last(run_dir, "annotator/positive_fraction"),
        "return_intrinsic_last": _scalar_last(run_dir, "episode/return_intrinsic"),
        "wall_s": round(time.monotonic() - start, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--root", help="where runs go (default: a temp dir)")
    parser.add_argument("overrides", nargs="*", help="extra key=value for every run")
    args = parser.parse_args()
    root = Path(args.root or tempfile.mkdtemp(prefix="rogueray-sparse-"))
    runs = []
    for seed in args.seeds:
        for method in args.methods:
            print(f"[sparse] {method} seed {seed} ...", file=sys.stderr, flush=True)
            runs.append(run_one(method, seed, args.steps, root, args.overrides))
            print(f"[sparse] {json.dumps(runs[-1])}", file=sys.stderr, flush=True)
    summary = {}
    for method in args.methods:
        mine = [r for r in runs if r["method"] == method]
        summary[method] = {
            key: float(np.mean([r[key] for r in mine if r[key] is not None]))
            for key in ("success_rate_all", "success_rate_last_third", "success_rate_first_third")
        }
    print(
        json.dumps(
            {
                "task": TASK,
                "steps_per_run": args.steps,
                "seeds": args.seeds,
                "summary": summary,
                "runs": runs,
                "root": str(root),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
