"""`rogueray replay RUN_DIR|CHECKPOINT`: play a checkpoint's policy for a few episodes (in this
process, on the CPU, as `rogueray evaluate` does) and record what it did:

- NetHack: NLE's own ttyrec of every episode (`episode_000.ttyrec3.bz2`; NLE writes it itself
  through its `savedir`/`save_ttyrec_every` options; NLE's converter reads it, see
  `read_ttyrec`) and the same game as a classic ttyrec (`episode_000.ttyrec`, for ttyrec
  players: `ttyplay`, `ipbt`, `python -m nle.scripts.ttyplay -1 FILE`), and an animated GIF of the terminal (`tty_chars` and
  `tty_colors` drawn with Pillow in a monospace font), one frame per step, with a status line:
  the step, the action, the reward, the caption, the LLM label the run's label store holds for
  it and the intrinsic reward the checkpoint's reward model gives it (computed as training and
  `rogueray evaluate` compute it);
- any other gymnasium env: the GIF of its `render_mode="rgb_array"` frames with the same status
  line (no ttyrec);
- an MP4 beside each GIF when imageio can find ffmpeg (`pip install imageio-ffmpeg`);
- a transcript per episode (`episode_000.txt`, tab-separated: step, action, caption, label,
  r_int, reward; `read_transcript` reads it back). NetHack's empty message is written
  `(no message)`, as the LLM was asked about it; the label is the one the run's label store
  holds for the caption, `pending` where it holds none, and empty for a step without a caption
  (an env without messages); r_int is empty without a reward model.

Checkpoint and policy loading are `cluster.evaluate`'s; the frames and videos
`cluster/replay_render.py`'s; the ttyrec conversion `cluster/ttyrec.py`'s."""

from __future__ import annotations

import os
import shutil
import sqlite3
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from cluster.console import counted
from cluster.replay_render import Renderer, Step, shown_caption, write_videos
from cluster.ttyrec import classic_ttyrec

TTY_KEYS = ("tty_chars", "tty_colors")
TRANSCRIPT_FIELDS = ("step", "action", "caption", "label", "r_int", "reward")
DEFAULT_SEED = 1_000_000_007  # `rogueray evaluate`'s: episode i of both plays the same game


@dataclass
class EpisodeRecord:
    index: int
    seed: int
    steps: list[Step] = field(default_factory=list)
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def return_extrinsic(self) -> float:
        return float(sum(s.reward for s in self.steps))


def caption_labels(loaded) -> dict[str, float]:
    """{caption: label} of the run's label store (empty without a store): the group the run
    labels under (model id + prompt version), else, for a server's labels, keyed by the model
    the server named, the largest group of this prompt version."""
    from annotator.prompts import classification_prompt
    from cluster.annotation import annotation_kind, model_id, wants_annotator

    config = loaded.config
    if not wants_annotator(config) or annotation_kind(config) != "caption":
        return {}
    ann = config.annotator
    path = Path(ann.label_store) if ann.label_store else loaded.run_dir / "labels.sqlite"
    if not path.is_file():
        return {}
    version = classification_prompt("a", goal=ann.goal, style=ann.style).version
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=60)
    try:
        groups = conn.execute(
            "SELECT model_id, COUNT(*) FROM caption_labels WHERE prompt_version = ? "
            "GROUP BY model_id ORDER BY 2 DESC",
            (version,),
        ).fetchall()
        names = [name for name, _ in groups]
        if not names:
            return {}
        chosen = model_id(config) if model_id(config) in names else names[0]
        rows = conn.execute(
            "SELECT caption, value FROM caption_labels WHERE model_id = ? AND prompt_version = ?",
            (chosen, version),
        ).fetchall()
    except sqlite3.Error:
        return {}
    finally:
        conn.close()
    return {caption: float(value) for caption, value in rows}


def _recording_env(env_id: str, max_episode_steps: int | None, savedir: Path | None):
    """The env `actors.envs.make_env` builds, plus what a recording needs: NetHack with the tty
    observations and NLE's ttyrec in `savedir`; another env with rgb_array rendering."""
    import gymnasium as gym

    from actors import envs, nle_tasks

    if envs.is_nethack(env_id):
        spec = gym.spec(envs._registry_name(env_id))
        if max_episode_steps is not None:
            spec = replace(spec, kwargs={**spec.kwargs, "max_episode_steps": max_episode_steps})
        # NetHack writes its score files beside the ttyrec (prefix nle.<pid>.) when a game ends;
        # NLE creates only the xlogfile, and the game's last screen would say the others are
        # missing ("Is NetHack installed correctly?").
        savedir.mkdir(parents=True, exist_ok=True)
        for name in ("logfile", "record"):
            (savedir / f"nle.{os.getpid()}.{name}").touch()
        env = gym.make(
            spec,
            observation_keys=(*nle_tasks.OBSERVATION_KEYS, *TTY_KEYS),
            fix_moon_phase=True,
            savedir=str(savedir),
            save_ttyrec_every=1,
        )
        if not isinstance(env.unwrapped, nle_tasks.OniTask):
            env = envs.NetHackInfo(env)
        return env, True
    # pygame's renderer draws off screen: no sound card or display needed
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    env = gym.make(env_id, max_episode_steps=max_episode_steps, render_mode="rgb_array")
    return envs._vector_observations(env, env_id), False


