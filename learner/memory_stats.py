"""This process's memory, read at the moment of the call: resident set size and live malloc heap,
both in MB (2**20 bytes).

- `rss_mb()`: resident set size (RSS), the pages of this process in physical memory, from one
  read of /proc/self/statm on Linux (psutil elsewhere, when installed; else None). It includes
  memory malloc has freed but not handed back to the kernel, so it swings with what the process
  did last.
- `heap_mb()`: the bytes glibc's malloc has handed out and not had back: `mallinfo2()`'s
  `uordblks` (in use in the arenas) + `hblkhd` (in use in mmap'd blocks), through ctypes. Freed
  memory that glibc keeps is not counted, so this shows a leak without the noise of RSS. None off
  glibc (macOS, musl, Windows) or on glibc older than 2.33, which lacks mallinfo2.

The learner reads both at the end of every update (`learner/rss_mb`, `learner/heap_mb`);
benchmarks/memory.py fits their growth per million env steps. A call costs one small file read
and one mallinfo2 call (tens of microseconds). No Ray, no torch."""

from __future__ import annotations

import ctypes
import os
import sys

MB = 1 << 20
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class _Mallinfo2(ctypes.Structure):
    """glibc's `struct mallinfo2` (malloc.h): ten size_t fields, in this order."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",  # bytes of the arenas (sbrk'd and mmap'd) in all
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",  # bytes in blocks malloc mmap'd on their own (large allocations), in use
            "usmblks",
            "fsmblks",
            "uordblks",  # bytes in use in the arenas
            "fordblks",  # bytes free in the arenas, kept by malloc
            "keepcost",
        )
    ]


def _find_mallinfo2():
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):  # musl, or glibc < 2.33
        return None
    function.argtypes = []
    function.restype = _Mallinfo2
    return function


_MALLINFO2 = _find_mallinfo2()


def rss_mb() -> float | None:
    """Resident set size of this process now, in MB; None where it cannot be read."""
    try:
        with open("/proc/self/statm", "rb", buffering=0) as statm:
            return int(statm.read().split()[1]) * _PAGE_BYTES / MB  # size, resident, ... (pages)
    except OSError:
        pass
    try:
        import psutil
    except ImportError:
        return None
    return psutil.Process().memory_info().rss / MB


def heap_mb() -> float | None:
    """glibc malloc's live heap now (uordblks + hblkhd), in MB; None off glibc."""
    if _MALLINFO2 is None:
        return None
    info = _MALLINFO2()
    return (info.uordblks + info.hblkhd) / MB
