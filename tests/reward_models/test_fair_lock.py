"""FairLock serves threads in the order they asked, so a thread that releases the lock and asks
again at once (a loop of gradient steps) cannot keep a waiting thread out."""

from __future__ import annotations

import threading
import time

from reward_models.fair_lock import FairLock
from tests.waiting import wait_for


def _wait_for_tickets(lock: FairLock, n: int) -> None:
    """Until the threads started have asked for the lock."""

    def asked():
        return lock._next_ticket >= n, f"{lock._next_ticket} tickets"

    wait_for(f"{n} tickets", asked, interval_s=0.001)


def test_threads_are_served_in_the_order_they_asked():
    lock, order = FairLock(), []

    def take(name: str) -> None:
        with lock:
            order.append(name)

    with lock:
        threads = []
        for name in "abcd":
            threads.append(threading.Thread(target=take, args=(name,)))
            threads[-1].start()
            _wait_for_tickets(lock, len(threads) + 1)
    for thread in threads:
        thread.join(30)
    assert order == list("abcd")


def test_a_loop_that_takes_it_back_at_once_lets_a_waiter_in_after_one_turn():
    lock, turns, stop = FairLock(), [0], threading.Event()

    def loop() -> None:
        while not stop.is_set():
            with lock:
                time.sleep(0.05)  # a gradient step
                turns[0] += 1

    looping = threading.Thread(target=loop)
    looping.start()
    try:
        gaps = []
        for _ in range(8):
            time.sleep(0.01)
            asked = turns[0]
            with lock:
                gaps.append(turns[0] - asked)
    finally:
        stop.set()
        looping.join(30)
    # The loop finishes the turn it holds, then this thread is served: at most one turn between.
    # (CPython's own lock, measured here: 2 turns at best, 42 at worst.)
    assert max(gaps) <= 1, gaps