def _action_name(env, action: int) -> str:
    actions = getattr(env.unwrapped, "actions", None)
    if actions is None:
        return str(action)
    chosen = actions[action]
    name = getattr(chosen, "name", str(chosen))
    if sum(getattr(a, "name", None) == name for a in actions) > 1:  # W and the longer W
        kind = type(chosen).__name__
        name = f"{name}_far" if kind.endswith("Longer") else f"{kind}.{name}"
    return f"{name}({action})"


def _episode_intrinsic(config, reward_model, rewards: list[float], captions: list) -> list:
    """Per-step intrinsic reward as training gives it (learner.reward.training_reward:
    c_int * r_int(caption) * N_ep(caption)^-beta), or None per step without a reward model."""
    if reward_model is None:
        return [None] * len(rewards)
    from learner.reward import episode_intrinsic

    per_step = episode_intrinsic(
        captions=captions,
        rewards=rewards,
        reward_config=config.reward,
        read_rewards=reward_model.read_rewards,
    )
    return [float(x) for x in per_step]


def _play_episode(
    config, policy, reward_model, env, index, seed, mode, labels, rng, note=lambda text: None
):
    """One episode: its Step rows and the raw frames (tty arrays or rgb) after each step;
    `note(text)` hears the steps played so far."""
    import torch

    from actors.captions import normalize_caption
    from cluster.evaluate_play import choose_actions

    obs, _ = env.reset(seed=seed)
    state = policy.initial_state(1)
    starts = torch.zeros(1, 1, dtype=torch.bool)
    record = EpisodeRecord(index, seed)
    raw_frames, rewards, captions, actions = [], [], [], []
    done = False
    with torch.no_grad():
        while not done:
            batch = {
                k: torch.from_numpy(np.asarray(v)[None, None])
                for k, v in obs.items()
                if k not in TTY_KEYS
            }
            logits, _, state = policy(batch, state, starts)
            action = int(choose_actions(logits[0, 0].numpy(), mode, rng))
            obs, reward, term, trunc, info = env.step(action)
            done = term or trunc
            caption = info.get("caption")
            if caption is not None and config.env.normalize_captions:
                caption = normalize_caption(caption)
            rewards.append(float(reward))
            note(f"episode {index}: {counted(len(rewards), 'step')} played")
            captions.append(caption)
            actions.append(_action_name(env, action))
            if "tty_chars" in obs:
                raw_frames.append((obs["tty_chars"].copy(), obs["tty_colors"].copy()))
            else:
                raw_frames.append(_rendered(env, obs))
    r_int = _episode_intrinsic(config, reward_model, rewards, captions)
    for t, (action, caption, reward) in enumerate(zip(actions, captions, rewards, strict=True)):
        label = labels.get(caption) if caption is not None else None
        record.steps.append(Step(t + 1, action, caption, label, r_int[t], reward))
    return record, raw_frames


def _rendered(env, obs: dict):
    """The env's rgb_array frame; without its renderer's dependency (CartPole's is pygame:
    gymnasium[classic-control]) the observation vector as text, said once."""
    from gymnasium.error import DependencyNotInstalled

    if not getattr(env, "_replay_no_render", False):
        try:
            return env.render()
        except DependencyNotInstalled as exc:
            env._replay_no_render = True
            print(
                f"[rogueray] replay: drawing observations as text: {exc} (rogueray's "
                "`pip install -e '.[video]'` includes gymnasium[classic-control])"
            )
    vector = np.asarray(obs.get("vector", []), np.float32)
    return "observation " + " ".join(f"{x:+.3f}" for x in vector[:12])


def write_transcript(path: Path, record: EpisodeRecord) -> None:
    """A row of TRANSCRIPT_FIELDS per step, tab-separated (the module docstring says how)."""
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\t".join(TRANSCRIPT_FIELDS) + "\n")
        for s in record.steps:
            caption, label = transcript_caption_and_label(s)
            r_int = "" if s.r_int is None else f"{s.r_int:.6f}"
            handle.write(f"{s.step}\t{s.action}\t{caption}\t{label}\t{r_int}\t{s.reward:g}\n")


