"""Builds the run's objects from its config: environment spec, policy, rollout workers, learner.
The same constructors serve serial mode and Ray actors."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from actors.envs import num_actions, observation_spec
from actors.rollout import RolloutWorker
from cluster.config import ConfigError, RunConfig
from cluster.worker_settings import InferenceSettings, WorkerSettings
from learner.learner import Learner
from learner.models import build_policy


@dataclass(frozen=True)
class EnvSpec:
    obs_spec: dict
    num_actions: int
    # Which start of the run this is (0 new, +1 per resume; the driver's checkpointed counter):
    # workers key their env seed streams by it, so a resumed run plays no episode again.
    run_incarnation: int = 0


def env_spec(config: RunConfig) -> EnvSpec:
    """Observation and action spec of the configured env; constructs it once, so an env that
    cannot be used (continuous actions, unsupported observations) fails here, before Ray."""
    try:
        spec = EnvSpec(observation_spec(config.env.id), num_actions(config.env.id))
        make_policy(config, spec)  # model.kind must suit the observations
    except ValueError as exc:
        raise ConfigError(f"config key 'env.id' / 'model.kind': {exc}") from None
    return spec


def make_policy(
    settings: RunConfig | WorkerSettings | InferenceSettings, spec: EnvSpec
) -> torch.nn.Module:
    """The policy network `settings.model` describes (the run config's `model.*` section, or a
    worker's or the inference actor's copy of it) for the env of `spec`."""
    model = settings.model
    recurrent = model.recurrent
    return build_policy(
        model.kind,
        spec.obs_spec,
        spec.num_actions,
        model.hidden_size,
        recurrent,
        model.crop_size,
        model.precision,
    )


def make_worker(
    settings: WorkerSettings, spec: EnvSpec, worker_id: int, caption_sink=None, policy=None
) -> RolloutWorker:
    """A rollout worker with its own copy of the policy, or with `policy` (e.g. a RemotePolicy
    answered by the shared inference actor). `settings`: `WorkerSettings.from_config(config)`."""
    torch.manual_seed(settings.seed + worker_id)  # weight init; actions use the worker's own rng
    return RolloutWorker(
        env_id=settings.env_id,
        num_envs=settings.num_envs,
        unroll_length=settings.unroll_length,
        unrolls_per_sample=settings.unrolls_per_sample,
        policy=policy if policy is not None else make_policy(settings, spec),
        seed=settings.seed,
        worker_id=worker_id,
        max_episode_steps=settings.max_episode_steps,
        normalize_captions=settings.normalize_captions,
        caption_sink=caption_sink,
        incarnation=spec.run_incarnation,
    )


class ConfiguredLearner(Learner):
    """A `Learner` built from the run config in the process that runs it: Ray makes this class
    an actor as it is (`ray.remote(ConfiguredLearner)`), and the policy and reward model are
    built on the learner's node, on its device."""

    def __init__(self, config: RunConfig, spec: EnvSpec):
        from cluster.annotation import build_reward_model

        torch.manual_seed(config.seed)
        super().__init__(
            make_policy(config, spec), config.learner, config.reward, build_reward_model(config)
        )

    def node_id(self) -> str:
        """The Ray node this learner runs on: workers on it share observations through memory."""
        import ray

        return ray.get_runtime_context().get_node_id()


def make_learner(config: RunConfig, spec: EnvSpec) -> Learner:
    return ConfiguredLearner(config, spec)
