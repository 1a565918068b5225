"""`train`, the control plane's entry point: start-up (resume point, config checks, the runner
for serial or Ray mode), the training loop (cluster/loop.py) and a clean end. Identical for
serial and Ray mode; the runner (cluster/runner.py) decides where the work happens."""

from __future__ import annotations

import contextlib
import signal
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from cluster import checkpoint as ckpt
from cluster import metrics as m
from cluster.annotation import labels_verdict, preflight, wants_annotator
from cluster.checkpoint import restore_rng_states
from cluster.checkpointer import last_chance_checkpoint, resume_point
from cluster.components import EnvSpec, env_spec
from cluster.config import ConfigError, RunConfig, dump_yaml
from cluster.console import counted, startup_banner
from cluster.loop import TrainingLoop
from cluster.loop import notify as _notify
from cluster.ray_job import joined_address
from cluster.run_files import check_run_files
from cluster.runner import Runner
from cluster.scaling import (
    DriverPid,
    ScaleError,
    ScaleWatcher,
    request_workers,
    requested_workers,
    withdraw_request,
)
from cluster.stopping import SafeConsole, StartupInterrupted, StopFlag, say


@dataclass(frozen=True)
class TrainResult:
    env_steps: int
    updates: int
    episodes: int
    mean_return: float | None  # over the console's episode window (the last `return_window`)
    return_window: int
    resumed_from: int | None
    run_dir: str
    already_done: bool = False  # the run had reached total_env_steps; nothing was started
    labels: int | None = None  # stored labels once the annotator stopped (None: no annotator)
    labels_in_reward_model: int | None = None  # the reward model's dataset, last exchange
    captions_pending: int | None = None  # seen, not labelled yet: the checkpoint keeps them
    total_env_steps: int | None = None  # the run's target: more than env_steps when stopped early


def train(config: RunConfig, *, quiet: bool = False, fresh: bool = False) -> TrainResult:
    """Run (or resume) training as the config says; returns when total_env_steps are done.

    Start-up reads before it writes: the checkpoint to resume from and the config it was trained
    with are checked first (ConfigError or CheckpointError with nothing changed), then config.yaml
    is written. SIGINT/SIGTERM are handled from the first line on: during start-up they end it
    with StartupInterrupted, once training runs with a final checkpoint. `fresh`: start from
    step 0 although the run directory holds checkpoints (they stay, renamed *.before-fresh, or
    *.corrupt when unreadable).
    """
    with StopFlag() as flag, SafeConsole():
        try:
            return _start(config, flag, quiet=quiet, fresh=fresh)
        except Exception as exc:
            # A Ctrl-C reaches the whole process group: what it broke while starting (Ray's
            # processes, a download) is the interruption, reported as one.
            if flag.stop and not flag.training and not isinstance(exc, StartupInterrupted):
                raise StartupInterrupted(flag.signum or signal.SIGINT) from None
            raise


def _start(config: RunConfig, flag: StopFlag, *, quiet: bool, fresh: bool) -> TrainResult:
    run_dir = Path(config.run_dir)
    with _removed_if_refused(run_dir):
        watcher = ScaleWatcher(run_dir)  # before reading: a request made during start-up counts
        configured = config.rollout.num_workers  # what this command starts with, no request
        config = _with_scale_request(config, quiet)
        # Label store, checkpoints, model cache: an unusable file is exit 2 here, not an actor's
        # death inside Ray.
        for line in check_run_files(config, checkpoints=not fresh):
            _notify(line, quiet)
        checkpoint = resume_point(config, fresh=fresh, quiet=quiet)  # reads only
        if checkpoint is not None and _already_done(config, checkpoint):
            return _finished_result(config, checkpoint)
        spec = env_spec(config)  # before Ray: a bad env fails fast with a ConfigError
        for line in preflight(config):  # an LLM backend that cannot work fails here, not in Ray
            _notify(line, quiet)
    # Everything above only reads: a refused start leaves the run's saved config as it was.
    (run_dir / "config.yaml").write_text(dump_yaml(config))
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    counters = _counters(checkpoint)
    if checkpoint is not None:
        restore_rng_states(checkpoint["rng"])
        if not quiet:
            print(f"[rogueray] resuming {run_dir} from step {counters['env_steps']:,d}")
    if not quiet:  # before Ray and the LLM start: the first minute is not silent
        resume_step = counters["env_steps"] if checkpoint is not None else None
        print("\n".join(startup_banner(config, resume_step)), flush=True)
    flag.check_startup()
    spec = replace(spec, run_incarnation=counters["incarnation"])
    runner, started_ray = _make_runner(config, spec, flag, quiet)
    try:
        began = time.monotonic()
        if checkpoint is not None:
            runner.load_learner_state(checkpoint["learner"])
            runner.load_annotator_state(checkpoint.get("annotator", {}))
        runner.start(checkpoint.get("annotator_backlog", []) if checkpoint else [])
        if not quiet and config.mode == "ray":
            say(f"[rogueray] processes up in {time.monotonic() - began:.0f} s")
        flag.check_startup()
        with DriverPid(run_dir):
            resumed = checkpoint is not None
            try:
                return _loop(config, runner, counters, watcher, resumed, quiet, configured)
            except Exception as exc:
                if not isinstance(exc, ckpt.CheckpointError | ConfigError):
                    last_chance_checkpoint(config, counters, runner, exc)
                raise
    finally:
        runner.close()
        if started_ray:
            import ray

            ray.shutdown()


