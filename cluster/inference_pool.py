"""The shared inference actors of a Ray run, one per node that runs rollout workers (Sample
Factory's policy workers per machine, Petrenko et al. 2020, section 3.1; SEED RL's inference
beside the environments' accelerator host, Espeholt et al. 2020, section 2).

A worker's observations then never leave its node. Actors are started on demand: a worker
whose node has none raises `InferenceMissing` from its sample (`RemotePolicy.find_actor`), and
the runner calls `ensure` for that node and asks again. On a local Ray the driver's node gets
its actor at start-up, so a one-machine run never takes that detour.
"""

from __future__ import annotations

import re
import shlex
import time
import uuid

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from cluster.components import EnvSpec
from cluster.inference import InferenceActor, InferenceUnavailable, inference_actor_name
from cluster.placement import NO_TASK_EVENTS, placed
from cluster.worker_settings import InferenceSettings

_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Ray colours the actor's name in its errors
_ERROR_LINE = re.compile(r"^[\w.]*(Error|Exception)\b.*")  # "RuntimeError: ...", a traceback's


def _cause(exc: Exception) -> str:
    """The line of Ray's error text that names the cause: a traceback's last "...Error: ..."
    line (a failed constructor's), else its last line (e.g. "killed by `ray.kill`")."""
    lines = [_ANSI.sub("", line).strip() for line in str(exc).splitlines()]
    lines = [line for line in lines if line]
    errors = [line for line in lines if _ERROR_LINE.match(line)]
    return (errors or lines or [type(exc).__name__])[-1].rstrip(".")


class InferencePool:
    """Per-node InferenceActors. `name_prefix` is what workers are given to find theirs.

    Each actor is pinned to its node (hard node affinity) and asks for `num_gpus` there. The
    local node's actor, started before any worker, reserves a CPU (`cpus_needed` counts it);
    one started on demand on a cluster's node reserves none, since that node's workers may
    already hold every CPU and a reservation would stall them: leave a core per rollout node
    for it (as Sample Factory's policy worker needs one)."""

    def __init__(
        self,
        settings: InferenceSettings,
        spec: EnvSpec,
        *,
        num_gpus: float = 0.0,
        node_resource: str | None = None,
    ):
        self.name_prefix = f"rogueray-inference-{uuid.uuid4().hex[:12]}"
        self._settings, self._spec = settings, spec
        # `act` is called once per env step of every worker: no task events (placement.py)
        self._options = dict(
            num_gpus=num_gpus, max_restarts=-1, **placed(node_resource), **NO_TASK_EVENTS
        )
        self.actors: dict[str, ray.actor.ActorHandle] = {}  # node id -> its actor
        self._checked: dict[str, float] = {}  # node id -> when `check_alive` last asked it

    def ensure(self, node_id: str, weights_ref=None, *, num_cpus: float = 0) -> None:
        """Start the node's actor unless it has one. It gets `weights_ref` (the learner's current
        weights) when given, and reserves `num_cpus`."""
        if node_id in self.actors:
            return
        actor = (
            ray.remote(num_cpus=num_cpus, **self._options)(InferenceActor)
            .options(
                name=inference_actor_name(self.name_prefix, node_id),
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
            )
            .remote(self._settings, self._spec)
        )
        if weights_ref is not None:
            actor.set_weights.remote(weights_ref)
        self.actors[node_id] = actor

    def check_alive(self, node_id: str, run_dir: str, every_s: float = 5.0) -> None:
        """Raise InferenceUnavailable when the node's actor is dead for good: Ray will not
        restart it (its constructor failed when restarted, or it was killed without restart).
        Asks the actor at most every `every_s` per node, waiting up to 2 s for an answer; one
        restarting (no answer, or ActorUnavailableError) or on a node that is gone (its
        workers are lost too, and `forget_dead_nodes` drops it) passes."""
        now = time.monotonic()
        actor = self.actors.get(node_id)
        if actor is None or now - self._checked.get(node_id, -every_s) < every_s:
            return
        self._checked[node_id] = now
        try:
            ray.get(actor.stats.remote(), timeout=2.0)
        except (ray.exceptions.GetTimeoutError, ray.exceptions.ActorUnavailableError):
            return  # restarting
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnschedulableError) as exc:
            if node_id not in _alive_nodes():
                return
            raise InferenceUnavailable(
                f"the shared inference actor on node {node_id[:8]} died and Ray will not "
                f"restart it: {_cause(exc)}. To go on with the policy in the rollout workers: "
                f"rogueray resume {shlex.quote(str(run_dir))} rollout.inference=worker"
            ) from None

    def forget_dead_nodes(self) -> None:
        """Drop the actors of nodes the cluster no longer has (called after a worker is lost)."""
        alive = _alive_nodes()
        for node_id in [n for n in self.actors if n not in alive]:
            ray.kill(self.actors.pop(node_id))

    def set_weights(self, weights_ref) -> None:
        for actor in self.actors.values():
            actor.set_weights.remote(weights_ref)

    def stats(self) -> dict[str, float]:
        """Requests and batches summed over the actors, and how many actors there are."""
        per_actor = ray.get([actor.stats.remote() for actor in self.actors.values()])
        total = {"requests": 0.0, "batches": 0.0, "actors": float(len(per_actor))}
        for stats in per_actor:
            total["requests"] += stats["requests"]
            total["batches"] += stats["batches"]
        return total

    def kill(self) -> None:
        for actor in self.actors.values():
            ray.kill(actor)


def _alive_nodes() -> set[str]:
    """Ids of the nodes the Ray cluster has now."""
    return {node["NodeID"] for node in ray.nodes() if node.get("Alive")}
