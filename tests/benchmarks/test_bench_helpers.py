"""The benchmarks' arithmetic and parsing, on made-up numbers (no run): process roles from Ray's
titles, the steady rate between status lines, memory growth per million steps, the ratios of
medians, and the lines read from rogueray's and Sample Factory's consoles."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import intrinsic_cost  # noqa: E402
import memory  # noqa: E402
import sf2_side_by_side  # noqa: E402
import train_runs  # noqa: E402


def test_roles_come_from_ray_process_titles():
    role = train_runs.role_of
    assert role(["python", "-m", "cluster.cli", "train"], 7, root=7) == "driver"
    assert role(["ray::ConfiguredLearner.update"], 8, root=7) == "learner"
    assert role(["ray::_WorkerActor.sample", ""], 9, root=7) == "worker"
    assert role(["ray::AnnotatorActor"], 10, root=7) == "annotator"
    assert role(["ray::IDLE"], 11, root=7) == "ray_idle"
    assert role(["ray::InferenceActor.act"], 13, root=7) == "inference"


def test_ray_system_processes_are_named_by_their_part():
    role = train_runs.role_of
    site = "/usr/lib/python3.11/site-packages/ray"
    python = "/usr/bin/python3"
    assert role([f"{site}/core/src/ray/gcs/gcs_server", "--log_dir=/t"], 12, 7) == "ray_gcs_server"
    # its socket argument also ends in "raylet": only the program or a script names a process
    raylet = [f"{site}/core/src/ray/raylet/raylet", "--raylet_socket_name=/t/sockets/raylet"]
    assert role(raylet, 12, 7) == "ray_raylet"
    assert role([python, f"{site}/dashboard/dashboard.py", "--host=x"], 12, 7) == "ray_dashboard"
    assert role([python, "-u", f"{site}/dashboard/agent.py"], 12, 7) == "ray_dashboard_agent"
    assert role(["ray::DashboardAgent", ""], 12, 7) == "ray_dashboard_agent"
    assert role(["ray::RuntimeEnvAgent"], 12, 7) == "ray_runtime_env_agent"
    assert role([python, "-u", f"{site}/_private/log_monitor.py"], 12, 7) == "ray_log_monitor"
    monitor = [python, "-u", f"{site}/autoscaler/_private/monitor.py"]
    assert role(monitor, 12, 7) == "ray_autoscaler_monitor"
    assert (
        role(["ray-dashboard-ReportHead-0 (/usr/bin/python)"], 12, 7) == "ray_dashboard_reporthead"
    )
    starting = [
        python,
        f"{site}/_private/workers/setup_worker.py",
        f"{site}/_private/workers/default_worker.py",
    ]
    assert role(starting, 12, 7) == "ray_idle"
    assert role(["/opt/other/helper", "--x"], 12, 7) == "ray_other_helper"


def test_steady_rate_starts_at_the_first_moving_status_line():
    marks = [(0.0, 0), (10.0, 0), (12.0, 1000), (14.0, 2000), (22.0, 6000)]
    rate = train_runs.steady_rate(marks)
    assert rate["steps_per_s"] == pytest.approx(500.0)
    assert rate["timed_s"] == pytest.approx(10.0)
    assert train_runs.steady_rate([(1.0, 512)])["steps_per_s"] is None


def test_console_lines_become_marks_and_the_total():
    watch = train_runs.Watch(started=0.0)
    train_runs.rogueray_line("[rogueray] steps 3,200/4,000 (80%) | 94 steps/s | x", watch)
    train_runs.rogueray_line("[rogueray] done: 4,096 env steps, 1 updates, 2 episodes", watch)
    assert [s for _, s in watch.marks] == [3200] and watch.done_steps == 4096
    sf2 = train_runs.Watch(started=0.0)
    sf2_side_by_side.sf2_line(
        "Fps is (10 sec: 409.8). Total num frames: 4096. Throughput: 0: 521.1. Samples: 7816. "
        "Policy #0 lag: (min: 0.0)",
        sf2,
    )
    assert [s for _, s in sf2.marks] == [7816] and [f for _, f in sf2.extra] == [4096]


def test_growth_is_the_slope_over_the_second_half():
    steps = np.linspace(0, 2e6, 20)
    rss = np.where(steps < 1e6, 100 + steps / 1e4, 300 + 5 * steps / 1e6)  # start-up, then +5
    assert memory.growth_per_million(steps, rss) == pytest.approx(5.0)
    assert memory.growth_per_million(np.zeros(4), np.ones(4)) is None


def test_per_process_rows_keep_the_actor_role_after_idle():
    mb = memory.MB
    samples = [
        (1.0, {5: ("ray_idle", 100 * mb)}),
        (2.0, {5: ("worker", 120 * mb)}),
        (3.0, {5: ("worker", 110 * mb)}),
    ]
    (row,) = memory.per_process(samples, [(1.0, 0), (3.0, 2_000_000)])
    assert row["role"] == "worker" and row["peak_mb"] == pytest.approx(120)
    assert row["first_mb"] == pytest.approx(100) and row["last_mb"] == pytest.approx(110)


def test_learner_growth_comes_from_its_per_update_readings_not_the_samples():
    # RSS at each update's end grows 5 MB per 1e6 steps after start-up; the live heap is flat.
    steps = np.linspace(0, 2e6, 40).astype(int)
    rss = [(int(s), 900 + 5 * s / 1e6 if s > 1e6 else 300 + s / 1e4) for s in steps]
    heap = [(int(s), 180.0) for s in steps]
    scalars = {memory.LEARNER_RSS_TAG: rss, memory.LEARNER_HEAP_TAG: heap}
    sampled = {"role": "learner", "samples": 50, "peak_mb": 1050.0}
    rows = [{**sampled, "growth_mb_per_million_steps": 600.0}]
    out = memory.learner_memory(scalars, rows)
    assert out["updates_read"] == 40
    assert out["learner_rss_at_update_end_growth_mb_per_1m_steps"] == pytest.approx(5.0)
    assert out["learner_heap_growth_mb_per_1m_steps"] == pytest.approx(0.0, abs=1e-9)
    assert out["learner_rss_sampled_at_random_points_growth_mb_per_1m_steps"] == 600.0
    assert out["heap_first_last_mb"] == [180.0, 180.0] and out["peak_rss_sampled_mb"] == 1050.0
    empty = memory.learner_memory({}, [])  # a learner that logged nothing (an older build)
    assert empty["learner_heap_growth_mb_per_1m_steps"] is None and empty["updates_read"] == 0


def test_ratios_of_medians_and_paired_ratios():
    runs = [
        {"method": "extrinsic", "steps_per_s": 600.0},
        {"method": "classification", "steps_per_s": 540.0, "labels_total": 10.0},
        {"method": "extrinsic", "steps_per_s": 400.0},
        {"method": "classification", "steps_per_s": 380.0, "labels_total": 30.0},
    ]
    out = intrinsic_cost.summarise(runs, ["extrinsic", "classification"])
    assert out["median_steps_per_s"] == {"extrinsic": 500.0, "classification": 460.0}
    assert out["ratio_of_medians_to_extrinsic"]["classification"] == pytest.approx(0.92)
    assert out["median_paired_ratio_to_extrinsic"]["classification"] == pytest.approx(0.925)
    assert out["cost_vs_extrinsic"]["classification"] == pytest.approx(0.08)
    assert out["classification_under_target_cost"] is True
    assert out["median_labels_total"] == {"classification": 20.0}


def test_bad_arguments_name_what_is_allowed(capsys):
    with pytest.raises(SystemExit):
        intrinsic_cost.parse_args(["--methods", "hashing,extrinsic"])
    assert "must start with extrinsic" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        intrinsic_cost.parse_args(["--set", "no-equals-sign"])
    assert "KEY=VALUE" in capsys.readouterr().err


def test_gpu_node_names_what_it_lacks_and_checks_its_arguments(capsys):
    import gpu_node

    args = gpu_node.parse_args(["--device", "cpu", "--quick", "--pretend-missing", "ray,nle"])
    have = gpu_node.available(args)
    assert have["ray"] is False and have["nle"] is False and have["numpy"] is True
    assert args.workers == 2 and args.batch == 1024
    with pytest.raises(SystemExit):
        gpu_node.parse_args(["--batch", "1000"])
    assert "multiple of 512" in capsys.readouterr().err
