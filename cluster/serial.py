"""Serial mode: every component in this process, no Ray. Same objects, same loop, for debugging,
fast tests and machines without Ray."""

from __future__ import annotations

from actors.fragment import EpisodeStats, Fragment
from cluster.components import env_spec, make_learner, make_worker
from cluster.config import RunConfig


class SerialRunner:
    """Samples the workers round-robin and trains synchronously."""

    def __init__(self, config: RunConfig):
        spec = env_spec(config)
        self.learner = make_learner(config, spec)
        self.workers = [make_worker(config, spec, i) for i in range(config.rollout.num_workers)]
        self._next = 0
        self._metrics: list[dict[str, float]] = []
        self.restarts = 0

    @property
    def workers_alive(self) -> int:
        return len(self.workers)

    def load_learner_state(self, state: dict) -> None:
        self.learner.load_state_dict(state)

    def learner_state(self) -> dict:
        return self.learner.state_dict()

    def sync_weights(self) -> None:
        weights, version = self.learner.get_weights()
        for worker in self.workers:
            worker.set_weights(weights, version)

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

    def close(self) -> None:
        for worker in self.workers:
            worker.close()
