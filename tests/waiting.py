"""Waiting for asynchronous events in tests (a label stored, a node registered, a run stopped):
poll until the event happens, bounded by a generous deadline, and fail naming what was awaited
and what was seen. A fixed number of env steps or seconds is a race against the machine's speed;
a deadline only bounds how long a broken run may take to fail."""

from __future__ import annotations

import time
from collections.abc import Callable

DEADLINE_S = 600.0
"""Ten minutes: far beyond what any awaited event takes on a slow, shared 2-core machine."""


def wait_for(
    what: str,
    check: Callable[[], tuple[bool, str]],
    *,
    deadline_s: float = DEADLINE_S,
    interval_s: float = 2.0,
    abort: Callable[[], str | None] | None = None,
    details: Callable[[], str] | None = None,
) -> float:
    """Poll `check` (-> (happened, what is seen now)) until it reports the event; returns the
    seconds waited. Fails at `deadline_s`, or as soon as `abort` names a reason to stop waiting
    (e.g. the process that should cause the event has exited), with `details()` appended."""
    start = time.monotonic()
    while True:
        happened, seen = check()
        if happened:
            return time.monotonic() - start
        waited = time.monotonic() - start
        reason = abort() if abort is not None else None
        if reason is None and waited > deadline_s:
            reason = f"no sign of it after {deadline_s:.0f} s"
        if reason is not None:
            extra = f"\n{details()}" if details is not None else ""
            raise AssertionError(
                f"waited {waited:.0f} s for {what}: {reason}; last seen: {seen}{extra}"
            )
        time.sleep(interval_s)
