"""The training loop (control plane): gathers fragments into batches, hands them to the learner,
syncs weights, logs, checkpoints, and stops cleanly on SIGINT/SIGTERM. Identical for serial and
Ray mode; the runner decides where the work happens."""

from __future__ import annotations

import errno
import os
import signal
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from cluster import checkpoint as ckpt
from cluster import metrics as m
from cluster.annotation import labels_verdict, preflight
from cluster.checkpoint import restore_rng_states, rng_states
from cluster.components import env_spec
from cluster.config import ConfigError, RunConfig, dump_yaml, to_dict
from cluster.console import startup_banner
from cluster.run_files import check_run_files
from cluster.scaling import (
    DriverPid,
    ScaleError,
    ScaleWatcher,
    requested_workers,
    withdraw_request,
)

LABEL_EXCHANGE_INTERVAL_S = 1.0
CAPTION_TABLE_INTERVAL_S = 60.0
CAPTION_TABLE_ROWS = 20


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


class StartupInterrupted(Exception):
    """SIGINT/SIGTERM arrived before training began: nothing was trained or written."""

    def __init__(self, signum: int):
        name = signal.Signals(signum).name
        super().__init__(
            f"stopped by {name} during start-up; nothing was trained and no checkpoint written"
        )
        self.exit_code = 128 + signum  # 130 for SIGINT, 143 for SIGTERM, as a shell reports


def _say(text: str) -> None:
    """Print, never raising: a closed pipe or a full disk must not stop a clean shutdown."""
    try:
        print(text, flush=True)
    except (OSError, ValueError):
        pass


class _SafeStream:
    """A console stream whose write and flush never raise. On the first failure (the reader of a
    pipe gone, the disk under a redirected log full) the file descriptor is pointed at
    /dev/null, so that later prints, Ray's log lines and the interpreter's final flush are
    dropped instead of raising BrokenPipeError somewhere in the middle of a checkpoint."""

    def __init__(self, stream):
        self._stream = stream
        self.broken = False

    def write(self, text):
        if not self.broken:
            try:
                return self._stream.write(text)
            except (OSError, ValueError):
                self._break()
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self._stream.flush()
            except (OSError, ValueError):
                self._break()

    def _break(self) -> None:
        self.broken = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass

    def __getattr__(self, name):
        return getattr(self._stream, name)


class _SafeConsole:
    """sys.stdout and sys.stderr as _SafeStreams for the duration of a run."""

    def __enter__(self) -> _SafeConsole:
        self._saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _SafeStream(sys.stdout), _SafeStream(sys.stderr)
        return self

    def __exit__(self, *exc) -> None:
        sys.stdout, sys.stderr = self._saved


class _StopFlag:
    """Turns SIGINT/SIGTERM into a clean stop with a final checkpoint.

    `train` installs it before anything slow (Ray, the LLM, the env) starts; `_loop`'s own
    `with _StopFlag()` then gets that same flag. A signal during start-up sets the flag and
    `train` ends at its next safe point with StartupInterrupted; a signal while training stops
    after the current step; a second one raises KeyboardInterrupt (stop now).
    """

    _active: _StopFlag | None = None

    def __init__(self) -> None:
        self.stop = False
        self.signum: int | None = None
        self.training = False
        self._previous = {}
        self._outer: _StopFlag | None = None

    def __enter__(self) -> _StopFlag:
        if _StopFlag._active is not None:
            self._outer = _StopFlag._active
            self._outer.training = True
            return self._outer
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        if self._previous:
            _StopFlag._active = self
        return self

    def _handle(self, signum, frame) -> None:
        if self.stop:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.stop, self.signum = True, signum
        name = signal.Signals(signum).name
        if self.training:
            _say(f"\n[rogueray] {name}: stopping after this step and saving a checkpoint")
        else:
            _say(f"\n[rogueray] {name}: stopping the start-up")

    def check_startup(self) -> None:
        """Raise StartupInterrupted when a signal came during start-up."""
        if self.stop and not self.training:
            raise StartupInterrupted(self.signum or signal.SIGINT)

    def __exit__(self, *exc) -> None:
        if self._outer is not None:
            return
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        if _StopFlag._active is self:
            _StopFlag._active = None


