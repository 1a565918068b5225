"""The run configuration: one typed dataclass per concern, composed into `RunConfig`, loaded from
YAML with dotted `key=value` overrides. Every check happens here, before Ray starts, and every
error names the key, the value and what is allowed."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from annotator.backends import BACKEND_KINDS
from annotator.calibration import CALIBRATIONS
from annotator.config import AnnotatorConfig
from annotator.prompts import GOALS as PROMPT_GOALS
from annotator.prompts import STYLES
from reward_models.registry import REWARD_MODELS as REWARD_MODEL_REGISTRY


class ConfigError(ValueError):
    """A config key or value the user must fix; the message says which and what is allowed."""


@dataclass
class EnvConfig:
    id: str = "NetHackScoreExtendedActions-v1"
    """Environment id: an ONI NetHack task, an NLE task or any registered gymnasium id."""
    num_envs_per_worker: int = 8
    """Environments stepped by each rollout worker, with one batched policy call per step."""
    max_episode_steps: int | None = None
    """Cut episodes after this many steps (None keeps the environment's own limit)."""
    normalize_captions: bool = False
    """Fold digits and whitespace in captions ("5 gold" ~ "7 gold"); off matches ONI."""


@dataclass
class RolloutConfig:
    num_workers: int = 2
    """Rollout workers (one CPU each under Ray)."""
    unroll_length: int = 32
    """Steps per fragment; also the learner's recurrence length."""
    unrolls_per_sample: int = 1
    """Unrolls a worker returns per call, side by side as one [unroll_length, k * num_envs]
    fragment: fewer, larger objects through Ray, for fast envs and cheap policies."""
    weights_sync_interval: int = 1
    """Send fresh policy weights to workers every this many learner updates."""
    node_resource: str | None = None
    """A custom Ray resource each worker asks 0.001 of, so that workers run only on nodes that
    declare it (the rollout nodes of cluster/launch/ declare `rogueray_rollout`)."""


@dataclass
class ModelConfig:
    kind: str = "auto"
    """Policy network: "nethack" (map crop + stats + message + GRU), "mlp", or "auto" by env."""
    hidden_size: int = 512
    """Width of the core (and of the MLP layers)."""
    recurrent: bool = True
    """Use a GRU core; the MLP policy defaults to feed-forward when "auto" picks it."""
    crop_size: int = 9
    """Side of the glyph crop centred on the hero (NetHack network)."""


@dataclass
class LearnerConfig:
    batch_size: int = 1024
    """Samples (steps x envs) per update; a multiple of the samples in a worker's fragment
    (rollout.unroll_length * env.num_envs_per_worker * rollout.unrolls_per_sample)."""
    learning_rate: float = 1e-4
    adam_eps: float = 1e-6
    gamma: float = 0.99
    clip_ratio: float = 0.1
    """PPO clip: ratios outside [1/(1+c), 1+c] get no gradient."""
    value_clip: float | None = 1.0
    value_coef: float = 0.5
    entropy_coef: float = 0.003
    max_grad_norm: float = 4.0
    num_epochs: int = 1
    """Passes over each batch (APPO uses 1; more trades policy lag for sample efficiency)."""
    normalize_advantages: bool = True
    device: str = "auto"
    """"auto" takes the GPU when one is visible, else the CPU; or "cpu", "cuda", "cuda:1"."""
    node_resource: str | None = None
    """A custom Ray resource the learner asks 0.001 of, so that it runs on a node that declares
    it (the learner node of cluster/launch/ declares `rogueray_learner`)."""


@dataclass
class RewardConfig:
    extrinsic_coef: float = 0.1
    reward_scale: float = 1.0
    """Extrinsic reward is scaled by this, then clipped to +-reward_clip, then weighted."""
    reward_clip: float = 10.0
    intrinsic_coef: float = 0.0
    """Weight of the LLM-derived intrinsic reward (0 = extrinsic only)."""
    count_exponent: float = 3.0
    """beta: the intrinsic reward of a caption seen N times this episode is scaled by N^-beta."""


@dataclass
class RewardModelConfig:
    name: str = "none"
    """Intrinsic reward model: "none", "hashing" (ONI-retrieval), "classification", "ranking"."""
    learning_rate: float = 1e-4
    batch_size: int = 256
    """Captions (classification) or pairs (ranking) per reward-model gradient step."""
    steps_per_label_batch: int = 32
    """Gradient steps each time labels arrive, while the data set is below switch_dataset_size."""
    switch_dataset_size: int = 25_000
    """From this many labels on, one gradient step per learner update instead (ONI's schedule)."""
    threshold: float | None = None
    """Reward threshold; None keeps the model's own (classification 0.5 on P(helpful), ranking
    -0.5 on the normalised output, hashing none)."""
    normalize: bool = True
    """Ranking: normalise and threshold as ONI intended; false reproduces the released code."""
    width: str = "oni"
    """Text network size: "oni" (ONI's char-CNN, ~470k parameters) or "small" (~4x cheaper per
    step; what a CPU learner can afford while labels stream in)."""
    device: str = "cpu"


@dataclass
class RunConfig:
    run_dir: str = "runs/default"
    """Where checkpoints, TensorBoard logs and the resolved config go; reused to resume."""
    total_env_steps: int = 20_000
    seed: int = 0
    mode: str = "ray"
    """"ray": workers and learner as Ray actors; "serial": everything in this process."""
    checkpoint_interval_s: float = 300.0
    keep_checkpoints: int = 3
    log_interval_s: float = 5.0
    ray_address: str | None = None
    """None starts a local Ray for this run; "auto" or host:port joins an existing cluster."""
    ray_num_cpus: int | None = None
    """Logical CPUs of the local Ray this command starts; default the machine's cores, or what
    the run needs if that is more. Set it higher to leave room for `rogueray scale`."""
    env: EnvConfig = field(default_factory=EnvConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    reward_model: RewardModelConfig = field(default_factory=RewardModelConfig)
    annotator: AnnotatorConfig = field(default_factory=AnnotatorConfig)


MODES = ("ray", "serial")
REWARD_MODELS = tuple(REWARD_MODEL_REGISTRY)
REWARD_MODEL_WIDTHS = ("oni", "small")
GOALS = tuple(PROMPT_GOALS)
MODEL_KINDS = ("auto", "nethack", "mlp")


def load_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> RunConfig:
    """Build a RunConfig from defaults, then a YAML file, then `a.b=value` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        data = _read_yaml(Path(path))
    for item in overrides:
        key, value = _parse_override(item)
        _set_dotted(data, key, value)
    config = _build(RunConfig, data, prefix="")
    validate(config)
    return config


def to_dict(config: RunConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def dump_yaml(config: RunConfig) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(
            f"config file {str(path)!r} does not exist (give a YAML file, e.g. configs/cartpole.yaml)"
        )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {str(path)!r} must hold a mapping of keys, not {type(data).__name__}"
        )
    return data


def _parse_override(item: str) -> tuple[str, Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(
            f"override {item!r} must look like key=value, e.g. learner.learning_rate=3e-4"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {key!r}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = prefix + unknown[0]
        raise ConfigError(
            f"unknown config key {key!r}; allowed keys here: {', '.join(prefix + f for f in fields)}"
        )
    kwargs = {}
    for name, value in data.items():
        key, hint = prefix + name, hints[name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {key!r} is a section; give a mapping, not {value!r}")
            kwargs[name] = _build(hint, value, key + ".")
        else:
            kwargs[name] = _coerce(key, value, hint)
    return cls(**kwargs)


def _coerce(key: str, value: Any, hint: Any) -> Any:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
    if hint in (int, float) and isinstance(value, str):
        value = _number(value)  # YAML 1.1 reads "3e-4" and "1e6" as strings
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"config key {key!r} must be {_type_name(hint)}, got {value!r}")


def _number(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def _type_name(hint: Any) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        hint, str(hint)
    )


def samples_per_fragment(config: RunConfig) -> int:
    """Samples (steps x envs) in one fragment a worker returns."""
    rollout = config.rollout
    return rollout.unroll_length * config.env.num_envs_per_worker * rollout.unrolls_per_sample


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
    per_fragment = samples_per_fragment(config)
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
