"""Periodic evaluation during training (config section `evaluation.*`): every
`interval_env_steps` the driver plays `episodes` episodes with the learner's current weights, in
its own process and on the CPU (no Ray), with `cluster/evaluate.py`'s episode runner, and logs

    eval/return_extrinsic, eval/length            every env
    eval/success_rate                             tasks with a goal
    eval/max_depth                                NetHack
    eval/return_intrinsic                         runs with a reward model

at the env step the evaluation started. It then records the first `clip_frames` steps of one
more episode with `cluster/replay_render.py`'s renderer (NetHack's terminal, or a gymnasium env's
rgb_array frame) and puts them into TensorBoard as an animated GIF under `eval/clip` (the image
summary that `SummaryWriter.add_video` writes, encoded by imageio instead of moviepy, which is
not a dependency). Every evaluation plays the same seeds, so its curve compares like with like.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from cluster.config import RunConfig

PREFIX = "eval/"
CLIP_TAG = "eval/clip"
CLIP_FPS = 8.0
SEED_OFFSET = 1_000_000  # evaluation dungeons differ from the training envs' seeds
CLIP_LABEL_ROWS = 200  # the most frequent captions' labels are shown in the clip


class PeriodicEvaluator:
    """Decides when an evaluation is due and runs it. The policy and reward model are built
    once, on the CPU, and load the learner's state at each evaluation."""

    def __init__(self, config: RunConfig, logger, start_step: int = 0):
        self.settings = config.evaluation
        # the driver evaluates on the CPU, whatever device the learner trains on
        self.config = dataclasses.replace(
            config,
            learner=dataclasses.replace(config.learner, device="cpu"),
            reward_model=dataclasses.replace(config.reward_model, device="cpu"),
        )
        self.logger = logger
        interval = self.settings.interval_env_steps or 0
        self.interval = interval
        self.next_step = (start_step // interval + 1) * interval if interval else None
        self._models: tuple[Any, Any] | None = None

    @property
    def enabled(self) -> bool:
        return self.next_step is not None

    def maybe_run(self, runner, env_steps: int) -> dict[str, float] | None:
        """Evaluate if `env_steps` reached the next interval; returns the scalars logged."""
        if self.next_step is None or env_steps < self.next_step:
            return None
        self.next_step = (env_steps // self.interval + 1) * self.interval
        labels = {}
        if runner.has_annotator and self.settings.clip_frames:
            rows = runner.caption_table(CLIP_LABEL_ROWS)
            labels = {caption: label for caption, _, label, _ in rows if label is not None}
        return self.run(runner.learner_state(), env_steps, labels)

    def run(self, learner_state: dict, step: int, labels: dict | None = None) -> dict[str, float]:
        """One evaluation of the policy in `learner_state`, logged at `step`; `labels`
        ({caption: LLM label}) are shown in the clip's status line."""
        policy, reward_model = self._load(learner_state)
        scalars = self.scalars(self.play(policy, reward_model))
        self.logger.scalars(scalars, step)
        if self.settings.clip_frames:
            frames = self.clip(policy, reward_model, labels or {})
            if frames:
                self.write_clip(frames, step)
        return scalars

    def _load(self, learner_state: dict):
        from cluster.annotation import build_reward_model, wants_annotator
        from cluster.components import env_spec, make_policy

        if self._models is None:
            policy = make_policy(self.config, env_spec(self.config))
            reward_model = build_reward_model(self.config) if wants_annotator(self.config) else None
            self._models = (policy, reward_model)
        policy, reward_model = self._models
        policy.load_state_dict(learner_state["policy"])
        policy.eval()
        if reward_model is not None:
            reward_model.load_state_dict(learner_state["reward_model"])
        return policy, reward_model

    @property
    def mode(self) -> str:
        return "greedy" if self.settings.greedy else "sampled"

    @property
    def max_episode_steps(self) -> int | None:
        cap = self.settings.max_episode_steps
        return cap if cap is not None else self.config.env.max_episode_steps

    def play(self, policy, reward_model) -> list:
        from cluster.evaluate import play

        return play(
            self.config,
            policy,
            reward_model,
            mode=self.mode,
            episodes=self.settings.episodes,
            seed=self.config.seed + SEED_OFFSET,
            num_envs=min(self.settings.episodes, 4),
            max_episode_steps=self.max_episode_steps,
        )

    @staticmethod
    def scalars(results: list) -> dict[str, float]:
        """Means over the episodes of each metric the episodes have (None: the env has none)."""
        names = {
            "return_extrinsic": "return_extrinsic",
            "success": "success_rate",
            "max_depth": "max_depth",
            "length": "length",
            "return_intrinsic": "return_intrinsic",
        }
        out: dict[str, float] = {}
        for field, name in names.items():
            values = [getattr(r, field) for r in results if getattr(r, field) is not None]
            if values:
                out[PREFIX + name] = float(np.mean(values))
        return out

    def clip(self, policy, reward_model, labels: dict) -> list[np.ndarray]:
        """The rendered frames of the first `clip_frames` steps of one episode."""
        from cluster import replay

        cap = self.settings.clip_frames
        if self.max_episode_steps is not None:
            cap = min(cap, self.max_episode_steps)
        renderer = replay.Renderer()
        rng = np.random.default_rng([self.config.seed, 2])
        with tempfile.TemporaryDirectory(prefix="rogueray-eval-") as tmp:
            env, nethack = replay._recording_env(self.config.env.id, cap, Path(tmp) / "ttyrec")
            try:
                record, raw = replay._play_episode(
                    self.config, policy, reward_model, env, 0,
                    self.config.seed + SEED_OFFSET, self.mode, labels, rng,
                )  # fmt: skip
            finally:
                env.close()
        return renderer.frames(raw, record.steps, nethack)

    def write_clip(self, frames: list[np.ndarray], step: int) -> None:
        """The frames as one animated-GIF image summary (TensorBoard's Images tab plays it)."""
        from tensorboard.compat.proto.summary_pb2 import Summary

        data = gif_bytes(frames, CLIP_FPS)
        height, width = frames[0].shape[:2]
        image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=data)
        writer = self.logger.writer._get_file_writer()
        if writer is not None:  # None: TensorBoard paused (full disk)
            writer.add_summary(Summary(value=[Summary.Value(tag=CLIP_TAG, image=image)]), step)


def gif_bytes(frames: list[np.ndarray], fps: float) -> bytes:
    import imageio.v3 as iio

    return iio.imwrite("<bytes>", np.stack(frames), extension=".gif", duration=1000 / fps, loop=0)
