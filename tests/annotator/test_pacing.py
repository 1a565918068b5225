"""The annotator's pacing, with a scripted backend double: an in-process answer is never cut off,
batches start small and follow the measured speed, the judge rests between batches
(`annotator.busy_share`) by the numbers and in a real labelling loop, and notices are
rate-limited per kind."""

import asyncio
import time

import loky
import pytest

from annotator.annotator import FIRST_BATCH, Annotator
from annotator.metrics import FAILED_REQUESTS, FIRST_LABEL_DELAY, LABELS_TOTAL, PENDING
from annotator.pacing import BatchSizer, DutyCycle, Notices
from tests.annotator.running import gold_judge as _judge
from tests.annotator.running import run_until
from tests.annotator.running import scripted_settings as _settings
from tests.annotator.running import scripted_store as _store
from tests.doubles.scripted_backend import ScriptedBackendDouble


class _Recording(ScriptedBackendDouble):
    """A double that records each batch's size, and when it began and ended (monotonic s)."""

    def __init__(self, judge, delay_s):
        super().__init__(judge, delay_s)
        self.batches: list[int] = []
        self.spans: list[tuple[float, float]] = []

    async def choice_probs(self, chats, choices):
        self.batches.append(len(chats))
        start = time.monotonic()
        out = await super().choice_probs(chats, choices)
        self.spans.append((start, time.monotonic()))
        return out


def _label_all(tmp_path, backend, settings, captions: int) -> Annotator:
    """`captions` distinct captions submitted and labelled (bounded wait)."""
    annotator = Annotator(lambda: backend, _store(tmp_path), settings)
    annotator.submit({f"caption {i}": 1 for i in range(captions)})
    asyncio.run(run_until(annotator, lambda: annotator.stats()[PENDING] == 0, timeout=30))
    return annotator


def test_a_slow_in_process_answer_is_kept_whatever_the_request_timeout(tmp_path):
    # On a loaded laptop the first batch took longer than request_timeout_s and was thrown
    # away while the model kept computing; in-process work is never cut off now.
    backend = ScriptedBackendDouble(_judge, delay_s=0.4)
    annotator = Annotator(
        lambda: backend, _store(tmp_path), _settings(request_timeout_s=0.05, max_in_flight=1)
    )
    annotator.submit({"gold": 1, "door": 1})
    asyncio.run(run_until(annotator, lambda: annotator.stats()[LABELS_TOTAL] == 2, timeout=10))
    assert annotator.stats()[LABELS_TOTAL] == 2
    assert annotator.stats()[FAILED_REQUESTS] == 0


def test_first_batch_is_small_and_later_ones_follow_the_measured_speed(tmp_path):
    backend = _Recording(_judge, delay_s=0.05)
    settings = _settings(batch_size=32, max_in_flight=1, target_batch_s=10.0)
    annotator = _label_all(tmp_path, backend, settings, captions=60)
    assert backend.batches[0] == FIRST_BATCH
    assert max(backend.batches) == 32  # 4 prompts in ~0.05 s: the cap, not the first size
    assert annotator.stats()[FIRST_LABEL_DELAY] >= 0.0


def test_batch_sizer_targets_the_wanted_busy_time():
    sizer = BatchSizer(first=4, largest=64, target_s=2.0, smoothing=1.0)
    assert sizer.size == 4
    sizer.measured(4, sent=0.0, done=1.0)  # 4 prompts/s
    assert sizer.size == 8
    # sent at 0.5 but queued behind the first batch until 1.0: 8 prompts in 2 s of backend time
    sizer.measured(8, sent=0.5, done=3.0)
    assert sizer.rate == 8 / 2.0 and sizer.size == 8
    sizer.measured(8, sent=3.0, done=3.1)  # 80 prompts/s, capped by largest
    assert sizer.size == 64
    sizer.measured(64, sent=4.0, done=204.0)  # 0.32 prompts/s: never below the first size
    assert sizer.size == 4


