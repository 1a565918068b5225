"""Real faults: a rollout worker process killed mid-run is restarted and sampling goes on, and so
does sampling when a shared inference actor is killed (no worker counted lost), while one that
Ray will not restart stops the run with the way on; SIGTERM stops a run cleanly with a
checkpoint that the next invocation resumes from; a full disk (a small tmpfs, really filled)
costs checkpoints, never the run or its older checkpoints; the reader of a piped console going
away never costs the final checkpoint."""

import errno
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from cluster.checkpoint import list_checkpoints, load_latest, read_checkpoint
from cluster.config import load_config
from tests.cluster.ray_runs import started_runner

ROOT = Path(__file__).resolve().parents[2]
CARTPOLE = str(ROOT / "configs" / "cartpole.yaml")


@pytest.mark.ray
@pytest.mark.slow
def test_killed_worker_is_restarted_and_sampling_goes_on(tmp_path):
    import ray

    config = load_config(CARTPOLE, [f"run_dir={tmp_path}", "rollout.num_workers=2"])
    with started_runner(config, collects=4) as runner:
        victim = runner.workers[0]
        pid = ray.get(victim.__ray_call__.remote(lambda self: os.getpid()))
        os.kill(pid, signal.SIGKILL)  # the process dies as it would on a node failure
        steps_after, deadline = 0, time.monotonic() + 60
        while (runner.restarts == 0 or steps_after < 2000) and time.monotonic() < deadline:
            fragments, _, steps = runner.collect()
            steps_after += steps
        assert runner.restarts >= 1
        assert steps_after >= 2000
        new_pid = None
        while new_pid is None and time.monotonic() < deadline:
            try:
                new_pid = ray.get(victim.__ray_call__.remote(lambda self: os.getpid()))
            except ray.exceptions.ActorUnavailableError:  # still restarting
                time.sleep(0.1)
        assert new_pid != pid  # the same actor, a new process


@pytest.mark.ray
@pytest.mark.slow
def test_killed_inference_actor_is_said_and_no_worker_counted_lost(tmp_path):
    """With shared inference, the inference actor's death fails its workers' samples in flight:
    Ray restarts it, the runner redoes them, says so in one notice and counts no worker lost."""
    import ray

    overrides = [f"run_dir={tmp_path}", "rollout.num_workers=2", "rollout.inference=shared"]
    config = load_config(CARTPOLE, overrides)
    with started_runner(config, collects=4) as runner:

        def pid_of(actor) -> int:
            return ray.get(actor.__ray_call__.remote(lambda self: os.getpid()))

        worker_pids = [pid_of(w) for w in runner.workers.values()]
        (inference,) = runner.inference.actors.values()
        os.kill(pid_of(inference), signal.SIGKILL)
        steps_after, notices, deadline = 0, [], time.monotonic() + 60
        while (not notices or steps_after < 2000) and time.monotonic() < deadline:
            steps_after += runner.collect()[2]
            notices += [n for n in runner.poll_notices() if "inference" in n]
        assert steps_after >= 2000
        assert len(notices) == 1 and "no worker was lost" in notices[0], notices
        assert runner.restarts == 0, runner.restarts
        assert [pid_of(w) for w in runner.workers.values()] == worker_pids


