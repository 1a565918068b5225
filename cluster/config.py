"""The run configuration: one typed dataclass per concern, composed into `RunConfig`, loaded from
YAML with dotted `key=value` overrides. Unknown keys and wrong types fail here; values are then
checked by `cluster.validation`. Both happen before Ray starts, and every error names the key,
the value and what is allowed. Every key has a docstring (docs/config.md is generated from them
by `python -m cluster.config_docs`), and every number declares its domain in its type
(`Positive`, `Count`, ... from config_schema/domains.py), which one check enforces for all of them."""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from annotator.config import AnnotatorConfig
from cluster.validation import ConfigError, validate
from config_schema.domains import (
    Count,
    Discount,
    NonNegative,
    NonNegativeInt,
    OddCount,
    Positive,
    Seed,
)
from config_schema.keys import ConfigKey, config_keys, domain_error, sections
from reward_models.config import RewardModelConfig


@dataclass
class EnvConfig:
    id: str = "NetHackScoreExtendedActions-v1"
    """Environment id: an ONI NetHack task, an NLE task or any registered gymnasium id."""
    num_envs_per_worker: Count = 8
    """Environments stepped by each rollout worker, with one batched policy call per step."""
    max_episode_steps: Count | None = None
    """Cut episodes after this many steps (None keeps the environment's own limit)."""
    normalize_captions: bool = False
    """Fold digits and whitespace in captions ("5 gold" ~ "7 gold"); off matches ONI."""


@dataclass
class RolloutConfig:
    num_workers: Count = 2
    """Rollout workers (one CPU each under Ray)."""
    unroll_length: Count = 32
    """Steps per fragment; also the learner's recurrence length."""
    unrolls_per_sample: Count = 1
    """Unrolls a worker returns per call, side by side as one [unroll_length, k * num_envs]
    fragment: fewer, larger objects through Ray, for fast envs and cheap policies."""
    shared_observations: bool = True
    """Workers on the learner's node hand their observations over through shared memory
    (actors/observation_slots.py; Linux), not Ray's object store: 3.2 -> 1.1 ms of CPU per 2 MB
    fragment. Other nodes use the object store either way."""
    samples_in_flight: Count = 2
    """Samples requested from each worker at once (Ray mode): with 2 a worker starts its next
    sample while the driver takes the last one (RLlib's APPO asks 2 per env runner too); 1
    keeps the weights a sample acts with one sample fresher."""
    weights_sync_interval: Count = 1
    """Send fresh policy weights to workers every this many learner updates."""
    node_resource: str | None = None
    """A custom Ray resource each worker asks 0.001 of, so that workers run only on nodes that
    declare it (the rollout nodes of cluster/launch/ declare `rogueray_rollout`)."""
    inference: str = "auto"
    """Where the policy chooses actions: "worker" (each worker runs its own copy on its CPU),
    "shared" (one inference actor per node batches its workers' steps into one forward pass,
    SEED RL / Sample Factory style, on `inference_device`; Ray mode only; one more CPU per
    rollout node: a joined cluster's node gets its actor when its first worker asks, reserving
    no CPU, so leave one free there), or "auto": shared for the NetHack encoder on a local Ray
    with a CPU for it (1.4-2.0x faster on a 2-core laptop, benchmarks/inference_placement.py),
    worker for the MLP encoder (CartPole: 8.3x faster in the workers), in serial mode and on a
    joined cluster."""
    inference_device: str = "cpu"
    """Torch device of the shared inference actors: "cpu", or "cuda"/"cuda:N" (on the learner's
    node it then shares the GPU with a CUDA learner, half each)."""


@dataclass
class ModelConfig:
    kind: str = "auto"
    """Policy network: "nethack" (map crop + stats + message + GRU), "mlp", or "auto" by env."""
    hidden_size: Count = 512
    """Width of the core (and of the MLP layers)."""
    recurrent: bool = True
    """Use a GRU core; the MLP policy defaults to feed-forward when "auto" picks it."""
    crop_size: OddCount = 9
    """Side of the glyph crop centred on the hero (NetHack network)."""
    precision: str = "auto"
    """Compute precision of the policy's encoder, in workers and learner: "float32", "bfloat16"
    (autocast; weights, GRU state and loss stay float32), or "auto": bfloat16 for the NetHack
    network where the device computes it natively (CUDA with bfloat16, x86 with AVX512-BF16 or
    AMX), float32 otherwise."""