def test_duty_cycle_rests_in_proportion_to_busy_time():
    duty = DutyCycle(share=0.25)  # a backend elsewhere: wall-clock busy time, 3 s rest per 1 s
    assert duty.wait_s(now=0.0) == 0.0
    duty.measured(sent=0.0, done=5.0)  # the first batch, the model's warm-up: not counted
    assert duty.wait_s(now=5.0) == 0.0
    duty.measured(sent=5.0, done=7.0)
    assert duty.wait_s(now=7.0) == 6.0 and duty.wait_s(now=14.0) == 0.0
    # two in flight: the second, queued behind the first until 15, was busy 1 s; rests add up
    duty.measured(sent=14.0, done=15.0)
    duty.measured(sent=14.5, done=16.0)
    assert duty.wait_s(now=16.0) == 6.0  # busy 2 s from 14: the next goes at 14 + 2 / 0.25


def test_duty_cycle_on_this_machines_cpus_counts_cpu_time_not_waiting():
    duty = DutyCycle(share=0.1, cpu_threads=1)
    duty.measured(sent=0.0, done=2.0, cpu_seconds=1.5)  # warm-up: not counted
    # on a busy machine a batch took 7 s, of which it computed 1 s: it rests 10 - 7 = 3 s, where
    # counting its wall-clock time would have rested 63 s
    duty.measured(sent=2.0, done=9.0, cpu_seconds=2.5)
    assert duty.wait_s(now=9.0) == pytest.approx(3.0)
    duty.measured(sent=12.0, done=13.0, cpu_seconds=3.5)  # computed all along: 9 s of rest
    assert duty.wait_s(now=13.0) == pytest.approx(9.0)
    never = DutyCycle.chosen(1.0, cpu_threads=1, cpus=2)  # 1: never rests, whatever it counts
    never.measured(sent=0.0, done=1.0, cpu_seconds=0.0)
    never.measured(sent=0.5, done=2.0, cpu_seconds=5.0)  # more CPU than wall (rendering, skew)
    assert never.wait_s(now=2.0) == 0.0
    two = DutyCycle(share=0.5, cpu_threads=2)  # 2 CPU-s over 2 threads: 1 s of both busy
    two.measured(sent=0.0, done=1.0, cpu_seconds=0.0)
    two.measured(sent=1.0, done=2.0, cpu_seconds=2.0)
    assert two.wait_s(now=2.0) == pytest.approx(1.0)
    assert DutyCycle(share=1.0).wait_s(now=0.0) == 0.0
    with pytest.raises(ValueError, match="share"):
        DutyCycle(share=0.0)


def test_the_chosen_busy_share_follows_where_the_llm_computes():
    # null: an LLM on one of 2 CPUs may take 5 % of the machine, so it is busy 10 % of the time
    auto = DutyCycle.chosen(None, cpu_threads=1, cpus=2)
    assert auto.share == pytest.approx(0.1)
    assert (
        "busy at most 10% of the time" in auto.notice
        and "1 of this machine's 2 CPUs" in auto.notice
    )
    assert DutyCycle.chosen(None, cpu_threads=2, cpus=2).share == pytest.approx(0.05)
    assert DutyCycle.chosen(None, cpu_threads=1, cpus=8).share == pytest.approx(0.4)
    assert DutyCycle.chosen(None, cpu_threads=1, cpus=32).share == 1.0  # enough cores: never
    assert DutyCycle.chosen(None, cpu_threads=None, cpus=2).share == 1.0  # a GPU, a server
    assert DutyCycle.chosen(None, cpu_threads=1, cpus=32).notice is None
    assert DutyCycle.chosen(1.0, cpu_threads=1, cpus=2).share == 1.0  # as set, whatever else
    chosen = DutyCycle.chosen(0.5, cpu_threads=None, cpus=2)
    assert chosen.share == 0.5 and "annotator.busy_share=0.5" in chosen.notice


