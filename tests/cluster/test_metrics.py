"""What users watch: per-episode points and windowed means under separate TensorBoard tags, the
HParams and custom-scalars summaries, the console line and banner, and the episode window
continuing across a resume."""

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import plugin_data_pb2

from actors.messages import EpisodeStats
from annotator.metrics import BACKEND_STATE, NOT_ANSWERING, STARTING, WAITING
from cluster import metrics as m
from cluster.cli import main
from cluster.config import dump_yaml, load_config
from cluster.console import Console, startup_banner

ROOT = Path(__file__).resolve().parents[2]
CARTPOLE = str(ROOT / "configs" / "cartpole.yaml")


def _events(log_dir) -> EventAccumulator:
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    events.Reload()
    return events


def _episode(ret, length=10, success=None, depth=None) -> EpisodeStats:
    return EpisodeStats(return_extrinsic=ret, length=length, success=success, max_depth=depth)


def test_window_keeps_the_last_episodes_and_its_state_survives_weights_only_loading(tmp_path):
    window = m.EpisodeWindow(size=3)
    window.extend([_episode(1.0, success=True, depth=1), _episode(2.0, success=False, depth=3)])
    window.extend([_episode(3.0, success=False, depth=2), _episode(4.0, success=True, depth=4)])
    assert window.total == 4 and len(window) == 3
    assert window.mean_return() == pytest.approx(3.0)
    assert window.success_rate() == pytest.approx(1 / 3)
    assert window.mean_max_depth() == pytest.approx(3.0)
    assert window.state_dict()["episodes"][0][0] == 2.0  # the live state is trimmed too

    torch.save({"counters": {"recent_episodes": window.state_dict()}}, tmp_path / "c.pt")
    saved = torch.load(tmp_path / "c.pt", weights_only=True)["counters"]["recent_episodes"]
    resumed = m.EpisodeWindow(size=3)
    resumed.load_state_dict(saved)
    assert resumed.total == 4 and len(resumed) == 3
    assert resumed.scalars() == window.scalars()
    resumed.extend([_episode(10.0)])
    assert resumed.total == 5 and resumed.mean_return() == pytest.approx((3 + 4 + 10) / 3)


def test_per_episode_points_and_window_means_go_under_separate_tags(tmp_path):
    config = load_config(CARTPOLE, [f"run_dir={tmp_path}"])
    logger = m.MetricsLogger(str(tmp_path / "tb"), 1000, 60.0, dump_yaml(config), quiet=True)
    window = m.EpisodeWindow()
    rng = np.random.default_rng(0)
    returns = []
    for step in range(100, 1100, 100):
        batch = [
            _episode(float(r), int(r)) for r in rng.integers(5, 50, size=int(rng.integers(1, 30)))
        ]
        returns += [e.return_extrinsic for e in batch]
        window.extend(batch)
        logger.episodes(batch, step)
        logger.scalars(logger.window_scalars(window), step)
    logger.close()

    events = _events(tmp_path / "tb")
    per_episode = [e.value for e in events.Scalars(m.EPISODE_RETURN)]
    assert per_episode == pytest.approx(returns)  # every point is one episode's return
    window_points = events.Scalars(m.WINDOW_RETURN)
    assert len({p.step for p in window_points}) == len(window_points) == 10  # one per step
    assert window_points[-1].value == pytest.approx(np.mean(returns[-100:]))
    lengths = [e.value for e in events.Scalars(m.EPISODE_LENGTH)]
    assert lengths == pytest.approx(returns)  # length == return in this synthetic data
    assert events.Scalars(m.WINDOW_EPISODES)[-1].value == min(100, len(returns))


def test_a_resume_keeps_the_points_at_its_step_and_drops_those_after_it(tmp_path):
    config = dump_yaml(load_config(CARTPOLE, [f"run_dir={tmp_path}"]))
    first = m.MetricsLogger(str(tmp_path / "tb"), 1000, 60.0, config, quiet=True)
    for step in (100, 200, 300):  # 300: written after the last checkpoint (200), then a crash
        first.scalars({"x": float(step)}, step)
    first.close()
    resumed = m.MetricsLogger(str(tmp_path / "tb"), 1000, 60.0, config, start_step=200, quiet=True)
    resumed.scalars({"x": 250.0}, 250)
    resumed.close()
    assert [e.step for e in _events(tmp_path / "tb").Scalars("x")] == [100, 200, 250]


