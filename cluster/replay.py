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
  r_int, reward).

Checkpoint and policy loading are `cluster.evaluate`'s."""

from __future__ import annotations

import math
import os
import shutil
import sqlite3
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

TTY_KEYS = ("tty_chars", "tty_colors")
TRANSCRIPT_FIELDS = ("step", "action", "caption", "label", "r_int", "reward")
DEFAULT_SEED = 1_000_000_007  # `rogueray evaluate`'s: episode i of both plays the same game
# NetHack's 16 curses colours (black drawn dark grey, so that it shows on the black background).
PALETTE = (
    (85, 85, 85), (170, 0, 0), (0, 170, 0), (170, 85, 0), (0, 0, 170), (170, 0, 170),
    (0, 170, 170), (170, 170, 170), (85, 85, 85), (255, 85, 85), (85, 255, 85),
    (255, 255, 85), (85, 85, 255), (255, 85, 255), (85, 255, 255), (255, 255, 255),
)  # fmt: skip
BACKGROUND = (0, 0, 0)
STATUS_BACKGROUND = (24, 24, 48)
STATUS_COLOUR = (230, 230, 120)


@dataclass
class Step:
    step: int
    action: str
    caption: str | None
    label: float | None
    r_int: float | None
    reward: float


@dataclass
class EpisodeRecord:
    index: int
    seed: int
    steps: list[Step] = field(default_factory=list)
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def return_extrinsic(self) -> float:
        return float(sum(s.reward for s in self.steps))


def find_font() -> Path | None:
    """A monospace TrueType font: matplotlib's bundled DejaVu Sans Mono (matplotlib is a
    dependency), else a system DejaVu or Liberation mono."""
    try:
        import matplotlib

        bundled = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSansMono.ttf"
        if bundled.is_file():
            return bundled
    except ImportError:
        pass
    for candidate in (
        "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationMono-Regular.ttf",
        "/usr/share/fonts/dejavu/DejaVuSansMono.ttf",
    ):
        if Path(candidate).is_file():
            return Path(candidate)
    return None