@dataclass
class LearnerConfig:
    batch_size: Count = 1024
    """Samples (steps x envs) per update; a multiple of the samples in a worker's fragment
    (rollout.unroll_length * env.num_envs_per_worker * rollout.unrolls_per_sample)."""
    learning_rate: Positive = 1e-4
    """Adam step size of the policy and value network."""
    adam_eps: Positive = 1e-6
    """Adam's epsilon (added to the denominator of each step)."""
    gamma: Discount = 0.99
    """Discount factor of the V-trace returns."""
    clip_ratio: Positive = 0.1
    """PPO clip: ratios outside [1/(1+c), 1+c] get no gradient."""
    value_clip: Positive | None = 1.0
    """Bound on how far the value may move from the behaviour value in the clipped value loss;
    None disables value clipping."""
    value_coef: NonNegative = 0.5
    """Weight of the value loss."""
    entropy_coef: NonNegative = 0.003
    """Weight of the entropy bonus (the loss subtracts entropy_coef * entropy)."""
    max_grad_norm: Positive = 4.0
    """Gradients are clipped to this global L2 norm before each step."""
    num_epochs: Count = 1
    """Passes over each batch (APPO uses 1; more trades policy lag for sample efficiency)."""
    normalize_advantages: bool = True
    """Standardise advantages over each batch's valid samples."""
    device: str = "auto"
    """"auto" takes the GPU when one is visible, else the CPU; or "cpu", "cuda", "cuda:1"."""
    node_resource: str | None = None
    """A custom Ray resource the learner asks 0.001 of, so that it runs on a node that declares
    it (the learner node of cluster/launch/ declares `rogueray_learner`)."""


@dataclass
class RewardConfig:
    extrinsic_coef: NonNegative = 0.1
    """Weight of the (scaled, clipped) extrinsic reward; 0 trains on intrinsic reward alone."""
    reward_scale: Positive = 1.0
    """Extrinsic reward is scaled by this, then clipped to +-reward_clip, then weighted."""
    reward_clip: Positive = 10.0
    """Bound on the scaled extrinsic reward: it is clipped to [-reward_clip, reward_clip]."""
    intrinsic_coef: NonNegative = 0.0
    """Weight of the LLM-derived intrinsic reward (0 = extrinsic only)."""
    count_exponent: NonNegative = 3.0
    """beta: the intrinsic reward of a caption seen N times this episode is scaled by N^-beta."""


@dataclass
class EvaluationConfig:
    interval_env_steps: NonNegativeInt | None = None
    """Evaluate the current policy every this many env steps, in the driver process (no Ray),
    under eval/* in TensorBoard with a short clip; None or 0 never evaluates."""
    episodes: Count = 4
    """Episodes per evaluation (seeds seed + 1000000 + i, the same at every evaluation)."""
    greedy: bool = True
    """Take the most likely action (argmax); false samples from the policy as training does."""
    max_episode_steps: Count | None = None
    """Cut evaluation episodes after this many steps (None: env.max_episode_steps)."""
    clip_frames: NonNegativeInt = 32
    """Frames of the clip (the first steps of one more episode) put into TensorBoard as an
    animated GIF under eval/clip at each evaluation; 0 records none."""


@dataclass
class RunConfig:
    run_dir: str = "runs/default"
    """Where checkpoints, TensorBoard logs and the resolved config go; reused to resume."""
    total_env_steps: Count = 20_000
    """Environment steps (summed over all environments) after which training stops; raise it
    and train or resume again to continue a finished run."""
    seed: Seed = 0
    """Seeds torch, numpy and every environment (each gets its own NetHack core and display
    seeds), so that a run is reproducible."""
    mode: str = "ray"
    """"ray": workers and learner as Ray actors; "serial": everything in this process."""
    checkpoint_interval_s: Positive = 300.0
    """Seconds between checkpoints (one is also written when the run ends)."""
    keep_checkpoints: Count = 3
    """Newest checkpoints kept in run_dir; older ones are deleted."""
    log_interval_s: Positive = 5.0
    """Seconds between console progress lines."""
    ray_address: str | None = None
    """None starts a local Ray for this run; "auto" or host:port joins an existing cluster."""
    ray_num_cpus: Count | None = None
    """Logical CPUs of the local Ray this command starts; default the CPUs this process may use
    (its affinity and a container's CPU quota, not the host's cores), or what the run needs if
    that is more. Set it higher to leave room for `rogueray scale`."""
    env: EnvConfig = field(default_factory=EnvConfig)
    """The environment (section env.*)."""
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    """The rollout workers (section rollout.*)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The policy network (section model.*)."""
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    """The APPO / V-trace learner (section learner.*)."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """How extrinsic and intrinsic reward combine (section reward.*)."""
    reward_model: RewardModelConfig = field(default_factory=RewardModelConfig)
    """The intrinsic reward model trained on the LLM's labels (section reward_model.*)."""
    annotator: AnnotatorConfig = field(default_factory=AnnotatorConfig)
    """The LLM judge (section annotator.*)."""
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    """Periodic evaluation during training (section evaluation.*)."""

    @property
    def samples_per_fragment(self) -> int:
        """Samples (steps x envs) in one fragment a worker returns."""
        rollout = self.rollout
        return rollout.unroll_length * self.env.num_envs_per_worker * rollout.unrolls_per_sample


