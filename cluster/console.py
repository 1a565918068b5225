"""The console: a start-up banner, then one status line every few seconds (a tqdm progress bar on a
terminal, plain lines when stdout is a file or a pipe), and messages that do not break the bar."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from annotator.metrics import ANSWERING, BACKEND_STATE, NOT_ANSWERING, STARTING, WAITING

if TYPE_CHECKING:
    from cluster.config import RunConfig
    from cluster.metrics import EpisodeWindow

PREFIX = "[rogueray]"


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """'1 caption', '2 captions', '1,024 steps'."""
    return f"{count:,d} {noun if count == 1 else plural or noun + 's'}"


def format_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def startup_banner(config: RunConfig, resume_step: int | None) -> list[str]:
    """What is about to start, printed before Ray so the first minute is not silent."""
    from cluster.annotation import wants_annotator

    env, rollout = config.env, config.rollout
    start = f"resuming from step {resume_step:,d}" if resume_step is not None else "new run"
    workers = f"{rollout.num_workers} rollout worker{'s' if rollout.num_workers != 1 else ''}"
    lines = [
        f"{PREFIX} run dir {config.run_dir} ({start}) | {env.id} | {config.total_env_steps:,d} env steps",
        f"{PREFIX} {workers} x {env.num_envs_per_worker} envs, "
        f"unroll {rollout.unroll_length}, batch {config.learner.batch_size}, "
        f"learner on {config.learner.device}, mode {config.mode}",
        f"{PREFIX} policy inference {_inference(config)}, precision {config.model.precision}",
    ]
    if wants_annotator(config):
        ann = config.annotator
        head = (
            f"{PREFIX} reward model {config.reward_model.name}, intrinsic coef "
            f"{config.reward.intrinsic_coef:g}; annotator backend {ann.backend}"
        )
        if ann.backend == "openai":
            tail = f" at {ann.base_url}: labels once it answers; training does not wait for it"
        elif ann.backend == "rules":
            tail = " (regex rules, no LLM)"
        else:
            first = " (this first run also fetches and converts it, about a minute)"
            tail = (
                f" (in process), model {ann.model}: loads in the background"
                f"{first if _embedded_to_convert(ann.model) else ''}; training does not wait for it"
            )
        lines.append(head + tail)
    elif config.reward_model.name == "none" or config.reward.intrinsic_coef == 0:
        lines.append(f"{PREFIX} reward model {config.reward_model.name} (extrinsic reward only)")
    else:  # a frozen reward (ellm, motif): intrinsic reward with no LLM asked during the run
        lines.append(
            f"{PREFIX} reward model {config.reward_model.name}, intrinsic coef "
            f"{config.reward.intrinsic_coef:g} (frozen: no annotator, no LLM during the run)"
        )
    if config.mode == "ray":
        from cluster.ray_job import joined_address

        address = joined_address(config.ray_address)
        where = "a local Ray" if address is None else f"Ray at {address}"
        parts = (
            "the workers, the learner and the annotator"
            if wants_annotator(config)
            else "the workers and the learner"
        )
        lines.append(f"{PREFIX} starting {where}, then {parts}")
    lines.append(f"{PREFIX} TensorBoard: tensorboard --logdir {config.run_dir}")
    return lines


def _embedded_to_convert(model: str) -> bool:
    """Whether `model` is the embedded LLM and the run will convert it: the same completeness
    test `model_store.ensure_default_model` makes before converting."""
    from annotator import model_store

    return model == model_store.DEFAULT_MODEL_NAME and not model_store.default_model_converted()


def _inference(config: RunConfig) -> str:
    """rollout.inference as it resolves for this run, for the banner."""
    from cluster.placement import nethack_encoder, shared_inference

    if shared_inference(config):
        device = config.rollout.inference_device
        where = f"in one shared actor per node on {device} (batched over that node's workers)"
        if not nethack_encoder(config):  # asked for: CartPole ran 8.3x faster in the workers
            where += "; the MLP encoder runs faster in each worker (rollout.inference=auto)"
        return where
    return "in each worker"


class Console:
    """Status lines every `interval_s`; `update` returns the env steps/s since the last line
    when it printed one (the driver logs that rate), else None. `clock` (seconds) times the
    rates, the elapsed time and the ETA."""

    def __init__(
        self,
        total: int,
        start_step: int,
        interval_s: float,
        quiet: bool = False,
        stream: TextIO | None = None,
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.total = total
        self.start_step = start_step
        self.interval_s = interval_s
        self.quiet = quiet
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.clock = clock
        self._started = self._last_print = clock()
        self._last_steps = start_step
        self._first: tuple[float, int] | None = None  # (time, step) of the first steps counted
        self._bar = None
        self.last_line = ""

    # -- status ---------------------------------------------------------------------------
    def update(
        self,
        step: int,
        window: EpisodeWindow,
        *,
        episodes: int,
        intrinsic: float | None = None,
        annotator: dict[str, Any] | None = None,
        force: bool = False,
    ) -> float | None:
        now = self.clock()
        if self._first is None and step > self.start_step:
            self._first = now, step  # the ETA's rate starts here, after the start-up
        since = now - self._last_print
        if step == self._last_steps and (not force or self.last_line):
            return None  # nothing new (a forced final line repeats no line)
        if not force and since < self.interval_s:
            return None
        rate = (step - self._last_steps) / max(since, 1e-9)
        self._last_print, self._last_steps = now, step
        fields = self.fields(
            step,
            rate,
            now - self._started,
            window,
            episodes,
            intrinsic,
            annotator,
            self._eta(step, now),
        )
        if force:  # the final line: a rate since the last line would time the finish; the mean
            elapsed = max(now - self._started, 1e-9)  # and no ETA (a stopped run has none)
            fields[1] = f"{(step - self.start_step) / elapsed:,.0f} steps/s overall"
            fields[2] = f"elapsed {format_duration(elapsed)}"
        self.last_line = f"{PREFIX} " + " | ".join(fields)
        if not self.quiet:
            if self.tty:
                self._show_bar(step, fields)
            else:
                print(self.last_line, file=self.stream, flush=True)
        return rate

    def fields(
        self,
        step: int,
        rate: float,
        elapsed: float,
        window: EpisodeWindow,
        episodes: int,
        intrinsic: float | None,
        annotator: dict[str, Any] | None,
        eta: float | None = None,
    ) -> list[str]:
        fields = [
            f"steps {step:,d}/{self.total:,d} ({100 * min(step / max(self.total, 1), 1):.0f}%)",
            f"{rate:,.0f} steps/s",
            f"elapsed {format_duration(elapsed)}, ETA {format_duration(eta)}",
        ]
        mean = window.mean_return()
        if mean is None:
            fields.append(f"episodes {episodes:,d} | return n/a (no episode finished yet)")
        else:
            fields.append(f"episodes {episodes:,d} | return (last {len(window)}) {mean:.2f}")
        if (success := window.success_rate()) is not None:
            fields.append(f"success {100 * success:.1f}%")
        if (depth := window.mean_max_depth()) is not None:
            fields.append(f"depth {depth:.2f}")
        if annotator or intrinsic is not None:  # what the intrinsic reward is doing
            fields.append("r_int n/a" if intrinsic is None else f"r_int {intrinsic:.3f}")
        if annotator:
            fields.append(annotator_field(annotator))
        return fields

    def _eta(self, step: int, now: float) -> float | None:
        """Seconds to `total` at the rate since the first steps were counted, or None before
        any came after them: the start-up before the first fragment (Ray, the processes, the
        first sample) would stretch an ETA taken from the console's start, and a first line
        after a 16 s start-up read "ETA 1:43:20" for a run that took 30 s."""
        if self._first is None or step <= self._first[1] or now <= self._first[0]:
            return None
        return max(self.total - step, 0) * (now - self._first[0]) / (step - self._first[1])

    def _show_bar(self, step: int, fields: list[str]) -> None:
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(
                total=self.total,
                initial=0,
                file=self.stream,
                dynamic_ncols=True,
                bar_format=PREFIX + " {percentage:3.0f}%|{bar:20}| {desc}",
            )
        self._bar.n = min(step, self.total)  # beyond total tqdm would show 0 %
        self._bar.set_description_str(" | ".join(fields), refresh=True)

    # -- messages -------------------------------------------------------------------------
    def message(self, text: str) -> None:
        """A line of its own (above the bar on a terminal); nothing when quiet."""
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


_LLM_STATES = {
    STARTING: "LLM loading",
    WAITING: "LLM server not answered yet",
    ANSWERING: "LLM up",
    NOT_ANSWERING: "LLM not answering",
}


def annotator_field(stats: dict[str, Any]) -> str:
    """labels so far, pending, and what the annotator is doing, from its stats dict."""
    parts = []
    if "annotator/pending" in stats:
        parts.append(f"pending {stats['annotator/pending']:,.0f}")
    state = stats.get(BACKEND_STATE)
    if state is not None:
        parts.append(_LLM_STATES.get(state, "LLM ?"))
    elif "annotator/backend_up" in stats:
        parts.append("LLM up" if stats["annotator/backend_up"] else "LLM down")
    if stats.get("annotator/invalid_answer_rate"):
        parts.append(f"invalid {100 * stats['annotator/invalid_answer_rate']:.1f}%")
    labels = stats.get("annotator/labels_total")
    head = "labels n/a" if labels is None else f"labels {labels:,.0f}"
    return f"{head} ({', '.join(parts)})" if parts else head


def done_line(result) -> str:
    """The last line of `rogueray train`: what the run did, from its TrainResult."""
    ret = "n/a" if result.mean_return is None else f"{result.mean_return:.2f}"
    labels = ""
    if result.labels is not None:
        labels = f", {counted(result.labels, 'label')}"
        if result.labels_in_reward_model is not None:
            labels += f" ({result.labels_in_reward_model:,d} in the reward model's dataset)"
        if result.captions_pending:
            labels += f", {counted(result.captions_pending, 'caption')} to label on a resume"
    return (
        f"[rogueray] done: {result.env_steps:,d} env steps, {result.updates:,d} updates, "
        f"{result.episodes:,d} episodes{labels}, mean return (last {result.return_window}) "
        f"{ret}; run dir {result.run_dir}"
    )
