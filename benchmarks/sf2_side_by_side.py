"""rogueray against Sample Factory 2 on the same machine, same task and shape, alternating runs.

    python benchmarks/sf2_side_by_side.py [--rounds 2] [--steps 40000] [--out results.json]
                                          [--venv DIR] [--install-only]

Sample Factory 2.1.1 needs gymnasium<1.0 and numpy<2, so it lives in its own virtual environment
(default `$ROGUERAY_CACHE/sf2-venv`, else `~/.cache/rogueray/sf2-venv`), which this script creates
on first use from PyPI: sample-factory==2.1.1, nle==1.0.0, gymnasium==0.29.1, numpy<2. The venv
sees this interpreter's packages (`--system-site-packages`), so it reuses the installed torch
instead of downloading another; its own numpy, gymnasium and NLE shadow ours.

Both systems run NLE's NetHackScore-v0 with glyphs, blstats and message observations, 2 rollout
workers x 16 envs, unroll 32, batch 4096 samples, a GRU core of 512 and rogueray's
NetHackEncoder (Sample Factory through benchmarks/sf2_app.py), on the CPU. rogueray runs with
its defaults, so with `model.precision=auto` its encoder computes in bfloat16 on a CPU with
AVX512-BF16 or AMX, while Sample Factory computes in float32: `--rogueray-set
model.precision=float32` compares at equal precision. Sample Factory 2 APPO with its own
inference worker, batcher and learner (2 env splits per worker, its default double buffering;
input normalisation off, as in rogueray; every process at the priority it starts with, as
rogueray's, unless --sf2-own-niceness: see sf2_app.py). Runs alternate (rogueray, SF2, rogueray,
SF2, ...); each rate is env steps per second from the first report with steps to the last
(start-up excluded): rogueray's console status lines, Sample Factory's "Samples:" count (its
'Total num frames', counted per 4096-sample batch, gives the frames_per_s figure beside it).
Prints ONE JSON object: each run, each system's median and the ratio of medians rogueray / SF2.
Not part of CI (it downloads packages and runs for minutes)."""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from timing import emit, log
from train_runs import (
    EXTRINSIC,
    REPO,
    SHAPE,
    Watch,
    code_version,
    loadavg,
    overrides_of,
    run_train,
    run_watched,
    steady_rate,
)

PACKAGES = ["sample-factory==2.1.1", "nle==1.0.0", "gymnasium==0.29.1", "numpy<2"]
SF2_LINE = re.compile(r"Total num frames: (\d+)\..*Samples: (\d+)")
TARGET_RATIO = 1.0  # the issue: at or above Sample Factory 2 (aim 1.5)


def default_venv() -> Path:
    cache = os.environ.get("ROGUERAY_CACHE") or Path.home() / ".cache" / "rogueray"
    return Path(cache) / "sf2-venv"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=2, help="rogueray/SF2 alternations (2)")
    p.add_argument("--steps", type=int, default=40_000, help="env steps per run (40,000)")
    p.add_argument("--timeout-s", type=float, default=600.0, help="a run is stopped after this")
    p.add_argument("--venv", type=Path, default=default_venv(), help="Sample Factory's venv")
    p.add_argument("--install-only", action="store_true", help="make the venv, run nothing")
    p.add_argument(
        "--rogueray-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra rogueray override, e.g. model.precision=float32 (Sample Factory's precision)",
    )
    p.add_argument(
        "--sf2-own-niceness",
        action="store_true",
        help="let Sample Factory renice its rollout (+10) and inference (+2) workers",
    )
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.steps < 1:
        p.error("--rounds and --steps must be >= 1")
    for item in args.rogueray_set:
        if "=" not in item:
            p.error(f"--rogueray-set {item!r}: expected KEY=VALUE, e.g. model.precision=float32")
    return args


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def sf2_versions(venv: Path) -> dict | None:
    """Versions inside the venv, or None when it is missing or does not import."""
    probe = (
        "import json, numpy, gymnasium, nle, torch, importlib.metadata as m;"
        "print(json.dumps({'sample_factory': m.version('sample-factory'), 'nle': m.version('nle'),"
        "'gymnasium': gymnasium.__version__, 'numpy': numpy.__version__, 'torch': torch.__version__}))"
    )
    if not venv_python(venv).exists():
        return None
    done = subprocess.run(
        [str(venv_python(venv)), "-c", probe], capture_output=True, text=True, timeout=120
    )
    return json.loads(done.stdout) if done.returncode == 0 else None


def ensure_venv(venv: Path) -> dict:
    """Create and fill Sample Factory's venv unless it already imports; returns its versions."""
    versions = sf2_versions(venv)
    if versions is not None:
        return versions
    log(f"creating {venv} (sample-factory 2.1.1, nle 1.0.0; a few minutes)")
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    pip = [str(venv_python(venv)), "-m", "pip", "install", "--disable-pip-version-check"]
    subprocess.run([*pip, *PACKAGES], check=True, stdout=sys.stderr)
    versions = sf2_versions(venv)
    if versions is None:
        raise SystemExit(f"sf2_side_by_side: {venv} was made but Sample Factory does not import")
    return versions