MAX_FAILED_CHECKPOINTS = 10
"""A run whose checkpoints fail this many times in a row (one try per checkpoint_interval_s)
stops with exit 2 rather than train on with nothing saved."""


class _Checkpointer:
    """Writes checkpoints; a failed write is reported in one line and retried at the next
    interval, and only MAX_FAILED_CHECKPOINTS failures in a row (or a failed final checkpoint)
    end the run, with CheckpointWriteError saying how to get going again."""

    def __init__(self, config: RunConfig, say=_say):
        self.config, self.say = config, say
        self.failures = 0

    def state(self, counters: dict, runner) -> dict:
        learner = runner.learner_state()
        # The learner's own count: it includes every update it ran, in flight for the driver
        # or not, so a resume never double-counts or drops one.
        counters = {**counters, "updates": int(learner["version"])}
        state = {
            "counters": counters,
            "rng": rng_states(),
            "learner": learner,
            "annotator_backlog": runner.annotator_backlog(),
            "annotator": runner.annotator_state(),  # the calibration window, as plain data
            "config": to_dict(self.config),
        }
        return state

    def save(self, state: dict, env_steps: int, final: bool = False) -> None:
        run_dir, cfg = Path(self.config.run_dir), self.config
        try:
            path = ckpt.save_checkpoint(run_dir, state, env_steps, cfg.keep_checkpoints)
        except ckpt.CheckpointWriteError as exc:
            self.failures += 1
            kept = ckpt.list_checkpoints(run_dir)
            kept_text = (
                f"the newest kept is {kept[-1].name}" if kept else "there is no older checkpoint"
            )
            if final or self.failures >= MAX_FAILED_CHECKPOINTS:
                which = "the final checkpoint" if final else f"{self.failures} checkpoints in a row"
                raise ckpt.CheckpointWriteError(
                    f"{which} failed ({exc}); {kept_text}. {_how_to_fix(exc, run_dir)}, "
                    f"then `rogueray resume {run_dir}`",
                    exc.errno,
                ) from None
            self.say(
                f"[rogueray] checkpoint at step {env_steps:,d} not written ({exc}); {kept_text}; "
                f"training goes on and tries again in {cfg.checkpoint_interval_s:g} s"
            )
            return
        if self.failures:
            self.say(
                f"[rogueray] checkpoint written again: {path.name}, after {self.failures} "
                "failed attempts"
            )
        self.failures = 0


def _how_to_fix(exc: ckpt.CheckpointWriteError, run_dir: Path) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"Free space on the file system of {run_dir} (`df -h {run_dir}`: delete old runs, "
            "old TensorBoard logs or *.corrupt checkpoints)"
        )
    return f"Check that {run_dir}/checkpoints can be written (the disk, its mount, permissions)"


def train(config: RunConfig, *, quiet: bool = False, fresh: bool = False) -> TrainResult:
    """Run (or resume) training as the config says; returns when total_env_steps are done.

    Start-up reads before it writes: the checkpoint to resume from and the config it was trained
    with are checked first (ConfigError or CheckpointError with nothing changed), then config.yaml
    is written. SIGINT/SIGTERM are handled from the first line on: during start-up they end it
    with StartupInterrupted, once training runs with a final checkpoint. `fresh`: start from
    step 0 although the run directory holds checkpoints (they stay, renamed *.before-fresh, or
    *.corrupt when unreadable).
    """
    with _StopFlag() as flag, _SafeConsole():
        try:
            return _start(config, flag, quiet=quiet, fresh=fresh)
        except Exception as exc:
            # A Ctrl-C reaches the whole process group: what it broke while starting (Ray's
            # processes, a download) is the interruption, reported as one.
            if flag.stop and not flag.training and not isinstance(exc, StartupInterrupted):
                raise StartupInterrupted(flag.signum or signal.SIGINT) from None
            raise


