"""Progress of the long commands off a terminal (a log file, a pipe, CI): plain lines every
interval and one at the end, none with --no-progress; tqdm's bar on a terminal. The commands run
through the real CLI on small inputs (rules judge, a 96-step NetHack dataset, CartPole)."""

from __future__ import annotations

import io
import re
import shutil
import time
from pathlib import Path

import pytest

import cluster.progress
from cluster.cli import main
from cluster.progress import Progress

ROOT = Path(__file__).resolve().parents[2]
CARTPOLE = str(ROOT / "configs" / "cartpole.yaml")
PERIODIC = (
    r"\[rogueray\] {desc}: \d[\d,]*/{total} {unit} \(\d+%\), [\d.,]+/s, "
    r"elapsed \d+:\d\d:\d\d, ETA (\d+:\d\d:\d\d|\?)"
)
FINAL = r"\[rogueray\] {desc}: {total}/{total} {unit} \(100%\), [\d.,]+/s, in \d+:\d\d:\d\d"


def _progress_lines(err: str, desc: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith(f"[rogueray] {desc}: ")]


def test_off_a_terminal_a_plain_line_every_interval_and_one_at_the_end():
    stream = io.StringIO()  # not a terminal
    bar = Progress(10_000, desc="judge", unit="question", stream=stream, interval_s=0.02)
    deadline = time.monotonic() + 30
    while stream.getvalue().count("ETA") < 3 and time.monotonic() < deadline:
        bar.update(1)
        time.sleep(0.005)
    bar.update(10_000 - bar.n)
    bar.close()
    text = stream.getvalue()
    assert "\r" not in text and "█" not in text
    *periodic, last = text.splitlines()
    assert len(periodic) >= 3
    pattern = PERIODIC.format(desc="judge", total="10,000", unit="questions")
    assert all(re.fullmatch(pattern, line) for line in periodic), periodic
    assert re.fullmatch(FINAL.format(desc="judge", total="10,000", unit="questions"), last)


def test_the_first_plain_line_comes_before_the_first_interval(monkeypatch):
    """A command that works for longer than FIRST_LINE_S says so then, not after 30 s."""
    monkeypatch.setattr(cluster.progress, "FIRST_LINE_S", 0.05)
    stream = io.StringIO()
    bar = Progress(4, desc="evaluate", unit="episode", stream=stream, interval_s=600)
    deadline = time.monotonic() + 20
    while "ETA" not in stream.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    bar.close(final_line=False)
    pattern = PERIODIC.format(desc="evaluate", total="4", unit="episodes")
    assert re.fullmatch(pattern, stream.getvalue().strip())


def test_rate_and_eta_leave_out_the_work_a_resumed_command_found_done():
    now = [0.0]
    stream = io.StringIO()
    bar = Progress(200, desc="annotate", unit="pair", stream=stream, interval_s=3600,
                   clock=lambda: now[0])  # fmt: skip
    bar.done_before(100)
    now[0] = 10.0
    bar.update(20)
    bar.note("chunk 3")
    assert bar.line() == (
        "[rogueray] annotate: 120/200 pairs (60%), 2/s, elapsed 0:00:10, ETA 0:00:40, chunk 3"
    )
    bar.close()
    assert stream.getvalue() == "[rogueray] annotate: 120/200 pairs (60%), 2/s, in 0:00:10\n"


@pytest.mark.parametrize("tty", [False, True])
def test_disabled_writes_nothing(tty):
    stream = io.StringIO()
    with Progress(5, desc="collect", unit="step", enabled=False, stream=stream, tty=tty,
                  interval_s=0.001) as bar:  # fmt: skip
        for _ in range(5):
            bar.update(1)
            time.sleep(0.005)
    assert stream.getvalue() == ""


def test_on_a_terminal_it_is_tqdms_bar():
    stream = io.StringIO()
    with Progress(4, desc="evaluate", unit="episode", stream=stream, tty=True) as bar:
        bar.update(4)
    assert "\r" in stream.getvalue() and "4/4" in stream.getvalue()


def test_a_command_that_fails_before_any_work_adds_no_progress_line():
    stream = io.StringIO()
    with pytest.raises(ValueError), Progress(5, desc="judge", unit="question", stream=stream):
        raise ValueError("no such embedding")
    assert stream.getvalue() == ""


# -- the commands, off a terminal (pytest's captured stderr is not one) -------------------------


@pytest.fixture
def fast_lines(monkeypatch):
    monkeypatch.setattr(cluster.progress, "INTERVAL_S", 0.02)