def sf2_flags(steps: int, train_dir: str) -> list[str]:
    return [
        "--algo=APPO", "--env=nethack_score", "--experiment=side_by_side",
        f"--train_dir={train_dir}", "--device=cpu",
        f"--num_workers={SHAPE['rollout.num_workers']}",
        f"--num_envs_per_worker={SHAPE['env.num_envs_per_worker']}", "--worker_num_splits=2",
        f"--rollout={SHAPE['rollout.unroll_length']}", f"--batch_size={SHAPE['learner.batch_size']}",
        "--num_batches_per_epoch=1", "--num_epochs=1",
        "--use_rnn=True", "--rnn_type=gru", f"--rnn_size={SHAPE['model.hidden_size']}",
        "--normalize_input=False", f"--train_for_env_steps={steps}",
        "--save_every_sec=1000000", "--save_best_every_sec=1000000", "--with_wandb=False",
    ]  # fmt: skip


def sf2_line(line: str, watch: Watch) -> None:
    if m := SF2_LINE.search(line):
        frames, samples = int(m.group(1)), int(m.group(2))
        watch.marks.append((time.monotonic(), samples))
        watch.extra.append((time.monotonic(), frames))


def run_sf2(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="sf2-bench-") as train_dir:
        cmd = [str(venv_python(args.venv)), str(REPO / "benchmarks" / "sf2_app.py")]
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        env["SF2_OWN_NICENESS"] = "1" if args.sf2_own_niceness else "0"
        code, watch = run_watched(
            [*cmd, *sf2_flags(args.steps, train_dir)], env, train_dir, sf2_line,
            timeout_s=args.timeout_s, sample_every_s=3.0,
        )  # fmt: skip
    if not watch.marks:
        raise RuntimeError(
            "Sample Factory printed no report; last lines:\n" + "\n".join(watch.tail)
        )
    return {
        "steps_per_s": steady_rate(watch.marks)["steps_per_s"],
        "frames_per_s": steady_rate(watch.extra)["steps_per_s"],
        "env_steps": watch.marks[-1][1],
        "wall_s": time.monotonic() - watch.started,
        "returncode": code,
    }


def run_rogueray(args) -> dict:
    overrides = overrides_of(SHAPE, EXTRINSIC, {"total_env_steps": args.steps})
    run = run_train([*overrides, *args.rogueray_set], timeout_s=args.timeout_s)
    watch = run["watch"]
    return {
        "steps_per_s": steady_rate(watch.marks)["steps_per_s"],
        "env_steps": watch.done_steps or watch.marks[-1][1],
        "wall_s": run["wall_s"],
        "returncode": run["returncode"],
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    versions = ensure_venv(args.venv)
    if args.install_only:
        print(json.dumps({"venv": str(args.venv), "versions": versions}), flush=True)
        return 0
    t0 = time.perf_counter()
    out = {"benchmark": "sf2_side_by_side", "shape": {**SHAPE, "total_env_steps": args.steps}}
    out.update(sf2_versions=versions, sf2_flags=sf2_flags(args.steps, "<tmp>"))
    out["sf2_niceness"] = (
        "its own (+10 rollout, +2 inference)"
        if args.sf2_own_niceness
        else ("unchanged: every process at the priority it starts with, as rogueray's")
    )
    out["rogueray_extra_overrides"] = args.rogueray_set
    out["loadavg_start"] = loadavg()
    out["code"] = code_version()
    runs = []
    for r in range(args.rounds):
        for system, fn in (("rogueray", run_rogueray), ("sample_factory_2", run_sf2)):
            log(f"round {r + 1}/{args.rounds}: {system}, {args.steps:,d} steps")
            load = loadavg()
            row = {"round": r + 1, "system": system, **fn(args)}
            row.update(loadavg_before=load, loadavg_after=loadavg())
            runs.append(row)
            log(f"  {row['steps_per_s'] or 0:.0f} steps/s")
    medians = {
        s: statistics.median(vals)
        for s in ("rogueray", "sample_factory_2")
        if (vals := [r["steps_per_s"] for r in runs if r["system"] == s and r["steps_per_s"]])
    }
    out["median_steps_per_s"] = medians
    if len(medians) == 2:
        out["ratio_of_medians"] = medians["rogueray"] / medians["sample_factory_2"]
        out["at_or_above_sf2"] = out["ratio_of_medians"] >= TARGET_RATIO
    out["runs"] = runs
    out["loadavg_end"] = loadavg()
    out["total_wall_s"] = round(time.perf_counter() - t0, 1)
    emit(out, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
