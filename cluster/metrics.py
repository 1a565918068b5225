"""What users watch: TensorBoard scalars under the names of docs/architecture.md, the resolved
config as text, and a console line every few seconds (a progress bar on a terminal)."""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Iterable

import numpy as np

from actors.fragment import EpisodeStats

EPISODE_RETURN = "episode/return_extrinsic"
EPISODE_LENGTH = "episode/length"
EPISODE_SUCCESS = "episode/success_rate"
EPISODE_MAX_DEPTH = "episode/max_depth"
ENV_STEPS_PER_S = "perf/env_steps_per_s"
WORKERS_ALIVE = "system/workers_alive"
WORKERS_WAITING = "system/workers_waiting"  # added by `rogueray scale`, waiting for CPUs
WORKER_RESTARTS = "system/worker_restarts"


class EpisodeWindow:
    """The last `size` finished episodes, for running means."""

    def __init__(self, size: int = 100):
        self.episodes: deque[EpisodeStats] = deque(maxlen=size)
        self.total = 0

    def extend(self, episodes: Iterable[EpisodeStats]) -> None:
        for episode in episodes:
            self.episodes.append(episode)
            self.total += 1

    def mean_return(self, last: int | None = None) -> float | None:
        items = list(self.episodes)[-last:] if last else list(self.episodes)
        return float(np.mean([e.return_extrinsic for e in items])) if items else None

    def scalars(self) -> dict[str, float]:
        if not self.episodes:
            return {}
        items = list(self.episodes)
        out = {
            EPISODE_RETURN: float(np.mean([e.return_extrinsic for e in items])),
            EPISODE_LENGTH: float(np.mean([e.length for e in items])),
        }
        successes = [e.success for e in items if e.success is not None]
        if successes:
            out[EPISODE_SUCCESS] = float(np.mean(successes))
        depths = [e.max_depth for e in items if e.max_depth is not None]
        if depths:
            out[EPISODE_MAX_DEPTH] = float(np.mean(depths))
        return out


class MetricsLogger:
    """TensorBoard writer plus the console line. `start_step` continues curves on resume."""

    def __init__(
        self,
        log_dir: str,
        total_env_steps: int,
        interval_s: float,
        config_text: str,
        start_step: int = 0,
        quiet: bool = False,
    ):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir, purge_step=start_step or None)
        self.writer.add_text("config", "```\n" + config_text + "\n```", global_step=start_step)
        self.total = total_env_steps
        self.interval_s = interval_s
        self.quiet = quiet
        self._last_print = time.monotonic()
        self._last_steps = start_step
        self._tty = sys.stdout.isatty()

    def scalars(self, values: dict[str, float], step: int) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, global_step=step)

    def text(self, name: str, body: str, step: int) -> None:
        self.writer.add_text(name, body, global_step=step)

    def maybe_print(self, step: int, window: EpisodeWindow, force: bool = False) -> float | None:
        """Print the console line when `interval_s` has passed; returns env steps/s if printed."""
        now = time.monotonic()
        elapsed = now - self._last_print
        if (not force and elapsed < self.interval_s) or step == self._last_steps:
            return None
        rate = (step - self._last_steps) / max(elapsed, 1e-9)
        self._last_print, self._last_steps = now, step
        mean = window.mean_return()
        ret = "n/a" if mean is None else f"{mean:.2f}"
        line = (
            f"[rogueray] steps {step:>10,d}/{self.total:,d} | {rate:8.0f} steps/s | "
            f"episodes {window.total:,d} | return (last {len(window.episodes)}) {ret}"
        )
        if not self.quiet:
            if self._tty:
                done = min(1.0, step / max(self.total, 1))
                bar = "#" * int(30 * done) + "-" * (30 - int(30 * done))
                line = f"{line} [{bar}] {100 * done:5.1f}%"
            print(line, flush=True)
        return rate

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
