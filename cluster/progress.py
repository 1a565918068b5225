"""Progress of the long commands (judge, collect, annotate, fit-reward, evaluate, replay) on
stderr: a tqdm bar on a terminal; elsewhere (a log file, a pipe, CI, `nohup`) a plain line 5 s
after the start, then every `interval_s` (30 s), and one at the end, as training's console does
(cluster/console.py):

    [rogueray] judge: 120/600 questions (20%), 2.10/s, elapsed 0:00:57, ETA 0:03:48

Not tqdm off a terminal: it redraws its line with '\\r', so a log file gets every update on one
physical line (`wc -l` counts 1, `tail` shows a wall of bars in block characters), and it writes
only when a unit of work ends, so an evaluation episode that takes minutes leaves the log silent.
Here a timer thread writes the line whether or not work ended since the last one."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

from cluster.console import PREFIX, format_duration

NO_PROGRESS_HELP = "no progress: no bar on a terminal, no progress lines in a log or a pipe"
INTERVAL_S = 30.0
"""Seconds between plain progress lines."""
FIRST_LINE_S = 5.0
"""Seconds to the first plain line (sooner when `interval_s` is shorter): a command working
longer than that says so early, one that ends before it prints only its last line."""
NOTE_REFRESH_S = 0.5
"""At most this often a note alone redraws the bar (notes may come every env step)."""


@contextlib.contextmanager
def loading_note(command: str, target, enabled: bool = True, after_s: float = FIRST_LINE_S):
    """Say on stderr that `command` is loading `target` when its set-up before the progress
    starts (torch, the checkpoint, the env: half a minute on a loaded laptop) takes longer than
    `after_s`; a quick set-up, or one refused at once (bad input: one error line), says nothing."""
    line = f"{PREFIX} {command}: loading {target} (the checkpoint, its policy, the env) ..."
    timer = threading.Timer(after_s, lambda: print(line, file=sys.stderr, flush=True))
    timer.daemon = True
    if enabled:
        timer.start()
    try:
        yield
    finally:
        timer.cancel()


class Progress:
    """`update(n)`: n more units done; `done_before(n)`: n units a resumed command found done
    (shown, not in the rate); `note(text)`: what is going on now (the mode, the episode's
    steps); `close()`, or the end of a `with` block: the last line. `enabled=False`
    (--no-progress) writes nothing at all. `tty` (default: the stream's isatty) picks the bar;
    `interval_s` (default INTERVAL_S, read when made) spaces the plain lines; `clock` (seconds)
    times the rate, elapsed and ETA."""

    def __init__(
        self,
        total: int | None,
        *,
        desc: str,
        unit: str,
        enabled: bool = True,
        stream: TextIO | None = None,
        tty: bool | None = None,
        interval_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.total, self.desc, self.unit = total, desc, unit
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = _isatty(self.stream) if tty is None else tty
        self.n = 0
        self._before = 0
        self._note = ""
        self.clock = clock
        self._started = self._noted = clock()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._closed = False
        self._bar = self._timer = None
        if enabled and self.tty:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, desc=desc, unit=unit, file=self.stream, dynamic_ncols=True
            )
        elif enabled:
            self._timer = threading.Thread(
                target=self._every,
                args=(INTERVAL_S if interval_s is None else interval_s,),
                name=f"progress-{desc}",
                daemon=True,
            )
            self._timer.start()

    def update(self, n: int = 1) -> None:
        with self._lock:
            self.n += n
        if self._bar is not None:
            self._bar.update(n)

    def done_before(self, n: int) -> None:
        with self._lock:
            self.n += n
            self._before += n
        if self._bar is not None:  # counted as tqdm's `initial`, outside its rate
            self._bar.n += n
            self._bar.initial += n
            self._bar.last_print_n = self._bar.n
            self._bar.refresh()

    def note(self, text: str) -> None:
        with self._lock:
            self._note = text
        if self._bar is not None:
            now = self.clock()
            redraw = now - self._noted >= NOTE_REFRESH_S
            self._bar.set_postfix_str(text, refresh=redraw)
            self._noted = now if redraw else self._noted

    def line(self, final: bool = False) -> str:
        """The plain line: count, share of the total, rate of this run, elapsed, ETA and the
        note; when final, the time it took instead of the last three."""
        with self._lock:
            n, before, note = self.n, self._before, self._note
        elapsed = self.clock() - self._started
        rate = (n - before) / elapsed if elapsed > 0 else 0.0
        plural = self.unit if (self.total or n) == 1 else self.unit + "s"
        if self.total:
            count = f"{n:,d}/{self.total:,d} {plural} ({100 * min(n / self.total, 1):.0f}%)"
        else:
            count = f"{n:,d} {plural}"
        parts = [f"{PREFIX} {self.desc}: {count}", f"{_rate(rate)}/s"]
        if final:
            parts.append(f"in {format_duration(elapsed)}")
        else:
            eta = max(self.total - n, 0) / rate if self.total and rate > 0 else None
            parts += [f"elapsed {format_duration(elapsed)}", f"ETA {format_duration(eta)}"]
        return ", ".join(parts + ([note] if note and not final else []))

    def close(self, final_line: bool = True) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._timer is not None:
            self._timer.join()
            if final_line:
                self._write(self.line(final=True))
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # a command that failed before doing anything adds no line to its error's
        self.close(final_line=exc_type is None or self.n > self._before)

    def _every(self, interval_s: float) -> None:
        wait = min(FIRST_LINE_S, interval_s)
        while not self._stop.wait(wait):
            self._write(self.line())
            wait = interval_s

    def _write(self, text: str) -> None:
        try:
            print(text, file=self.stream, flush=True)
        except (OSError, ValueError):  # the log is gone: the work goes on
            pass


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


def _rate(per_s: float) -> str:
    return f"{per_s:,.0f}" if per_s >= 100 else f"{per_s:.3g}"
