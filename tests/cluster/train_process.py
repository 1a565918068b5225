"""`rogueray train` as a real child process for end-to-end tests: it runs with a step budget no
test reaches, the test waits for the event it needs (tests/waiting.py), then stops it with
SIGTERM, the driver's clean stop (final checkpoint, exit status 0)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STOP_DEADLINE_S = 300.0
"""A clean stop finishes the current step, the LLM call in flight and the checkpoint."""


class TrainProcess:
    """`python -m cluster.cli train ARGS`, console output to `log_path`."""

    def __init__(self, args: list[str], log_path: Path):
        self.args = args
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cluster.cli", "train", *args],
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a last-resort kill reaches whatever it started
        )

    def __enter__(self) -> TrainProcess:
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:  # the test failed while it ran: stop it anyway
            try:
                self.stop()
            except AssertionError:
                pass

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 30) -> str:
        text = "\n".join(self.output().splitlines()[-lines:])
        return f"--- last lines of `rogueray train` ({self.log_path}) ---\n{text}"

    def progress(self) -> str:
        """The driver's latest console progress line, or a note that there is none yet."""
        lines = [line for line in self.output().splitlines() if " steps/s " in line]
        return lines[-1].strip() if lines else "no progress line yet"

    def training(self) -> bool:
        """True once the training loop runs: it prints progress lines, and only from inside the
        loop is SIGTERM a clean stop (before, it would end the process at once)."""
        return " steps/s " in self.output()

    def exited(self) -> str | None:
        """For wait_for's abort: why waiting is pointless (the run ended), else None."""
        status = self.proc.poll()
        return None if status is None else f"`rogueray train` exited with status {status}"

    def stop(self) -> int:
        """SIGTERM, then wait for the clean stop; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            status = self.proc.wait(timeout=STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise AssertionError(
                f"`rogueray train` did not stop within {STOP_DEADLINE_S:.0f} s of SIGTERM\n"
                + self.tail()
            ) from None
        finally:
            self._log.close()
        return status