def _start(config: RunConfig, flag: _StopFlag, *, quiet: bool, fresh: bool) -> TrainResult:
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    watcher = ScaleWatcher(run_dir)  # before reading: a request made during start-up counts
    config = _with_scale_request(config, quiet)
    # Label store, checkpoints, model cache: an unusable file is exit 2 here, not an actor's
    # death inside Ray.
    check_run_files(config, checkpoints=not fresh)
    checkpoint = _resume_point(config, fresh=fresh, quiet=quiet)  # reads only
    if checkpoint is not None and _already_done(config, checkpoint):
        return _finished_result(config, checkpoint)
    (run_dir / "config.yaml").write_text(dump_yaml(config))
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    counters = {"env_steps": 0, "updates": 0, "episodes": 0, "incarnation": 0}
    if checkpoint is not None:
        counters.update(checkpoint["counters"])
        # One more start of this run: workers seed env streams that no earlier start played.
        counters["incarnation"] = int(checkpoint["counters"].get("incarnation", 0)) + 1
        counters["updates"] = int(checkpoint["learner"]["version"])  # the learner's own count
        restore_rng_states(checkpoint["rng"])
        if not quiet:
            print(f"[rogueray] resuming {run_dir} from step {counters['env_steps']:,d}")
    if not quiet:  # before Ray and the LLM start: the first minute is not silent
        resume_step = counters["env_steps"] if checkpoint is not None else None
        print("\n".join(startup_banner(config, resume_step)), flush=True)
    flag.check_startup()
    spec = env_spec(config)  # before Ray: a bad env fails fast with a ConfigError
    spec = replace(spec, run_incarnation=counters["incarnation"])
    for line in preflight(config):  # an LLM backend that cannot work fails here, not in Ray
        _notify(line, quiet)
    flag.check_startup()
    started_ray = False
    if config.mode == "ray":
        from cluster.placement import start_ray
        from cluster.ray_runner import RayRunner

        started_ray = start_ray(config, quiet=True)
        try:
            flag.check_startup()
            runner = RayRunner(config, spec)
        except BaseException:
            if started_ray:
                import ray

                ray.shutdown()
            raise
    else:
        from cluster.serial import SerialRunner

        runner = SerialRunner(config, spec)
    try:
        if checkpoint is not None:
            runner.load_learner_state(checkpoint["learner"])
            runner.load_annotator_state(checkpoint.get("annotator", {}))
        runner.start(checkpoint.get("annotator_backlog", []) if checkpoint else [])
        flag.check_startup()
        with DriverPid(run_dir):
            resumed = checkpoint is not None
            try:
                return _loop(config, runner, counters, watcher, resumed=resumed, quiet=quiet)
            except Exception as exc:
                if not isinstance(exc, ckpt.CheckpointError | ConfigError):
                    _last_chance_checkpoint(config, counters, runner, exc)
                raise
    finally:
        runner.close()
        if started_ray:
            import ray

            ray.shutdown()


def _already_done(config: RunConfig, checkpoint: dict) -> bool:
    return int(checkpoint["counters"]["env_steps"]) >= config.total_env_steps


