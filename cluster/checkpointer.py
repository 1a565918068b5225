"""Checkpoints as the driver takes them: what goes in one, writing with retries (a failed write
is said and retried at the next interval), the last-chance save when the loop fails, and the
checkpoint a run resumes from, checked against the new config before anything is written."""

from __future__ import annotations

import errno
from pathlib import Path

from cluster import checkpoint as ckpt
from cluster.checkpoint import rng_states
from cluster.config import ConfigError, RunConfig, to_dict
from cluster.console import counted
from cluster.runner import Runner
from cluster.stopping import say

MAX_FAILED_CHECKPOINTS = 10
"""A run whose checkpoints fail this many times in a row (one try per checkpoint_interval_s)
stops with exit 2 rather than train on with nothing saved."""


class Checkpointer:
    """Writes checkpoints; a failed write is reported in one line and retried at the next
    interval, and only MAX_FAILED_CHECKPOINTS failures in a row (or a failed final checkpoint)
    end the run, with CheckpointWriteError saying how to get going again."""

    def __init__(self, config: RunConfig, say=say):
        self.config, self.say = config, say
        self.failures = 0

    def state(self, counters: dict, runner: Runner) -> dict:
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
                which = (
                    "the final checkpoint"
                    if final
                    else f"{counted(self.failures, 'checkpoint')} in a row"
                )
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


def last_chance_checkpoint(
    config: RunConfig, counters: dict, runner: Runner, exc: Exception
) -> None:
    """The loop failed (a logging error, a bug): save what the learner has before the error
    propagates, so that the work since the last checkpoint is not lost with it."""
    saver = Checkpointer(config)
    try:
        saver.save(saver.state(counters, runner), counters["env_steps"], final=True)
        say(f"[rogueray] the run failed ({type(exc).__name__}); saved a checkpoint first")
    except Exception as again:  # noqa: BLE001 - the original error is the one to report
        say(f"[rogueray] the run failed and no checkpoint could be saved ({again})")


def resume_point(config: RunConfig, *, fresh: bool, quiet: bool) -> dict | None:
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
            say(
                f"[rogueray] --fresh: starting from step 0; the {counted(len(existing), 'checkpoint')} in "
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
        say(f"[rogueray] changed since the last run: {ckpt.describe(changes)}")
    for (path, why), moved in zip(
        found.unreadable, ckpt.set_aside([p for p, _ in found.unreadable]), strict=True
    ):
        say(
            f"[rogueray] warning: checkpoint {path} is unreadable ({why}); kept as "
            f"{moved.name}, resuming from {found.path.name}"
        )
    return found.state