@contextlib.contextmanager
def _removed_if_refused(run_dir: Path):
    """Makes `run_dir` (and its parents); a start refused in the block (it raised) removes the
    folders made here that are still empty, so that a wrong backend or env leaves none behind."""
    made = [folder for folder in (run_dir, *run_dir.parents) if not folder.exists()]
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        with contextlib.suppress(OSError):  # not empty: something was written, keep it
            for folder in made:  # the run directory first, then the parents made for it
                folder.rmdir()
        raise


def _counters(checkpoint: dict | None) -> dict:
    """The driver's counters: zero for a new run, else the checkpoint's, one start later."""
    counters = {"env_steps": 0, "updates": 0, "episodes": 0, "incarnation": 0}
    if checkpoint is not None:
        counters.update(checkpoint["counters"])
        # One more start of this run: workers seed env streams that no earlier start played.
        counters["incarnation"] = int(checkpoint["counters"].get("incarnation", 0)) + 1
        counters["updates"] = int(checkpoint["learner"]["version"])  # the learner's own count
    return counters


def _make_runner(
    config: RunConfig, spec: EnvSpec, flag: StopFlag, quiet: bool
) -> tuple[Runner, bool]:
    """The runner of `config.mode`, and whether this process started Ray (and must stop it).
    Unless `quiet`, says when Ray is up (it can take a minute on a loaded machine)."""
    if config.mode != "ray":
        from cluster.serial import SerialRunner

        return SerialRunner(config, spec), False
    from cluster.placement import start_ray
    from cluster.ray_runner import RayRunner

    # The entrypoint of a Ray job joins the job's cluster (RAY_ADDRESS): cluster/ray_job.py.
    config = replace(config, ray_address=joined_address(config.ray_address))
    began = time.monotonic()
    started_ray = start_ray(config, quiet=True)
    flag.reinstall()  # ray.init replaced our SIGINT/SIGTERM handlers with its own
    if not quiet:
        where = "started" if started_ray else "joined"
        say(
            f"[rogueray] Ray {where} in {time.monotonic() - began:.0f} s; starting the learner, "
            f"{counted(config.rollout.num_workers, 'rollout worker')}"
            + (" and the annotator" if wants_annotator(config) else "")
            + " (a process each)"
        )
    try:
        flag.check_startup()
        return RayRunner(config, spec), started_ray
    except BaseException:
        if started_ray:
            import ray

            ray.shutdown()
        raise


def _already_done(config: RunConfig, checkpoint: dict) -> bool:
    return int(checkpoint["counters"]["env_steps"]) >= config.total_env_steps


def _finished_result(config: RunConfig, checkpoint: dict) -> TrainResult:
    """A run that has reached total_env_steps: said at once, before Ray, the LLM or any write,
    with the command that continues it."""
    counters = checkpoint["counters"]
    done = int(counters["env_steps"])
    # The run's own total (a resume may have raised it) decides whether it is finished.
    own_total = int(checkpoint.get("config", {}).get("total_env_steps", 0))
    if own_total > done:  # stopped early (SIGINT, SIGTERM) with a larger total of its own
        to_continue = f"rogueray resume {config.run_dir} (its own total_env_steps={own_total:,d})"
    else:
        to_continue = f"rogueray resume {config.run_dir} total_env_steps={max(2 * done, done + 1)}"
    say(
        f"[rogueray] {config.run_dir} has already reached total_env_steps="
        f"{config.total_env_steps:,d} ({done:,d} env steps done); nothing to train. To "
        f"continue it: {to_continue}; a new run goes in another run_dir (run_dir=runs/NEW_NAME)"
    )
    window = m.EpisodeWindow(m.WINDOW_SIZE)
    window.load_state_dict(counters.get("recent_episodes"))
    return TrainResult(
        env_steps=done,
        updates=int(checkpoint["learner"]["version"]),
        episodes=int(counters.get("episodes", 0)),
        mean_return=window.mean_return(),
        return_window=len(window),
        resumed_from=done,
        run_dir=str(config.run_dir),
        already_done=True,
    )


