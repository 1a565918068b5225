"""Checks of a loaded run config's values and invariants, before Ray starts: every error names
the key, the value and what is allowed. The allowed values come from their owners (annotator
backends, prompts, calibrations, reward models) so a new one needs no second edit here."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from annotator.backends import BACKEND_KINDS
from annotator.calibration import CALIBRATIONS
from annotator.prompts import GOALS as PROMPT_GOALS
from annotator.prompts import STYLES
from reward_models.registry import REWARD_MODELS as REWARD_MODEL_REGISTRY

if TYPE_CHECKING:
    from cluster.config import RunConfig


class ConfigError(ValueError):
    """A config key or value the user must fix; the message says which and what is allowed."""


MODES = ("ray", "serial")
REWARD_MODELS = tuple(REWARD_MODEL_REGISTRY)
REWARD_MODEL_WIDTHS = ("oni", "small")
GOALS = tuple(PROMPT_GOALS)
MODEL_KINDS = ("auto", "nethack", "mlp")


def validate(config: RunConfig) -> None:
    """Check values and invariants; raises ConfigError naming the key."""
    from actors.envs import validate_env_id

    _positive(config.total_env_steps, "total_env_steps")
    _one_of(config.mode, "mode", MODES)
    _one_of(config.model.kind, "model.kind", MODEL_KINDS)
    _positive(config.env.num_envs_per_worker, "env.num_envs_per_worker")
    _positive(config.rollout.num_workers, "rollout.num_workers")
    _positive(config.rollout.unroll_length, "rollout.unroll_length")
    _positive(config.rollout.unrolls_per_sample, "rollout.unrolls_per_sample")
    _positive(config.rollout.weights_sync_interval, "rollout.weights_sync_interval")
    _positive(config.model.hidden_size, "model.hidden_size")
    _positive(config.learner.num_epochs, "learner.num_epochs")
    _positive(config.keep_checkpoints, "keep_checkpoints")
    if config.ray_num_cpus is not None:
        _positive(config.ray_num_cpus, "ray_num_cpus")
    for key, name in (
        ("rollout.node_resource", config.rollout.node_resource),
        ("learner.node_resource", config.learner.node_resource),
        ("annotator.node_resource", config.annotator.node_resource),
    ):
        _check_resource_name(key, name)
    if config.model.crop_size < 1 or config.model.crop_size % 2 == 0:
        raise ConfigError(
            f"config key 'model.crop_size' must be an odd positive integer, got {config.model.crop_size}"
        )
    for key in ("learning_rate", "adam_eps", "max_grad_norm"):
        _positive(getattr(config.learner, key), f"learner.{key}")
    if not 0.0 < config.learner.gamma <= 1.0:
        raise ConfigError(
            f"config key 'learner.gamma' must be in (0, 1], got {config.learner.gamma}"
        )
    per_fragment = config.samples_per_fragment
    if config.learner.batch_size < per_fragment or config.learner.batch_size % per_fragment:
        raise ConfigError(
            f"config key 'learner.batch_size' ({config.learner.batch_size}) must be a positive "
            "multiple of rollout.unroll_length * env.num_envs_per_worker * "
            f"rollout.unrolls_per_sample = {per_fragment}"
        )
    if config.reward.count_exponent < 0:
        raise ConfigError(
            f"config key 'reward.count_exponent' must be >= 0, got {config.reward.count_exponent}"
        )
    _check_device(config.learner.device)
    _validate_intrinsic(config)
    _check_run_dir(config.run_dir)
    try:
        validate_env_id(config.env.id)
    except ValueError as exc:
        raise ConfigError(f"config key 'env.id': {exc}") from None


def _validate_intrinsic(config: RunConfig) -> None:
    rm, ann = config.reward_model, config.annotator
    _one_of(rm.name, "reward_model.name", REWARD_MODELS)
    _one_of(rm.width, "reward_model.width", REWARD_MODEL_WIDTHS)
    for key in ("learning_rate", "batch_size", "steps_per_label_batch", "switch_dataset_size"):
        _positive(getattr(rm, key), f"reward_model.{key}")
    if rm.name != "none" and config.reward.intrinsic_coef <= 0:
        raise ConfigError(
            f"reward_model.name={rm.name!r} needs reward.intrinsic_coef > 0 (got "
            f"{config.reward.intrinsic_coef}); set it (ONI used 0.4) or reward_model.name=none"
        )
    _one_of(ann.backend, "annotator.backend", BACKEND_KINDS)
    _one_of(ann.style, "annotator.style", STYLES)
    _one_of(ann.goal, "annotator.goal", GOALS)
    _one_of(ann.calibration, "annotator.calibration", CALIBRATIONS)
    if not 0.0 < ann.calibration_quantile < 1.0:
        raise ConfigError(
            f"config key 'annotator.calibration_quantile' must be in (0, 1), got {ann.calibration_quantile}"
        )
    for key in (
        "calibration_window",
        "batch_size",
        "max_in_flight",
        "max_backlog",
        "request_timeout_s",
    ):
        _positive(getattr(ann, key), f"annotator.{key}")
    if ann.max_retries < 0:
        raise ConfigError(f"config key 'annotator.max_retries' must be >= 0, got {ann.max_retries}")
    if ann.backend == "openai":
        _check_url(ann.base_url)
    elif rm.name != "none" and ann.node_resource is None:
        _check_model(ann.model)  # else it lives on the LLM node, where the annotator checks it


def _check_model(model: str) -> None:
    """The embedded model's name, an HF model folder or a .gguf file (checked, not loaded)."""
    if model == "smollm2-135m":
        return
    path = Path(model).expanduser()
    if (path / "config.json").is_file() or (path.is_file() and path.suffix.lower() == ".gguf"):
        return
    raise ConfigError(
        f"config key 'annotator.model': {model!r} is not usable; give 'smollm2-135m' (the embedded "
        "model), a folder with an HF model (containing config.json) or a .gguf file"
    )