@pytest.mark.ray
@pytest.mark.slow
def test_inference_actor_dead_for_good_stops_the_run_with_the_way_on(tmp_path):
    """Ray does not restart an actor killed without restart (nor one whose constructor fails
    when restarted): the workers' samples would fail forever, so the run stops and says how to
    go on."""
    import ray

    from cluster.inference import InferenceUnavailable

    overrides = [f"run_dir={tmp_path}", "rollout.num_workers=2", "rollout.inference=shared"]
    config = load_config(CARTPOLE, overrides)
    with started_runner(config, collects=4) as runner:
        (inference,) = runner.inference.actors.values()
        ray.kill(inference, no_restart=True)
        deadline = time.monotonic() + 60
        with pytest.raises(InferenceUnavailable) as stopped:
            while time.monotonic() < deadline:
                runner.collect()
    message = str(stopped.value)
    assert "killed" in message and "will not restart" in message, message
    assert f"rogueray resume {tmp_path} rollout.inference=worker" in message


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["serial", pytest.param("ray", marks=pytest.mark.ray)])
def test_sigterm_checkpoints_and_resume_continues(tmp_path, mode):
    # In Ray mode ray.init replaces the driver's SIGTERM handler; it must be taken back, or
    # SIGTERM kills the driver (exit -6) without a final checkpoint.
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "cluster.cli", "train", CARTPOLE, f"run_dir={run_dir}",
           f"mode={mode}", "total_env_steps=10000000", "log_interval_s=0.5", "checkpoint_interval_s=3600"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    for line in proc.stdout:  # wait until it is really training
        if (
            "steps/s" in line
            and "episodes" in line
            and not line.split("steps")[1].strip().startswith("0/")
        ):
            break
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, out
    assert "SIGTERM: stopping" in out
    saved = load_latest(run_dir)
    assert saved is not None and saved["counters"]["env_steps"] > 0
    done = saved["counters"]["env_steps"] / 10_000_000  # the share the checkpoint holds
    stopped = f"[rogueray] stopped at {done:.0%} of 10,000,000; to go on: rogueray resume {run_dir}"
    assert stopped in out, out

    more = f"total_env_steps={saved['counters']['env_steps'] + 1_000}"
    resumed = subprocess.run(
        [*cmd[:-4], f"mode={mode}", more], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resuming {run_dir} from step {saved['counters']['env_steps']:,d}" in resumed.stdout


class _Run:
    """`rogueray train` in a subprocess of its own session; its stdout read line by line by a
    thread, so the test waits for what the run says (with a generous deadline only against a
    hang, never as an assertion about speed)."""

    def __init__(self, *args: str, stderr_path: Path, env: dict | None = None):
        cmd = [sys.executable, "-m", "cluster.cli", "train", CARTPOLE, *args]
        self.err = open(stderr_path, "w")  # noqa: SIM115 - closed in finish()
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=self.err, text=True,
            start_new_session=True, env={**os.environ, **(env or {})},
        )  # fmt: skip
        self.lines: queue.Queue = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        _STARTED.append(self)

    def _read(self) -> None:
        try:
            for line in self.proc.stdout:
                self.lines.put(line)
        except ValueError:  # the test closed the pipe: the reader is gone
            pass
        self.lines.put(None)

    def wait_for(self, text: str, deadline_s: float = 300) -> str:
        end = time.monotonic() + deadline_s
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, end - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None or time.monotonic() > end:
                self.proc.kill()
                raise AssertionError(f"never saw {text!r}; output:\n{''.join(self.seen)}")
            self.seen.append(line)
            if text in line:
                return line

    def finish(self, deadline_s: float = 300) -> tuple[int, str, str]:
        code = self.proc.wait(timeout=deadline_s)
        while (line := self.lines.get(timeout=deadline_s)) is not None:
            self.seen.append(line)
        self.err.close()
        return code, "".join(self.seen), Path(self.err.name).read_text()


_STARTED: list = []


@pytest.fixture(autouse=True)
def _no_run_outlives_its_test():
    """A test that fails half-way must not leave its training run going (its own session, so
    nothing else would stop it: one such run kept a core busy for hours)."""
    yield
    while _STARTED:
        run = _STARTED.pop()
        if run.proc.poll() is None:
            os.killpg(run.proc.pid, signal.SIGKILL)
            run.proc.wait()


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs: a real file system that really fills up."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path) -> Path:
    """Write a file until the disk is full (ENOSPC); returns it."""
    filler = disk / f"filler-{uuid.uuid4().hex}"
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def _no_temp_files(run_dir: Path) -> bool:
    return not [p for p in (run_dir / "checkpoints").iterdir() if ".tmp-" in p.name]


def _first_checkpoint(run_dir: Path, run: "_Run") -> None:
    while not list_checkpoints(run_dir):
        assert run.proc.poll() is None, run.finish()
        time.sleep(0.2)


FAST = ["mode=serial", "rollout.num_workers=1", "total_env_steps=100000000", "log_interval_s=1"]


