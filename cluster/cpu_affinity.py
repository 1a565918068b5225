"""Rollout workers pinned to cores, one worker per core of its node: Sample Factory's
`set_workers_cpu_affinity` (Petrenko et al. 2020, "Sample Factory", section 3; on by default
there too).

NetHack's step is bound by the core's caches: every NLE instance runs its own copy of
libnethack.so, so a worker keeps 16 copies warm in its core's L2. A worker that the scheduler
moves, or that the driver and Ray's daemons wake up beside on the same core, refills them.
Pinned, the sampler with a trivial policy stepped 4 % more env steps per second on the 2-core
machine of docs/performance.md (6 alternating pairs, pinned ahead in each); raw stepping of the
same envs gained nothing from it.

A worker claims a core by holding an exclusive `flock` on `core-<n>` in a directory shared by
the processes that coordinate (a Ray session's: see `claim_directory`). The lock goes with its
process, so a dead worker's core is free at once for its restart. Cores are those the process
may run on (`os.sched_getaffinity`: a container's or a cgroup's cpuset); a worker finding every
one taken stays unpinned."""

from __future__ import annotations

import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock, no pinning
    fcntl = None

_held: dict[int, int] = {}  # this process's claim: {core: descriptor}, open for its lifetime
_unpinned: set[int] = set()  # the cores the process could run on before its claim


def claim_core(directory: str | os.PathLike) -> int | None:
    """Pin this process to the lowest core it may run on that no live process has claimed in
    `directory`, and return that core; None when every core is claimed or the platform cannot
    pin (no `sched_setaffinity` or no `flock`: not Linux), leaving the process as it was. A
    second call returns the core already held."""
    if _held:
        return next(iter(_held))
    if fcntl is None or not hasattr(os, "sched_setaffinity"):
        return None
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for core in sorted(os.sched_getaffinity(0)):
        fd = os.open(directory / f"core-{core}", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another live process holds it
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for a reader
        _unpinned.update(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        _held[core] = fd
        return core
    return None


def release_core() -> None:
    """Give this process's claim up and let it run on the cores it could before (for A/B
    measurements: benchmarks/sampler_rates.py); nothing when it holds none."""
    for core, fd in list(_held.items()):
        os.sched_setaffinity(0, _unpinned)
        os.close(fd)  # drops the lock
        del _held[core]


def claim_directory() -> Path:
    """The claims of this Ray session, in its session directory (Ray removes it with the
    session): the workers of every run on the session's nodes share it. Call inside Ray."""
    import ray

    context = ray.get_runtime_context()
    return Path(context.get_temp_dir()) / context.get_session_name() / "rogueray-cores"
