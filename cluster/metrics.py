"""What users watch in TensorBoard: scalars under the names of docs/architecture.md, the resolved
config as text and as HParams, and a custom-scalars layout of the ONI health view. The console
line is `cluster/console.py`.

Per-episode values and running means never share a tag: `episode/*` holds one point per finished
episode (at the env step when the driver received it), `episode_window/*` the mean over the last
`EpisodeWindow.size` episodes, one point per console interval."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

import numpy as np
import yaml

from actors.messages import EpisodeStats
from annotator.metrics import (  # the annotator names its stats (Annotator.stats)
    INVALID_RATE,
    LABELS_TOTAL,
    PENDING,
    POSITIVE_FRACTION,
)
from cluster.console import Console
from learner.metrics import RETURN_INTRINSIC
from reward_models.base import ACCURACY as RM_ACCURACY  # reward models name their stats

# One point per finished episode.
EPISODE_RETURN = "episode/return_extrinsic"
EPISODE_LENGTH = "episode/length"
EPISODE_MAX_DEPTH = "episode/max_depth"
EPISODE_RETURN_INTRINSIC = RETURN_INTRINSIC  # the learner's: mean per update
# Means over the last `window` episodes.
WINDOW_RETURN = "episode_window/return_extrinsic"
WINDOW_LENGTH = "episode_window/length"
WINDOW_SUCCESS = "episode_window/success_rate"
WINDOW_MAX_DEPTH = "episode_window/max_depth"
WINDOW_EPISODES = "episode_window/episodes"  # how many episodes the means are over
WINDOW_RETURN_INTRINSIC = "episode_window/return_intrinsic"  # mean of the last 100 update means

ENV_STEPS_PER_S = "perf/env_steps_per_s"
WORKERS_ALIVE = "system/workers_alive"
WORKERS_WAITING = "system/workers_waiting"  # added by `rogueray scale`, waiting for CPUs
WORKER_RESTARTS = "system/worker_restarts"

WINDOW_SIZE = 100

# TensorBoard's Custom Scalars tab: the ONI health view on one page.
CUSTOM_SCALARS_LAYOUT = {
    "ONI health": {
        "return: extrinsic (window mean) vs intrinsic": [
            "Multiline",
            [WINDOW_RETURN, WINDOW_RETURN_INTRINSIC],
        ],
        "labels (total, pending)": ["Multiline", [LABELS_TOTAL, PENDING]],
        "invalid answer rate": ["Multiline", [INVALID_RATE]],
        "positive fraction of labels": ["Multiline", [POSITIVE_FRACTION]],
        "reward-model accuracy": ["Multiline", [RM_ACCURACY]],
    },
    "episodes": {
        "success rate and depth (window means)": [
            "Multiline",
            [WINDOW_SUCCESS, WINDOW_MAX_DEPTH],
        ],
        "episode length (window mean)": ["Multiline", [WINDOW_LENGTH]],
    },
}
# Shown beside the config in the HParams tab.
HPARAM_METRICS = (WINDOW_RETURN, WINDOW_SUCCESS, WINDOW_RETURN_INTRINSIC, LABELS_TOTAL)


class EpisodeWindow:
    """The last `size` finished episodes, for running means.

    Its state is kept as plain data (lists of numbers, None and booleans) in one live dict,
    `state_dict()`: the driver keeps that dict among the run's counters, so every checkpoint
    carries the window (loadable with weights_only=True) and a resumed run continues it.
    """

    def __init__(self, size: int = WINDOW_SIZE):
        self.size = size
        self.episodes: deque[EpisodeStats] = deque(maxlen=size)
        self._state: dict[str, Any] = {"size": size, "total": 0, "episodes": []}

    @property
    def total(self) -> int:
        """Episodes this window has seen, those before a resume included."""
        return self._state["total"]

    def extend(self, episodes: Iterable[EpisodeStats]) -> None:
        rows = self._state["episodes"]
        for e in episodes:
            self.episodes.append(e)
            rows.append(
                [
                    float(e.return_extrinsic),
                    int(e.length),
                    None if e.success is None else bool(e.success),
                    None if e.max_depth is None else int(e.max_depth),
                    bool(e.truncated),
                ]
            )
            self._state["total"] += 1
        del rows[: max(0, len(rows) - self.size)]

    def __len__(self) -> int:
        return len(self.episodes)

    def mean_return(self) -> float | None:
        items = self.episodes
        return float(np.mean([e.return_extrinsic for e in items])) if items else None

    def success_rate(self) -> float | None:
        successes = [e.success for e in self.episodes if e.success is not None]
        return float(np.mean(successes)) if successes else None

    def mean_max_depth(self) -> float | None:
        depths = [e.max_depth for e in self.episodes if e.max_depth is not None]
        return float(np.mean(depths)) if depths else None

    def scalars(self) -> dict[str, float]:
        if not self.episodes:
            return {}
        out = {
            WINDOW_RETURN: self.mean_return(),
            WINDOW_LENGTH: float(np.mean([e.length for e in self.episodes])),
            WINDOW_EPISODES: float(len(self.episodes)),
        }
        if (success := self.success_rate()) is not None:
            out[WINDOW_SUCCESS] = success
        if (depth := self.mean_max_depth()) is not None:
            out[WINDOW_MAX_DEPTH] = depth
        return out

    def state_dict(self) -> dict[str, Any]:
        """The live state (not a copy): it changes as episodes arrive."""
        return self._state

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Continue a saved window (None or {} leaves this one as it is)."""
        if not state:
            return
        self.episodes.clear()
        self._state = {"size": self.size, "total": int(state["total"]), "episodes": []}
        saved = [
            EpisodeStats(float(r), int(n), s, d, bool(t)) for r, n, s, d, t in state["episodes"]
        ]
        total = self._state["total"]
        self.extend(saved[-self.size :])
        self._state["total"] = total


