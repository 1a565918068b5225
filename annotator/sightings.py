"""How often agents saw each caption, in memory, within a bound. NetHack's captions carry numbers
("$ - 37 gold pieces.", "You have 12 hit points left"), so the number of distinct captions grows
without end over a run, and a count of every one of them with it: about 200 bytes a caption with
its text (an annotator fed 400,000 distinct captions held +73 MB, and growing, with one Counter;
+31 MB, flat from 200,000 on, with this bound, the first-sighting times' own bound included).

What stays in memory: the run's most-seen table (`Annotator.top_captions`), the captions to ask
once a server has said which model it serves, and the counts not yet flushed to the label store
(every 2 s once that model is known). Past `bound` captions the least-seen half is forgotten, as
lossy counting does: the frequent captions, the ones a top-20 table shows, keep their counts; a
forgotten caption seen again counts from then on. Only sighting counts are ever forgotten, and
those only of rare captions while nothing can be flushed; labels never. Not thread-safe: the
annotator holds its lock."""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterator, Mapping
from operator import itemgetter

CAPTIONS_COUNTED = 50_000  # distinct captions counted in memory; beyond it the least seen go


class Sightings:
    """A Counter of caption -> sightings holding at most `bound` captions."""

    def __init__(self, bound: int = CAPTIONS_COUNTED):
        if bound < 2:
            raise ValueError(f"bound must be >= 2, got {bound}")
        self.bound = bound
        self.counts: Counter[str] = Counter()
        self.forgotten = 0  # captions dropped so far (a caption dropped twice counts twice)

    def update(self, counts: Mapping[str, int]) -> None:
        self.counts.update(counts)
        if len(self.counts) > self.bound:
            keep = heapq.nlargest(self.bound // 2, self.counts.items(), key=itemgetter(1))
            self.forgotten += len(self.counts) - len(keep)
            self.counts = Counter(dict(keep))

    def most_common(self, n: int) -> list[tuple[str, int]]:
        return self.counts.most_common(n)

    def count(self, caption: str) -> int:
        """Sightings of `caption` counted (0 for one never seen or forgotten)."""
        return self.counts.get(caption, 0)

    def take(self) -> Counter[str]:
        """All counts, leaving this empty (what the annotator flushes to the store)."""
        counts, self.counts = self.counts, Counter()
        return counts

    def __len__(self) -> int:
        return len(self.counts)

    def __iter__(self) -> Iterator[str]:
        return iter(self.counts)
