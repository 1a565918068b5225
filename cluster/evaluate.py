"""`rogueray evaluate`: run a checkpoint's policy greedily (argmax) and sampled over N episodes,
in this process and on the CPU (no Ray), and report per-task metrics with 95 % confidence
intervals: extrinsic return, success rate (tasks with a goal), max depth (NetHack), episode
length, and the intrinsic return the checkpoint's reward model gives now (the training rule:
c_int * r_int(caption) * N_ep(caption)^-beta, summed over the episode).

Both modes play the same episode seeds (`seed + i` for episode i), so they are compared on the
same dungeons. Writes episodes.csv (one row per episode), summary.json and summary.csv."""

from __future__ import annotations

import csv
import json
import os
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from cluster.config import ConfigError, RunConfig, load_config
from cluster.console import counted
from cluster.evaluate_play import MODES, EpisodeResult, play
from cluster.evaluate_stats import mean_ci

METRICS = ("return_extrinsic", "success", "max_depth", "length", "return_intrinsic")
SUMMARY_NAME = {"success": "success_rate"}  # the mean of 0/1 successes
EPISODE_FIELDS = ("mode", "episode", "seed", *METRICS, "truncated")


class EvaluationError(Exception):
    """Something the user must fix (the CLI prints it and exits 2)."""


@dataclass
class Loaded:
    config: RunConfig
    state: dict[str, Any]
    checkpoint: Path
    run_dir: Path


def load_for_evaluation(target: str | Path, env_id: str | None = None) -> Loaded:
    """The checkpoint (newest of a run directory, or the file given), read through
    cluster/checkpoint.py onto the CPU, and the run's config (config.yaml beside it, else the
    copy inside the checkpoint) set up for a CPU evaluation."""
    from cluster.checkpoint import find_checkpoint, read_checkpoint

    path = Path(target)
    if path.is_dir():
        run_dir = path
        found = find_checkpoint(path)
        if found.state is None:
            why = "; ".join(f"{p.name}: {reason}" for p, reason in found.unreadable)
            raise EvaluationError(
                f"no loadable checkpoint in {path / 'checkpoints'}" + (f" ({why})" if why else "")
            )
        state, checkpoint = found.state, found.path
    elif path.is_file():
        run_dir = path.parent.parent  # <run_dir>/checkpoints/checkpoint_*.pt
        try:
            state = read_checkpoint(path)
        except Exception as exc:  # noqa: BLE001 - the reason goes to the user
            import zipfile

            text = str(exc).strip()
            first = text.splitlines()[0].split(". ")[0] if text else type(exc).__name__
            if not zipfile.is_zipfile(path):  # every torch.save file is a zip archive
                first = "not a PyTorch checkpoint file"
            raise EvaluationError(
                f"cannot read {path} as a rogueray checkpoint ({first}); give a run directory or "
                "one of its checkpoints/checkpoint_*.pt files"
            ) from None
        checkpoint = path
    else:
        raise EvaluationError(f"{str(path)!r} is neither a run directory nor a checkpoint file")
    config = _config_for(run_dir, state, env_id)
    return Loaded(config, state, checkpoint, run_dir)


def _config_for(run_dir: Path, state: dict[str, Any], env_id: str | None) -> RunConfig:
    import torch

    overrides = [
        f"run_dir={tempfile.gettempdir()}",  # the run's own may be another machine's path
        "learner.device=cpu",
        "reward_model.device=cpu" if not torch.cuda.is_available() else "",
    ]
    if env_id:
        overrides.append(f"env.id={env_id}")
    overrides = [o for o in overrides if o]
    saved = run_dir / "config.yaml"
    try:
        if saved.is_file():
            return load_config(saved, overrides)
        if isinstance(state.get("config"), dict):
            with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
                yaml.safe_dump(state["config"], handle)
            try:
                return load_config(handle.name, overrides)
            finally:
                os.unlink(handle.name)
    except ConfigError as exc:
        raise EvaluationError(f"the run's config does not load here: {exc}") from None
    raise EvaluationError(
        f"no config for this checkpoint: neither {saved} nor a config inside the checkpoint"
    )


def prepare(
    target: str | Path, env_id: str | None, episodes: int, max_episode_steps: int | None
) -> tuple[Loaded, Any, Any, RunConfig]:
    """What evaluate and replay share before playing: the episode count checked (EvaluationError),
    torch on a few threads, the checkpoint's policy and reward model on CPU, and its config with
    the episode cap (`max_episode_steps`, or the run's own) applied."""
    import loky
    import torch

    if episodes < 1:
        raise EvaluationError(f"--episodes must be >= 1, got {episodes}")
    torch.set_num_threads(min(4, loky.cpu_count()))
    loaded = load_for_evaluation(target, env_id)
    policy, reward_model = build_policy_and_reward(loaded)
    config = loaded.config
    cap = max_episode_steps if max_episode_steps is not None else config.env.max_episode_steps
    return (
        loaded,
        policy,
        reward_model,
        replace(config, env=replace(config.env, max_episode_steps=cap)),
    )


