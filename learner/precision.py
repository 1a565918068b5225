"""The policy network's compute precision: float32, or bfloat16 matrix products under autocast
where the hardware runs them natively.

bfloat16 keeps float32's exponent range, so no loss scaling is needed (unlike float16). Under
`torch.autocast` the weights, Adam's state, the GRU state between steps and everything the loss
reads (logits, values) stay float32; only convolutions and matrix products run in bfloat16. On
this project's 2-core CI machine (AVX512-BF16) that made the NetHack network's learner update
1.6x and its batch-64 inference 1.5x faster (benchmarks/precision.py prints the figures).
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

PRECISIONS = ("auto", "float32", "bfloat16")
"""`model.precision` values. "auto": bfloat16 where the device computes it natively (a CUDA GPU
with bfloat16 support, a CPU with AVX512-BF16 or AMX), else float32."""

_DTYPES = {"float32": None, "bfloat16": torch.bfloat16}


@functools.cache
def _cpu_has_native_bfloat16() -> bool:
    """True on x86 CPUs that advertise AVX512-BF16 or AMX-BF16 (Linux /proc/cpuinfo); elsewhere
    (other OSes, ARM) False: emulated bfloat16 is slower than float32 there."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@functools.cache
def native_bfloat16(device_type: str) -> bool:
    """Whether `device_type` ("cpu" or "cuda") runs bfloat16 matrix products natively."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type == "cpu":
        return _cpu_has_native_bfloat16()
    return False


def autocast_dtype(precision: str, device_type: str) -> torch.dtype | None:
    """The autocast dtype for `precision` on `device_type`; None means plain float32.

    Raises ValueError for a precision outside PRECISIONS.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision == "auto":
        return torch.bfloat16 if native_bfloat16(device_type) else None
    return _DTYPES[precision]


def autocast(precision: str, device_type: str) -> torch.autocast:
    """The autocast context for `precision` on `device_type` (disabled for float32).

    Autocast caches its bfloat16 copies of the weights until the outermost context exits, so a
    caller that runs many small forward passes (a rollout worker's unroll) wraps them all in
    one context: the weights are converted once per unroll instead of once per step.
    """
    dtype = autocast_dtype(precision, device_type)
    return torch.autocast(device_type, dtype=dtype or torch.float32, enabled=dtype is not None)
