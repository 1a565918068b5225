"""A lock that threads take in the order they asked for it (a ticket lock). CPython's own lock
hands off to no one: a thread that releases it and asks again at once, as a loop of gradient
steps does, usually takes it back before a woken waiter runs, so a reward pass waiting in another
thread could wait for every step of the loop instead of one."""

from __future__ import annotations

import threading


class FairLock:
    """A first-come, first-served mutual-exclusion lock; a context manager. Not re-entrant: a
    thread that holds it and asks again waits for itself forever."""

    def __init__(self) -> None:
        self._changed = threading.Condition(threading.Lock())
        self._next_ticket = 0
        self._serving = 0

    def __enter__(self) -> FairLock:
        with self._changed:
            ticket = self._next_ticket
            self._next_ticket += 1
            self._changed.wait_for(lambda: self._serving == ticket)
        return self

    def __exit__(self, *exc_info: object) -> None:
        with self._changed:
            self._serving += 1
            self._changed.notify_all()
