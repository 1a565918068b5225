"""Ray mode: rollout workers and the learner as Ray actors. The driver moves object references
only: fragments go from a worker's node to the learner's, weights from the learner to workers."""

from __future__ import annotations

import math
import time
import uuid

import ray

from actors.messages import EpisodeStats
from actors.rollout import SampleAborted
from cluster.annotation import AnnotatorActor, wants_annotator
from cluster.components import ConfiguredLearner, EnvSpec
from cluster.config import RunConfig
from cluster.console import counted
from cluster.inference import InferenceLost, InferenceMissing
from cluster.inference_pool import InferencePool
from cluster.label_exchange import LABELS_GROUP, CaptionTableRequest, LabelExchange
from cluster.placement import (
    NO_TASK_EVENTS,
    WORKER_LOST,
    annotator_options,
    check_resources,
    learner_and_inference_gpus,
    placed,
    shared_inference,
    sliver,
)
from cluster.runner import CaptionRow
from cluster.worker_actor import WorkerActor, forget, retire_worker, stop_workers
from cluster.worker_settings import InferenceSettings, WorkerSettings

START_WAIT_S = 300.0  # `start` waits this long at most for the processes to be constructed
INFERENCE_NOTICE_S = 30.0  # a node's inference actor lost again within this is not said again

MAX_UPDATES_IN_FLIGHT = 2  # bounds policy lag and queued fragments when the learner is slower


