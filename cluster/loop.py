"""The training loop's steps, one method each: collect fragments, train on full batches, exchange
labels, log, checkpoint, finish. The same for serial and Ray mode: it talks to a `Runner` only."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from cluster import metrics as m
from cluster.checkpointer import Checkpointer
from cluster.config import RunConfig, dump_yaml
from cluster.console import counted
from cluster.periodic_eval import PeriodicEvaluator
from cluster.reward_watch import RewardWatch, dataset_size
from cluster.runner import Runner
from cluster.stopping import StopFlag, say
from learner import metrics as lm

LABEL_EXCHANGE_INTERVAL_S = 1.0
CAPTION_TABLE_INTERVAL_S = 60.0
CAPTION_TABLE_ROWS = 20


def notify(line: str, quiet: bool) -> None:
    """A line the user must see (annotator trouble, a restarted worker), unless quiet."""
    if not quiet:
        say(f"[rogueray] {line}")


def caption_table_text(rows) -> str | None:
    """What the LLM rewards, as a markdown table: caption, sightings, label, current r_int."""
    if not rows:
        return None
    lines = ["| caption | seen | LLM label | r_int now |", "|---|---:|---:|---:|"]
    for caption, seen, label, reward in rows:
        shown = (caption or "(no message)").replace("|", "\\|")
        label_text = "pending" if label is None else f"{label:.2f}"
        lines.append(f"| {shown} | {seen} | {label_text} | {reward:.3f} |")
    return "\n".join(lines)


def finishing_message(runner: Runner) -> str:
    """What the end of a run waits for, so that the time after 100 % is not silent."""
    steps = []
    if runner.updates_in_flight:
        n = runner.updates_in_flight
        steps.append(f"waiting for {n} learner update{'s' if n != 1 else ''} in flight")
    if runner.has_annotator:
        steps.append("collecting the last labels")
    steps.append("writing the final checkpoint")
    return "[rogueray] finishing: " + ", ".join(steps)


class TrainingLoop:
    """Runs `config.total_env_steps` (from `counters["env_steps"]` on) through `runner`.

    `counters` (env_steps, updates, episodes, the episode window) is updated in place, so that the
    driver's last-chance checkpoint sees what the loop reached. `rescale` is called once per
    iteration (the `rogueray scale` request)."""

    def __init__(
        self,
        config: RunConfig,
        runner: Runner,
        counters: dict,
        rescale: Callable[[], None],
        quiet: bool,
    ):
        self.config, self.runner, self.counters = config, runner, counters
        self.rescale, self.quiet = rescale, quiet
        self.start_step = counters["env_steps"]
        self.logger = m.MetricsLogger(
            str(Path(config.run_dir) / "tensorboard"),
            config.total_env_steps,
            config.log_interval_s,
            dump_yaml(config),
            self.start_step,
            quiet,
        )
        self.window = m.EpisodeWindow(m.WINDOW_SIZE)
        self.window.load_state_dict(counters.get("recent_episodes"))  # saved among the counters
        counters["recent_episodes"] = self.window.state_dict()  # live: every checkpoint has it
        # r_int on the console (the mean of the learner's last per-update intrinsic returns)
        # continues across a resume as the episode window does.
        self.logger.intrinsic_returns.extend(counters.get("recent_intrinsic_returns", ()))
        self.saver = Checkpointer(config, say=say if quiet else self.logger.message)
        self.evaluator = PeriodicEvaluator(config, self.logger, self.start_step)
        self.fragments_per_batch = config.learner.batch_size // config.samples_per_fragment
        self.pending: list = []  # fragment handles not yet in a batch
        self.annotator_stats: dict[str, float] | None = None  # the last exchange's metrics
        self.restarts_said = 0
        self.reward_watch = RewardWatch()
        self.last_checkpoint = self.last_labels = self.last_table = time.monotonic()

    def run(self) -> None:
        """Loop until the steps are done or SIGINT/SIGTERM; then finish with a checkpoint."""
        window = self.window
        self.logger.message(
            f"[rogueray] training; a status line every {self.config.log_interval_s:g} s"
            + (
                f", the episode window continues ({counted(len(window), 'episode')})"
                if len(window)
                else ""
            )
        )
        self.runner.sync_weights()
        with StopFlag() as flag:
            while self.counters["env_steps"] < self.config.total_env_steps and not flag.stop:
                self.rescale()
                self.collect()
                self.train()
                self.log_status()
                self.evaluator.maybe_run(self.runner, self.counters["env_steps"])
                now = time.monotonic()
                if now - self.last_labels >= LABEL_EXCHANGE_INTERVAL_S:
                    self.exchange_labels()
                    self.last_labels = now
                self.say_restarts()
                if now - self.last_table >= CAPTION_TABLE_INTERVAL_S:
                    self.log_caption_table(wait=False)
                if time.monotonic() - self.last_checkpoint >= self.config.checkpoint_interval_s:
                    self.checkpoint()
                    self.last_checkpoint = self.last_labels = self.last_table = time.monotonic()
            self.finish()

    # --- the steps ------------------------------------------------------------------------------
    def collect(self) -> None:
        """Wait for the next sample(s); count their steps and episodes."""
        fragments, episodes, steps = self.runner.collect()
        self.pending.extend(fragments)
        self.counters["env_steps"] += steps
        self.counters["episodes"] += len(episodes)
        self.window.extend(episodes)
        self.logger.episodes(episodes, self.counters["env_steps"])

    def train(self) -> None:
        """Submit an update per full batch of pending fragments; absorb finished updates."""
        size = self.fragments_per_batch
        while len(self.pending) >= size:
            if not self.runner.can_train():
                self.absorb(self.runner.finished_updates(wait=True))
            self.runner.train(self.pending[:size])
            self.pending = self.pending[size:]
        self.absorb(self.runner.finished_updates())

    def absorb(self, updates: list[dict[str, float]]) -> None:
        """Count and log finished updates; sync weights every `weights_sync_interval`."""
        for update in updates:
            self.counters["updates"] += 1
            self.logger.scalars(update, self.counters["env_steps"])
            # live among the counters, as the episode window: the last-chance checkpoint has it
            self.counters["recent_intrinsic_returns"] = list(self.logger.intrinsic_returns)
            if line := self.reward_watch.update(update, dataset_size(self.logger.latest)):
                notify(line, self.quiet)
            if lost := update.get(lm.FRAGMENTS_LOST):
                what = counted(int(lost), "fragment")
                notify(f"{what} lost: a worker died before the learner read it", self.quiet)
            if self.counters["updates"] % self.config.rollout.weights_sync_interval == 0:
                self.runner.sync_weights()

    def exchange_labels(self, last: bool = False) -> None:
        """Labels annotator -> learner; log their metrics and say the annotator's notices.
        `last`: every label stored so far, waited for (the run's end)."""
        for values in self.runner.exchange_labels(last):
            self.logger.scalars(values, self.counters["env_steps"])
            self.annotator_stats = values
        for line in self.runner.poll_notices():
            notify(line, self.quiet)

    def log_status(self) -> None:
        """The console line and the window's scalars, every `log_interval_s`."""
        runner, step = self.runner, self.counters["env_steps"]
        rate = self.logger.maybe_print(step, self.window, self.counters["episodes"])
        if rate is None:
            return
        scalars = {
            **self.logger.window_scalars(self.window),
            m.ENV_STEPS_PER_S: rate,
            m.WORKERS_ALIVE: runner.workers_alive,
            m.WORKERS_WAITING: runner.workers_waiting,
            m.WORKER_RESTARTS: runner.restarts,
        }
        self.logger.scalars(scalars, step)

    def say_restarts(self) -> None:
        restarts = self.runner.restarts
        if restarts > self.restarts_said:
            notify(
                f"rollout worker lost ({restarts} so far; its process or node died): Ray "
                "restarts it where a node has room, training goes on with the others",
                self.quiet,
            )
            self.restarts_said = restarts

    def log_caption_table(self, wait: bool = True) -> None:
        """The most frequent captions, their label and current r_int, as TensorBoard text.
        `wait` False: never blocks; a table not ready yet is looked for at the loop's next
        turn, and the interval to the next table starts once it is logged."""
        rows = self.runner.caption_table(CAPTION_TABLE_ROWS, wait=wait)
        if rows is None:
            return
        self.last_table = time.monotonic()
        text = caption_table_text(rows)
        if text is not None:
            self.logger.text("annotator/top_captions", text, self.counters["env_steps"])

    def checkpoint(self, final: bool = False) -> None:
        # Updates in flight are in the learner state saved: count them first.
        while updates := self.runner.finished_updates(wait=True):
            self.absorb(updates)
        self.saver.save(
            self.saver.state(self.counters, self.runner), self.counters["env_steps"], final
        )

    def finish(self) -> None:
        """Wait for updates in flight, take the last labels, write the final checkpoint."""
        self.logger.message(finishing_message(self.runner))
        while updates := self.runner.finished_updates(wait=True):
            self.absorb(updates)
        self.exchange_labels(last=True)
        self.log_caption_table()
        self.checkpoint(final=True)

    def close(self) -> None:
        """The final console line and window scalars; closes TensorBoard."""
        step = self.counters["env_steps"]
        self.logger.maybe_print(step, self.window, self.counters["episodes"], force=True)
        self.logger.final_window(self.window, step)
        self.logger.close()