def test_hparams_and_custom_scalars_are_written(tmp_path):
    config = load_config(CARTPOLE, [f"run_dir={tmp_path}", "learner.learning_rate=3e-4"])
    logger = m.MetricsLogger(str(tmp_path / "tb"), 1000, 60.0, dump_yaml(config), quiet=True)
    logger.close()
    events = _events(tmp_path / "tb")

    hparams = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(hparams["_hparams_/session_start_info"])
    values = start.session_start_info.hparams
    assert values["learner.learning_rate"].number_value == pytest.approx(3e-4)
    assert values["env.id"].string_value == "CartPole-v1"
    assert values["seed"].number_value == 0
    experiment = plugin_data_pb2.HParamsPluginData.FromString(hparams["_hparams_/experiment"])
    metrics = {info.name.tag for info in experiment.experiment.metric_infos}
    assert m.WINDOW_RETURN in metrics and m.WINDOW_SUCCESS in metrics

    (config_event,) = events.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout.FromString(config_event.tensor_proto.string_val[0])
    charts = {c.title: list(c.multiline.tag) for cat in layout.category for c in cat.chart}
    assert charts["return: extrinsic (window mean) vs intrinsic"] == [
        m.WINDOW_RETURN,
        m.WINDOW_RETURN_INTRINSIC,
    ]
    shown = {tag for tags in charts.values() for tag in tags}
    for tag in (m.LABELS_TOTAL, m.INVALID_RATE, m.POSITIVE_FRACTION, m.RM_ACCURACY):
        assert tag in shown


def test_console_line_shows_progress_task_figures_and_the_annotator():
    out = io.StringIO()
    console = Console(total=10_000, start_step=0, interval_s=0.0, stream=out, tty=False)
    window = m.EpisodeWindow()
    window.extend([_episode(2.0, success=True, depth=3), _episode(0.0, success=False, depth=1)])
    stats = {
        "annotator/labels_total": 312.0,
        "annotator/pending": 40.0,
        "annotator/backend_up": 1.0,
        "annotator/invalid_answer_rate": 0.05,
    }
    assert console.update(2_000, window, episodes=7, intrinsic=0.25, annotator=stats) is not None
    line = out.getvalue().strip()
    assert line.startswith("[rogueray] steps 2,000/10,000 (20%) | ")
    for part in (
        "steps/s",
        "elapsed 0:00:",
        "ETA ",
        "episodes 7 | return (last 2) 1.00",
        "success 50.0%",
        "depth 2.00",
        "r_int 0.250",
        "labels 312 (pending 40, LLM up, invalid 5.0%)",
    ):
        assert part in line, part
    for k, (state, shown) in enumerate(
        (
            (STARTING, "LLM loading"),
            (NOT_ANSWERING, "LLM not answering"),
            (WAITING, "LLM server not answered yet"),
        )
    ):
        stats[BACKEND_STATE] = state  # the annotator's own state wins over backend_up
        console.update(3_000 + 1_000 * k, window, episodes=7, intrinsic=0.25, annotator=stats)
        assert f"(pending 40, {shown}, invalid" in out.getvalue().splitlines()[-1]


def test_eta_runs_from_the_first_steps_not_from_the_start_up():
    """A CartPole run's first line came 16 s after start-up with 256 steps done and read
    "ETA 1:43:20" for a run that then took 30 s: the ETA's rate starts at the first steps."""
    now, out = [0.0], io.StringIO()
    console = Console(total=100_000, start_step=0, interval_s=5.0, stream=out, tty=False,
                      clock=lambda: now[0])  # fmt: skip
    window = m.EpisodeWindow()
    now[0] = 16.0
    console.update(256, window, episodes=0)  # the first fragment, and the first line
    now[0] = 21.0
    console.update(40_256, window, episodes=9)  # 8,000 steps/s since the first steps
    first, second = out.getvalue().splitlines()
    assert "ETA ?" in first and "16 steps/s" in first  # the start-up is in the rate, not the ETA
    assert "ETA 0:00:07" in second and "8,000 steps/s" in second  # 59,744 steps left


