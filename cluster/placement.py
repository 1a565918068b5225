"""Where a Ray run's actors go and whether the cluster can hold them: starting or joining Ray,
the CPUs and GPUs a run needs, the custom resources that place components on nodes, and the
check before any actor is created that names what is short."""

from __future__ import annotations

import logging
import os

import ray
from ray.exceptions import ActorUnavailableError, RayActorError

from cluster.annotation import wants_annotator
from cluster.config import ConfigError, RunConfig
from cluster.kernel_caches import kernel_cache_env


class RayStartError(RuntimeError):
    """Ray itself did not come up (its processes timed out or died); the message is one line
    that says what to try."""


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
        import loky  # here: every actor process imports this module, and only drivers start Ray

        needed = cpus_needed(config)
        if config.ray_num_cpus is not None and config.ray_num_cpus < needed:
            raise ConfigError(
                f"config key 'ray_num_cpus' ({config.ray_num_cpus}) is below the {needed} CPUs "
                f"this run needs ({cpu_breakdown(config)})"
            )
        # Logical CPUs: on a laptop the learner and workers share cores; Ray must not wait for more.
        # loky.cpu_count: the CPUs this process may use (its affinity, a container's CPU quota).
        # Ray runs its worker processes at nice 15 by default, so on a busy laptop any ordinary
        # process starves the rollout workers, the learner and the annotator: run them at the
        # driver's own priority instead.
        # address="local": a Ray of its own even where `ray start` left a cluster on this
        # machine, which a bare ray.init() would join (and then refuse num_cpus).
        _init(
            "a local Ray",
            address="local",
            num_cpus=config.ray_num_cpus or max(loky.cpu_count(), needed),
            _system_config={"worker_niceness": 0},
            **common,
        )
        return True
    _init(f"Ray at {config.ray_address}", address=config.ray_address, **common)
    return False


def _init(what: str, **options) -> None:
    """ray.init, with Ray's own start-up failures (a GCS or raylet that timed out on a busy
    machine, an address nothing answers on) turned into one RayStartError line."""
    try:
        ray.init(**options)
    except Exception as exc:
        if isinstance(exc, ValueError | TypeError):
            raise  # a wrong argument is a bug here, not the machine
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RayStartError(
            f"{what} did not start: {first[:200]}. On a busy machine run the command again; "
            "if it keeps failing, `rogueray doctor` checks Ray"
        ) from exc


def shared_inference(config: RunConfig) -> bool:
    """Whether the run has the shared inference actor (cluster/inference.py).

    Shared means one inference actor per node with rollout workers (cluster/inference_pool.py).
    `rollout.inference` "auto" means shared for the NetHack encoder in Ray mode on a local Ray
    with a CPU for it: there it measured 1.4-2.0x the env steps/s of per-worker inference on the
    2-core CI machine (benchmarks/inference_placement.py, docs/performance.md). Per-worker
    inference for the MLP encoder, whose forward pass costs less than the round trip to another
    process (CartPole: 40,050 env steps/s against 4,808 shared), in serial mode, and
    on a joined cluster, where the per-node actors reserve no CPU (the node's workers may hold
    them all) and no multi-node measurement has shown them faster: "shared" asks for them.
    """
    choice = config.rollout.inference
    if choice != "auto":
        return choice == "shared"
    from cluster.ray_job import joined_address

    if config.mode != "ray" or joined_address(config.ray_address) is not None:
        return False
    if not nethack_encoder(config):
        return False
    return config.ray_num_cpus is None or config.ray_num_cpus >= _cpus(config, shared=True)


def nethack_encoder(config: RunConfig) -> bool:
    """Whether the policy has the NetHack encoder: `model.kind` nethack, or auto on a NetHack id
    (whose observations have glyphs, which learner/models.py's build_policy reads as nethack).
    Builds no env; the id was checked when the config was loaded."""
    from actors.envs import is_nethack

    if config.model.kind != "auto":
        return config.model.kind == "nethack"
    return is_nethack(config.env.id)


def cpus_needed(config: RunConfig) -> int:
    """One CPU per rollout worker, one for the learner, one for the annotator when there is one,
    one for the shared inference actor on a local Ray (a joined cluster's per-node actors
    reserve none: cluster/inference_pool.py)."""
    return _cpus(config, shared=_reserves_inference_cpu(config))


def _reserves_inference_cpu(config: RunConfig) -> bool:
    from cluster.ray_job import joined_address

    return shared_inference(config) and joined_address(config.ray_address) is None


def _cpus(config: RunConfig, *, shared: bool) -> int:
    return config.rollout.num_workers + 1 + int(wants_annotator(config)) + int(shared)


def cpu_breakdown(config: RunConfig) -> str:
    """What the CPUs of `cpus_needed` are for, e.g. "rollout.num_workers=2 + 1 learner"."""
    parts = [f"rollout.num_workers={config.rollout.num_workers}", "1 learner"]
    if wants_annotator(config):
        parts.append("1 annotator")
    if _reserves_inference_cpu(config):
        parts.append("1 inference actor")
    return " + ".join(parts)