class RayRunner:
    """A `Runner` (cluster/runner.py) of Ray actors: keeps `rollout.samples_in_flight` samples
    requested per worker (its next one starts while the driver takes the last) and up to
    MAX_UPDATES_IN_FLIGHT learner updates; `collect` returns object references to the
    fragments, which `train` passes on to the learner unread.

    Workers are keyed by an id that is never reused, so a worker added after others were retired
    steps environments with seeds of its own (RolloutWorker seeds by worker id).
    """

    def __init__(self, config: RunConfig, spec: EnvSpec):
        check_resources(config)
        learner_gpus, inference_gpus = learner_and_inference_gpus(config)
        learner_cls = ray.remote(
            num_cpus=1,
            num_gpus=learner_gpus,
            concurrency_groups={LABELS_GROUP: 1},  # add_labels beside the updates
            **placed(config.learner.node_resource),
            **NO_TASK_EVENTS,  # every actor of a run: its calls never end (placement.py)
        )(ConfiguredLearner)
        self.learner = learner_cls.remote(config, spec)
        # Shared inference: an actor per node with workers (rollout.inference, shared_inference)
        self.inference: InferencePool | None = None
        self._joined = config.ray_address is not None  # a cluster that may autoscale
        if shared_inference(config):
            self.inference = InferencePool(
                InferenceSettings.from_config(config),
                spec,
                num_gpus=inference_gpus,
                node_resource=config.rollout.node_resource,
            )
            if not self._joined:  # one machine: its actor now, not after the first sample
                self.inference.ensure(ray.get_runtime_context().get_node_id(), num_cpus=1)
        self.annotator = self._start_annotator(config) if wants_annotator(config) else None
        self._config, self._spec = config, spec
        self._worker_settings = WorkerSettings.from_config(config)  # all a worker is sent
        self._worker_cls = ray.remote(
            num_cpus=1,
            max_restarts=-1,
            max_task_retries=0,
            **placed(config.rollout.node_resource),
            **NO_TASK_EVENTS,
        )(WorkerActor)
        self.workers: dict[int, ray.actor.ActorHandle] = {}  # worker id -> actor
        self._retiring: dict[int, ray.actor.ActorHandle] = {}  # finishing their last sample
        self._leaving: list = []  # retired workers' `leave` calls, waited for by `close`
        self._waiting: set[int] = set()  # added beyond the cluster's free CPUs, not placed yet
        self._next_id = 0
        for _ in range(config.rollout.num_workers):
            self._add_worker()
        self._labels = LabelExchange(self.annotator, self.learner) if self.annotator else None
        self._table: CaptionTableRequest | None = None  # asked with wait=False, not answered
        self._notices: list[str] = []
        self._restarting: set[int] = set()  # workers that died and have not answered since
        self._inference_lost_said: dict[str, float] = {}  # node id -> when its loss was said
        # Per worker: lost samples so far, sent with each sample request so that every new
        # process of a worker (Ray restarts it with the same arguments) seeds envs it has never
        # played. With the request itself: a message sent before it may be lost in the restart.
        self._lives: dict[int, int] = {}
        self._samples: dict = {}  # stats ref -> (worker id, fragment ref, lives sent with it)
        self._updates: list = []
        self._learner_node_ref = self.learner.node_id.remote()  # read at the first sample
        self._weights_ref, self._learner_node = None, None
        self.restarts = 0

    def _start_annotator(self, config: RunConfig):
        """The annotator actor, named, so that workers (and their restarts) find it without
        holding its handle as a constructor argument, which Ray cannot always restore."""
        self._annotator_name = f"rogueray-annotator-{uuid.uuid4().hex[:12]}"
        options = annotator_options(config, self._annotator_name)
        return ray.remote(**options)(AnnotatorActor).remote(config)

    @property
    def workers_alive(self) -> int:
        return len(self.workers) - len(self._waiting)

    @property
    def has_annotator(self) -> bool:
        return self.annotator is not None

    def start(self, annotator_backlog: list | None = None) -> None:
        if self.annotator is not None:
            ray.get(self.annotator.start.remote(annotator_backlog or []))
        if self._config.ray_address is None:  # a local Ray, sized for every process of the run
            # All constructed (imports, envs, network: 16 s on a loaded laptop), so that the
            # console's "processes up" and its first rate leave that out. A joined cluster's
            # workers may wait for CPUs: training starts as soon as any samples.
            actors = [self.learner, *self.workers.values()]
            ready = [actor.__ray_ready__.remote() for actor in actors]
            ray.wait(ready, num_returns=len(ready), timeout=START_WAIT_S)  # then samples wait

    def load_learner_state(self, state: dict) -> None:
        ray.get(self.learner.load_state_dict.remote(state))

    def annotator_state(self) -> dict:
        """The annotator's own state for the checkpoint (plain data; {} without one)."""
        return ray.get(self.annotator.state_dict.remote()) if self.annotator else {}

    def load_annotator_state(self, state: dict) -> None:
        if self.annotator is not None and state:
            ray.get(self.annotator.load_state_dict.remote(state))

    def annotator_backlog(self) -> list:
        return ray.get(self.annotator.backlog.remote()) if self.annotator else []

    def exchange_labels(self, last: bool = False) -> list[dict[str, float]]:
        """Labels annotator -> learner by reference (label_exchange.py); returns the metrics
        of finished exchanges (`last`: of all, once every label stored so far is handed over)."""
        if self._labels is None:
            return []
        metrics = self._labels.last() if last else self._labels.exchange()
        self._notices.extend(self._labels.take_notices())
        return metrics

    def poll_notices(self) -> list[str]:
        """Console lines from the annotator since the last call (actor output does not reach
        the driver's console by itself)."""
        out, self._notices = self._notices, []
        return out

    def caption_table(self, n: int, wait: bool = True) -> list[CaptionRow] | None:
        if self.annotator is None:
            return []
        if wait:
            top = ray.get(self.annotator.top_captions.remote(n))
            rewards = ray.get(self.learner.intrinsic_rewards.remote([row[0] for row in top]))
            return [(*row, r) for row, r in zip(top, rewards, strict=True)]
        if self._table is None:
            self._table = CaptionTableRequest(self.annotator, self.learner, n)
        rows = self._table.result()
        if rows is not None:
            self._table = None
        return rows

    def learner_state(self) -> dict:
        if self._labels is not None:
            self._labels.flush()  # the state holds every label polled so far
        return ray.get(self.learner.state_dict.remote())

    def sync_weights(self) -> None:
        self._weights_ref = self.learner.get_weights.remote()
        if self.inference is not None:
            self.inference.set_weights(self._weights_ref)
        else:
            for worker in self.workers.values():
                worker.set_weights.remote(self._weights_ref)
        if not self._samples:
            for worker_id in self.workers:
                self._submit_all(worker_id)

    def resize(self, num_workers: int) -> str:
        """Add or retire rollout workers; returns what was done, for the console.

        A retired worker's sample in flight is still used. Growing beyond the free CPUs is
        refused on a local Ray; on a cluster joined through `ray_address` the workers are added
        anyway and wait for CPUs (`workers_waiting`), and the autoscaler is asked for them.
        """
        current = len(self.workers)
        short = 0
        if num_workers > current:
            free = ray.available_resources().get("CPU", 0.0)
            short = max(0, num_workers - current - int(free))
            if short and not self._joined:
                more = counted(num_workers - current, "more CPU")
                return (
                    f"rollout workers stay at {current}: {num_workers} needs {more} and the "
                    f"cluster has {free:g} free"
                )
            if short:
                self._ask_autoscaler(num_workers)
            for k in range(num_workers - current):
                worker_id = self._add_worker()
                if k >= num_workers - current - short:
                    self._waiting.add(worker_id)
                if self._weights_ref is not None:
                    self._give_weights(worker_id)
                    self._submit_all(worker_id)
        in_flight = {w for w, *_ in self._samples.values()}
        for worker_id in sorted(self.workers)[num_workers:]:  # the newest go first
            actor = self.workers.pop(worker_id)
            if worker_id in self._waiting or worker_id not in in_flight:  # nothing to hand over
                self._leaving.append(retire_worker(actor, kill=worker_id in self._waiting))
                self._waiting.discard(worker_id)
            else:
                self._retiring[worker_id] = actor
        done = f"rollout workers: {current} -> {len(self.workers)}"
        if short:
            done += f"; {short} wait for CPUs (the autoscaler was asked for them)"
        return done

    @property
    def workers_waiting(self) -> int:
        """Workers added by `resize` that no node has had a CPU for yet."""
        return len(self._waiting)

    @property
    def updates_in_flight(self) -> int:
        """Learner updates submitted and not yet collected (what the end of a run waits for)."""
        return len(self._updates)

    def _ask_autoscaler(self, num_workers: int) -> None:
        from ray.autoscaler.sdk import request_resources

        bundle = {"CPU": 1, **sliver(self._config.rollout.node_resource)}
        request_resources(bundles=[bundle] * num_workers)

    def _add_worker(self) -> int:
        worker_id, self._next_id = self._next_id, self._next_id + 1
        annotator = self._annotator_name if self.annotator else None
        inference = self.inference.name_prefix if self.inference else None
        self.workers[worker_id] = self._worker_cls.remote(
            self._worker_settings, self._spec, worker_id, annotator, inference
        )
        return worker_id

    def _give_weights(self, worker_id: int) -> None:
        """Current weights to a new or restarted worker (with shared inference, none need them)."""
        if self.inference is None:
            self.workers[worker_id].set_weights.remote(self._weights_ref)

    def _submit_all(self, worker_id: int) -> None:
        for _ in range(self._config.rollout.samples_in_flight):
            self._submit(worker_id)

    def _submit(self, worker_id: int) -> None:
        lives = self._lives.get(worker_id, 0)
        if self._learner_node is None and self._config.rollout.shared_observations:
            self._learner_node = ray.get(self._learner_node_ref)
        worker = self.workers[worker_id]
        fragment_ref, stats_ref = worker.sample.remote(lives, self._learner_node)
        self._samples[stats_ref] = (worker_id, fragment_ref, lives)

    def collect(self) -> tuple[list, list[EpisodeStats], int]:
        ready, _ = ray.wait(list(self._samples), num_returns=1)
        fragments, episodes, steps = [], [], 0
        for stats_ref in ready:
            worker_id, fragment_ref, lives = self._samples.pop(stats_ref)
            retiring = self._retiring.get(worker_id)
            if retiring is None and worker_id not in self.workers:
                continue  # retired before any node had a CPU for it
            try:
                finished, num_steps = ray.get(stats_ref)
            except (InferenceMissing, InferenceLost, SampleAborted) as exc:
                forget(fragment_ref)
                self._redo(worker_id, lives, retiring, getattr(exc, "cause", exc))
                continue
            except WORKER_LOST:
                forget(fragment_ref)
                if retiring is not None:
                    self._retire_when_done(worker_id, lost=True)
                    continue
                # Ray restarts the actor by itself: count the death once, then keep asking until
                # the new process answers, and give it current weights before it samples.
                if worker_id not in self._restarting:
                    self._restarting.add(worker_id)
                    self.restarts += 1
                    if self.inference is not None:  # its node may be gone, and that node's actor
                        self.inference.forget_dead_nodes()
                else:
                    time.sleep(0.05)  # still starting up
                # Every death counts, not only the first, once (its samples in flight are lost
                # together): whichever process answers next seeds streams no earlier one used.
                if lives == self._lives.get(worker_id, 0):
                    self._lives[worker_id] = lives + 1
                if self._weights_ref is not None:
                    self._give_weights(worker_id)
                self._submit(worker_id)
                continue
            self._restarting.discard(worker_id)
            self._waiting.discard(worker_id)
            if retiring is not None:
                self._retire_when_done(worker_id)
            else:
                self._submit(worker_id)
            fragments.append(fragment_ref)
            episodes.extend(finished)
            steps += num_steps
        return fragments, episodes, steps

    def _redo(self, worker_id: int, lives: int, retiring, cause: Exception) -> None:
        """Ask a worker again whose process answered but whose sample did not finish: its node
        had no inference actor yet (start one), that actor was lost part way (say so, give the
        restarted actor current weights, move the worker onto new seed streams: its envs stopped
        mid-unroll), or it was asked before those streams reached it (`SampleAborted`). Raises
        InferenceUnavailable when the node's actor is dead for good (`check_alive`)."""
        self._restarting.discard(worker_id)
        if isinstance(cause, InferenceMissing):
            if cause.node_id in self.inference.actors:  # started, yet not found: dead for good?
                self.inference.check_alive(cause.node_id, self._config.run_dir)
                time.sleep(0.05)
            self.inference.ensure(cause.node_id, self._weights_ref)
        elif isinstance(cause, InferenceLost):
            self.inference.check_alive(cause.node_id, self._config.run_dir)
            self._say_inference_lost(cause.node_id)
            if self._weights_ref is not None:  # Ray rebuilt it with untrained weights
                self.inference.set_weights(self._weights_ref)
            if lives == self._lives.get(worker_id, 0):
                self._lives[worker_id] = lives + 1
            time.sleep(0.05)  # an actor that does not come back is not asked in a hot loop
        self._requeue(worker_id, retiring)

    def _say_inference_lost(self, node_id: str) -> None:
        """One console line per loss: the samples in flight on the node fail together, and
        some may be answered in between."""
        now = time.monotonic()
        if now - self._inference_lost_said.get(node_id, -math.inf) >= INFERENCE_NOTICE_S:
            self._inference_lost_said[node_id] = now
            self._notices.append(
                f"shared inference actor on node {node_id[:8]} lost: Ray restarts it; its "
                "workers' samples in flight are redone (no worker was lost)"
            )

    def _requeue(self, worker_id: int, retiring) -> None:
        """Ask the worker again (`_redo`), or let a retiring worker go."""
        self._waiting.discard(worker_id)  # it runs somewhere
        if retiring is not None:
            self._retire_when_done(worker_id)
        else:
            self._submit(worker_id)

    def _retire_when_done(self, worker_id: int, lost: bool = False) -> None:
        """Let a retiring worker go once none of its samples is in flight; one whose process
        was `lost` is killed before Ray rebuilds it (`retire_worker`)."""
        if all(w != worker_id for w, *_ in self._samples.values()):
            self._leaving.append(retire_worker(self._retiring.pop(worker_id), kill=lost))

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

    def stop_annotator(self) -> dict[str, float] | None:
        return self._labels.stop_annotator() if self._labels is not None else None

    def close(self) -> None:
        self.stop_annotator()  # let it flush sightings and close the LLM cleanly (30 s at most)
        unready = [actor for w, actor in self.workers.items() if w in self._waiting]
        leaving = [ref for ref in self._leaving if ref is not None]
        stop_workers([*self.workers.values(), *self._retiring.values()], unready, leaving)
        for actor in [self.learner, *[a for a in (self.annotator,) if a is not None]]:
            ray.kill(actor)
        if self.inference is not None:
            self.inference.kill()