@pytest.mark.slow
def test_disk_full_costs_checkpoints_not_the_run(small_disk, tmp_path):
    run_dir = small_disk / "run"
    run = _Run(f"run_dir={run_dir}", *FAST, "checkpoint_interval_s=0.5",
               stderr_path=tmp_path / "stderr")  # fmt: skip
    _first_checkpoint(run_dir, run)
    filler = _fill(small_disk)
    failed = run.wait_for("not written")
    assert "No space left on device" in failed and "training goes on" in failed
    kept_while_full = list_checkpoints(run_dir)
    assert kept_while_full and _no_temp_files(run_dir)  # the partial file is gone
    filler.unlink()  # space is freed: the next try succeeds without a restart
    recovered = run.wait_for("checkpoint written again")
    run.proc.send_signal(signal.SIGTERM)
    code, out, err = run.finish()
    assert code == 0, out + err
    assert "Traceback" not in err and "rogueray: error" not in err
    newest = list_checkpoints(run_dir)[-1]
    assert newest.name in recovered or newest > kept_while_full[-1]
    assert read_checkpoint(newest)["counters"]["env_steps"] > 0
    assert _no_temp_files(run_dir)
    print(f"while full: {failed.strip()}\nafter freeing: {recovered.strip()}")


@pytest.mark.slow
def test_disk_that_stays_full_stops_with_a_way_out(small_disk, tmp_path):
    run_dir = small_disk / "run"
    run = _Run(f"run_dir={run_dir}", *FAST, "checkpoint_interval_s=0.2",
               stderr_path=tmp_path / "stderr")  # fmt: skip
    _first_checkpoint(run_dir, run)
    _fill(small_disk)
    code, out, err = run.finish()
    assert code == 2, out + err
    assert err.count("rogueray: error:") == 1 and "Traceback" not in err, err
    assert "checkpoints in a row failed" in err and "Free space on the file system" in err
    assert f"rogueray resume {run_dir}" in err
    kept = list_checkpoints(run_dir)
    assert kept and all(read_checkpoint(p) for p in kept) and _no_temp_files(run_dir)
    assert f"the newest kept is {kept[-1].name}" in err


@pytest.mark.slow
def test_console_reader_gone_still_saves_the_final_checkpoint(tmp_path):
    """`rogueray train ... | tee out` and Ctrl-C: tee dies first, the console is a broken pipe."""
    run_dir = tmp_path / "run"
    run = _Run(f"run_dir={run_dir}", *FAST, "checkpoint_interval_s=3600",
               stderr_path=tmp_path / "stderr")  # fmt: skip
    run.wait_for("steps/s")
    run.wait_for("steps/s")  # training for real
    run.proc.stdout.close()  # the reader of the pipe is gone, as tee killed by the same Ctrl-C
    os.killpg(run.proc.pid, signal.SIGINT)
    code = run.proc.wait(timeout=300)
    run.err.close()
    err = (tmp_path / "stderr").read_text()
    assert code == 0, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    saved = load_latest(run_dir)
    assert saved is not None and saved["counters"]["env_steps"] > 0


@pytest.mark.slow
def test_driver_killed_9_resumes_from_the_newest_complete_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    run = _Run(f"run_dir={run_dir}", *FAST, "checkpoint_interval_s=0.3",
               stderr_path=tmp_path / "stderr")  # fmt: skip
    while len(list_checkpoints(run_dir)) < 2:
        assert run.proc.poll() is None, run.finish()
        time.sleep(0.2)
    os.killpg(run.proc.pid, signal.SIGKILL)  # no handler, no final checkpoint, maybe mid-write
    run.proc.wait(timeout=60)
    newest = list_checkpoints(run_dir)[-1]  # temp files of a write cut short are not listed
    step = read_checkpoint(newest)["counters"]["env_steps"]
    resumed = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "resume", str(run_dir), f"total_env_steps={step + 1}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resuming {run_dir} from step {step:,d}" in resumed.stdout
    assert read_checkpoint(list_checkpoints(run_dir)[-1])["counters"]["env_steps"] > step


def _mount(path: Path, options: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")


@pytest.mark.parametrize("kind", ["read-only", "full"])
def test_unwritable_run_dir_fails_before_ray(tmp_path, capsys, kind):
    """A read-only file system (EROFS: root cannot write either) or a full one at start."""
    from cluster.cli import main

    disk = tmp_path / "disk"
    _mount(disk, "ro,size=1m" if kind == "read-only" else "size=64k")
    try:
        if kind == "full":
            (disk / "run").mkdir()
            _fill(disk)
        code = main(["train", CARTPOLE, f"run_dir={disk / 'run'}", "mode=ray"])
        err = capsys.readouterr().err
        assert code == 2, err
        assert err.startswith("rogueray: error:") and err.count("\n") == 1, err
        assert "Traceback" not in err
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
    import ray

    assert not ray.is_initialized()