def episode_scalars(episode: EpisodeStats) -> dict[str, float]:
    """The per-episode points of one finished episode."""
    out = {EPISODE_RETURN: float(episode.return_extrinsic), EPISODE_LENGTH: float(episode.length)}
    if episode.max_depth is not None:
        out[EPISODE_MAX_DEPTH] = float(episode.max_depth)
    return out


def flat_hparams(config: dict[str, Any], prefix: str = "") -> dict[str, float | int | str | bool]:
    """A nested config as TensorBoard HParams: dotted keys, scalars kept, the rest as text."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_hparams(value, name + "."))
        elif isinstance(value, bool | int | float | str):
            out[name] = value
        else:  # None, lists
            out[name] = str(value)
    return out


class MetricsLogger:
    """TensorBoard writer plus the console. `start_step` continues curves on resume.

    It remembers the latest annotator stats and learner intrinsic returns that pass through
    `scalars`, so the console shows them without the driver handing them over twice.
    """

    def __init__(
        self,
        log_dir: str,
        total_env_steps: int,
        interval_s: float,
        config_text: str,
        start_step: int = 0,
        quiet: bool = False,
        console: Console | None = None,
    ):
        from torch.utils.tensorboard import SummaryWriter

        from cluster.safe_output import GuardedWriter

        # A resume from step S drops what an earlier session wrote after S (it ran on past its
        # last checkpoint), keeping its points at S: the final ones of a run that ended there.
        purge = start_step + 1 if start_step else None
        self.writer = GuardedWriter(  # a full disk pauses TensorBoard, never training
            lambda: SummaryWriter(log_dir, purge_step=purge), self.message
        )
        self.writer.add_text("config", "```\n" + config_text + "\n```", global_step=start_step)
        self._write_layout_and_hparams(config_text)
        self.total = total_env_steps
        self.console = console or Console(total_env_steps, start_step, interval_s, quiet=quiet)
        self.latest: dict[str, Any] = {}
        self.intrinsic_returns: deque[float] = deque(maxlen=WINDOW_SIZE)
        self._window_step: int | None = None  # step of the last episode_window/* point

    def _write_layout_and_hparams(self, config_text: str) -> None:
        from torch.utils.tensorboard.summary import hparams

        self.writer.add_custom_scalars(CUSTOM_SCALARS_LAYOUT)
        config = yaml.safe_load(config_text) or {}
        rm = config.get("reward_model") if isinstance(config, dict) else None
        self.has_reward_model = not isinstance(rm, dict) or rm.get("name", "none") != "none"
        if isinstance(config, dict):
            experiment, start, end = hparams(
                flat_hparams(config), {name: 0.0 for name in HPARAM_METRICS}
            )
            for summary in (experiment, start, end):
                self.writer.file_writer.add_summary(summary)

    def scalars(self, values: dict[str, Any], step: int) -> None:
        if WINDOW_RETURN in values:
            self._window_step = step
        for name, value in values.items():
            self.latest[name] = value
            if name == EPISODE_RETURN_INTRINSIC:
                self.intrinsic_returns.append(float(value))
            # a non-numeric value (a textual annotator state) is for the console only
            if isinstance(value, bool | int | float | np.number):
                self.writer.add_scalar(name, value, global_step=step)

    def window_scalars(self, window: EpisodeWindow) -> dict[str, float]:
        """The `episode_window/*` means, the learner's intrinsic return included (the mean of its
        last per-update means)."""
        out = window.scalars()
        if self.intrinsic_returns and self.has_reward_model:
            out[WINDOW_RETURN_INTRINSIC] = float(np.mean(self.intrinsic_returns))
        return out

    def final_window(self, window: EpisodeWindow, step: int) -> None:
        """The window's means at the run's last step (unless logged there already), so that the
        last `episode_window/*` point is the window the final console line shows."""
        if self._window_step != step:
            self.scalars(self.window_scalars(window), step)

    def episodes(self, episodes: Iterable[EpisodeStats], step: int) -> None:
        """One point per finished episode under `episode/*`."""
        for episode in episodes:
            for name, value in episode_scalars(episode).items():
                self.writer.add_scalar(name, value, global_step=step)

    def text(self, name: str, body: str, step: int) -> None:
        self.writer.add_text(name, body, global_step=step)

    def maybe_print(
        self, step: int, window: EpisodeWindow, episodes: int | None = None, force: bool = False
    ) -> float | None:
        """Console line when `interval_s` has passed; returns env steps/s if it was time.
        `episodes`: the run's episode count (the window only knows those it has seen)."""
        shown = self.intrinsic_returns and self.has_reward_model
        intrinsic = float(np.mean(self.intrinsic_returns)) if shown else None
        annotator = {k: v for k, v in self.latest.items() if k.startswith("annotator/")}
        return self.console.update(
            step,
            window,
            episodes=window.total if episodes is None else episodes,
            intrinsic=intrinsic,
            annotator=annotator or None,
            force=force,
        )

    def message(self, text: str) -> None:
        self.console.message(text)

    def close(self) -> None:
        self.console.close()
        self.writer.flush()
        self.writer.close()
