"""The rollout worker as a Ray actor: a `RolloutWorker` built in the actor's process, sampling
on the driver's request and handing observations over through shared memory when its consumer
(the learner) is on the same node."""

from __future__ import annotations

import contextlib
import gc

import ray

from actors.messages import PolicyWeights
from cluster.components import EnvSpec, make_worker
from cluster.inference import RemotePolicy
from cluster.worker_settings import WorkerSettings

# Shared-memory observation slots per worker on the learner's node (actors/observation_slots.py);
# only those in use at once are touched (the lowest free is taken); beyond, the object store.
SHARED_SLOTS = 32
CLOSE_WAIT_S = 5.0  # for workers mid-sample to close their envs before they are killed


class WorkerActor:
    """A RolloutWorker whose `sample` returns two objects: the fragment stays in the object store
    for the learner, the small stats go to the driver. A wrapper, not `ray.remote(RolloutWorker)`:
    it finds the annotator by name (a handle as a constructor argument is not always restored
    after a restart), moves a restarted process onto fresh seed streams per request, and on the
    learner's node writes observations into shared memory, so that only the rest of a fragment
    (a few kB, inlined by Ray) crosses the object store."""

    def __init__(
        self,
        settings: WorkerSettings,
        spec: EnvSpec,
        worker_id: int,
        annotator_name: str | None = None,
        inference_prefix: str | None = None,
    ):
        sink = None
        if annotator_name is not None:
            sink = ray.get_actor(annotator_name).submit.remote  # fire and forget
        self.policy = None
        if inference_prefix is not None:  # its node's actor, found by name before each sample
            self.policy = RemotePolicy(inference_prefix, settings.model.state_size, worker_id)
        self.worker = make_worker(settings, spec, worker_id, sink, self.policy)
        self._sharing: bool | None = None  # decided at the first sample
        freeze_start_up_objects()

    def set_weights(self, weights: PolicyWeights) -> None:
        self.worker.set_weights(weights)

    def close(self) -> None:
        """Close the envs: NLE removes each env's directory under the temporary directory then,
        which a killed process leaves behind (a copy of NetHack's files per env and run)."""
        self.worker.close()

    def leave(self) -> None:
        """Close the envs and end this actor for good (Ray does not restart it): a worker
        retired mid-run (`retire_worker`), after the calls sent before this one."""
        try:
            self.worker.close()
        finally:  # gone even if an env fails to close
            ray.actor.exit_actor()

    @ray.method(num_returns=2)
    def sample(self, restarts: int = 0, consumer_node: str | None = None):
        """`restarts`: the driver's count of this worker's lost samples (its process died, or its
        inference actor was lost part way); a restarted process (constructed with the original
        arguments), or one whose last sample stopped part way, moves onto fresh seed streams
        with it.
        `consumer_node`: the Ray node id of the process that reads the fragments (the
        learner's), which releases their shared-memory slots when on this worker's node."""
        if consumer_node is not None and self._sharing is None:
            self._share_observations(consumer_node)
        if self.policy is not None:
            self.policy.find_actor()  # InferenceMissing before any env steps, if none is there
        self.worker.use_restart_streams(restarts)
        fragment, episodes = self.worker.sample()
        return fragment, (episodes, fragment.num_steps)

    def _share_observations(self, consumer_node: str) -> None:
        self._sharing = consumer_node == ray.get_runtime_context().get_node_id()
        if self._sharing:
            try:
                self.worker.share_observations(SHARED_SLOTS)
            except OSError as err:  # no memfd (not Linux) or no memory: the object store
                self._sharing = False
                print(f"observations go through Ray's object store: no shared memory ({err})")


def freeze_start_up_objects() -> None:
    """Take what a worker process holds once constructed (Ray, torch, NLE: some 220,000
    objects) out of the garbage collector's full collections, which otherwise walk them all:
    77 ms for the one seen in 40 s of sampling inside a Ray actor. Call it at the end of the
    constructor of a process's one long-lived object."""
    gc.collect()
    gc.freeze()


def retire_worker(actor, kill: bool = False) -> ray.ObjectRef | None:
    """Let a worker go mid-run without waiting for it: it closes its envs once the calls sent
    before are done (an actor runs its calls in order) and exits (`WorkerActor.leave`); returns
    that call's reference, for `stop_workers` to wait for at the run's end. With `kill`, for one
    that has no envs (still waiting for a CPU: its constructor has not run) or whose process was
    lost (Ray would rebuild it first), it is killed at once (None)."""
    if kill:
        ray.kill(actor)
        return None
    return actor.leave.remote()


def forget(ref) -> None:
    """Take a failed call's error, so that Ray does not print it as unhandled when the
    reference goes (e.g. a sample's fragment, whose stats reference failed with it and says
    what happened; a dead worker's `close`)."""
    with contextlib.suppress(Exception):
        ray.get(ref, timeout=0)


def stop_workers(actors: list, unready: list = (), leaving: list = ()) -> None:
    """Have worker actors close their envs (`WorkerActor.close`), waiting up to CLOSE_WAIT_S in
    all for those still sampling (an actor's calls run in order) and for the `leaving` calls of
    workers retired earlier (`retire_worker`), then kill them all. Those in `unready` (still
    waiting for resources, or being rebuilt: a close would wait for the constructor) are not
    asked. A dead actor's close fails at once and is skipped."""
    refs = [actor.close.remote() for actor in actors if all(actor is not u for u in unready)]
    refs += leaving
    if refs:
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=CLOSE_WAIT_S)
        for ref in ready:
            forget(ref)
    for actor in actors:
        ray.kill(actor)
