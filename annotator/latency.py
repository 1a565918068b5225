"""How long a caption waits for its label: from the annotator's first sighting of it (the first
`submit` that carried it) to the moment its label is stored, over the most recent labels. For
pairs (ranking), from the moment the later of the two captions was first seen. Not thread-safe:
the annotator holds its lock around every call."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Hashable, Iterable

import numpy as np

from annotator.metrics import LABEL_LATENCY_P50, LABEL_LATENCY_P95

LATENCY_WINDOW = 1000  # labels the percentiles are taken over (the most recent)
SIGHTINGS_BOUND = 100_000  # first-sighting times kept; the oldest go first


class LabelLatency:
    """First-sighting times of captions not yet labelled, and the latencies of recent labels."""

    def __init__(self, window: int = LATENCY_WINDOW, bound: int = SIGHTINGS_BOUND):
        self.first_seen: OrderedDict[str, float] = OrderedDict()
        self.recent: deque[float] = deque(maxlen=window)
        self.bound = bound

    def seen(self, captions: Iterable[str], now: float) -> None:
        """Captions seen at `now` (monotonic seconds); only a first sighting is kept."""
        for caption in captions:
            if caption not in self.first_seen:
                self.first_seen[caption] = now
                if len(self.first_seen) > self.bound:
                    self.first_seen.popitem(last=False)

    def labelled(self, item: Hashable, now: float) -> None:
        """An item's label was stored at `now`: a caption, or a pair (tuple) of captions."""
        captions = item if isinstance(item, tuple) else (item,)
        times = [self.first_seen.get(c) for c in captions]
        if None in times:  # seen before this run (restored backlog) or dropped from the bound
            return
        self.recent.append(now - max(times))
        if not isinstance(item, tuple):
            del self.first_seen[item]

    def stats(self) -> dict[str, float]:
        """{LABEL_LATENCY_P50: s, LABEL_LATENCY_P95: s} over the window; {} before any label."""
        if not self.recent:
            return {}
        p50, p95 = np.percentile(np.fromiter(self.recent, float), [50, 95])
        return {LABEL_LATENCY_P50: float(p50), LABEL_LATENCY_P95: float(p95)}
