"""Periodic evaluation during training (cluster/periodic_eval.py, config section evaluation.*):
tiny real serial runs whose TensorBoard event files hold the eval/* scalars at each interval and
an animated-GIF clip of the policy playing (CartPole's rgb_array frames, NetHack's terminal)."""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cluster.cli import main
from cluster.config import load_config
from cluster.periodic_eval import PeriodicEvaluator

ROOT = Path(__file__).resolve().parents[2]
CARTPOLE = str(ROOT / "configs" / "cartpole.yaml")
SERIAL = ["mode=serial", "log_interval_s=60", "rollout.num_workers=1", "model.hidden_size=32"]


def _events(run_dir: Path) -> EventAccumulator:
    events = EventAccumulator(
        str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0}
    )
    events.Reload()
    return events


def _clip_frames(events: EventAccumulator) -> list[np.ndarray]:
    """The frames of each eval/clip image (a GIF); one list entry per evaluation."""
    clips = []
    for image in events.Images("eval/clip"):
        gif = Image.open(io.BytesIO(image.encoded_image_string))
        assert gif.format == "GIF"
        clips.append(gif.n_frames)
    return clips


def test_due_steps_follow_the_interval_and_continue_after_a_resume():
    config = load_config(None, ["evaluation.interval_env_steps=1000"])
    evaluator = PeriodicEvaluator(config, logger=None, start_step=2500)
    assert evaluator.enabled and evaluator.next_step == 3000
    for off in ("null", 0):
        config = load_config(None, [f"evaluation.interval_env_steps={off}"])
        assert not PeriodicEvaluator(config, logger=None).enabled


def test_scalars_are_means_over_the_episodes_that_have_the_metric():
    from cluster.evaluate import EpisodeResult

    results = [
        EpisodeResult("greedy", 0, 1, 2.0, 1.0, 3, 10, None, False),
        EpisodeResult("greedy", 1, 2, 4.0, 0.0, 5, 20, None, True),
    ]
    assert PeriodicEvaluator.scalars(results) == {
        "eval/return_extrinsic": 3.0,
        "eval/success_rate": 0.5,
        "eval/max_depth": 4.0,
        "eval/length": 15.0,
    }


@pytest.mark.slow
def test_cartpole_run_logs_eval_scalars_and_a_clip_every_interval(tmp_path):
    run_dir = tmp_path / "run"
    args = [
        "train", CARTPOLE, f"run_dir={run_dir}", *SERIAL, "total_env_steps=3072",
        "evaluation.interval_env_steps=1024", "evaluation.episodes=2",
        "evaluation.max_episode_steps=50", "evaluation.clip_frames=12",
    ]  # fmt: skip
    assert main(args) == 0
    events = _events(run_dir)
    for tag in ("eval/return_extrinsic", "eval/length"):
        points = events.Scalars(tag)
        assert [p.step for p in points] == [1024, 2048, 3072]
        # CartPole: reward 1 per step, episodes cut at 50 steps
        assert all(1 <= p.value <= 50 for p in points)
    assert "eval/success_rate" not in events.Tags()["scalars"]  # CartPole has no goal
    assert "eval/return_intrinsic" not in events.Tags()["scalars"]  # nor a reward model
    assert _clip_frames(events) == [12, 12, 12]  # one clip per evaluation, clip_frames long


@pytest.mark.slow
@pytest.mark.nle
def test_nethack_run_puts_a_terminal_clip_and_intrinsic_return_into_tensorboard(tmp_path):
    run_dir = tmp_path / "run"
    args = [
        "train", f"run_dir={run_dir}", *SERIAL, "total_env_steps=128",
        "env.num_envs_per_worker=2", "learner.batch_size=64",
        "annotator.backend=rules",  # labels without an LLM, so a reward model
        "evaluation.interval_env_steps=128", "evaluation.episodes=1",
        "evaluation.max_episode_steps=20", "evaluation.clip_frames=8",
    ]  # fmt: skip
    assert main(args) == 0
    events = _events(run_dir)
    assert [p.step for p in events.Scalars("eval/length")] == [128]
    assert events.Scalars("eval/length")[0].value == 20
    assert "eval/return_intrinsic" in events.Tags()["scalars"]
    assert _clip_frames(events) == [8]
    clip = events.Images("eval/clip")[0]
    assert clip.width > clip.height > 24 * 8  # an 80x24 terminal plus the status lines