def _finished_result(config: RunConfig, checkpoint: dict) -> TrainResult:
    """A run that has reached total_env_steps: said at once, before Ray, the LLM or any write,
    with the command that continues it."""
    counters = checkpoint["counters"]
    done = int(counters["env_steps"])
    more = max(2 * done, done + 1)
    _say(
        f"[rogueray] {config.run_dir} has already reached total_env_steps="
        f"{config.total_env_steps:,d} ({done:,d} env steps done); nothing to train. To "
        f"continue it: rogueray resume {config.run_dir} total_env_steps={more}"
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


def _last_chance_checkpoint(config: RunConfig, counters: dict, runner, exc: Exception) -> None:
    """The loop failed (a logging error, a bug): save what the learner has before the error
    propagates, so that the work since the last checkpoint is not lost with it."""
    saver = _Checkpointer(config)
    try:
        saver.save(saver.state(counters, runner), counters["env_steps"], final=True)
        _say(f"[rogueray] the run failed ({type(exc).__name__}); saved a checkpoint first")
    except Exception as again:  # noqa: BLE001 - the original error is the one to report
        _say(f"[rogueray] the run failed and no checkpoint could be saved ({again})")


def _resume_point(config: RunConfig, *, fresh: bool, quiet: bool) -> dict | None:
    """The checkpoint to resume from, after checking it may be resumed with `config`.

    Raises, with nothing written: NoLoadableCheckpoint (checkpoints exist, none loads),
    UnsafeCheckpointError (one carries pickled objects), ConfigError (the config changes the
    network, the env or the reward model). Unreadable newer checkpoints are renamed *.corrupt.
    """
    run_dir = Path(config.run_dir)
    if fresh:
        existing = ckpt.list_checkpoints(run_dir)
        bad = [p for p in existing if ckpt._load_error(p) is not None]
        ckpt.set_aside(bad, ".corrupt")
        ckpt.set_aside([p for p in existing if p not in bad], ".before-fresh")
        if existing:
            _say(
                f"[rogueray] --fresh: starting from step 0; the {len(existing)} checkpoints in "
                f"{ckpt.checkpoint_dir(run_dir)} were kept as *.before-fresh / *.corrupt"
            )
        return None
    found = ckpt.find_checkpoint(run_dir)
    if found.state is None:
        if found.unreadable:
            raise ckpt.NoLoadableCheckpoint(ckpt.no_loadable_checkpoint(run_dir, found.unreadable))
        return None
    saved = found.state.get("config")
    if saved is None and (run_dir / "config.yaml").is_file():  # checkpoints of older versions
        import yaml

        saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    changes = ckpt.config_changes(saved or {}, to_dict(config))
    bad = ckpt.incompatible(changes)
    if bad:
        raise ConfigError(
            f"cannot resume {run_dir} with {ckpt.describe(bad)}: the checkpoint's network, "
            f"environment or reward model was built for the old value"
            f"{'s' if len(bad) > 1 else ''} (keys: {', '.join(k for k, _, _ in bad)}). "
            "Use another run_dir for the new setting, or --fresh to train this one from step 0"
        )
    if changes:
        _say(f"[rogueray] changed since the last run: {ckpt.describe(changes)}")
    for (path, why), moved in zip(
        found.unreadable, ckpt.set_aside([p for p, _ in found.unreadable]), strict=True
    ):
        _say(
            f"[rogueray] warning: checkpoint {path} is unreadable ({why}); kept as "
            f"{moved.name}, resuming from {found.path.name}"
        )
    return found.state


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


def _apply_scale_request(watcher: ScaleWatcher, runner, quiet: bool) -> None:
    try:
        wanted = watcher.poll()
    except ScaleError as exc:
        print(f"[rogueray] ignoring a scale request: {exc}")
        return
    if wanted is not None and wanted != runner.workers_alive + runner.workers_waiting:
        done = runner.resize(wanted)
        if runner.workers_alive + runner.workers_waiting != wanted:
            # Refused (not enough CPUs): withdrawn, so that no later start takes it up silently.
            withdraw_request(watcher.path.parent, only=wanted)
            watcher.poll()  # the withdrawal is not a new request
            done += "; the request was withdrawn (`rogueray scale` again to retry)"
        if not quiet:
            print(f"[rogueray] {done}")


def _finishing_message(runner) -> str:
    """What the end of a run waits for, so that the time after 100 % is not silent."""
    steps = []
    if runner.updates_in_flight:
        n = runner.updates_in_flight
        steps.append(f"waiting for {n} learner update{'s' if n != 1 else ''} in flight")
    if getattr(runner, "annotator", None) is not None:
        steps.append("collecting the last labels")
    steps.append("writing the final checkpoint")
    return "[rogueray] finishing: " + ", ".join(steps)


def _notify(line: str, quiet: bool) -> None:
    """A line the user must see (annotator trouble, a restarted worker), unless quiet."""
    if not quiet:
        _say(f"[rogueray] {line}")


def _log_caption_table(logger: m.MetricsLogger, runner, step: int) -> None:
    """What the LLM rewards: the most frequent captions, their label and current r_int."""
    rows = runner.caption_table(CAPTION_TABLE_ROWS)
    if not rows:
        return
    lines = ["| caption | seen | LLM label | r_int now |", "|---|---:|---:|---:|"]
    for caption, seen, label, reward in rows:
        shown = (caption or "(no message)").replace("|", "\\|")
        label_text = "pending" if label is None else f"{label:.2f}"
        lines.append(f"| {shown} | {seen} | {label_text} | {reward:.3f} |")
    logger.text("annotator/top_captions", "\n".join(lines), step)


def _loop(
    config: RunConfig,
    runner,
    counters: dict,
    watcher: ScaleWatcher,
    resumed: bool,
    quiet: bool,
) -> TrainResult:
    run_dir = Path(config.run_dir)
    start_step = counters["env_steps"]
    logger = m.MetricsLogger(
        str(run_dir / "tensorboard"),
        config.total_env_steps,
        config.log_interval_s,
        dump_yaml(config),
        start_step,
        quiet,
    )
    window = m.EpisodeWindow(m.WINDOW_SIZE)
    window.load_state_dict(counters.get("recent_episodes"))  # saved among the counters
    counters["recent_episodes"] = window.state_dict()  # live: every checkpoint carries it
    logger.message(
        f"[rogueray] training; a status line every {config.log_interval_s:g} s"
        + (f", the episode window continues ({len(window)} episodes)" if len(window) else "")
    )
    fragments_per_batch = config.learner.batch_size // config.samples_per_fragment
    pending: list = []
    last_checkpoint = last_labels = last_table = time.monotonic()

    saver = _Checkpointer(config, say=_say if quiet else logger.message)

    def checkpoint(final: bool = False) -> None:
        # Updates in flight are in the learner state saved: count them first.
        while updates := runner.finished_updates(wait=True):
            absorb(updates)
        saver.save(saver.state(counters, runner), counters["env_steps"], final)

    def absorb(updates: list[dict[str, float]]) -> None:
        for update in updates:
            counters["updates"] += 1
            logger.scalars(update, counters["env_steps"])
            if counters["updates"] % config.rollout.weights_sync_interval == 0:
                runner.sync_weights()

    annotator_stats: dict[str, float] | None = None
    restarts_said = 0
    runner.sync_weights()
    with _StopFlag() as flag:
        while counters["env_steps"] < config.total_env_steps and not flag.stop:
            _apply_scale_request(watcher, runner, quiet)
            fragments, episodes, steps = runner.collect()
            pending.extend(fragments)
            counters["env_steps"] += steps
            counters["episodes"] += len(episodes)
            window.extend(episodes)
            step = counters["env_steps"]
            logger.episodes(episodes, step)
            while len(pending) >= fragments_per_batch:
                if not runner.can_train():
                    absorb(runner.finished_updates(wait=True))
                runner.train(pending[:fragments_per_batch])
                pending = pending[fragments_per_batch:]
            absorb(runner.finished_updates())
            rate = logger.maybe_print(step, window, counters["episodes"])
            if rate is not None:
                logger.scalars(
                    {
                        **logger.window_scalars(window),
                        m.ENV_STEPS_PER_S: rate,
                        m.WORKERS_ALIVE: runner.workers_alive,
                        m.WORKERS_WAITING: runner.workers_waiting,
                        m.WORKER_RESTARTS: runner.restarts,
                    },
                    step,
                )
            now = time.monotonic()
            if now - last_labels >= LABEL_EXCHANGE_INTERVAL_S:
                for values in runner.exchange_labels():
                    logger.scalars(values, step)
                    annotator_stats = values
                for line in runner.poll_notices():
                    _notify(line, quiet)
                last_labels = now
            if runner.restarts > restarts_said:
                _notify(f"rollout worker restarted ({runner.restarts} so far); training goes on", quiet)
                restarts_said = runner.restarts
            if now - last_table >= CAPTION_TABLE_INTERVAL_S:
                _log_caption_table(logger, runner, step)
                last_table = now
            if time.monotonic() - last_checkpoint >= config.checkpoint_interval_s:
                checkpoint()
                last_checkpoint = last_labels = last_table = time.monotonic()
        logger.message(_finishing_message(runner))
        while updates := runner.finished_updates(wait=True):
            absorb(updates)
        for values in runner.exchange_labels():
            logger.scalars(values, counters["env_steps"])
            annotator_stats = values
        for line in runner.poll_notices():
            _notify(line, quiet)
        _log_caption_table(logger, runner, counters["env_steps"])
        checkpoint(final=True)
    logger.maybe_print(counters["env_steps"], window, counters["episodes"], force=True)
    logger.final_window(window, counters["env_steps"])
    logger.close()
    if not quiet:
        print("[rogueray] final checkpoint written; shutting down", flush=True)
    verdict = labels_verdict(config, annotator_stats)
    if verdict is not None:
        _notify(verdict, quiet=False)
    return TrainResult(
        env_steps=counters["env_steps"],
        updates=counters["updates"],
        episodes=counters["episodes"],
        mean_return=window.mean_return(),
        return_window=len(window),
        resumed_from=start_step if resumed else None,
        run_dir=str(run_dir),
    )
