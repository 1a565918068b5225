"""PyTorch's CPU kernel caches, bounded in every process of a run.

PyTorch's CPU kernels (oneDNN) keep one compiled kernel per input shape, in oneDNN's primitive
cache and in ideep's LRU, up to 1,024 entries each. The annotator's LLM runs batches of hundreds
of shapes (rows x suffix tokens, as the batch sizer and the captions vary), so its live heap grew
~60-70 MB per 1,000 labels toward that bound (459 -> 779 MB over 5,000 labels: the annotator
alone, embedded SmolLM2, batches of 4-32 rows; benchmarks/annotator_memory.py) and was flat with
64 entries each (389-408 MB) at the same labels/s. The learner was no slower with 64 (3,981-3,994
samples/s against 3,925-3,935 at the default, batch 4,096, alternating runs).

The variables are read once, by the first kernel a process compiles, so the CLI sets them before
any work (`bound_in_this_process`); processes it starts (a local Ray's) inherit them, and the
annotator's actor gets them through its runtime env too (`kernel_cache_env`, for a cluster whose
nodes started without them). A value exported beforehand wins.
"""

from __future__ import annotations

import os

KERNEL_CACHE_ENTRIES = 64
KERNEL_CACHE_VARS = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")


def kernel_cache_env() -> dict[str, str]:
    """{variable: entries} for a process's environment: this process's values where set, else
    KERNEL_CACHE_ENTRIES."""
    return {name: os.environ.get(name, str(KERNEL_CACHE_ENTRIES)) for name in KERNEL_CACHE_VARS}


def bound_in_this_process() -> None:
    """Set the variables in this process's environment where unset; call it before the first
    PyTorch kernel runs (later, it changes nothing for this process, only for its children)."""
    for name, value in kernel_cache_env().items():
        os.environ.setdefault(name, value)
