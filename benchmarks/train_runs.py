"""One `rogueray train` run as a child process, watched from outside: its env steps over time
(from the console's status lines), the resident memory of every process it starts (driver, Ray's
own processes, learner, rollout workers, annotator; sampled with psutil), and its TensorBoard
scalars at the end. Shared by intrinsic_cost.py, memory.py, workers_plot.py and
sf2_side_by_side.py, so each measures the product as a user runs it, through the CLI.

Every process the run started is killed at the end (its own pids, never `ray stop`)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from timing import log

REPO = Path(__file__).resolve().parents[1]
STEPS_LINE = re.compile(r"\[rogueray\] steps ([\d,]+)/")
DONE_LINE = re.compile(r"\[rogueray\] done: ([\d,]+) env steps")
# The shape, for both systems of the side-by-side: 2 workers x 16 envs, unroll 32,
# batch 4096 samples, a GRU core of 512, on NLE's score task.
SHAPE = {
    "env.id": "NetHackScore-v0",
    "rollout.num_workers": 2,
    "env.num_envs_per_worker": 16,
    "rollout.unroll_length": 32,
    "learner.batch_size": 4096,
    "model.hidden_size": 512,
    "model.recurrent": "true",
}
EXTRINSIC = {"reward_model.name": "none", "reward.intrinsic_coef": 0.0}


def overrides_of(*dicts: dict) -> list[str]:
    """{"a.b": 1}, ... -> ["a.b=1", ...]; later dicts win."""
    merged: dict = {}
    for d in dicts:
        merged.update(d)
    return [f"{k}={v}" for k, v in merged.items()]


@dataclass
class Watch:
    """What a watched run recorded: (monotonic time, env steps) marks from status lines, memory
    samples (time, {pid: (role, rss bytes)}), and the last console lines."""

    started: float
    marks: list = field(default_factory=list)
    memory: list = field(default_factory=list)
    tail: deque = field(default_factory=lambda: deque(maxlen=40))
    done_steps: int | None = None
    seen: dict = field(default_factory=dict)  # pid -> create_time of every process seen
    extra: list = field(default_factory=list)  # (time, value) marks a line reader keeps


# Ray's own processes, named by their part (what `ray status`/Ray's logs call them), from a marker
# in their command line: the executable or script each is started as.
RAY_PROCESSES = (
    ("gcs_server", "ray_gcs_server"),
    ("raylet", "ray_raylet"),
    ("dashboard/agent.py", "ray_dashboard_agent"),
    ("dashboard/dashboard.py", "ray_dashboard"),
    ("runtime_env/agent/main.py", "ray_runtime_env_agent"),
    ("log_monitor.py", "ray_log_monitor"),
    ("autoscaler/_private/monitor.py", "ray_autoscaler_monitor"),
    ("default_worker.py", "ray_idle"),  # a worker process before it takes its ray:: title
)
# Ray's processes that retitle themselves "ray::Name": the two agents, besides the actors.
RAY_TITLES = {"dashboardagent": "ray_dashboard_agent", "runtimeenvagent": "ray_runtime_env_agent"}


def role_of(cmdline: list[str], pid: int, root: int) -> str:
    """A process's part in the run: the driver; an actor, from the title Ray gives its workers
    ("ray::Class.method"); or which of Ray's own processes it is (gcs_server, raylet, the
    dashboard and its agent, the runtime-env agent, the log monitor, ...), so that a growing one
    is named."""
    if pid == root:
        return "driver"
    title = " ".join(cmdline)
    if title.startswith("ray::"):
        name = title[5:].split(".")[0].split()[0].lower() if len(title) > 5 else ""
        for role in ("learner", "annotator", "worker", "inference"):
            if role in name:
                return role
        if name in RAY_TITLES:
            return RAY_TITLES[name]
        return "ray_idle" if name == "idle" else f"ray_{name or 'other'}"
    if title.startswith("ray-dashboard-"):  # a dashboard module in a process of its own
        return "ray_dashboard_" + title[len("ray-dashboard-") :].split("-")[0].split()[0].lower()
    for marker, role in RAY_PROCESSES:
        # the program itself, or the script an interpreter runs ("python -u .../agent.py")
        if any(a == marker or a.endswith("/" + marker) for a in cmdline[:3] if a[:1] != "-"):
            return role
    return f"ray_other_{Path(cmdline[0]).name if cmdline else 'unknown'}"


def _tree(root: int):
    import psutil

    try:
        parent = psutil.Process(root)
        return [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def sample_memory(root: int, watch: Watch) -> None:
    import psutil

    row = {}
    for proc in _tree(root):
        try:
            with proc.oneshot():
                row[proc.pid] = (role_of(proc.cmdline(), proc.pid, root), proc.memory_info().rss)
                watch.seen.setdefault(proc.pid, proc.create_time())
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    watch.memory.append((time.monotonic(), row))


def _read_console(stream, watch: Watch, on_line, echo: bool) -> None:
    for line in stream:
        line = line.rstrip("\n")
        watch.tail.append(line)
        on_line(line, watch)
        if echo:
            print(f"    | {line}", file=sys.stderr, flush=True)


def rogueray_line(line: str, watch: Watch) -> None:
    """Status lines give (time, env steps) marks; the final line the total."""
    if m := STEPS_LINE.search(line):
        watch.marks.append((time.monotonic(), int(m.group(1).replace(",", ""))))
    if m := DONE_LINE.search(line):
        watch.done_steps = int(m.group(1).replace(",", ""))


def run_watched(cmd, env, cwd, on_line, *, timeout_s, sample_every_s=3.0, echo=False):
    """Run `cmd` in its own session, feeding each output line to `on_line(line, watch)` and
    sampling its process tree's memory every `sample_every_s`; stopped after `timeout_s`.
    Returns (returncode, Watch); every process it started is gone when this returns."""
    watch = Watch(started=time.monotonic())
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        bufsize=1, start_new_session=True,
    )  # fmt: skip
    reader = threading.Thread(
        target=_read_console, args=(proc.stdout, watch, on_line, echo), daemon=True
    )
    reader.start()
    try:
        _wait(proc, watch, timeout_s, sample_every_s)
    finally:
        kill_run(proc.pid, watch)
        proc.wait()
        reader.join(timeout=5)
    return proc.returncode, watch


def kill_run(root: int, watch: Watch, grace_s: float = 20.0) -> None:
    """SIGTERM the driver (it checkpoints and shuts its Ray down), then SIGKILL whatever of the
    processes this run started is still alive (same pid and start time as when seen)."""
    import psutil

    for proc in _tree(root):
        watch.seen.setdefault(proc.pid, proc.create_time())
    with _suppress():
        os.kill(root, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and psutil.pid_exists(root):
        time.sleep(0.5)
    for pid, created in watch.seen.items():
        with _suppress():
            proc = psutil.Process(pid)
            if proc.create_time() == created:
                proc.kill()


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        import psutil

        return kind is not None and issubclass(kind, ProcessLookupError | psutil.Error)


def run_train(
    overrides: list[str],
    *,
    timeout_s: float,
    sample_every_s: float = 3.0,
    echo: bool = False,
    config: str | None = None,
) -> dict:
    """`rogueray train [config] run_dir=<temp> mode=ray ... overrides` in a child process.

    Returns {"watch": Watch, "returncode", "wall_s", "scalars": {tag: [(step, value)]}}.
    Raises RuntimeError (with the console's last lines) when the run fails or prints no
    status line. `timeout_s`: the run is stopped (SIGTERM, then SIGKILL) after this long.
    """
    run_dir = tempfile.mkdtemp(prefix="rogueray-bench-")
    cmd = [sys.executable, "-m", "cluster.cli", "train", *([config] if config else [])]
    cmd += [f"run_dir={run_dir}", "mode=ray", "log_interval_s=2.0"]
    cmd += ["checkpoint_interval_s=1000000000.0", *overrides]
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
    # A local Ray of its own: with no address, ray.init() joins the cluster someone last started
    # on this machine with `ray start` (found through its temp dir), so the run gets a temp dir
    # of its own (short: Ray's socket paths must fit 107 bytes).
    env.pop("RAY_ADDRESS", None)
    env["RAY_TMPDIR"] = ray_tmp = tempfile.mkdtemp(prefix="rr", dir="/tmp")
    returncode, watch = run_watched(
        cmd, env, REPO, rogueray_line, timeout_s=timeout_s, sample_every_s=sample_every_s,
        echo=echo,
    )  # fmt: skip
    wall = time.monotonic() - watch.started
    try:
        scalars = read_scalars(Path(run_dir) / "tensorboard")
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    if not watch.marks:
        raise RuntimeError(
            f"rogueray train printed no status line (exit {returncode}); last lines:\n"
            + "\n".join(watch.tail)
        )
    return {"watch": watch, "returncode": returncode, "wall_s": wall, "scalars": scalars}


def _wait(proc, watch: Watch, timeout_s: float, sample_every_s: float) -> None:
    next_sample = time.monotonic()
    while proc.poll() is None:
        now = time.monotonic()
        if now - watch.started > timeout_s:
            log(f"  run stopped at its time limit ({timeout_s:.0f} s)")
            return
        if sample_every_s and now >= next_sample:
            sample_memory(proc.pid, watch)
            next_sample = now + sample_every_s
        time.sleep(0.2)


def steady_rate(marks: list[tuple[float, int]], skip_s: float = 0.0, skip_steps: int = 0) -> dict:
    """Env steps/s from the first status line with steps > `skip_steps` (plus `skip_s`) to the
    last one: actor start-up (and, with `skip_steps`, a warm-up such as the LLM's loading) and
    the final checkpoint excluded. Also the seconds to that first line."""
    moving = [(t, s) for t, s in marks if s > skip_steps]
    if len(moving) < 2:
        return {"steps_per_s": None, "timed_s": 0.0, "steps": 0}
    start = moving[0][0] + skip_s
    timed = [(t, s) for t, s in moving if t >= start] or moving[-2:]
    (t0, s0), (t1, s1) = timed[0], timed[-1]
    if t1 <= t0:
        (t0, s0), (t1, s1) = moving[0], moving[-1]
    return {"steps_per_s": (s1 - s0) / (t1 - t0), "timed_s": t1 - t0, "steps": s1 - s0}


def read_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of a TensorBoard folder: {tag: [(step, value), ...]}; {} when absent."""
    if not log_dir.is_dir():
        return {}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {
        tag: [(int(e.step), float(e.value)) for e in events.Scalars(tag)]
        for tag in events.Tags()["scalars"]
    }


def last(scalars: dict, tag: str) -> float | None:
    points = scalars.get(tag)
    return points[-1][1] if points else None


def code_version() -> dict:
    """The commit measured and the product files changed on top of it (others may be editing)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return done.stdout.rstrip("\n")  # porcelain lines begin with a status that may be " "

    product = ["actors", "annotator", "cluster", "learner", "reward_models", "config_schema"]
    changed = git("status", "--porcelain", "--", *product).splitlines()
    return {"commit": git("rev-parse", "--short", "HEAD"), "uncommitted": [c[3:] for c in changed]}


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]
