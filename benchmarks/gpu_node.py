"""One prepared script for a GPU node: (a) the learner against the bare network, (b) the full loop
with 16 rollout workers against raw env stepping on the same cores.

    python benchmarks/gpu_node.py [--device cuda] [--workers 16] [--steps 200000]
                                  [--wheels DIR] [--out results.json]
    python benchmarks/gpu_node.py --device cpu --quick        # the smoke check, any machine

(a) `Learner.update` (learner/learner.py) at `--batch` (4096) samples per update on synthetic
    NetHack fragments, beside a tight forward + backward + Adam loop of the same network on the
    same batch, already on the device (no collation, copies or V-trace): samples/s of each and
    their ratio. Needs torch, numpy and PyYAML only; no Ray, no NLE.
(b) `rogueray train` (extrinsic reward, `--workers` x 16 envs, unroll 32, batch 4096, GRU 512,
    NetHackScore-v0, learner on `--device`) in Ray mode, or in serial mode when Ray is absent,
    beside raw NetHack stepping in `--workers` processes holding 16 envs each on the same cores.
    Needs NLE (and Ray for the parallel loop). `--inference auto` (default) uses the shared
    inference actor on the GPU (`rollout.inference=shared`, `rollout.inference_device=--device`)
    in Ray mode on a CUDA device, else leaves `rollout.inference` to the product's default;
    `--set KEY=VALUE` adds keys.

A node with Python 3.12 and torch but no Ray or NLE: `--wheels DIR` installs what is missing from
wheels carried in DIR (`pip download --only-binary=:all: --python-version 3.12 --platform
manylinux2014_x86_64 -d DIR nle==1.3.0 gymnasium==1.2.0 pyyaml ray==2.60.0`) into DIR/site,
with no index. Whatever still is missing is named in the JSON (`missing`, `skipped`), and the
parts that can run do. Prints ONE JSON object; progress on stderr."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from timing import log, rounded

OPTIONAL = ("numpy", "yaml", "gymnasium", "nle", "ray", "psutil", "tensorboard")
NETHACK_OBS = {  # NetHackScore-v0's observations as rogueray keeps them (actors/nle_tasks.py)
    "glyphs": ((21, 79), "int16"),
    "blstats": ((27,), "int64"),
    "message": ((256,), "uint8"),
}
NETHACK_ACTIONS = 23


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (the smoke check)")
    p.add_argument("--batch", type=int, default=4096, help="samples per learner update")
    p.add_argument("--seconds", type=float, default=10.0, help="timed seconds per measurement")
    p.add_argument("--workers", type=int, default=16, help="rollout workers / raw processes")
    p.add_argument("--steps", type=int, default=200_000, help="env steps of the full loop")
    p.add_argument("--timeout-s", type=float, default=420.0, help="limit of the full loop run")
    p.add_argument("--wheels", type=Path, help="folder of carried wheels for what is missing")
    p.add_argument("--skip", default="", help="comma list of: learner, loop")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--inference",
        choices=("auto", "worker", "shared"),
        default="auto",
        help="rollout.inference of the loop (auto: shared on a CUDA device in Ray mode)",
    )
    p.add_argument("--quick", action="store_true", help="2 workers, 1,024 samples, short runs")
    p.add_argument(
        "--pretend-missing",
        default="",
        help="comma list of modules to treat as absent (checks the no-Ray/no-NLE path here)",
    )
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.seconds, args.workers = min(args.batch, 1024), 2.0, 2
        args.steps = min(args.steps, 8192)
    args.skip = {s for s in args.skip.split(",") if s}
    if args.skip - {"learner", "loop"}:
        p.error(
            f"--skip: unknown parts {sorted(args.skip - {'learner', 'loop'})}; allowed: learner, loop"
        )
    if args.batch % (32 * 16):
        p.error(f"--batch {args.batch}: must be a multiple of 512 (unroll 32 x 16 envs)")
    args.pretend_missing = {m for m in args.pretend_missing.split(",") if m}
    return args


def available(args) -> dict[str, bool]:
    return {
        m: m not in args.pretend_missing and importlib.util.find_spec(m) is not None
        for m in OPTIONAL
    }


def install_carried(wheels: Path, missing: list[str]) -> dict:
    """pip install the missing packages from `wheels` (no index) into wheels/site, on sys.path."""
    names = {"yaml": "pyyaml"}
    site = wheels / "site"
    cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(wheels)]
    cmd += ["--target", str(site), *[names.get(m, m) for m in missing]]
    done = subprocess.run(cmd, capture_output=True, text=True)
    sys.path.insert(0, str(site))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(site), os.environ.get("PYTHONPATH")])
    )
    importlib.invalidate_caches()
    return {"returncode": done.returncode, "tail": done.stderr[-800:]}


def measure_learner(args) -> dict:
    """Learner.update on synthetic NetHack fragments against the tight loop (learner_rates)."""
    import numpy as np
    import torch
    from learner_rates import _tight_loop, _timed, synthetic_fragments

    from cluster.config import LearnerConfig, RewardConfig
    from learner.learner import Learner
    from learner.models import build_policy

    obs_spec = {k: (shape, np.dtype(dtype)) for k, (shape, dtype) in NETHACK_OBS.items()}
    policy = build_policy("nethack", obs_spec, NETHACK_ACTIONS, 512, True)
    learner = Learner(
        policy, LearnerConfig(batch_size=args.batch, device=args.device), RewardConfig()
    )
    spec = SimpleNamespace(obs_spec=obs_spec, num_actions=NETHACK_ACTIONS)
    fragments = synthetic_fragments(
        spec, args.batch // 512, 16, 32, policy.state_size, np.random.default_rng(0)
    )
    timing = SimpleNamespace(quick=args.quick, seconds=args.seconds)
    update = _timed(lambda: learner.update(*fragments), timing)
    tight = _timed(_tight_loop(learner.policy, fragments, learner.device), timing)
    rate = float(np.median([args.batch / t for t in update["wall"]]))
    bare = float(np.median([args.batch / t for t in tight["wall"]]))
    return {
        "device": str(learner.device),
        "device_name": torch.cuda.get_device_name() if learner.device.type == "cuda" else None,
        "torch_threads": torch.get_num_threads(),
        "batch_samples": args.batch,
        "learner_samples_per_s": rate,
        "tight_loop_samples_per_s": bare,
        "learner_vs_tight_loop_ratio": rate / bare,
        "updates_timed": len(update["wall"]),
    }


def measure_loop(args, have: dict) -> dict:
    """The full loop (Ray, or serial without Ray) and raw stepping in as many processes."""
    from raw_env_rates import measure_raw
    from train_runs import EXTRINSIC, SHAPE, overrides_of, run_train, steady_rate

    mode = "ray" if have["ray"] else "serial"
    extra = {"total_env_steps": args.steps, "rollout.num_workers": args.workers,
             "learner.batch_size": args.batch, "learner.device": args.device}  # fmt: skip
    inference = args.inference
    if inference == "auto" and mode == "ray" and args.device.startswith("cuda"):
        inference = "shared"
    if inference == "auto":
        inference = "the product's default (rollout.inference not set)"
    else:
        extra["rollout.inference"] = inference
    if inference == "shared":
        extra["rollout.inference_device"] = args.device
    overrides = [*overrides_of(SHAPE, EXTRINSIC, extra), *args.set]
    if mode == "serial":
        overrides.append("mode=serial")  # later than run_train's mode=ray: it wins
    log(f"full loop, {mode} mode, {args.workers} workers x 16 envs, {args.steps:,d} steps")
    run = run_train(overrides, timeout_s=args.timeout_s)
    loop = steady_rate(run["watch"].marks)["steps_per_s"]
    raw_args = SimpleNamespace(seconds=args.seconds, warmup=1.0, windows=3, seed=0)
    log(f"raw NetHack stepping, {args.workers} processes x 16 envs")
    raw = measure_raw(SHAPE["env.id"], args.workers, 16, raw_args)
    return {
        "mode": mode,
        "inference": inference,
        "loop_steps_per_s": loop,
        "loop_wall_s": run["wall_s"],
        "raw_steps_per_s_same_envs": raw["steps_per_s"],
        "loop_vs_raw_ratio": loop / raw["steps_per_s"] if loop else None,
        "overrides": overrides,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    out = {"benchmark": "gpu_node", "device_requested": args.device, "cpu_count": os.cpu_count()}
    out.update(python=sys.version.split()[0], loadavg_start=[round(x, 2) for x in os.getloadavg()])
    have = available(args)
    if args.wheels and not all(have[m] for m in ("numpy", "yaml", "nle", "gymnasium", "ray")):
        wanted = [m for m in ("numpy", "yaml", "gymnasium", "nle", "ray") if not have[m]]
        log(f"installing {wanted} from {args.wheels}")
        out["carried_wheels"] = install_carried(args.wheels, wanted)
        have = available(args)
    out["missing"] = sorted(m for m, ok in have.items() if not ok)
    out["skipped"] = {}
    import torch

    out["torch"] = torch.__version__
    out["cuda_available"] = torch.cuda.is_available()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(
            f"gpu_node: --device {args.device} but torch sees no GPU; use --device cpu"
        )
    t0 = time.perf_counter()
    with _stdout_to_stderr():
        if "learner" not in args.skip:
            if have["numpy"] and have["yaml"]:
                log(f"learner update, {args.batch} samples, {args.device}")
                out["learner"] = measure_learner(args)
            else:
                out["skipped"]["learner"] = "needs numpy and PyYAML (carry their wheels)"
        if "loop" not in args.skip:
            if all(have[m] for m in ("nle", "gymnasium", "yaml", "psutil", "tensorboard")):
                out["loop"] = measure_loop(args, have)
                if not have["ray"]:
                    out["skipped"]["loop_parallel"] = "Ray is absent: the loop ran in serial mode"
            else:
                out["skipped"]["loop"] = "needs NLE, gymnasium, PyYAML, psutil and tensorboard"
    out["total_wall_s"] = round(time.perf_counter() - t0, 1)
    out["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(rounded(out), indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text, flush=True)
    return 0


class _stdout_to_stderr:
    """Product code prints to stdout; the JSON must stay alone there."""

    def __enter__(self):
        import contextlib

        self._redirect = contextlib.redirect_stdout(sys.stderr)
        return self._redirect.__enter__()

    def __exit__(self, *exc):
        return self._redirect.__exit__(*exc)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # learner/, cluster/
    sys.exit(main())
