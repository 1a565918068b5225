"""The openai backend's faults and server etiquette against the test server on 127.0.0.1:
outages, slowness, garbage, server errors; Retry-After, back-off and which errors are retried."""

from __future__ import annotations

import asyncio
import threading
import time
from email.utils import formatdate

import pytest

from annotator.backends.openai_retry import retry_after_s, retryable
from tests.annotator.openai_helpers import YES_NO, fast_backend, user_chat
from tests.doubles.openai_server import OpenAICompatServer, ScriptedAnswers

# ---- faults -------------------------------------------------------------------------------


def test_server_stopped_mid_run_gives_none_after_bounded_retries_then_recovers(scripted):
    scripted.delay_s = 0.1
    backend = fast_backend(scripted, max_concurrency=2)
    chats = [user_chat(f"fire {i}") for i in range(20)]

    async def run_and_stop():
        task = asyncio.create_task(backend.choice_probs(chats, YES_NO))
        await asyncio.sleep(0.25)
        await asyncio.to_thread(scripted.stop)
        t0 = time.monotonic()
        results = await task
        return results, time.monotonic() - t0

    results, after_stop = asyncio.run(run_and_stop())
    assert any(r is not None for r in results)  # answered before the stop
    assert any(r is None for r in results)  # failed after the retries
    assert backend.stats.retries > 0
    # 18 requests, 2 at a time, each: 3 refused connections + 2 back-offs <= 0.4 s
    assert after_stop < 10

    scripted.start()  # the server comes back: labelling resumes
    again = asyncio.run(backend.choice_probs(chats, YES_NO))
    assert all(r is not None for r in again)


def test_request_succeeds_when_the_server_returns_during_the_retries(scripted):
    backend = fast_backend(scripted, max_retries=8, backoff_initial=0.1, backoff_max=0.3)
    asyncio.run(backend.wait_ready(timeout=5))  # the model is known; then the server goes
    scripted.stop()
    timer = threading.Timer(0.5, scripted.start)
    timer.start()
    try:
        (r,) = asyncio.run(backend.choice_probs([user_chat("fire")], YES_NO))
    finally:
        timer.join()
    assert r is not None and r["yes"] > r["no"]


def test_unreachable_server_never_raises():
    server = OpenAICompatServer(ScriptedAnswers())
    server.start()
    server.stop()
    backend = fast_backend(server, model="scripted-model", request_timeout=0.5)
    t0 = time.monotonic()
    assert asyncio.run(backend.choice_probs([user_chat("a"), user_chat("b")], YES_NO)) == [
        None,
        None,
    ]
    assert asyncio.run(backend.generate([user_chat("a")], max_tokens=3)) == [None]
    assert time.monotonic() - t0 < 5
    assert backend.stats.failed == 3


def test_undiscoverable_model_gives_none():
    server = OpenAICompatServer(ScriptedAnswers())
    server.start()
    server.stop()
    backend = fast_backend(server, request_timeout=0.5)
    assert asyncio.run(backend.choice_probs([user_chat("a")], YES_NO)) == [None]


def test_slow_server_times_out_and_gives_none(scripted):
    scripted.delay_s = 1.5
    backend = fast_backend(scripted, request_timeout=0.3, max_retries=1, model="scripted")
    t0 = time.monotonic()
    assert asyncio.run(backend.choice_probs([user_chat("fire")], YES_NO)) == [None]
    assert time.monotonic() - t0 < 2.0  # 2 attempts x 0.3 s + back-off
    assert backend.stats.retries == 1


@pytest.mark.parametrize("mode", ["text", "json", "logprobs"])
def test_garbage_answers_are_invalid_not_failed(scripted, mode):
    scripted.garbage = mode
    backend = fast_backend(scripted, model="scripted")
    # An answer arrived but names no choice: {} (invalid), never None (a failed request).
    assert asyncio.run(backend.choice_probs([user_chat("fire"), user_chat("ice")], YES_NO)) == [
        {},
        {},
    ]
    assert asyncio.run(backend.generate([user_chat("fire")], max_tokens=2)) == [
        "" if mode != "logprobs" else "Yes"
    ]
    assert backend.stats.failed == 0
    assert backend.stats.invalid >= 2
    assert backend.stats.retries == 0  # garbage is not retried


def test_server_errors_are_retried_then_none(scripted):
    scripted.fail_status = 503
    backend = fast_backend(scripted, model="scripted")
    assert asyncio.run(backend.choice_probs([user_chat("fire")], YES_NO)) == [None]
    assert backend.stats.retries == 2
    scripted.fail_status = None
    assert asyncio.run(backend.choice_probs([user_chat("fire")], YES_NO))[0] is not None


