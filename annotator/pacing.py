"""How hard and how loudly the annotator works: batch sizes that follow the measured speed of
the backend, user notices rate-limited per kind, and back-off waits that end at a stop. The
sizer and the notices have no clock of their own: callers pass `time.monotonic()` readings, so
tests drive them with plain numbers."""

from __future__ import annotations

import asyncio

INVALID_WARN_RATE = 0.5  # above this share of unreadable answers the user is told
INVALID_WARN_AFTER = 20  # answers, before the share means anything


class BatchSizer:
    """Prompts per request, sized so that one request takes about `target_s` of backend time.

    Starts at `first` (small, so the first labels arrive within seconds even on a loaded
    machine), then follows an exponential moving average of the measured rate (prompts/s), never
    below `first`: smaller batches would only make a slow machine slower per prompt. The time a
    batch spent queued behind the previous one is not counted: its busy time starts when it was
    sent or when the previous batch finished, whichever is later.
    """

    def __init__(self, first: int, largest: int, target_s: float, smoothing: float = 0.3):
        if largest < 1 or first < 1 or target_s <= 0 or not 0 < smoothing <= 1:
            raise ValueError(
                f"need first >= 1, largest >= 1, target_s > 0, smoothing in (0, 1]; got "
                f"{first}, {largest}, {target_s}, {smoothing}"
            )
        self.largest, self.target_s, self.smoothing = largest, target_s, smoothing
        self.smallest = self.size = min(first, largest)
        self.rate: float | None = None  # prompts/s
        self._last_done: float | None = None

    def measured(self, prompts: int, sent: float, done: float) -> None:
        """A batch of `prompts` sent at `sent` was answered at `done` (seconds)."""
        start = sent if self._last_done is None else max(sent, self._last_done)
        self._last_done = done
        busy = done - start
        if prompts < 1 or busy <= 0:
            return
        rate = prompts / busy
        a = self.smoothing
        self.rate = rate if self.rate is None else (1 - a) * self.rate + a * rate
        self.size = int(min(self.largest, max(self.smallest, round(self.rate * self.target_s))))


AUTO_CPU_SHARE = 0.05
"""`annotator.busy_share` None: the share of the machine's CPU time that an LLM computing on
them may take. On 2 cores the judge's cost to training followed its busy time, not its niceness
(docs/performance.md, "What the intrinsic reward costs")."""


class DutyCycle:
    """Rests the backend between batches so that it is busy at most `share` of the time.

    A batch that kept the backend busy `b` seconds, from `start` (when it was sent or the one
    before it finished, whichever is later), lets the next go at `start + b / share` at the
    earliest; rests add up when batches finish back to back (several in flight). For a backend
    computing on this machine's CPUs (`cpu_threads`), `b` is the CPU time it spent over its
    threads, so a batch that took long because the machine was busy, not because it computed,
    is not made to rest for it; otherwise `b` is the wall-clock time. The first batch (the
    model's warm-up) is not counted. `share` 1 never rests. Times are `time.monotonic()` s.
    """

    def __init__(self, share: float, notice: str | None = None, cpu_threads: int | None = None):
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share}")
        self.share, self.notice, self.cpu_threads = share, notice, cpu_threads
        self._next = float("-inf")  # the earliest the next batch may go
        self._last_done: float | None = None
        self._cpu_seen: float | None = None

    @classmethod
    def chosen(
        cls, setting: float | None, cpu_threads: int | None, cpus: int | None = None
    ) -> DutyCycle:
        """`annotator.busy_share` as set or, for None, 1 for a backend that computes elsewhere
        (`cpu_threads` None), else AUTO_CPU_SHARE of the `cpus` (default: those this process
        may use, `loky.cpu_count()`: its CPU affinity and a container's CPU quota) over the
        threads it computes on: 0.1 for one thread on 2 CPUs, 1 from 20. Below 1, `notice` is
        the console line that says so."""
        if cpu_threads is not None and cpus is None:
            import loky

            cpus = loky.cpu_count()
        share = setting
        if share is None:
            share = 1.0 if cpu_threads is None else min(1.0, AUTO_CPU_SHARE * cpus / cpu_threads)
        if share >= 1:
            return cls(1.0)
        why = (
            f"annotator.busy_share={share:g}"
            if setting is not None
            else f"it computes on {cpu_threads} of this machine's {cpus} CPUs beside training; "
            "annotator.busy_share=1 never rests: more labels/s, fewer steps/s"
        )
        return cls(
            share,
            f"the LLM rests between batches, busy at most {share * 100:.3g}% of the time ({why})",
            cpu_threads,
        )

    def measured(self, sent: float, done: float, cpu_seconds: float | None = None) -> None:
        """A batch sent at `sent` was answered at `done`; `cpu_seconds`: the backend's running
        total (`LLMBackend.cpu_seconds`), read then, for a backend on this machine's CPUs."""
        if self.share >= 1:
            return  # never rests
        first = self._last_done is None
        start = sent if first else max(sent, self._last_done)
        self._last_done = done
        if self.cpu_threads is not None and cpu_seconds is not None:
            spent = cpu_seconds - (cpu_seconds if self._cpu_seen is None else self._cpu_seen)
            self._cpu_seen = cpu_seconds
            busy = spent / self.cpu_threads
        else:
            busy = max(0.0, done - start)
        if not first:
            self._next = max(self._next, start) + busy / self.share

    def wait_s(self, now: float) -> float:
        """Seconds until the next batch may be sent (0: now)."""
        return max(0.0, self._next - now)


class Notices:
    """One line per notice, each kind (`key`) at most once per `interval_s`."""

    def __init__(self, interval_s: float = 60.0):
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._lines: list[str] = []

    def add(self, key: str, message: str, now: float) -> bool:
        """Queue `message` unless a notice of this kind was queued within the interval."""
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            return False
        self._last[key] = now
        self._lines.append(message)
        return True

    def drain(self) -> list[str]:
        out, self._lines = self._lines, []
        return out


def unreadable_notice(bad: int, answers: int, style: str, retries: int) -> str | None:
    """The line telling the user that most answers could not be read, with what to try; None
    while fewer than INVALID_WARN_AFTER answers came back or at most INVALID_WARN_RATE of them
    were unreadable."""
    if answers < INVALID_WARN_AFTER or bad / answers <= INVALID_WARN_RATE:
        return None
    hint = (
        "try annotator.style=reasoned, a larger model, or a lower annotator.min_choice_mass"
        if style == "direct"
        else "try annotator.style=direct or a larger model"
    )
    return (
        f"{bad} of {answers} answers could not be read as labels (never stored, re-asked up to "
        f"{retries} times); {hint}"
    )


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    """Wait `seconds`, or less if `stop` is set meanwhile."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass
