"""`rogueray replay`: one GIF frame per recorded step, a transcript row per step, NLE's ttyrec
read back through NLE's own reader, the run's LLM labels and the reward model's r_int in the
transcript; CartPole (gymnasium) without a ttyrec. Tiny serial runs."""

import re
import struct
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from cluster.cli import main
from cluster.replay import EpisodeRecord, Renderer, Step, read_transcript, write_transcript
from cluster.ttyrec import read_ttyrec

ROOT = Path(__file__).resolve().parents[2]
CARTPOLE = str(ROOT / "configs" / "cartpole.yaml")
SERIAL = ["mode=serial", "log_interval_s=60", "rollout.num_workers=1", "model.hidden_size=32"]


def _gif_frames(path: Path) -> np.ndarray:
    return iio.imread(path, index=None)


@pytest.mark.slow
def test_cartpole_replay_has_a_frame_and_a_row_per_step(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", CARTPOLE, f"run_dir={run_dir}", *SERIAL, "total_env_steps=512"]) == 0
    out = tmp_path / "replay"
    args = ["replay", str(run_dir), "--episodes", "2", "--out", str(out)]
    assert main([*args, "--max-episode-steps", "25"]) == 0
    printed = capsys.readouterr().out
    assert f"replay written to {out}" in printed
    for episode in (0, 1):
        rows = read_transcript(out / f"episode_{episode:03d}.txt")
        assert 1 <= len(rows) <= 25
        assert [int(r["step"]) for r in rows] == list(range(1, len(rows) + 1))
        assert all(r["action"] in ("0", "1") and r["reward"] == "1" for r in rows)
        frames = _gif_frames(out / f"episode_{episode:03d}.gif")
        assert frames.shape[0] == len(rows)  # one frame per recorded step
    assert not list(out.glob("*.ttyrec*"))  # not NetHack: no ttyrec


@pytest.mark.slow
@pytest.mark.nle
def test_nethack_replay_ttyrec_gif_and_transcript(tmp_path, capsys):
    run_dir = tmp_path / "run"
    train = [
        "train",
        f"run_dir={run_dir}",
        *SERIAL,
        "total_env_steps=128",
        "env.num_envs_per_worker=2",
        "learner.batch_size=64",
        "annotator.backend=rules",  # labels without an LLM
    ]
    assert main(train) == 0
    out = tmp_path / "replay"
    assert main(["replay", str(run_dir), "--out", str(out), "--max-episode-steps", "20"]) == 0
    capsys.readouterr()

    rows = read_transcript(out / "episode_000.txt")
    assert len(rows) == 20
    assert _gif_frames(out / "episode_000.gif").shape[0] == 20  # one frame per step

    # Labels are the run's label store's; r_int is the checkpoint's reward model's.
    from cluster.evaluate import load_for_evaluation
    from cluster.replay import caption_labels

    labels = caption_labels(load_for_evaluation(run_dir))
    assert labels  # the rules backend labelled the training's captions
    for row in rows:
        assert row["r_int"] != ""  # a reward model: every step has its intrinsic reward
        caption = "" if row["caption"] == "(no message)" else row["caption"]  # the empty message
        if caption in labels:
            assert float(row["label"]) == pytest.approx(labels[caption], abs=1e-4)
        else:  # as on the GIF: unlabelled captions are pending (every NetHack step has one)
            assert row["label"] == "pending"
    assert any(row["caption"] in labels for row in rows)

    # NLE's ttyrec, read with NLE's own converter (the reader of nle.dataset): it holds the
    # game's frames and the keys the agent pressed, in the transcript's order.
    (ttyrec,) = out.glob("episode_000.ttyrec*.bz2")
    recorded = read_ttyrec(ttyrec)
    assert recorded["chars"].shape[0] >= 20
    from actors.nle_tasks import EXTENDED_ACTIONS

    keys = [int(EXTENDED_ACTIONS[int(re.search(r"\((\d+)\)$", r["action"])[1])]) for r in rows]
    inputs = recorded["inputs"].tolist()
    assert inputs[0] == keys[0]
    matched, position = 0, 0
    for key in keys:  # the agent's keys appear in order (prompts may add or swap a few)
        if key in inputs[position:]:
            position = inputs.index(key, position) + 1
            matched += 1
    assert matched >= len(keys) // 2
    assert any(b"Dlvl:1" in bytes(screen[22:].reshape(-1)) for screen in recorded["chars"])

    # The classic ttyrec beside it: 12-byte headers (sec, usec, length), the game's output only,
    # as ttyrec players read it.
    data = (out / "episode_000.ttyrec").read_bytes()
    offset, frames, output = 0, 0, b""
    while offset < len(data):
        sec, usec, length = struct.unpack_from("<iii", data, offset)
        assert sec > 0 and 0 <= usec < 1_000_000 and length > 0
        output += data[offset + 12 : offset + 12 + length]
        offset += 12 + length
        frames += 1
    assert offset == len(data) and frames >= 20
    assert b"Dlvl:1" in output
    assert b"Cannot open file" not in output  # NetHack found its score files at the game's end


def test_renderer_draws_the_status_line_under_the_terminal():
    renderer = Renderer()
    chars = np.full((24, 80), ord(" "), np.uint8)
    chars[5, 10] = ord("@")
    colors = np.zeros((24, 80), np.int8)
    step = Step(3, "N(1)", "It's a wall.", 0.75, 0.125, -0.01)
    image = renderer.terminal(chars, colors, step)
    assert image.shape[1] >= 80 * renderer.cell_w
    terminal_h = 24 * renderer.cell_h
    assert image[:terminal_h].max() > 0  # the @ is drawn
    status = image[terminal_h:]
    assert (status != 0).any()
    assert renderer.status(step) == [
        "step 3  action N(1)  reward -0.01  r_int +0.1250  LLM label 0.75",
        "caption: It's a wall.",
    ]


def test_a_step_without_a_label_never_reads_as_labelled(tmp_path):
    """The transcript tells a label of 0 ("no progress", the LLM's word) from no label: a step
    without a caption has an empty label; NetHack's empty message is a caption the LLM labels,
    written `(no message)` as it was asked about it, so that its label is not read as the label
    of a step without a caption; a caption not labelled yet reads `pending`."""
    steps = [
        Step(1, "0", None, None, 0.0, 1.0),  # an env without messages (a reward model's r_int 0)
        Step(2, "N(1)", "", 0.0, -0.01, 0.0),  # the empty message, labelled 0
        Step(3, "N(1)", "", None, 0.0, 0.0),  # the empty message, not labelled yet
        Step(4, "S(2)", "It's a wall.", None, 0.0, 0.0),
        Step(5, "S(2)", "It's a wall.", 0.0, 0.0, 0.0),
        Step(6, "S(2)", "You find a\thidden door.", 1.0, 0.4, 0.0),
    ]
    path = tmp_path / "episode_000.txt"
    write_transcript(path, EpisodeRecord(0, 7, steps))
    rows = read_transcript(path)
    assert [(row["caption"], row["label"]) for row in rows] == [
        ("", ""),
        ("(no message)", "0.0000"),
        ("(no message)", "pending"),
        ("It's a wall.", "pending"),
        ("It's a wall.", "0.0000"),
        ("You find a hidden door.", "1.0000"),
    ]
    assert [row["r_int"] for row in rows][:2] == ["0.000000", "-0.010000"]
    # The GIF says the same: no caption, no label to wait for.
    renderer = Renderer()
    assert renderer.status(steps[0])[0].endswith("LLM label n/a")
    assert renderer.status(steps[2])[0].endswith("LLM label pending")
    assert renderer.status(steps[1])[1] == "caption: (no message)"
    assert renderer.status(steps[0])[1] == "caption: n/a"  # not the empty message's words
    blank = Step(7, "N(1)", "  ", None, 0.0, 0.0)  # blank: the LLM was asked "(no message)"
    assert renderer.status(blank)[1] == "caption: (no message)"
