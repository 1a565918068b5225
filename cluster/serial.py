"""Serial mode: every component in this process, no Ray. Same objects, same loop, for debugging,
fast tests and machines without Ray (the annotator runs in a thread)."""

from __future__ import annotations

from actors.messages import EpisodeStats, Fragment
from cluster.annotation import AnnotatorThread, build_annotator, wants_annotator
from cluster.components import EnvSpec, make_learner, make_worker
from cluster.config import RunConfig
from cluster.runner import CaptionRow
from cluster.worker_settings import WorkerSettings


class SerialRunner:
    """A `Runner` (cluster/runner.py) in this process: samples the workers round-robin and trains
    synchronously; `collect` returns the `Fragment`s themselves."""

    def __init__(self, config: RunConfig, spec: EnvSpec):
        self.learner = make_learner(config, spec)
        self.annotator = build_annotator(config) if wants_annotator(config) else None
        self._worker_settings, self._spec = WorkerSettings.from_config(config), spec
        self._next_id = self._next = 0
        self.workers: list = []
        self.resize(config.rollout.num_workers)
        self._thread = AnnotatorThread(self.annotator) if self.annotator else None
        self._metrics: list[dict[str, float]] = []
        self.restarts = 0

    @property
    def workers_alive(self) -> int:
        return len(self.workers)

    workers_waiting = 0  # every serial worker runs in this process
    updates_in_flight = 0  # updates run synchronously

    @property
    def has_annotator(self) -> bool:
        return self.annotator is not None

    def start(self, annotator_backlog: list | None = None) -> None:
        if self.annotator is not None:
            self.annotator.restore_backlog(annotator_backlog or [])
            self._thread.start()

    def load_learner_state(self, state: dict) -> None:
        self.learner.load_state_dict(state)

    def learner_state(self) -> dict:
        return self.learner.state_dict()

    def annotator_state(self) -> dict:
        """The annotator's own state for the checkpoint (plain data; {} without one)."""
        return self.annotator.state_dict() if self.annotator else {}

    def load_annotator_state(self, state: dict) -> None:
        if self.annotator is not None and state:
            self.annotator.load_state_dict(state)

    def annotator_backlog(self) -> list:
        return self.annotator.backlog() if self.annotator else []

    def sync_weights(self) -> None:
        weights = self.learner.get_weights()
        for worker in self.workers:
            worker.set_weights(weights)

    def resize(self, num_workers: int) -> str:
        """Add workers (with current weights) or close the newest; returns what was done."""
        current = len(self.workers)
        sink = self.annotator.submit if self.annotator else None
        while len(self.workers) < num_workers:
            worker = make_worker(self._worker_settings, self._spec, self._next_id, sink)
            self._next_id += 1
            if current:  # a running job: the learner's weights, not fresh ones
                worker.set_weights(self.learner.get_weights())
            self.workers.append(worker)
        while len(self.workers) > num_workers:
            self.workers.pop().close()
        self._next %= len(self.workers)
        return f"rollout workers: {current} -> {len(self.workers)}"

    def collect(self) -> tuple[list[Fragment], list[EpisodeStats], int]:
        worker = self.workers[self._next]
        self._next = (self._next + 1) % len(self.workers)
        fragment, episodes = worker.sample()
        return [fragment], list(episodes), fragment.num_steps

    def can_train(self) -> bool:
        return True

    def train(self, fragments: list[Fragment]) -> None:
        self._metrics.append(self.learner.update(*fragments))

    def finished_updates(self, wait: bool = False) -> list[dict[str, float]]:
        done, self._metrics = self._metrics, []
        return done

    def exchange_labels(self, last: bool = False) -> list[dict[str, float]]:
        """Move new labels from the annotator to the learner's reward model; return metrics.
        Synchronous, so every exchange is complete (`last` changes nothing)."""
        if self.annotator is None:
            return []
        metrics = self.learner.add_labels(self.annotator.poll_labels())
        return [{**metrics, **self.annotator.stats()}]

    def poll_notices(self) -> list[str]:
        """Console lines from the annotator since the last call."""
        return self.annotator.poll_notices() if self.annotator else []

    def caption_table(self, n: int, wait: bool = True) -> list[CaptionRow]:
        if self.annotator is None:
            return []
        top = self.annotator.top_captions(n)
        rewards = self.learner.intrinsic_rewards([caption for caption, _, _ in top])
        return [(*row, r) for row, r in zip(top, rewards, strict=True)]

    def stop_annotator(self) -> dict[str, float] | None:
        """Stop the annotator's thread (`close` then finds it stopped); its stats then."""
        if self.annotator is None:
            return None
        self._thread.stop()
        return self.annotator.stats()

    def close(self) -> None:
        if self._thread is not None:
            self._thread.stop()
        for worker in self.workers:
            worker.close()