def test_console_without_annotator_or_episodes_and_its_terminal_bar():
    out = io.StringIO()
    console = Console(total=1_000, start_step=500, interval_s=0.0, stream=out, tty=False)
    console.update(600, m.EpisodeWindow(), episodes=12, intrinsic=None)  # extrinsic only
    line = out.getvalue()
    assert "episodes 12 | return n/a (no episode finished yet)" in line
    assert "r_int" not in line and "labels" not in line and "success" not in line
    assert console.update(600, m.EpisodeWindow(), episodes=12, force=True) is None  # no repeat
    assert "overall" not in line  # a status line: the rate since the last one
    console.update(700, m.EpisodeWindow(), episodes=13, force=True)  # the final line
    final = out.getvalue().splitlines()[-1].split(" | ")
    assert final[1].endswith("steps/s overall") and "ETA" not in final[2]

    frozen = io.StringIO()  # ellm / motif: an intrinsic return, and no annotator to report
    Console(total=1_000, start_step=0, interval_s=0.0, stream=frozen, tty=False).update(
        600, m.EpisodeWindow(), episodes=3, intrinsic=0.25
    )
    assert "r_int 0.250" in frozen.getvalue() and "labels" not in frozen.getvalue()

    tty = io.StringIO()
    bar = Console(total=1_000, start_step=0, interval_s=0.0, stream=tty, tty=True)
    bar.update(250, m.EpisodeWindow(), episodes=0)
    bar.message("[rogueray] a message above the bar")
    bar.close()
    text = tty.getvalue()
    assert "25%|" in text and "steps 250/1,000" in text
    assert "[rogueray] a message above the bar" in text


def test_banner_names_run_dir_workers_envs_and_backend(tmp_path):
    config = load_config(
        str(ROOT / "configs" / "default.yaml"), [f"run_dir={tmp_path / 'run'}", "mode=ray"]
    )
    text = "\n".join(startup_banner(config, resume_step=None))
    assert str(tmp_path / "run") in text and "new run" in text
    assert "2 rollout workers x 16 envs" in text
    assert "annotator backend auto" in text and "smollm2-135m" in text
    assert "starting a local Ray" in text
    resumed = "\n".join(startup_banner(config, resume_step=12_345))
    assert "resuming from step 12,345" in resumed


def test_banner_says_the_first_run_converts_the_embedded_model_only_when_it_will(
    tmp_path, monkeypatch
):
    config = load_config(str(ROOT / "configs" / "default.yaml"), [f"run_dir={tmp_path / 'r'}"])
    monkeypatch.setenv("ROGUERAY_CACHE", str(tmp_path / "cache"))  # an empty model cache
    converting = "this first run also fetches and converts it"
    assert converting in "\n".join(startup_banner(config, resume_step=None))
    converted = tmp_path / "cache" / "smollm2-135m-instruct"
    converted.mkdir(parents=True)
    (converted / "model.safetensors").write_bytes(b"")  # not complete yet: still converts
    assert converting in "\n".join(startup_banner(config, resume_step=None))
    for name in ("config.json", "tokenizer.json", "rogueray-model.json"):
        (converted / name).write_bytes(b"")  # the files a finished conversion leaves
    assert converting not in "\n".join(startup_banner(config, resume_step=None))


@pytest.mark.slow
def test_a_resumed_run_continues_its_episode_window_and_the_final_line_uses_it(tmp_path, capsys):
    run_dir = tmp_path / "cartpole"
    common = [CARTPOLE, f"run_dir={run_dir}", "mode=serial", "log_interval_s=0.05"]
    assert main(["train", *common, "total_env_steps=3000"]) == 0
    first = capsys.readouterr().out.splitlines()
    status = [ln for ln in first if ln.startswith("[rogueray] steps ")]
    done = [ln for ln in first if "done:" in ln][-1]
    last_window = status[-1].split("| return ")[1].split(" |")[0]  # "(last N) X"
    assert f"mean return {last_window};" in done  # the final line: the console's window
    episodes_before = int(done.split(" episodes,")[0].rsplit(" ", 1)[1].replace(",", ""))

    assert main(["train", *common, "total_env_steps=6000"]) == 0
    second = capsys.readouterr().out.splitlines()
    first_status = next(ln for ln in second if ln.startswith("[rogueray] steps "))
    assert "return n/a" not in first_status
    assert "return (last 100)" in first_status  # 3000 CartPole steps finish > 100 episodes
    episodes_now = int(first_status.split("episodes ")[1].split(" ")[0].replace(",", ""))
    assert episodes_now > episodes_before  # the count continues, not from 0