def transcript_caption_and_label(step: Step) -> tuple[str, str]:
    """A step's caption and label fields. Without a caption, both empty: there is nothing to
    label. NetHack's empty message is a caption the LLM labels like any other: written as the
    LLM was asked about it (`shown_caption`), so that its label never reads as the label of a
    step without a caption. A caption the store holds no label for reads `pending`, as on the
    GIF, never a number."""
    if step.caption is None:
        return "", ""
    caption = shown_caption(step.caption).replace("\t", " ").replace("\n", " ")
    return caption, "pending" if step.label is None else f"{step.label:.4f}"


def read_transcript(path: str | Path) -> list[dict[str, str]]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]


def replay(
    target: str | Path,
    *,
    episodes: int = 1,
    out_dir: str | Path | None = None,
    env_id: str | None = None,
    seed: int = DEFAULT_SEED,
    mode: str = "sampled",
    max_episode_steps: int | None = None,
    fps: float = 8.0,
    progress: bool = True,
) -> tuple[Path, list[EpisodeRecord]]:
    """Record `episodes` episodes of the checkpoint's policy; returns the output folder and the
    records (with the paths written for each episode). `progress`: a bar on a terminal, else a
    line after 5 s and every 30 s on stderr (cluster/progress.py); False: neither."""
    from cluster.evaluate import EvaluationError, prepare
    from cluster.progress import Progress, loading_note

    if mode not in ("greedy", "sampled"):
        raise EvaluationError(f"--mode must be greedy or sampled, got {mode!r}")
    with loading_note("replay", target, enabled=progress):
        loaded, policy, reward_model, config = prepare(target, env_id, episodes, max_episode_steps)
        default = loaded.run_dir / "replay" / loaded.checkpoint.stem
        out = Path(out_dir) if out_dir is not None else default
        out.mkdir(parents=True, exist_ok=True)
        labels = caption_labels(loaded)
        renderer = Renderer()
        savedir = out / ".ttyrec-in-progress"
        shutil.rmtree(savedir, ignore_errors=True)
        env, nethack = _recording_env(config.env.id, config.env.max_episode_steps, savedir)
    rng = np.random.default_rng([seed, 1])
    records: list[EpisodeRecord] = []
    bar = Progress(episodes, desc="replay", unit="episode", enabled=progress)
    try:
        for i in range(episodes):
            record, raw = _play_episode(
                config, policy, reward_model, env, i, seed + i, mode, labels, rng, note=bar.note
            )
            bar.note(f"episode {i}: drawing {len(raw):,d} frames")
            stem = out / f"episode_{i:03d}"
            frames = renderer.frames(raw, record.steps, nethack)
            record.paths.update(write_videos(stem, frames, fps))
            record.paths["transcript"] = stem.with_suffix(".txt")
            write_transcript(record.paths["transcript"], record)
            records.append(record)
            bar.update()
    finally:
        bar.close(final_line=bool(records))
        env.close()  # NLE closes the last ttyrec here
    if nethack:
        _collect_ttyrecs(savedir, out, records)
    return out, records


def _collect_ttyrecs(savedir: Path, out: Path, records: list[EpisodeRecord]) -> None:
    """Move each episode's ttyrec (NLE wrote it into `savedir`) into `out`, beside it the same
    game as a classic ttyrec; then remove `savedir`."""
    for record in records:
        found = sorted(savedir.glob(f"nle.*.{record.index}.ttyrec*.bz2"))
        if found:
            suffix = found[0].name.split(f".{record.index}.", 1)[1]  # ttyrec3.bz2
            target_path = out / f"episode_{record.index:03d}.{suffix}"
            os.replace(found[0], target_path)
            record.paths["ttyrec"] = target_path
            record.paths["ttyrec_classic"] = out / f"episode_{record.index:03d}.ttyrec"
            classic_ttyrec(target_path, record.paths["ttyrec_classic"])
    shutil.rmtree(savedir, ignore_errors=True)


def format_report(out: Path, records: list[EpisodeRecord]) -> str:
    lines = []
    for r in records:
        files = ", ".join(p.name for p in r.paths.values())
        lines.append(
            f"  episode {r.index} (seed {r.seed}): {counted(len(r.steps), 'step')}, return "
            f"{r.return_extrinsic:g}: {files}"
        )
    if records and "mp4" not in records[0].paths:
        lines.append(
            "  (no MP4: `pip install -e '.[video]'` (imageio-ffmpeg) for one beside each GIF)"
        )
    return f"[rogueray] replay written to {out}\n" + "\n".join(lines)