def test_the_cpus_counted_are_those_the_process_may_use_not_the_hosts(monkeypatch):
    # A pod limited to 2 CPUs on a 64-core host sees 64 in os.cpu_count() and its affinity;
    # loky.cpu_count() reads the container's CPU quota as well.
    monkeypatch.setattr(loky, "cpu_count", lambda: 2)
    in_pod = DutyCycle.chosen(None, cpu_threads=1)
    assert in_pod.share == pytest.approx(0.1) and "2 CPUs" in in_pod.notice
    monkeypatch.setattr(loky, "cpu_count", lambda: 64)
    assert DutyCycle.chosen(None, cpu_threads=1).share == 1.0


def test_the_resting_judge_says_so_once_its_backend_is_up(tmp_path, monkeypatch):
    class _OnCPU(ScriptedBackendDouble):
        cpu_threads = 1  # as the embedded LLM on one thread

    monkeypatch.setattr(loky, "cpu_count", lambda: 2)  # 2 CPUs, whatever runs the test
    annotator = Annotator(lambda: _OnCPU(_judge), _store(tmp_path), _settings())
    annotator.submit({"gold": 1})
    asyncio.run(run_until(annotator, lambda: annotator.stats()[LABELS_TOTAL] == 1, timeout=10))
    lines = [line for line in annotator.poll_notices() if "rests between batches" in line]
    assert len(lines) == 1 and "busy at most 10% of the time" in lines[0], lines
    assert "1 of this machine's 2 CPUs" in lines[0]


def test_a_busy_share_below_one_rests_the_backend_between_batches(tmp_path):
    backend = _Recording(_judge, delay_s=0.05)
    settings = _settings(busy_share=0.25, batch_size=4, max_in_flight=1)
    annotator = _label_all(tmp_path, backend, settings, captions=16)
    assert annotator.stats()[LABELS_TOTAL] == 16 and len(backend.spans) == 4
    spans = backend.spans[1:]  # after the first batch, the warm-up, which is not counted
    for (start, end), (next_start, _) in zip(spans, spans[1:], strict=False):
        # the annotator counts at least the backend's own busy time, so it rests 3x that or more
        assert next_start - end >= 3 * (end - start)


class _ComputingOnCPU(_Recording):
    """A double on this machine's CPUs whose every batch is counted as 0.3 CPU-s of its one
    thread, whatever its wall-clock time (0.05 s)."""

    cpu_threads = 1

    def __init__(self, judge, delay_s):
        super().__init__(judge, delay_s)
        self.cpu_seconds: float | None = None

    async def choice_probs(self, chats, choices):
        out = await super().choice_probs(chats, choices)
        self.cpu_seconds = (self.cpu_seconds or 0.0) + 0.3
        return out


def test_the_labelling_loop_rests_for_cpu_time_when_the_backend_counts_it(tmp_path):
    backend = _ComputingOnCPU(_judge, delay_s=0.05)
    settings = _settings(busy_share=0.25, batch_size=4, max_in_flight=1)
    annotator = _label_all(tmp_path, backend, settings, captions=12)
    assert annotator.stats()[LABELS_TOTAL] == 12 and len(backend.spans) == 3
    (start, _), (next_start, _) = backend.spans[1:]  # the first batch is not counted
    # 0.3 CPU-s at a quarter: the next batch 1.2 s after this one began; counting the 0.05 s of
    # wall-clock time instead would have let it go after 0.2 s
    assert next_start - start >= 1.0


def test_notices_are_rate_limited_per_kind():
    notices = Notices(interval_s=60.0)
    assert notices.add("down", "a", now=0.0)
    assert not notices.add("down", "b", now=30.0)
    assert notices.add("invalid", "c", now=30.0)
    assert notices.add("down", "d", now=61.0)
    assert notices.drain() == ["a", "c", "d"] and notices.drain() == []
