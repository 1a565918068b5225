"""The training loop (control plane): gathers fragments into batches, hands them to the learner,
syncs weights, logs, checkpoints, and stops cleanly on SIGINT/SIGTERM. Identical for serial and
Ray mode; the runner decides where the work happens."""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from cluster import metrics as m
from cluster.checkpoint import load_latest, restore_rng_states, rng_states, save_checkpoint
from cluster.components import env_spec
from cluster.config import ConfigError, RunConfig, dump_yaml
from cluster.scaling import DriverPid, ScaleError, ScaleWatcher, requested_workers

LABEL_EXCHANGE_INTERVAL_S = 1.0
CAPTION_TABLE_INTERVAL_S = 60.0
CAPTION_TABLE_ROWS = 20


@dataclass(frozen=True)
class TrainResult:
    env_steps: int
    updates: int
    episodes: int
    mean_return_last_20: float | None
    resumed_from: int | None
    run_dir: str


class _StopFlag:
    """Turns SIGINT/SIGTERM into a clean stop with a final checkpoint."""

    def __init__(self) -> None:
        self.stop = False
        self._previous = {}

    def __enter__(self) -> _StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.stop:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        print(
            f"\n[rogueray] {signal.Signals(signum).name}: stopping after this step and saving a checkpoint"
        )
        self.stop = True

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def train(config: RunConfig, *, quiet: bool = False) -> TrainResult:
    """Run (or resume) training as the config says; returns when total_env_steps are done."""
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    watcher = ScaleWatcher(run_dir)  # before reading: a request made during start-up counts
    config = _with_scale_request(config, quiet)
    (run_dir / "config.yaml").write_text(dump_yaml(config))
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    checkpoint = load_latest(run_dir)
    counters = {"env_steps": 0, "updates": 0, "episodes": 0}
    if checkpoint is not None:
        counters.update(checkpoint["counters"])
        restore_rng_states(checkpoint["rng"])
        if not quiet:
            print(f"[rogueray] resuming {run_dir} from step {counters['env_steps']:,d}")
    spec = env_spec(config)  # before Ray: a bad env fails fast with a ConfigError
    started_ray = False
    if config.mode == "ray":
        from cluster.ray_runner import RayRunner, start_ray

        started_ray = start_ray(config, quiet=True)
        try:
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
        runner.start(checkpoint.get("annotator_backlog", []) if checkpoint else [])
        with DriverPid(run_dir):
            resumed = checkpoint is not None
            return _loop(config, runner, counters, watcher, resumed=resumed, quiet=quiet)
    finally:
        runner.close()
        if started_ray:
            import ray

            ray.shutdown()


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
        if not quiet:
            print(f"[rogueray] {done}")


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
    window = m.EpisodeWindow(100)
    fragments_per_batch = config.learner.batch_size // config.samples_per_fragment
    pending: list = []
    last_checkpoint = last_labels = last_table = time.monotonic()

    def checkpoint() -> None:
        state = {
            "counters": dict(counters),
            "rng": rng_states(),
            "learner": runner.learner_state(),
            "annotator_backlog": runner.annotator_backlog(),
        }
        save_checkpoint(run_dir, state, counters["env_steps"], config.keep_checkpoints)

    def absorb(updates: list[dict[str, float]]) -> None:
        for update in updates:
            counters["updates"] += 1
            logger.scalars(update, counters["env_steps"])
            if counters["updates"] % config.rollout.weights_sync_interval == 0:
                runner.sync_weights()

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
            for episode in episodes:
                logger.scalars(
                    {m.EPISODE_RETURN: episode.return_extrinsic, m.EPISODE_LENGTH: episode.length},
                    step,
                )
            while len(pending) >= fragments_per_batch:
                if not runner.can_train():
                    absorb(runner.finished_updates(wait=True))
                runner.train(pending[:fragments_per_batch])
                pending = pending[fragments_per_batch:]
            absorb(runner.finished_updates())
            rate = logger.maybe_print(step, window)
            if rate is not None:
                logger.scalars(
                    {
                        **window.scalars(),
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
                last_labels = now
            if now - last_table >= CAPTION_TABLE_INTERVAL_S:
                _log_caption_table(logger, runner, step)
                last_table = now
            if time.monotonic() - last_checkpoint >= config.checkpoint_interval_s:
                checkpoint()
                last_checkpoint = last_labels = last_table = time.monotonic()
        while updates := runner.finished_updates(wait=True):
            absorb(updates)
        for values in runner.exchange_labels():
            logger.scalars(values, counters["env_steps"])
        _log_caption_table(logger, runner, counters["env_steps"])
        checkpoint()
    logger.maybe_print(counters["env_steps"], window, force=True)
    logger.close()
    return TrainResult(
        env_steps=counters["env_steps"],
        updates=counters["updates"],
        episodes=counters["episodes"],
        mean_return_last_20=window.mean_return(last=20),
        resumed_from=start_step if resumed else None,
        run_dir=str(run_dir),
    )
