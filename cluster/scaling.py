"""`rogueray scale RUN_DIR N`: change the number of rollout workers of a run from another shell.

The request is a small file in the run directory (`scale.json`), written atomically. A running
driver checks its modification time once per loop iteration and resizes its workers; a run
that is not running starts with that many workers the next time it is trained or resumed, since
the file stays. A request the running driver refuses (not enough CPUs on a local Ray) is withdrawn
by it, and `rogueray scale RUN_DIR --cancel` withdraws a standing one. The driver records its
process id in `driver.pid` while it runs, so that `scale` can say which of the two will happen.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from cluster.validation import ConfigError, saved_config

REQUEST_FILE = "scale.json"
PID_FILE = "driver.pid"


class ScaleError(ValueError):
    """A scale request that cannot be made or read; the message says what is wrong."""


def request_workers(run_dir: str | Path, num_workers: int) -> None:
    """Ask the run in `run_dir` for `num_workers` rollout workers."""
    run_dir = Path(run_dir)
    try:
        saved_config(run_dir)
    except ConfigError as exc:
        raise ScaleError(str(exc)) from None
    if num_workers < 1:
        raise ScaleError(f"the number of rollout workers must be >= 1, got {num_workers}")
    temp = run_dir / f".{REQUEST_FILE}.{os.getpid()}"
    temp.write_text(json.dumps({"num_workers": num_workers}) + "\n")
    os.replace(temp, run_dir / REQUEST_FILE)


def withdraw_request(run_dir: str | Path, only: int | None = None) -> int | None:
    """Remove the standing request of `run_dir` (only if it asks for `only` workers, when given:
    a newer request made meanwhile stays); returns the workers it asked for, or None."""
    try:
        wanted = requested_workers(run_dir)
    except ScaleError:
        wanted = None  # unreadable: removed all the same when no particular request is meant
        if only is not None:
            return None
    if only is not None and wanted != only:
        return None
    (Path(run_dir) / REQUEST_FILE).unlink(missing_ok=True)
    return wanted


def requested_workers(run_dir: str | Path) -> int | None:
    """The rollout workers `scale.json` asks for, or None when there is no request."""
    path = Path(run_dir) / REQUEST_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ScaleError(
            f"{path} is not a scale request ({exc}); remove it or rewrite it"
        ) from None
    value = data.get("num_workers") if isinstance(data, dict) else None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ScaleError(f"{path}: 'num_workers' must be an integer >= 1, got {value!r}")
    return value


class ScaleWatcher:
    """For the driver: `poll()` returns a new request once, when `scale.json` has changed."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / REQUEST_FILE
        self._seen = self._stamp()

    def _stamp(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def poll(self) -> int | None:
        stamp = self._stamp()
        if stamp == self._seen:
            return None
        self._seen = stamp
        return requested_workers(self.path.parent)


class DriverPid:
    """`driver.pid` (host and pid) while a driver runs in the run directory."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / PID_FILE

    def __enter__(self) -> DriverPid:
        self.path.write_text(f"{socket.gethostname()} {os.getpid()}\n")
        return self

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)


def running_driver(run_dir: str | Path) -> str | None:
    """Who is driving the run in `run_dir` ("pid 123", or "pid 123 on host-b" when it runs on
    another machine and cannot be checked from here), or None when nobody is."""
    try:
        host, pid_text = (Path(run_dir) / PID_FILE).read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    if host != socket.gethostname():
        return f"pid {pid} on {host}"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None  # stale: the driver died without cleaning up
    except PermissionError:
        pass  # alive, another user's
    return f"pid {pid}"