def learner_and_inference_gpus(config: RunConfig) -> tuple[float, float]:
    """GPUs the learner and the shared inference actor ask for: one each alone, half each when
    both use CUDA (they share the GPU, as in Sample Factory's single-GPU setup)."""
    learner = 1.0 if config.learner.device.startswith("cuda") else 0.0
    shared = shared_inference(config)
    inference = 1.0 if shared and config.rollout.inference_device.startswith("cuda") else 0.0
    if learner and inference:
        return 0.5, 0.5
    return learner, inference


def gpus_needed(config: RunConfig) -> float:
    annotator = config.annotator.num_gpus if wants_annotator(config) else 0.0
    return sum(learner_and_inference_gpus(config)) + annotator


def check_resources(config: RunConfig) -> None:
    """Fail now, naming what is short, rather than let Ray wait forever for resources."""
    total = ray.cluster_resources()
    cpus = cpus_needed(config)
    if total.get("CPU", 0) < cpus:
        raise ConfigError(
            f"the Ray cluster has {total.get('CPU', 0):g} CPUs; this run needs {cpus} "
            f"({cpu_breakdown(config)}). "
            "Lower rollout.num_workers or add CPU nodes."
        )
    gpus = gpus_needed(config)
    if total.get("GPU", 0) < gpus:
        raise ConfigError(
            f"this run needs {gpus:g} GPUs (learner.device={config.learner.device!r}, "
            f"annotator.num_gpus={config.annotator.num_gpus:g}); the cluster has {total.get('GPU', 0):g}"
        )
    for key, resource in node_resources(config).items():
        if total.get(resource, 0) <= 0:
            custom = sorted(k for k in total if k not in _BUILTIN and not k.startswith("node:"))
            raise ConfigError(
                f"config key {key!r} is {resource!r}, but no node of the Ray cluster declares "
                f"that resource (custom resources declared: {', '.join(custom) or 'none'}); "
                "start the nodes with it (cluster/launch/ does) or unset the key"
            )
    workers_on = config.rollout.node_resource
    if workers_on is not None:
        cpus_there = sum(
            node["Resources"].get("CPU", 0)
            for node in ray.nodes()
            if node["Alive"] and node["Resources"].get(workers_on, 0) > 0
        )
        if cpus_there < config.rollout.num_workers:
            raise ConfigError(
                f"the nodes declaring {workers_on!r} (rollout.node_resource) have {cpus_there:g} "
                f"CPUs; rollout.num_workers={config.rollout.num_workers} needs one each"
            )


_BUILTIN = {"CPU", "GPU", "memory", "object_store_memory"}


def node_resources(config: RunConfig) -> dict[str, str]:
    """{config key: custom resource} for the components placed on nodes declaring one."""
    keys = {
        "rollout.node_resource": config.rollout.node_resource,
        "learner.node_resource": config.learner.node_resource,
    }
    if wants_annotator(config):
        keys["annotator.node_resource"] = config.annotator.node_resource
    return {key: value for key, value in keys.items() if value is not None}


def sliver(resource: str | None) -> dict[str, float]:
    """A tiny amount of `resource`: asking it puts an actor on a node that declares it."""
    return {} if resource is None else {resource: 0.001}


# Every call of an actor method is a Ray task, and Ray records each as "task events" that the GCS
# keeps for its dashboard and `ray list tasks` (up to 100,000 tasks, then a record of each one it
# dropped). Training calls its actors without end: the inference actor's `act` once per env step
# of each worker, `sample`, `submit`, `update` and the label exchange every second. gcs_server
# grew 3.1 KB per `act` call (47 -> 122 MB over 24,000; benchmarks/ray_task_events.py), +187 MB
# per million env steps in a training run (benchmarks/memory.py), and was flat with the events
# off (+0.03 MB per million steps). Nothing in rogueray reads them, so the run's actors record
# none; they are still listed (`ray list actors`) and their errors still reach the driver.
NO_TASK_EVENTS = {"enable_task_events": False}


def annotator_options(config: RunConfig, name: str) -> dict:
    """The annotator actor's Ray options: a CPU (and annotator.num_gpus) on the node declaring
    annotator.node_resource, restarted without end, named `name` (workers find it by name),
    no task events, bounded kernel caches (cluster/kernel_caches.py: set through the actor's
    runtime env as well, for a joined cluster whose nodes started without them)."""
    options = dict(num_cpus=1, num_gpus=config.annotator.num_gpus, max_restarts=-1, name=name)
    return {**options, **NO_TASK_EVENTS, **placed(config.annotator.node_resource),
            "runtime_env": {"env_vars": kernel_cache_env()}}  # fmt: skip


WORKER_LOST = (RayActorError, ActorUnavailableError)
"""What a call to a run's actor raises when the actor's process died, or is restarting after a
death."""


def placed(resource: str | None) -> dict:
    """Actor options placing the actor on a node that declares `resource` (none: anywhere)."""
    return {"resources": sliver(resource)} if resource else {}