def _check_resource_name(key: str, name: str | None) -> None:
    if name is None:
        return
    if not name or any(c.isspace() for c in name) or name in ("CPU", "GPU", "memory"):
        raise ConfigError(
            f"config key {key!r} must name a custom Ray resource (e.g. rogueray_rollout), "
            f"got {name!r}"
        )


def _check_url(url: str | None) -> None:
    from urllib.parse import urlparse

    parsed = urlparse(url or "")
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(
            f"config key 'annotator.base_url' must be an http(s) URL of an OpenAI-compatible server, "
            f"e.g. http://127.0.0.1:8000/v1; got {url!r}"
        )


def _positive(value: float, key: str) -> None:
    if value is None or value <= 0:
        raise ConfigError(f"config key {key!r} must be > 0, got {value}")


def _one_of(value: str, key: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"config key {key!r} must be one of {', '.join(allowed)}; got {value!r}")


def _check_device(device: str) -> None:
    if (
        device in ("auto", "cpu")
        or device == "cuda"
        or (device.startswith("cuda:") and device[5:].isdigit())
    ):
        return
    raise ConfigError(
        f"config key 'learner.device' must be auto, cpu, cuda or cuda:N; got {device!r}"
    )


def _check_run_dir(run_dir: str) -> None:
    path = Path(run_dir)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"config key 'run_dir': {run_dir!r} exists and is not a directory")
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(
            f"config key 'run_dir': {run_dir!r} cannot be created: {str(probe)!r} is a file"
        )
    import os

    if not os.access(probe, os.W_OK):
        raise ConfigError(
            f"config key 'run_dir': {run_dir!r} is not writable (no write permission on {str(probe)!r})"
        )


def saved_config(run_dir: str | Path) -> Path:
    """The config.yaml a run wrote into `run_dir`; ConfigError when it is not a run directory."""
    saved = Path(run_dir) / "config.yaml"
    if not saved.is_file():
        raise ConfigError(
            f"{str(run_dir)!r} is not a rogueray run directory (no config.yaml in it); "
            "start a run with `rogueray train`"
        )
    return saved