def build_policy_and_reward(loaded: Loaded):
    """The policy (eval mode, CPU) and the reward model (None without one) of the checkpoint."""
    from cluster.annotation import build_reward_model, wants_annotator
    from cluster.components import env_spec, make_policy

    config = loaded.config
    try:
        spec = env_spec(config)
    except ConfigError as exc:
        raise EvaluationError(str(exc)) from None
    policy = make_policy(config, spec)
    learner_state = loaded.state["learner"]
    try:
        policy.load_state_dict(learner_state["policy"])
    except RuntimeError as exc:
        raise EvaluationError(
            f"the checkpoint's policy does not fit {config.env.id} (observations or actions "
            f"differ from the env it was trained on): {str(exc).splitlines()[0]}"
        ) from None
    policy.eval()
    reward_model = None
    if wants_annotator(config):
        reward_model = build_reward_model(config)
        reward_model.load_state_dict(learner_state["reward_model"])
    return policy, reward_model


def summarize(results: list[EpisodeResult]) -> dict[str, dict[str, dict]]:
    """{mode: {metric: Estimate as dict}} for the metrics that apply (None values left out)."""
    out: dict[str, dict[str, dict]] = {}
    for mode in MODES:
        rows = [r for r in results if r.mode == mode]
        if not rows:
            continue
        out[mode] = {}
        for metric in METRICS:
            estimate = mean_ci([getattr(r, metric) for r in rows])
            if estimate is not None:
                out[mode][SUMMARY_NAME.get(metric, metric)] = estimate.as_dict()
    return out


def default_out_dir(loaded: Loaded) -> Path:
    name = loaded.checkpoint.stem
    trained_on = loaded.state.get("config", {}).get("env", {}).get("id")
    if trained_on and trained_on != loaded.config.env.id:
        name += f"-{loaded.config.env.id}"
    return loaded.run_dir / "evaluation" / name


def write_outputs(
    out_dir: Path, results: list[EpisodeResult], summary: dict, meta: dict[str, Any]
) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "episodes": out_dir / "episodes.csv",
        "json": out_dir / "summary.json",
        "csv": out_dir / "summary.csv",
    }
    with open(paths["episodes"], "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=EPISODE_FIELDS)
        writer.writeheader()
        for result in results:
            row = asdict(result)
            writer.writerow({k: "" if row[k] is None else row[k] for k in EPISODE_FIELDS})
    paths["json"].write_text(json.dumps({**meta, "modes": summary}, indent=2) + "\n")
    with open(paths["csv"], "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["mode", "metric", "n", "mean", "std", "ci95_low", "ci95_high"])
        for mode, metrics in summary.items():
            for metric, e in metrics.items():
                writer.writerow(
                    [mode, metric, e["n"], e["mean"], e["std"], e["ci_low"], e["ci_high"]]
                )
    return paths


def evaluate(
    target: str | Path,
    *,
    episodes: int = 20,
    env_id: str | None = None,
    seed: int = 1_000_000_007,
    num_envs: int = 8,
    max_episode_steps: int | None = None,
    modes: tuple[str, ...] = MODES,
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> tuple[dict[str, Any], dict[str, Path]]:
    """Evaluate; returns the summary JSON's content and the paths written. `progress`: a bar on
    a terminal, else a line after 5 s and every 30 s on stderr (cluster/progress.py); False:
    neither."""
    from cluster.progress import Progress, loading_note

    with loading_note("evaluate", target, enabled=progress):
        loaded, policy, reward_model, config = prepare(target, env_id, episodes, max_episode_steps)
    cap = config.env.max_episode_steps
    results: list[EpisodeResult] = []
    total = episodes * len(modes)
    with Progress(total, desc="evaluate", unit="episode", enabled=progress) as bar:
        for mode in modes:
            bar.note(mode)
            results += play(
                config,
                policy,
                reward_model,
                mode=mode,
                episodes=episodes,
                seed=seed,
                num_envs=num_envs,
                max_episode_steps=cap,
                on_episode=lambda _: bar.update(1),
                on_steps=lambda steps, mode=mode: bar.note(f"{mode}, {steps:,} env steps"),
            )
    summary = summarize(results)
    counters = loaded.state.get("counters", {})
    meta = {
        "checkpoint": str(loaded.checkpoint),
        "env_steps": int(counters.get("env_steps", 0)),
        "env": config.env.id,
        "max_episode_steps": cap,
        "reward_model": config.reward_model.name,
        "episodes_per_mode": episodes,
        "first_seed": seed,
        "confidence_interval": "95 % Student t interval of the mean over episodes",
    }
    out = Path(out_dir) if out_dir is not None else default_out_dir(loaded)
    paths = write_outputs(out, results, summary, meta)
    return {**meta, "modes": summary}, paths


def format_summary(report: dict[str, Any]) -> str:
    lines = [
        f"{report['checkpoint']} ({report['env_steps']:,d} env steps) on {report['env']}: "
        f"{counted(report['episodes_per_mode'], 'episode')} per mode, mean [95 % CI]"
    ]
    for mode, metrics in report["modes"].items():
        parts = []
        for metric, e in metrics.items():
            parts.append(f"{metric} {e['mean']:.3f} [{e['ci_low']:.3f}, {e['ci_high']:.3f}]")
        lines.append(f"  {mode:<8} " + " | ".join(parts))
    return "\n".join(lines)
