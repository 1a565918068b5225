"""The annotator's metric names (TensorBoard tags), as constants: the keys of `Annotator.stats`.
One place per name: `cluster/metrics.py` and the console import them from here."""

LABELS_TOTAL = "annotator/labels_total"
LABELS_PER_S = "annotator/labels_per_s"
PENDING = "annotator/pending"
INVALID_RATE = "annotator/invalid_answer_rate"
POSITIVE_FRACTION = "annotator/positive_fraction"
DROPPED = "annotator/dropped_total"
FAILED_REQUESTS = "annotator/failed_requests"
BACKEND_UP = "annotator/backend_up"
BACKEND_STATE = "annotator/backend_state"  # STARTING, WAITING, ANSWERING or NOT_ANSWERING
STARTING, ANSWERING, NOT_ANSWERING, WAITING = 0.0, 1.0, -1.0, 0.5
"""The values of BACKEND_STATE: a model loading, answering, not answering (down or failed), a
server not answered yet (its first look)."""
BATCH_SIZE = "annotator/batch_size"
FIRST_LABEL_DELAY = "annotator/first_label_delay_s"
LABEL_LATENCY_P50 = "annotator/label_latency_p50_s"
"""Median seconds from a caption's first sighting to its stored label, over recent labels."""
LABEL_LATENCY_P95 = "annotator/label_latency_p95_s"
HEAP_FLOOR_MB = "annotator/heap_floor_mb"
"""Ray mode: the lowest of glibc's live-heap readings (MB) taken in the annotator's process as
each of its last READINGS (annotator/heap_floor.py) answered batches came back. The model's
activations come and go within a batch, so this floor shows growth without their swing; absent
in serial mode (the process is the driver's) and off glibc."""


def backend_state(up: bool | None, start_failures: int, server_wait: bool) -> float:
    """BACKEND_STATE: `up` None while the backend is being made or looked for, else whether its
    last request was answered; `start_failures` counts failed starts; `server_wait`: a server is
    being asked whether it answers."""
    if up is not None:
        return ANSWERING if up else NOT_ANSWERING
    if start_failures:
        return NOT_ANSWERING
    return WAITING if server_wait else STARTING
