"""`HeapFloor`: a memory reading of the annotator's process that shows growth without the swing of
its LLM batches. A model's activations are allocated and freed within each batch, so the resident
set sampled at random moments swings by hundreds of MB; the lowest of the live-heap readings
taken as recent batches came back moves only when something stays allocated."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

READINGS = 20  # the floor is the lowest of this many recent readings


class HeapFloor:
    """The lowest of the last `READINGS` values of `reader()` (MB; None readings are skipped).

    `reader` is e.g. learner/memory_stats.py's `heap_mb`, passed in by `cluster/` (the annotator
    does not import the learner). With two batches in flight a reading may fall inside the other
    batch's forward pass; the minimum over twenty leaves those out."""

    def __init__(self, reader: Callable[[], float | None] | None):
        self._reader = reader
        self._readings: deque[float] = deque(maxlen=READINGS)

    def read(self) -> None:
        """Take one reading (after a batch came back)."""
        value = None if self._reader is None else self._reader()
        if value is not None:
            self._readings.append(value)

    def floor(self) -> float | None:
        """MB, or None before any reading (or without a reader)."""
        return min(self._readings, default=None)
