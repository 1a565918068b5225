"""What the annotator still has to ask: items waiting, newest first (ONI's LIFO policy) and
bounded; items out with the LLM; items given up on; and the keys of items already labelled, so
nothing is asked twice. An item is a caption or a pair of captions; `key` gives its identity
(a pair and its reverse are one). Not thread-safe: the annotator holds its lock around every
call."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable


class Backlog:
    """`bound`: items waiting at most; beyond it the oldest is dropped (counted in `dropped`)."""

    def __init__(self, bound: int, key: Callable[[Hashable], Hashable]):
        self.bound, self.key = bound, key
        self.waiting: OrderedDict = OrderedDict()  # item -> unreadable answers so far; newest last
        self.out: dict = {}  # in flight: item -> unreadable answers so far
        self.given_up: set = set()
        self.known: set = set()  # keys of labelled items
        self.dropped = 0

    def __len__(self) -> int:
        """Items pending: waiting or out."""
        return len(self.waiting) + len(self.out)

    def add(self, item: Hashable) -> None:
        """Queue an item unless it is labelled, out, or given up on. One already waiting is
        seen again: it moves to the newest end, so frequent captions are asked early."""
        if item in self.waiting:
            self.waiting.move_to_end(item)
            return
        if self.key(item) in self.known or item in self.out or item in self.given_up:
            return
        self.waiting[item] = 0
        if len(self.waiting) > self.bound:
            self.waiting.popitem(last=False)  # the oldest goes: newest captions matter most
            self.dropped += 1

    def take(self, n: int) -> list:
        """Up to `n` items, newest first; they are out until labelled, failed or unreadable."""
        batch = []
        while self.waiting and len(batch) < n:
            item, attempts = self.waiting.popitem(last=True)
            self.out[item] = attempts
            batch.append(item)
        return batch

    def is_retry(self, item: Hashable) -> bool:
        """Whether an item out now had an unreadable answer before."""
        return self.out.get(item, 0) > 0

    def labelled(self, item: Hashable) -> None:
        self.out.pop(item, None)
        self.known.add(self.key(item))

    def failed(self, item: Hashable) -> None:
        """The request failed (not the answer's fault): waiting again, at no retry cost."""
        self.waiting[item] = self.out.pop(item, 0)

    def unreadable(self, item: Hashable, retries: int) -> None:
        """The answer did not parse: waiting again, or given up after `retries` re-asks."""
        attempts = self.out.pop(item, 0) + 1
        if attempts > retries:
            self.given_up.add(item)
        else:
            self.waiting[item] = attempts

    def pending_keys(self) -> set:
        return {self.key(item) for item in (*self.waiting, *self.out)}

    def items(self) -> list:
        """Pending items, out first, then waiting oldest first (what a checkpoint keeps)."""
        return [*self.out, *self.waiting]

    def forget_labels(self) -> None:
        """Another model answers now: what the last one labelled or gave up on is asked again."""
        self.known.clear()
        self.given_up.clear()