# ---- server etiquette: what is retried, and how long to wait --------------------------------


def _patient(server: OpenAICompatServer, **options):
    """As fast_backend, with a long per-attempt timeout: a loaded machine's slow answer is no retry
    here, so the retries counted are the ones the statuses asked for."""
    return fast_backend(server, **{"request_timeout": 30.0, **options})


class FakeClock:
    """Records the waits the backend asks for instead of sleeping (no timed assertions)."""

    def __init__(self, now: float = 1_764_480_000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def install(self, backend) -> None:
        backend._sleep, backend._now = self.sleep, lambda: self.now


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_seconds_is_honoured(scripted, status):
    scripted.fail_status, scripted.fail_count, scripted.retry_after = status, 2, "4"
    backend = _patient(scripted, max_retries=4, backoff_initial=0.3, backoff_max=10)
    clock = FakeClock()
    clock.install(backend)
    (r,) = asyncio.run(backend.choice_probs([user_chat("fire")], YES_NO))
    assert r["yes"] == pytest.approx(0.7 / 0.9)
    assert clock.sleeps == [4.0, 4.0]  # not 0.3, 0.6 (the back-off)
    assert backend.stats.retries == 2 and scripted.failed_posts == 2


def test_retry_after_http_date_and_the_cap(scripted):
    clock = FakeClock()
    scripted.fail_status, scripted.fail_count = 503, 1
    scripted.retry_after = formatdate(clock.now + 3, usegmt=True)
    backend = _patient(scripted, backoff_max=10)
    clock.install(backend)
    assert asyncio.run(backend.choice_probs([user_chat("fire")], YES_NO))[0]
    assert clock.sleeps == [pytest.approx(3.0)]
    scripted.fail_count, scripted.retry_after = 1, "120"  # capped by backoff_max
    clock.sleeps.clear()
    assert asyncio.run(backend.choice_probs([user_chat("fire")], YES_NO))[0]
    assert clock.sleeps == [10.0]


def test_without_retry_after_the_back_off_doubles_with_jitter(scripted):
    scripted.fail_status = 502
    backend = _patient(scripted, max_retries=3, backoff_initial=0.5, backoff_max=1.5)
    clock = FakeClock()
    clock.install(backend)
    assert asyncio.run(backend.choice_probs([user_chat("fire")], YES_NO)) == [None]
    assert len(clock.sleeps) == 3
    for wait, full in zip(clock.sleeps, [0.5, 1.0, 1.5], strict=True):
        assert 0.5 * full <= wait < full


def test_retry_after_parsing_and_retryable_statuses():
    now = 1_764_480_000.0
    assert retry_after_s("4", now) == 4.0
    assert retry_after_s(" 2.5 ", now) == 2.5
    assert retry_after_s(formatdate(now + 7, usegmt=True), now) == pytest.approx(7.0)
    assert retry_after_s(formatdate(now - 60, usegmt=True), now) == 0.0  # already past
    for bad in (None, "", "soon", "-3", "nan", "inf"):
        assert retry_after_s(bad, now) is None
    assert [s for s in (400, 401, 403, 404, 408, 409, 413, 422, 429) if retryable(s)] == [408, 429]
    assert [s for s in (500, 501, 502, 503, 504, 505) if retryable(s)] == [500, 502, 503, 504]


@pytest.mark.parametrize(
    ("status", "advice"),
    [(400, "top_logprobs"), (401, "api_key_env"), (404, "annotator.model"), (422, "server's log")],
)
def test_client_errors_are_not_retried_and_told_once(scripted, status, advice):
    scripted.fail_status = status
    backend = _patient(scripted, model="scripted")
    clock = FakeClock()
    clock.install(backend)
    chats = [user_chat("fire"), user_chat("ice")]
    assert asyncio.run(backend.choice_probs(chats, YES_NO)) == [{}, {}]
    assert asyncio.run(backend.choice_probs(chats, YES_NO)) == [{}, {}]
    assert backend.stats.retries == 0 and clock.sleeps == [] and scripted.failed_posts == 4
    notices = backend.drain_notices()
    assert [k for k, _ in notices] == [f"http_{status}"]
    assert advice in notices[0][1] and f"HTTP {status}" in notices[0][1]


def test_408_is_retried(scripted):
    scripted.fail_status, scripted.fail_count = 408, 1
    backend = _patient(scripted, model="scripted")
    clock = FakeClock()
    clock.install(backend)
    (r,) = asyncio.run(backend.choice_probs([user_chat("fire")], YES_NO))
    assert r and backend.stats.retries == 1 and len(clock.sleeps) == 1
    assert backend.drain_notices() == []
