"""What keeps a run's shutdown clean: SIGINT/SIGTERM turned into a stop flag (a final checkpoint
after the current step), and a console whose writes never raise (a closed pipe, a full disk)."""

from __future__ import annotations

import os
import signal
import sys


class StartupInterrupted(Exception):
    """SIGINT/SIGTERM arrived before training began: nothing was trained or written."""

    def __init__(self, signum: int):
        name = signal.Signals(signum).name
        super().__init__(
            f"stopped by {name} during start-up; nothing was trained and no checkpoint written"
        )
        self.exit_code = 128 + signum  # 130 for SIGINT, 143 for SIGTERM, as a shell reports


def say(text: str) -> None:
    """Print, never raising: a closed pipe or a full disk must not stop a clean shutdown."""
    try:
        print(text, flush=True)
    except (OSError, ValueError):
        pass


class SafeStream:
    """A console stream whose write and flush never raise. On the first failure (the reader of a
    pipe gone, the disk under a redirected log full) the file descriptor is pointed at
    /dev/null, so that later prints, Ray's log lines and the interpreter's final flush are
    dropped instead of raising BrokenPipeError somewhere in the middle of a checkpoint."""

    def __init__(self, stream):
        self._stream = stream
        self.broken = False

    def write(self, text):
        if not self.broken:
            try:
                return self._stream.write(text)
            except (OSError, ValueError):
                self._break()
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self._stream.flush()
            except (OSError, ValueError):
                self._break()

    def _break(self) -> None:
        self.broken = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass

    def __getattr__(self, name):
        return getattr(self._stream, name)


class SafeConsole:
    """sys.stdout and sys.stderr as SafeStreams for the duration of a run."""

    def __enter__(self) -> SafeConsole:
        self._saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = SafeStream(sys.stdout), SafeStream(sys.stderr)
        return self

    def __exit__(self, *exc) -> None:
        sys.stdout, sys.stderr = self._saved


class StopFlag:
    """Turns SIGINT/SIGTERM into a clean stop with a final checkpoint.

    `train` installs it before anything slow (Ray, the LLM, the env) starts; `_loop`'s own
    `with StopFlag()` then gets that same flag. A signal during start-up sets the flag and
    `train` ends at its next safe point with StartupInterrupted; a signal while training stops
    after the current step; a second one raises KeyboardInterrupt (stop now).
    """

    _active: StopFlag | None = None

    def __init__(self) -> None:
        self.stop = False
        self.signum: int | None = None
        self.training = False
        self._previous = {}
        self._outer: StopFlag | None = None

    def __enter__(self) -> StopFlag:
        if StopFlag._active is not None:
            self._outer = StopFlag._active
            self._outer.training = True
            self._outer.reinstall()  # ray.init, in between, put its own handlers in place
            return self._outer
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        if self._previous:
            StopFlag._active = self
        return self

    def reinstall(self) -> None:
        """Take SIGINT and SIGTERM back after a library replaced the handlers: `ray.init` sets
        its own, under which SIGTERM killed the driver (exit -6) without a final checkpoint."""
        for sig in self._previous:
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.stop:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.stop, self.signum = True, signum
        name = signal.Signals(signum).name
        if self.training:
            say(f"\n[rogueray] {name}: stopping after this step and saving a checkpoint")
        else:
            say(f"\n[rogueray] {name}: stopping the start-up")

    def check_startup(self) -> None:
        """Raise StartupInterrupted when a signal came during start-up."""
        if self.stop and not self.training:
            raise StartupInterrupted(self.signum or signal.SIGINT)

    def __exit__(self, *exc) -> None:
        if self._outer is not None:
            return
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        if StopFlag._active is self:
            StopFlag._active = None