def load_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> RunConfig:
    """Build a RunConfig from defaults, then a YAML file, then `a.b=value` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        data = _read_yaml(_shipped_if_missing(Path(path)))
    for item in overrides:
        key, value = _parse_override(item)
        _set_dotted(data, key, value)
    config = _build(RunConfig, data, prefix="")
    validate(config)
    return config


def configs_dir() -> Path:
    """The configs that ship with rogueray: the `rogueray_configs` package a wheel installs them
    as, or configs/ of a clone (and of an editable install made before that package existed)."""
    try:
        import rogueray_configs
    except ImportError:
        return Path(__file__).resolve().parent.parent / "configs"
    return Path(rogueray_configs.__file__).parent


def shipped_config(name: str) -> Path:
    """A shipped config by its path below configs/, e.g. "default.yaml", "oni/oracle-ranking.yaml"."""
    return configs_dir() / name


def _shipped_if_missing(path: Path) -> Path:
    """`configs/oni/x.yaml` outside a clone (pip install rogueray) means the shipped one."""
    if path.exists() or path.is_absolute() or path.parts[:1] != ("configs",):
        return path
    shipped = shipped_config(str(Path(*path.parts[1:]))) if len(path.parts) > 1 else path
    return shipped if shipped.is_file() else path


def to_dict(config: RunConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def dump_yaml(config: RunConfig) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def _read_yaml(path: Path) -> dict[str, Any]:
    if path.is_dir() and (path / "config.yaml").is_file():
        raise ConfigError(
            f"{str(path)!r} is a run directory, not a config file; to continue that run: "
            f"rogueray resume {path}"
        )
    if path.is_dir():
        raise ConfigError(
            f"config {str(path)!r} is a directory, not a YAML file (e.g. configs/cartpole.yaml)"
        )
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
            f"unknown config key {key!r}{_did_you_mean(key)}; "
            f"allowed keys here: {', '.join(prefix + f for f in fields)}"
        )
    keys = {k.name: k for k in config_keys(cls, prefix) if k.owner is cls}
    kwargs = {}
    for name, value in data.items():
        key, hint = prefix + name, hints[name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {key!r} is a section; give a mapping, not {value!r}")
            kwargs[name] = _build(hint, value, key + ".")
        else:
            kwargs[name] = _coerce(keys[name], value)
    return cls(**kwargs)


def _did_you_mean(key: str) -> str:
    """The ' (did you mean ...?)' hint for a misspelt key, or an empty string."""
    known = [k.key for k in config_keys(RunConfig)]
    known += [s for s in sections(RunConfig) if s and not key.startswith(s + ".")]
    section, _, leaf = key.rpartition(".")
    siblings = {k.rpartition(".")[2]: k for k in known if k.rpartition(".")[0] == section}
    matches = [siblings[m] for m in difflib.get_close_matches(leaf, siblings, n=1, cutoff=0.7)]
    if not matches:  # the right name in the wrong section: num_workers -> rollout.num_workers
        matches = [k for k in known if k.rpartition(".")[2] == leaf]
    if not matches:
        matches = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
    return f" (did you mean {matches[0]!r}?)" if matches else ""


def _coerce(key: ConfigKey, value: Any) -> Any:
    if value is None and key.optional:
        return None
    hint = key.type
    if key.numeric:
        if isinstance(value, str):
            value = _number(value)  # YAML 1.1 reads "3e-4", "1e6" and "nan" as strings
        if hint is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if hint is int and isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, hint) and not isinstance(value, bool):
            return value  # the domain is checked once the whole config is built
        raise ConfigError(domain_error(key, value))
    if isinstance(value, hint):
        return value
    raise ConfigError(f"config key {key.key!r} must be {_type_name(hint)}, got {value!r}")


def _number(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def _type_name(hint: Any) -> str:
    return {bool: "true or false", str: "a string"}.get(hint, str(hint))
