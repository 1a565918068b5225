"""Process priority: the annotator yields the CPU to the training loop.

On a machine where the judge shares cores with the learner and the rollout workers (a laptop, a
CPU node), an LLM with a backlog keeps a core busy and takes that much from training. Run at a
higher nice value, it gets the cycles training leaves idle first, and a smaller share (not none)
of the cycles training wants: Linux's scheduler weighs nice 0 against nice 10 about 9:1."""

from __future__ import annotations

import os

MAX_NICENESS = 19


def lower_priority(niceness: int) -> int:
    """Run the calling process at nice value `niceness` (0-19), or leave it where it is if it
    already runs lower; returns the nice value it runs at afterwards.

    Every thread is set: on Linux the nice value belongs to each thread (a thread inherits its
    creator's), so a process with threads already running (Ray's, an event loop's) needs each
    one changed. Raising the nice value needs no privilege. Raises ValueError outside 0-19."""
    if not 0 <= niceness <= MAX_NICENESS:
        raise ValueError(f"niceness {niceness} is outside 0-{MAX_NICENESS}")
    for tid in _thread_ids():
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) < niceness:
                os.setpriority(os.PRIO_PROCESS, tid, niceness)
        except (ProcessLookupError, PermissionError):
            continue  # a thread that ended meanwhile; one we may not change
    return os.getpriority(os.PRIO_PROCESS, 0)


def _thread_ids() -> list[int]:
    """This process's thread ids where /proc lists them (Linux), else [0]: the process, which is
    what PRIO_PROCESS means where the nice value is per process (macOS)."""
    try:
        return [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:
        return [0]
