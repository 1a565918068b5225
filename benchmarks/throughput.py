"""Throughput benchmark: raw environment, sampler pipeline, learner and full training loop,
measured on one machine in one run.

    python benchmarks/throughput.py [--env NetHackScoreExtendedActions-v1] [--seconds S]
                                    [--quick] [--profile] [--out results.json]

Prints ONE JSON object on stdout; progress lines go to stderr. Every measurement warms up,
then times `--seconds` split into `--windows` equal sub-windows and reports the median
sub-window rate (the per-window rates are kept under "details").

Measurements (top-level keys; "details" holds per-window rates and diagnostics)
  raw_env_steps_per_s_1proc      make_env + random actions, one env in one process
  raw_env_steps_per_s_per_core   the same in os.cpu_count() processes at once, summed
  raw_env_steps_per_s_per_core_<N>_envs   each process stepping N envs round-robin, as a rollout
                                 worker does, for every N the sampler runs with
  raw_env_instance_penalty       one process stepping 1, 2, 4, ... envs: NLE loads a copy of
                                 libnethack.so per env, so every switch costs cache
  sampler_steps_per_s_trivial    cpu_count Ray actors (cluster/ray_runner.py's worker actor)
                                 around RolloutWorker(UniformPolicy) with the product's default
                                 shape (--num-envs envs, --unrolls-per-sample); the driver reads
                                 only the small stats object and drops the fragment refs
  sampler_trivial_best           the best of that and the --sampler-shapes sweep (diagnostics)
  sampler_vs_raw_ratio           sampler / raw_env_steps_per_s_per_core (one env per process)
  sampler_vs_raw_same_envs_ratio sampler / raw with the sampler's envs per process: what the
                                 pipeline itself costs
  *_machine_cpu_ratio            the same from steps per CPU-second the whole machine spent
                                 (actors, driver, raylet; raw processes), steadier than wall
                                 rates when other users load the machine
  sampler_steps_per_s_nethack_net  the default shape with build_policy("nethack"), random weights
  learner_samples_per_s          Learner.update on synthetic NetHack fragments (--learner-device,
                                 1 torch thread on the CPU: what Ray gives a num_cpus=1 actor),
                                 with learner_tight_loop_samples_per_s: the same network's
                                 forward + backward + Adam step on the same batch, on the device
  train_loop_steps_per_s         cluster.driver.train in Ray mode, env steps / wall time of
                                 train(); Ray is started beforehand, so its start-up is excluded
                                 (actor start-up is not; train_loop_steps_per_s_steady is the
                                 rate from the first fragment to the last)

  --diagnostics (the default) adds details.fragment_return_*: Ray's CPU per `sample` call for
  actors returning a fragment again and again, against returning nothing.
  --profile adds details.sampler_*.profile: per env step, the time in env.step, env.reset,
  policy.forward and the rest of RolloutWorker.sample, against a bare loop over the same envs.
  On a GPU machine: --learner-device cuda --learner-batch 4096 --skip raw,sampler,...
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import time

from raw_env_rates import instance_penalty, measure_raw
from timing import emit, log

DEFAULT_ENV = "NetHackScoreExtendedActions-v1"
TARGET_SAMPLER_VS_RAW = 0.85  # the sampler with a trivial policy against raw stepping
PARTS = ("raw", "sampler", "nethack", "learner", "train")


def parse_shapes(text: str) -> list[tuple[int, int]]:
    """ "8x2,4x4" -> [(8, 2), (4, 4)]: envs per worker x unrolls per sample."""
    shapes = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        try:
            envs, unrolls = (int(x) for x in item.split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"shape {item!r} is not ENVSxUNROLLS, e.g. 8x2"
            ) from None
        if envs < 1 or unrolls < 1:
            raise argparse.ArgumentTypeError(f"shape {item!r} needs positive numbers")
        shapes.append((envs, unrolls))
    return shapes


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
    p.add_argument("--unrolls-per-sample", type=int, default=1, help="rollout.unrolls_per_sample")
    p.add_argument(
        "--sampler-shapes",
        type=parse_shapes,
        default=parse_shapes("16x2,16x4,8x4"),
        help="ENVSxUNROLLS list for the trivial sampler sweep (diagnostics)",
    )
    p.add_argument("--pairs", type=int, help="raw/sampler alternations, median ratio (3; quick 1)")
    p.add_argument("--penalty-envs", default="1,2,4,8,16", help="env counts of the penalty table")
    p.add_argument("--unroll", type=int, default=32)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--learner-batch", type=int, default=1024, help="samples per update")
    p.add_argument("--learner-device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument(
        "--learner-threads",
        type=int,
        default=1,
        help="torch threads for the learner measurement (1: what Ray's learner actor gets)",
    )
    p.add_argument("--train-steps", type=int, help="env steps of the train loop (20k; quick 5k)")
    p.add_argument("--train-workers", type=int, default=cpus)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip", default="", help=f"comma list of: {','.join(PARTS)}")
    p.add_argument(
        "--profile",
        action="store_true",
        help="cProfile RolloutWorker.sample inside a sampler actor and add per-step costs",
    )
    p.add_argument("--profile-seconds", type=float, default=5.0, help="per profiled part")
    p.add_argument(
        "--diagnostics",
        action=argparse.BooleanOptionalAction,
        help="the instance-penalty table, the sampler shape sweep, 1 sample in flight, "
        "observations through the object store and Ray's cost per sample call (default: on, "
        "off with --quick)",
    )
    args = p.parse_args(argv)
    quick = args.quick
    args.seconds = args.seconds or (2.0 if quick else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if quick else 3.0)
    args.windows = args.windows or (2 if quick else 5)
    args.train_steps = args.train_steps or (5_000 if quick else 20_000)
    args.pairs = args.pairs or (1 if quick else 3)
    if args.diagnostics is None:
        args.diagnostics = not quick
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if args.skip - set(PARTS):
        p.error(f"--skip: unknown parts {sorted(args.skip - set(PARTS))}; allowed: {PARTS}")
    args.shape = (args.num_envs, args.unrolls_per_sample)
    args.penalty_envs = [int(n) for n in args.penalty_envs.split(",") if n.strip()]
    return args


def machine_info(args) -> dict:
    import torch

    return {
        "cpu_count": os.cpu_count(),
        "sched_affinity": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else None,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


def run_raw(args, out: dict, details: dict) -> None:
    log("raw env, 1 process, 1 env")
    details["raw_1proc"] = measure_raw(args.env, 1, 1, args)
    out["raw_env_steps_per_s_1proc"] = details["raw_1proc"]["steps_per_s"]
    log(f"  {out['raw_env_steps_per_s_1proc']:.0f} steps/s")
    if "sampler" in args.skip:  # else measured in pairs with the sampler
        log(f"raw env, {args.raw_procs} processes, 1 env each")
        details["raw_per_core"] = measure_raw(args.env, args.raw_procs, 1, args)
        out["raw_env_steps_per_s_per_core"] = details["raw_per_core"]["steps_per_s"]
    if args.diagnostics:
        log(f"raw env, 1 process, {args.penalty_envs} envs (instance penalty)")
        out["raw_env_instance_penalty"] = instance_penalty(args.env, args.penalty_envs, args)


def run_sampler(args, out: dict, details: dict) -> None:
    from fragment_return import fragment_return_cost
    from sampler_rates import sampler_pairs

    log(
        f"sampler, trivial policy, {args.workers} actors, shape {args.shape[0]}x{args.shape[1]}, "
        f"{args.pairs} pairs with raw stepping"
    )
    default = details["sampler_trivial"] = sampler_pairs(args.shape, args.pairs, args, True)
    summary = default["summary"]
    out["raw_env_steps_per_s_per_core"] = summary["raw_1_env_steps_per_s"]
    out["raw_env_steps_per_s_per_core_same_envs"] = summary["raw_same_envs_steps_per_s"]
    out["sampler_steps_per_s_trivial"] = summary["steps_per_s"]
    for key in ("vs_raw_ratio", "vs_raw_same_envs_ratio", "vs_raw_machine_cpu_ratio"):
        out[f"sampler_{key}"] = summary[key]
    out["sampler_vs_raw_same_envs_machine_cpu_ratio"] = summary[
        "vs_raw_same_envs_machine_cpu_ratio"
    ]
    shapes = [summary]
    if args.diagnostics:
        for shape in dict.fromkeys(args.sampler_shapes):
            if shape == args.shape:
                continue
            name = "sampler_trivial_{}x{}".format(*shape)
            log(f"sampler, trivial policy, shape {shape[0]}x{shape[1]}, 1 pair with raw stepping")
            details[name] = sampler_pairs(shape, 1, args, False)
            shapes.append(details[name]["summary"])
        for shape in dict.fromkeys([args.shape, (args.shape[0], 4)]):
            log("Ray's cost per call: actors returning a fragment of shape {}x{}".format(*shape))
            details["fragment_return_{}x{}".format(*shape)] = fragment_return_cost(
                args.env, shape, args
            )
    best = max(shapes, key=lambda row: row["vs_raw_same_envs_ratio"])
    out["sampler_shapes"] = shapes
    out["target_sampler_vs_raw"] = TARGET_SAMPLER_VS_RAW
    out["meets_target_vs_raw"] = summary["vs_raw_ratio"] >= TARGET_SAMPLER_VS_RAW
    out["meets_target_vs_raw_same_envs"] = best["vs_raw_same_envs_ratio"] >= TARGET_SAMPLER_VS_RAW


def run_ray_parts(args, out: dict, details: dict) -> None:
    from sampler_rates import measure_sampler

    if "sampler" not in args.skip:
        run_sampler(args, out, details)
    if "nethack" not in args.skip:
        log(f"sampler, NetHack network, {args.workers} actors")
        details["sampler_nethack_net"] = measure_sampler("nethack", args.shape, args)
        out["sampler_steps_per_s_nethack_net"] = details["sampler_nethack_net"]["steps_per_s"]
        log(f"  {out['sampler_steps_per_s_nethack_net']:.0f} steps/s")
    if "train" not in args.skip:
        from learner_rates import measure_train

        log(f"training loop, {args.train_steps} env steps")
        train = details["train_loop"] = measure_train(args)
        out["train_loop_steps_per_s"] = train["steps_per_s"]
        out["train_loop_steps_per_s_steady"] = train["steps_per_s_steady"]
        out["train_loop_wall_s"] = train["wall_s"]
        log(f"  {train['steps_per_s']:.0f} steps/s over {train['wall_s']:.1f} s")


def run_learner(args, out: dict, details: dict) -> None:
    from learner_rates import measure_learner

    log(f"learner update, synthetic batch of {args.learner_batch}, {args.learner_device}")
    learner = details["learner"] = measure_learner(args)
    out["learner_samples_per_s"] = learner["samples_per_s"]
    out["learner_tight_loop_samples_per_s"] = learner["tight_loop_samples_per_s"]
    out["learner_vs_tight_loop_ratio"] = learner["vs_tight_loop_ratio"]
    log(
        f"  {learner['samples_per_s']:.0f} samples/s; the bare network "
        f"{learner['tight_loop_samples_per_s']:.0f} on {learner['device']}"
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    from actors.envs import validate_env_id

    validate_env_id(args.env)
    t_begin = time.perf_counter()
    out: dict = {
        "env": args.env,
        "machine": machine_info(args),
        "params": {
            "quick": args.quick,
            "seconds": args.seconds,
            "warmup_s": args.warmup,
            "windows": args.windows,
            "sampler_workers": args.workers,
            "sampler_shape": "{}x{}".format(*args.shape),
            "sampler_raw_pairs": args.pairs,
            "sampler_shapes_swept": ["{}x{}".format(*s) for s in args.sampler_shapes]
            if args.diagnostics
            else [],
            "raw_procs": args.raw_procs,
            "unroll_length": args.unroll,
            "hidden_size": args.hidden,
            "learner_batch_samples": args.learner_batch,
            "learner_device": args.learner_device,
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
            run_raw(args, out, details)
        if not args.skip >= {"sampler", "nethack", "train"}:
            import ray
            from learner_rates import ray_num_cpus

            out["machine"]["ray_num_cpus"] = ray_num_cpus(args)
            details["ray_init_s"] = start_ray(out["machine"]["ray_num_cpus"])
            log(f"Ray started in {details['ray_init_s']:.1f} s")
            try:
                run_ray_parts(args, out, details)
            finally:
                ray.shutdown()
        if "learner" not in args.skip:  # no Ray needed; last, so no actor shares its core
            run_learner(args, out, details)
    out["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    out["total_wall_s"] = round(time.perf_counter() - t_begin, 1)
    out["details"] = details
    emit(out, args.out)
    return 0


def start_ray(num_cpus: int) -> float:
    import logging

    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    logging.getLogger("ray").setLevel(logging.ERROR)
    t0 = time.perf_counter()
    ray.init(
        address="local",  # a Ray of its own, as the product's (cluster/placement.py)
        num_cpus=num_cpus,
        # The product's setting (cluster/placement.py): Ray's default runs workers at nice 15,
        # where any nice-0 process (the raw baseline's, another user's) takes their core.
        _system_config={"worker_niceness": 0},
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
    )
    return round(time.perf_counter() - t0, 2)


if __name__ == "__main__":
    sys.exit(main())