class Renderer:
    """Draws terminal screens (NLE's tty_chars/tty_colors) or rgb frames with a status line."""

    def __init__(self, font_size: int = 14, status_lines: int = 2):
        from PIL import ImageFont

        path = find_font()
        if path is not None:
            self.font = ImageFont.truetype(str(path), font_size)
        else:  # Pillow's own bitmap-free default font (Pillow >= 10.1 scales it)
            self.font = ImageFont.load_default(font_size)
        left, top, right, bottom = self.font.getbbox("M_gy|")
        self.cell_w = max(1, math.ceil(self.font.getlength("M")))
        self.cell_h = max(1, bottom - min(0, top) + 2)
        self.status_lines = status_lines

    def status(self, step: Step) -> list[str]:
        label = f"{step.label:.2f}" if step.label is not None else "pending"
        if step.label is None and step.r_int is None:  # no reward model, so no labels
            label = "n/a"
        r_int = "n/a" if step.r_int is None else f"{step.r_int:+.4f}"
        return [
            f"step {step.step}  action {step.action}  reward {step.reward:+g}  "
            f"r_int {r_int}  LLM label {label}",
            f"caption: {step.caption or '(no message)'}",
        ]

    def _draw_status(self, draw, top: int, width: int, lines: list[str]) -> None:
        columns = max(1, int(width / self.font.getlength("M")) - 1)
        draw.rectangle(
            [0, top, width, top + self.cell_h * self.status_lines + 4], fill=STATUS_BACKGROUND
        )
        for k, line in enumerate(lines[: self.status_lines]):
            text = line if len(line) <= columns else line[: columns - 1] + "…"
            draw.text((self.cell_w // 2, top + 2 + k * self.cell_h), text, font=self.font,
                      fill=STATUS_COLOUR)  # fmt: skip

    def terminal(self, chars: np.ndarray, colors: np.ndarray, step: Step) -> np.ndarray:
        from PIL import Image, ImageDraw

        rows, cols = chars.shape
        width = _even(cols * self.cell_w)
        height = _even(rows * self.cell_h + self.cell_h * self.status_lines + 4)
        image = Image.new("RGB", (width, height), BACKGROUND)
        draw = ImageDraw.Draw(image)
        codes = np.asarray(colors, np.int64) & 15
        # One character per grid cell (the font's advance is not a whole number of pixels, so
        # strings drawn whole would drift off the grid); blanks are skipped.
        for r, c in zip(*np.nonzero((chars != ord(" ")) & (chars != 0)), strict=True):
            draw.text((c * self.cell_w, r * self.cell_h), chr(chars[r, c]), font=self.font,
                      fill=PALETTE[codes[r, c]])  # fmt: skip
        self._draw_status(draw, rows * self.cell_h, width, self.status(step))
        return np.asarray(image)

    def frame(self, rgb: np.ndarray, step: Step) -> np.ndarray:
        from PIL import Image, ImageDraw

        if isinstance(rgb, str):  # no picture: the observation as text
            rgb = self._text_image(rgb)
        h, w = rgb.shape[:2]
        width = _even(max(w, 60 * self.cell_w))
        height = _even(h + self.cell_h * self.status_lines + 4)
        image = Image.new("RGB", (width, height), BACKGROUND)
        image.paste(Image.fromarray(np.asarray(rgb, np.uint8)[..., :3]), ((width - w) // 2, 0))
        self._draw_status(ImageDraw.Draw(image), h, width, self.status(step))
        return np.asarray(image)

    def _text_image(self, text: str) -> np.ndarray:
        from PIL import Image, ImageDraw

        image = Image.new("RGB", (60 * self.cell_w, 3 * self.cell_h), BACKGROUND)
        ImageDraw.Draw(image).text((self.cell_w // 2, self.cell_h), text, font=self.font,
                                   fill=PALETTE[7])  # fmt: skip
        return np.asarray(image)


def _even(n: int) -> int:
    return n + (n % 2)  # video encoders want even sizes


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


def _play_episode(config, policy, reward_model, env, index, seed, mode, labels, rng):
    """One episode: its Step rows and the raw frames (tty arrays or rgb) after each step."""
    import torch

    from actors.captions import normalize_caption

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
            logits = logits[0, 0].numpy()
            if mode == "greedy":
                action = int(np.argmax(logits))
            else:
                action = int(np.argmax(logits + rng.gumbel(size=logits.shape)))
            obs, reward, term, trunc, info = env.step(action)
            done = term or trunc
            caption = info.get("caption")
            if caption is not None and config.env.normalize_captions:
                caption = normalize_caption(caption)
            rewards.append(float(reward))
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
            print(f"[rogueray] replay: drawing observations as text; {exc}")
    vector = np.asarray(obs.get("vector", []), np.float32)
    return "observation " + " ".join(f"{x:+.3f}" for x in vector[:12])


def write_transcript(path: Path, record: EpisodeRecord) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\t".join(TRANSCRIPT_FIELDS) + "\n")
        for s in record.steps:
            caption = (s.caption or "").replace("\t", " ").replace("\n", " ")
            label = "" if s.label is None else f"{s.label:.4f}"
            r_int = "" if s.r_int is None else f"{s.r_int:.6f}"
            handle.write(f"{s.step}\t{s.action}\t{caption}\t{label}\t{r_int}\t{s.reward:g}\n")


def read_transcript(path: str | Path) -> list[dict[str, str]]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]


def write_videos(stem: Path, frames: list[np.ndarray], fps: float) -> dict[str, Path]:
    """The GIF (always) and the MP4 (when imageio finds ffmpeg) of `frames`."""
    import imageio.v3 as iio

    paths = {"gif": stem.with_suffix(".gif")}
    # loop=0: repeat forever; every frame differs (the status line counts steps), so Pillow
    # merges none of them and the GIF has one frame per step.
    iio.imwrite(paths["gif"], np.stack(frames), extension=".gif", duration=1000 / fps, loop=0)
    if mp4_available():
        paths["mp4"] = stem.with_suffix(".mp4")
        iio.imwrite(paths["mp4"], np.stack(frames), extension=".mp4", fps=fps, codec="libx264",
                    macro_block_size=1)  # fmt: skip
    return paths


def mp4_available() -> bool:
    try:
        import imageio_ffmpeg

        return bool(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError):
        return False


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
) -> tuple[Path, list[EpisodeRecord]]:
    """Record `episodes` episodes of the checkpoint's policy; returns the output folder and the
    records (with the paths written for each episode)."""

    from cluster.evaluate import EvaluationError, prepare

    if mode not in ("greedy", "sampled"):
        raise EvaluationError(f"--mode must be greedy or sampled, got {mode!r}")
    loaded, policy, reward_model, config = prepare(target, env_id, episodes, max_episode_steps)
    cap = config.env.max_episode_steps
    out = (
        Path(out_dir) if out_dir is not None else loaded.run_dir / "replay" / loaded.checkpoint.stem
    )
    out.mkdir(parents=True, exist_ok=True)
    labels = caption_labels(loaded)
    renderer = Renderer()
    savedir = out / ".ttyrec-in-progress"
    shutil.rmtree(savedir, ignore_errors=True)
    env, nethack = _recording_env(config.env.id, cap, savedir)
    rng = np.random.default_rng([seed, 1])
    records: list[EpisodeRecord] = []
    try:
        for i in range(episodes):
            record, raw = _play_episode(
                config, policy, reward_model, env, i, seed + i, mode, labels, rng
            )
            stem = out / f"episode_{i:03d}"
            if nethack:
                frames = [
                    renderer.terminal(c, k, s) for (c, k), s in zip(raw, record.steps, strict=True)
                ]
            else:
                frames = [renderer.frame(rgb, s) for rgb, s in zip(raw, record.steps, strict=True)]
            record.paths.update(write_videos(stem, frames, fps))
            record.paths["transcript"] = stem.with_suffix(".txt")
            write_transcript(record.paths["transcript"], record)
            records.append(record)
    finally:
        env.close()  # NLE closes the last ttyrec here
    if nethack:
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
    return out, records


def classic_ttyrec(src: str | Path, dst: str | Path) -> int:
    """Write NLE's ttyrec3 (bz2, 13-byte headers with a channel: 0 output, 1 keys, 2 scores) as a
    classic ttyrec (12-byte headers, output only), which ttyrec players (ttyplay, ipbt,
    `python -m nle.scripts.ttyplay -1`) play; returns the frames written."""
    import bz2
    import struct

    frames = 0
    with bz2.open(src, "rb") as fin, open(dst, "wb") as fout:
        while header := fin.read(13):
            if len(header) < 13:
                raise ValueError(f"{src}: truncated ttyrec header")
            sec, usec, length, channel = struct.unpack("<iiiB", header)
            data = fin.read(length)
            if channel == 0:
                fout.write(struct.pack("<iii", sec, usec, len(data)) + data)
                frames += 1
    return frames


def read_ttyrec(path: str | Path, rows: int = 24, cols: int = 80, chunk: int = 256):
    """Every frame of an NLE ttyrec through NLE's own reader (nle._pyconverter.Converter, the
    one nle.dataset uses): {"chars": [N, rows, cols] uint8, "inputs": [N] uint8, ...}."""
    from nle import _pyconverter, nethack

    converter = _pyconverter.Converter(rows, cols, nethack.TTYREC_VERSION)
    converter.load_ttyrec(str(path))
    parts = {k: [] for k in ("chars", "colors", "cursors", "timestamps", "inputs", "scores")}
    while True:
        buf = {
            "chars": np.zeros((chunk, rows, cols), np.uint8),
            "colors": np.zeros((chunk, rows, cols), np.int8),
            "cursors": np.zeros((chunk, 2), np.int16),
            "timestamps": np.zeros(chunk, np.int64),
            "inputs": np.zeros(chunk, np.uint8),
            "scores": np.zeros(chunk, np.int32),
        }
        remaining = converter.convert(
            buf["chars"], buf["colors"], buf["cursors"], buf["timestamps"], buf["inputs"],
            buf["scores"],
        )  # fmt: skip
        filled = chunk - remaining
        for k, v in buf.items():
            parts[k].append(v[:filled])
        if remaining:
            break
    return {k: np.concatenate(v) for k, v in parts.items()}


def format_report(out: Path, records: list[EpisodeRecord]) -> str:
    lines = []
    for r in records:
        files = ", ".join(p.name for p in r.paths.values())
        lines.append(
            f"  episode {r.index} (seed {r.seed}): {len(r.steps)} steps, return "
            f"{r.return_extrinsic:g}: {files}"
        )
    if records and "mp4" not in records[0].paths:
        lines.append("  (no MP4: `pip install imageio-ffmpeg` for one beside each GIF)")
    return f"[rogueray] replay written to {out}\n" + "\n".join(lines)
