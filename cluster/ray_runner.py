"""Ray mode: rollout workers and the learner as Ray actors. The driver moves object references
only: fragments go from a worker's node to the learner's, weights from the learner to workers."""

from __future__ import annotations

import logging
import os

import ray
from ray.exceptions import RayActorError

from actors.fragment import EpisodeStats
from cluster.components import env_spec, make_learner, make_worker
from cluster.config import ConfigError, RunConfig

MAX_UPDATES_IN_FLIGHT = 2  # bounds policy lag and queued fragments when the learner is slower


def start_ray(config: RunConfig, quiet: bool = True) -> bool:
    """Connect to `config.ray_address` or start a local Ray sized for this run.

    Returns True when this process started Ray (and must shut it down). Never `ray stop`:
    that would end every Ray process on the machine, other users' included.
    """
    if ray.is_initialized():
        return False
    logging.getLogger("ray").setLevel(logging.ERROR if quiet else logging.INFO)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    level = logging.ERROR if quiet else logging.INFO
    common = dict(include_dashboard=False, log_to_driver=not quiet, logging_level=level)
    if config.ray_address is None:
        needed = config.rollout.num_workers + 1
        # Logical CPUs: on a laptop the learner and workers share cores; Ray must not wait for more.
        ray.init(num_cpus=max(os.cpu_count() or 1, needed), **common)
        return True
    ray.init(address=config.ray_address, **common)
    return False


def check_resources(config: RunConfig, num_gpus: float) -> None:
    """Fail now, naming what is short, rather than let Ray wait forever for resources."""
    total = ray.cluster_resources()
    cpus_needed = config.rollout.num_workers + 1
    if total.get("CPU", 0) < cpus_needed:
        raise ConfigError(
            f"the Ray cluster has {total.get('CPU', 0):g} CPUs; this run needs {cpus_needed} "
            f"(rollout.num_workers={config.rollout.num_workers} + 1 learner). Lower rollout.num_workers "
            "or add CPU nodes."
        )
    if total.get("GPU", 0) < num_gpus:
        raise ConfigError(
            f"learner.device={config.learner.device!r} needs a GPU; the cluster has none"
        )


class RayRunner:
    """Keeps one `sample` in flight per worker and up to MAX_UPDATES_IN_FLIGHT learner updates."""

    def __init__(self, config: RunConfig):
        spec = env_spec(config)
        wants_gpu = config.learner.device.startswith("cuda")
        check_resources(config, 1 if wants_gpu else 0)
        learner_cls = ray.remote(num_cpus=1, num_gpus=1 if wants_gpu else 0)(_LearnerActor)
        self.learner = learner_cls.remote(config, spec)
        worker_cls = ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=0)(_WorkerActor)
        self.workers = [
            worker_cls.remote(config, spec, i) for i in range(config.rollout.num_workers)
        ]
        self._samples: dict = {}  # stats ref -> (worker index, fragment ref)
        self._updates: list = []
        self._weights_ref = None
        self.restarts = 0

    @property
    def workers_alive(self) -> int:
        return len(self.workers)

    def load_learner_state(self, state: dict) -> None:
        ray.get(self.learner.load_state_dict.remote(state))

    def learner_state(self) -> dict:
        return ray.get(self.learner.state_dict.remote())

    def sync_weights(self) -> None:
        self._weights_ref = self.learner.get_weights.remote()
        for worker in self.workers:
            worker.set_weights.remote(self._weights_ref)
        if not self._samples:
            for index in range(len(self.workers)):
                self._submit(index)

    def _submit(self, index: int) -> None:
        fragment_ref, stats_ref = self.workers[index].sample.remote()
        self._samples[stats_ref] = (index, fragment_ref)

    def collect(self) -> tuple[list, list[EpisodeStats], int]:
        ready, _ = ray.wait(list(self._samples), num_returns=1)
        fragments, episodes, steps = [], [], 0
        for stats_ref in ready:
            index, fragment_ref = self._samples.pop(stats_ref)
            try:
                finished, num_steps = ray.get(stats_ref)
            except RayActorError:
                # The actor restarts by itself; give it current weights before it samples again.
                self.restarts += 1
                if self._weights_ref is not None:
                    self.workers[index].set_weights.remote(self._weights_ref)
                self._submit(index)
                continue
            self._submit(index)
            fragments.append(fragment_ref)
            episodes.extend(finished)
            steps += num_steps
        return fragments, episodes, steps

    def can_train(self) -> bool:
        return len(self._updates) < MAX_UPDATES_IN_FLIGHT

    def train(self, fragments: list) -> None:
        # Refs as top-level arguments: Ray fetches them on the learner's node, not here.
        self._updates.append(self.learner.update.remote(*fragments))

    def finished_updates(self, wait: bool = False) -> list[dict[str, float]]:
        if not self._updates:
            return []
        ready, self._updates = ray.wait(
            self._updates,
            num_returns=1 if wait else len(self._updates),
            timeout=None if wait else 0,
        )
        return ray.get(ready)

    def close(self) -> None:
        for actor in [*self.workers, self.learner]:
            ray.kill(actor)


class _WorkerActor:
    """A RolloutWorker whose `sample` returns two objects: the fragment stays in the object store
    for the learner, the small stats go to the driver."""

    def __init__(self, config: RunConfig, spec, worker_id: int):
        self.worker = make_worker(config, spec, worker_id)

    def set_weights(self, payload) -> None:
        weights, version = payload
        self.worker.set_weights(weights, version)

    @ray.method(num_returns=2)
    def sample(self):
        fragment, episodes = self.worker.sample()
        return fragment, (episodes, fragment.num_steps)


class _LearnerActor:
    def __init__(self, config: RunConfig, spec):
        self.learner = make_learner(config, spec)

    def update(self, *fragments):
        return self.learner.update(*fragments)

    def get_weights(self):
        return self.learner.get_weights()

    def state_dict(self):
        return self.learner.state_dict()

    def load_state_dict(self, state) -> None:
        self.learner.load_state_dict(state)