@pytest.fixture
def slow_updates(monkeypatch, fast_lines):
    """Each update waits 10 intervals, so a periodic line falls between two updates however fast
    the command runs (a 64-step collect took 19 ms on CI, under one 20 ms interval)."""
    update = Progress.update

    def update_then_wait(self, n=1):
        update(self, n)
        time.sleep(10 * cluster.progress.INTERVAL_S)

    monkeypatch.setattr(Progress, "update", update_then_wait)


def test_judge_prints_progress_lines_and_no_progress_silences_them(capsys, fast_lines):
    assert main(["judge", "annotator.backend=rules", "--limit", "10"]) == 0
    lines = _progress_lines(capsys.readouterr().err, "judge")
    assert re.fullmatch(FINAL.format(desc="judge", total=40, unit="questions"), lines[-1])
    assert main(["judge", "annotator.backend=rules", "--limit", "10", "--no-progress"]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.nle
def test_collect_annotate_and_fit_reward_print_progress_lines(tmp_path, capsys, slow_updates):
    data = str(tmp_path / "data")
    args = ["--num-envs", "1", "--unroll-length", "32"]
    assert main(["collect", data, "--steps", "64", *args]) == 0
    lines = _progress_lines(capsys.readouterr().err, "collect")
    assert any(re.fullmatch(PERIODIC.format(desc="collect", total=64, unit="steps"), line)
               for line in lines[:-1]), lines  # fmt: skip
    assert re.fullmatch(FINAL.format(desc="collect", total=64, unit="steps"), lines[-1])
    assert main(["collect", data, "--steps", "96", *args]) == 0  # resumed: 64 found done
    (last,) = _progress_lines(capsys.readouterr().err, "collect")[-1:]
    assert last.startswith("[rogueray] collect: 96/96 steps (100%)")
    assert main(["collect", data, "--steps", "128", *args, "--no-progress"]) == 0
    assert capsys.readouterr().err == ""

    assert main(["annotate", data, "annotator.backend=rules", "--pairs", "20"]) == 0
    lines = _progress_lines(capsys.readouterr().err, "annotate")
    assert re.fullmatch(FINAL.format(desc="annotate", total=20, unit="pairs"), lines[-1])
    fit = ["fit-reward", data, "--width", "small", "--epochs", "2", "--min-steps", "2"]
    assert main(fit) == 0
    lines = _progress_lines(capsys.readouterr().err, "fit-reward")
    assert re.fullmatch(FINAL.format(desc="fit-reward", total=2, unit="steps"), lines[-1])


@pytest.mark.slow
def test_evaluate_and_replay_print_progress_lines(tmp_path, capsys, fast_lines):
    run_dir = tmp_path / "run"
    train = ["train", CARTPOLE, f"run_dir={run_dir}", "mode=serial", "rollout.num_workers=1",
             "model.hidden_size=32", "total_env_steps=512", "--quiet"]  # fmt: skip
    assert main(train) == 0
    capsys.readouterr()
    evaluate = ["evaluate", str(run_dir), "--episodes", "2", "--out", str(tmp_path / "eval")]
    assert main(evaluate) == 0
    lines = _progress_lines(capsys.readouterr().err, "evaluate")
    assert re.fullmatch(FINAL.format(desc="evaluate", total=4, unit="episodes"), lines[-1])
    assert main([*evaluate, "--no-progress"]) == 0
    assert capsys.readouterr().err == ""
    replay = ["replay", str(run_dir), "--episodes", "2", "--max-episode-steps", "25"]
    assert main([*replay, "--out", str(tmp_path / "replay")]) == 0
    lines = _progress_lines(capsys.readouterr().err, "replay")
    assert re.fullmatch(FINAL.format(desc="replay", total=2, unit="episodes"), lines[-1])
    shutil.rmtree(tmp_path / "replay")
    assert main([*replay, "--out", str(tmp_path / "replay"), "--no-progress"]) == 0
    assert capsys.readouterr().err == ""


def test_a_slow_set_up_says_it_is_loading_and_a_quick_one_says_nothing(capsys):
    from cluster.progress import loading_note

    said, deadline = "", time.monotonic() + 30
    with loading_note("replay", "runs/x", after_s=0.05):
        while not said and time.monotonic() < deadline:  # a set-up slower than the delay
            time.sleep(0.05)
            said += capsys.readouterr().err
    assert said == "[rogueray] replay: loading runs/x (the checkpoint, its policy, the env) ...\n"
    with loading_note("replay", "runs/x", after_s=0.3):
        pass  # quick (or refused at once: the error line stays the only line)
    with loading_note("replay", "runs/x", enabled=False, after_s=0.0):
        time.sleep(0.2)  # --no-progress
    time.sleep(1.0)
    assert capsys.readouterr().err == ""