def _with_scale_request(config: RunConfig, quiet: bool) -> RunConfig:
    """The config with `rogueray scale`'s standing request for rollout workers applied."""
    try:
        wanted = requested_workers(config.run_dir)
    except ScaleError as exc:
        raise ConfigError(str(exc)) from None
    if wanted is None or wanted == config.rollout.num_workers:
        return config
    if not quiet:
        print(f"[rogueray] rollout.num_workers={wanted}, as `rogueray scale` asked")
    return replace(config, rollout=replace(config.rollout, num_workers=wanted))


def _apply_scale_request(
    watcher: ScaleWatcher, runner: Runner, quiet: bool, configured: int
) -> None:
    """Resize to a new `rogueray scale` request. `configured`: the workers the command's config
    gave before any request, what the same command starts with when no request stands."""
    try:
        wanted = watcher.poll()
    except ScaleError as exc:
        print(f"[rogueray] ignoring a scale request: {exc}")
        return
    if wanted is not None and wanted != runner.workers_alive + runner.workers_waiting:
        done = runner.resize(wanted)
        current = runner.workers_alive + runner.workers_waiting
        if current != wanted:
            # Refused (not enough CPUs): withdrawn, so that no later start takes it up silently;
            # an earlier request granted (the size the run has now) stands again for a resume.
            if withdraw_request(watcher.path.parent, only=wanted) and current != configured:
                request_workers(watcher.path.parent, current)
            watcher.poll()  # the withdrawal is not a new request
            done += "; the request was withdrawn (`rogueray scale` again to retry)"
        if not quiet:
            print(f"[rogueray] {done}")


def _loop(
    config: RunConfig,
    runner: Runner,
    counters: dict,
    watcher: ScaleWatcher,
    resumed: bool,
    quiet: bool,
    configured: int,
) -> TrainResult:
    rescale = lambda: _apply_scale_request(watcher, runner, quiet, configured)  # noqa: E731
    loop = TrainingLoop(config, runner, counters, rescale, quiet)
    loop.run()
    loop.close()
    if not quiet:
        print("[rogueray] final checkpoint written; shutting down", flush=True)
    # The annotator labels on after the last exchange: its stats once stopped count every label.
    stats = runner.stop_annotator() or loop.annotator_stats
    verdict = labels_verdict(config, stats)
    if verdict is not None:
        _notify(verdict, quiet=False)
    return TrainResult(
        env_steps=counters["env_steps"],
        updates=counters["updates"],
        episodes=counters["episodes"],
        mean_return=loop.window.mean_return(),
        return_window=len(loop.window),
        resumed_from=loop.start_step if resumed else None,
        run_dir=str(config.run_dir),
        total_env_steps=config.total_env_steps,
        **_label_counts(stats, loop),
    )


def _label_counts(stats: dict[str, float] | None, loop: TrainingLoop) -> dict[str, int]:
    """From the annotator's `stats` once it stopped (else the last exchange's): the labels it
    had stored, which is what the label store holds. From the last exchange, before the final
    checkpoint: how many labels the reward model had taken (labels stored later are handed over
    first on resume) and the captions waiting for a label, which the checkpoint keeps. {}
    without an annotator."""
    from annotator.metrics import LABELS_TOTAL, PENDING
    from reward_models.base import DATASET_SIZE

    stats, last = stats or {}, loop.annotator_stats or {}
    if LABELS_TOTAL not in stats:
        return {}
    pending = last.get(PENDING, stats.get(PENDING, 0))
    counts = {"labels": int(stats[LABELS_TOTAL]), "captions_pending": int(pending)}
    if DATASET_SIZE in loop.logger.latest:
        counts["labels_in_reward_model"] = int(loop.logger.latest[DATASET_SIZE])
    return counts
