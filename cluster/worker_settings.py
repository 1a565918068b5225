"""What the processes that act read of the run config, and nothing more: a rollout worker gets a
`WorkerSettings`, the shared inference actor an `InferenceSettings`, both built once from the
(validated) `RunConfig` by the runner and pickled to every actor that needs them. Frozen, so an
actor cannot change what another one was given, and small (a few dozen bytes of fields), so the
whole run config (annotator, learner, checkpoint settings) no longer travels to every worker
and a worker's arguments say what it depends on."""

from __future__ import annotations

from dataclasses import dataclass

from cluster.config import ModelConfig, RunConfig


@dataclass(frozen=True)
class PolicySettings:
    """The policy network, as the `model.*` section sets it (same field names, so `make_policy`
    reads either): `kind` "nethack", "mlp" or "auto"; `hidden_size` the core's width (units);
    `recurrent` a GRU core; `crop_size` the side of the glyph crop (cells, odd); `precision`
    "float32", "bfloat16" or "auto"."""

    kind: str
    hidden_size: int
    recurrent: bool
    crop_size: int
    precision: str

    @classmethod
    def from_config(cls, model: ModelConfig) -> PolicySettings:
        return cls(
            kind=model.kind,
            hidden_size=model.hidden_size,
            recurrent=model.recurrent,
            crop_size=model.crop_size,
            precision=model.precision,
        )

    @property
    def state_size(self) -> int:
        """Width of the recurrent state each env carries: hidden_size, or 0 when feed-forward."""
        return self.hidden_size if self.recurrent else 0


@dataclass(frozen=True)
class WorkerSettings:
    """Everything a rollout worker reads (`make_worker`, `make_policy`): the env (`env_id`,
    `num_envs` per worker, `max_episode_steps` or None for the env's own limit,
    `normalize_captions`), the fragment's shape (`unroll_length` steps x `num_envs` *
    `unrolls_per_sample` columns), the run's `seed` (each worker derives its own streams from it
    and its id) and the policy (`model`)."""

    env_id: str
    num_envs: int
    unroll_length: int
    unrolls_per_sample: int
    seed: int
    max_episode_steps: int | None
    normalize_captions: bool
    model: PolicySettings

    @classmethod
    def from_config(cls, config: RunConfig) -> WorkerSettings:
        return cls(
            env_id=config.env.id,
            num_envs=config.env.num_envs_per_worker,
            unroll_length=config.rollout.unroll_length,
            unrolls_per_sample=config.rollout.unrolls_per_sample,
            seed=config.seed,
            max_episode_steps=config.env.max_episode_steps,
            normalize_captions=config.env.normalize_captions,
            model=PolicySettings.from_config(config.model),
        )


@dataclass(frozen=True)
class InferenceSettings:
    """What the shared inference actor (cluster/inference.py) reads: the policy (`model`), the
    torch `device` it runs on (rollout.inference_device) and the `num_workers` whose requests
    make a full batch at the start (the runner updates it when workers change)."""

    num_workers: int
    device: str
    model: PolicySettings

    @classmethod
    def from_config(cls, config: RunConfig) -> InferenceSettings:
        return cls(
            num_workers=config.rollout.num_workers,
            device=config.rollout.inference_device,
            model=PolicySettings.from_config(config.model),
        )
