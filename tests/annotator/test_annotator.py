"""The annotator's promises, with a scripted backend double: nothing asked twice, newest first
under a bounded backlog, invalid answers retried a bounded number of times and never stored, an
LLM outage keeps captions pending until it returns, and a restart asks nothing already asked."""

import asyncio
import re
import time

import pytest

from annotator.annotator import FIRST_BATCH, Annotator
from annotator.config import AnnotatorConfig
from annotator.label_store import LabelStore
from annotator.metrics import (
    ANSWERING,
    BACKEND_STATE,
    DROPPED,
    FAILED_REQUESTS,
    FIRST_LABEL_DELAY,
    INVALID_RATE,
    LABELS_TOTAL,
    NOT_ANSWERING,
    PENDING,
    STARTING,
)
from annotator.pacing import BatchSizer, DutyCycle, Notices
from annotator.prompts import classification_prompt
from tests.annotator.running import run_until
from tests.doubles.scripted_backend import ScriptedBackendDouble


def _settings(**overrides) -> AnnotatorConfig:
    return AnnotatorConfig(calibration="none", **overrides)  # the judge's values are the labels


def _judge(text: str) -> float:
    return 0.9 if "gold" in text else 0.1


def _store(tmp_path, version=None):
    version = version or classification_prompt("x").version
    return LabelStore(
        tmp_path / "labels.sqlite", model_id="scripted-double", prompt_version=version
    )


def test_labels_each_caption_once_and_stores_it(tmp_path):
    backend = ScriptedBackendDouble(_judge)
    store = _store(tmp_path)
    annotator = Annotator(lambda: backend, store, _settings(batch_size=4))
    annotator.submit({"You see 5 gold pieces.": 3, "The door is locked.": 1, "": 7})
    annotator.submit({"You see 5 gold pieces.": 1, "The door is locked.": 2})  # already pending

    async def go():
        await run_until(annotator, lambda: annotator.stats()[LABELS_TOTAL] == 3)
        annotator.submit({"The door is locked.": 1})  # already labelled: not asked again
        await run_until(annotator, lambda: False, timeout=0.3)

    asyncio.run(go())
    assert len(backend.asked) == 3
    labels = {label.caption: label.value for label in annotator.poll_labels()}
    assert labels == pytest.approx(
        {"You see 5 gold pieces.": 0.9, "The door is locked.": 0.1, "": 0.1}
    )
    assert store.caption_labels() == pytest.approx(labels)
    assert annotator.poll_labels() == []
    assert backend.closed


def test_bounded_backlog_prefers_newest_and_counts_drops(tmp_path):
    backend = ScriptedBackendDouble(_judge)
    annotator = Annotator(
        lambda: backend,
        _store(tmp_path),
        _settings(batch_size=2, max_backlog=3, max_in_flight=1),
    )
    annotator.submit({f"caption {i}": 1 for i in range(5)})
    assert annotator.stats()[DROPPED] == 2
    assert annotator.stats()[PENDING] == 3
    asyncio.run(run_until(annotator, lambda: annotator.stats()[PENDING] == 0))
    asked = [text.split("<message>")[1].split("</message>")[0] for text in backend.asked]
    assert asked == ["caption 4", "caption 3", "caption 2"]  # newest first, oldest two dropped


def test_a_caption_seen_again_moves_to_the_front(tmp_path):
    backend = ScriptedBackendDouble(_judge)
    settings = _settings(batch_size=1, max_in_flight=1)
    annotator = Annotator(lambda: backend, _store(tmp_path), settings)
    annotator.submit({"old but frequent": 1})
    annotator.submit({f"new {i}": 1 for i in range(3)})
    annotator.submit({"old but frequent": 5})
    asyncio.run(run_until(annotator, lambda: annotator.stats()[LABELS_TOTAL] >= 1))
    assert "old but frequent" in backend.asked[0]


def test_the_most_seen_caption_of_a_submit_goes_first_whatever_its_place(tmp_path):
    # A fragment lists its captions as they first appeared, so the constant ones ("It's a
    # wall.") come before that fragment's rare ones; newest-first alone then kept asking the
    # rare ones: a newcomer's run had its two most-seen captions (22,000 sightings) unasked
    # after 55 requests.
    backend = ScriptedBackendDouble(_judge)
    settings = _settings(batch_size=1, max_in_flight=1)
    annotator = Annotator(lambda: backend, _store(tmp_path), settings)
    for i in range(3):
        annotator.submit({"It's a wall.": 40, f"rare {i}a": 1, f"rare {i}b": 1})
    asyncio.run(run_until(annotator, lambda: annotator.stats()[LABELS_TOTAL] >= 2))
    asked = [text.split("<message>")[1].split("</message>")[0] for text in backend.asked]
    assert asked[:2] == ["It's a wall.", "rare 2b"]  # then newest first among equals


def test_garbage_is_retried_bounded_counted_and_never_stored(tmp_path):
    backend = ScriptedBackendDouble(_judge)
    backend.garbage = True
    store = _store(tmp_path)
    annotator = Annotator(lambda: backend, store, _settings(max_retries=2, style="reasoned"))
    annotator.submit({"gold": 1, "door": 1})
    asyncio.run(run_until(annotator, lambda: annotator.stats()[PENDING] == 0))
    assert len(backend.asked) == 2 * 3  # first try plus two retries each
    assert backend.temperatures == [0.0, 0.7, 0.7]  # re-asks are sampled, not repeated
    assert annotator.stats()[INVALID_RATE] == 1.0
    assert store.caption_labels() == {}
    assert (store.summary().requests, store.summary().invalid_answers) == (6, 6)
    assert annotator.poll_labels() == []
    annotator.submit({"gold": 1})  # given up: not asked again this run
    assert annotator.stats()[PENDING] == 0


def test_outage_keeps_captions_pending_until_the_llm_returns(tmp_path):
    backend = ScriptedBackendDouble(_judge)
    backend.down = True
    settings = _settings(max_backoff_s=0.05)
    annotator = Annotator(lambda: backend, _store(tmp_path), settings)
    annotator.submit({"gold": 1, "door": 1})

    async def go():
        stop = asyncio.Event()
        task = asyncio.create_task(annotator.run(stop))
        await asyncio.sleep(0.3)
        assert annotator.stats()[PENDING] == 2 and annotator.poll_labels() == []
        backend.down = False
        while annotator.stats()[LABELS_TOTAL] < 2:
            await asyncio.sleep(0.01)
        stop.set()
        await task

    asyncio.run(asyncio.wait_for(go(), 5))
    assert {label.caption for label in annotator.poll_labels()} == {"gold", "door"}
    assert annotator.stats()[INVALID_RATE] == 0.0  # an outage is not the answers' fault


def test_restart_asks_nothing_already_asked(tmp_path):
    first = ScriptedBackendDouble(_judge)
    annotator = Annotator(lambda: first, _store(tmp_path), _settings())
    annotator.submit({"gold": 1, "door": 1})
    asyncio.run(run_until(annotator, lambda: annotator.stats()[LABELS_TOTAL] == 2))

    second = ScriptedBackendDouble(_judge)
    again = Annotator(lambda: second, _store(tmp_path), _settings())
    assert {label.caption for label in again.poll_labels()} == {"gold", "door"}  # replayed
    again.submit({"gold": 1, "door": 1, "newt": 1})
    asyncio.run(run_until(again, lambda: again.stats()[LABELS_TOTAL] == 3))
    assert len(second.asked) == 1 and "newt" in second.asked[0]
    # a newcomer's resumed run said "first 4 labels stored" beside 102 in the store
    assert any(
        line.startswith("annotator: first 1 new labels stored") for line in again.poll_notices()
    )
    assert any(
        line.startswith("annotator: first 2 labels stored") for line in annotator.poll_notices()
    )


def test_ranking_asks_pairs_of_distinct_captions(tmp_path):
    from annotator.prompts import ranking_prompt

    backend = ScriptedBackendDouble(
        lambda text: 0.9 if "gold" in text.split("</message>")[0] else 0.1
    )
    store = LabelStore(
        tmp_path / "l.sqlite",
        model_id="scripted-double",
        prompt_version=ranking_prompt("a", "b").version,
    )
    annotator = Annotator(lambda: backend, store, _settings(pairs_per_round=3), kind="pair")
    annotator.submit({"gold": 1, "door": 1, "newt": 1})
    asyncio.run(run_until(annotator, lambda: annotator.stats()[LABELS_TOTAL] == 3))
    labels = annotator.poll_labels()
    assert len({frozenset((p.first, p.second)) for p in labels}) == 3
    assert len(store.pair_labels()) == 3


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


def test_the_resting_judge_says_so_once_its_backend_is_up(tmp_path):
    class _OnCPU(ScriptedBackendDouble):
        cpu_threads = 1  # as the embedded LLM on one thread

    annotator = Annotator(lambda: _OnCPU(_judge), _store(tmp_path), _settings())
    annotator.submit({"gold": 1})
    asyncio.run(run_until(annotator, lambda: annotator.stats()[LABELS_TOTAL] == 1, timeout=10))
    lines = [line for line in annotator.poll_notices() if "rests between batches" in line]
    expected = DutyCycle.chosen(None, cpu_threads=1).notice
    assert lines == ([f"annotator: {expected}"] if expected else [])


def test_a_busy_share_below_one_rests_the_backend_between_batches(tmp_path):
    backend = _Recording(_judge, delay_s=0.05)
    settings = _settings(busy_share=0.25, batch_size=4, max_in_flight=1)
    annotator = _label_all(tmp_path, backend, settings, captions=16)
    assert annotator.stats()[LABELS_TOTAL] == 16 and len(backend.spans) == 4
    spans = backend.spans[1:]  # after the first batch, the warm-up, which is not counted
    for (start, end), (next_start, _) in zip(spans, spans[1:], strict=False):
        # the annotator counts at least the backend's own busy time, so it rests 3x that or more
        assert next_start - end >= 3 * (end - start)


def test_notices_are_rate_limited_per_kind():
    notices = Notices(interval_s=60.0)
    assert notices.add("down", "a", now=0.0)
    assert not notices.add("down", "b", now=30.0)
    assert notices.add("invalid", "c", now=30.0)
    assert notices.add("down", "d", now=61.0)
    assert notices.drain() == ["a", "c", "d"] and notices.drain() == []


def test_a_backend_that_does_not_start_is_not_answering_not_loading(tmp_path):
    attempts = []

    def factory():
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("no server at 127.0.0.1:9")
        return ScriptedBackendDouble(_judge)

    annotator = Annotator(factory, _store(tmp_path), _settings(max_backoff_s=0.05))
    annotator.submit({"gold": 1})
    seen = []

    async def go():
        stop = asyncio.Event()
        task = asyncio.create_task(annotator.run(stop))
        while annotator.stats()[LABELS_TOTAL] < 1:
            seen.append(annotator.stats()[BACKEND_STATE])
            await asyncio.sleep(0.005)
        stop.set()
        await task

    asyncio.run(asyncio.wait_for(go(), 10))
    assert seen[0] == STARTING and NOT_ANSWERING in seen
    assert annotator.stats()[BACKEND_STATE] == ANSWERING
    assert any("failed to start (no server" in line for line in annotator.poll_notices())


def test_outage_and_unreadable_answers_reach_the_user_as_one_line_each(tmp_path):
    backend = ScriptedBackendDouble(_judge)
    backend.down = True
    annotator = Annotator(lambda: backend, _store(tmp_path), _settings(max_backoff_s=0.05))
    annotator.submit({"gold": 1, "door": 1})
    assert annotator.stats()[BACKEND_STATE] == STARTING  # loading, not "down"
    asyncio.run(run_until(annotator, lambda: annotator.stats()[FAILED_REQUESTS] >= 6))
    assert annotator.stats()[BACKEND_STATE] == NOT_ANSWERING
    lines = annotator.poll_notices()
    assert len(lines) == 1 and "did not answer" in lines[0]  # repeats within a minute: one line

    garbage = ScriptedBackendDouble(_judge)
    garbage.garbage = True
    other = Annotator(lambda: garbage, _store(tmp_path / "g"), _settings(max_retries=2))
    # direct style: unreadable first-token probabilities are not re-asked (they would repeat)
    other.submit({f"caption {i}": 1 for i in range(25)})
    asyncio.run(run_until(other, lambda: other.stats()[PENDING] == 0))
    assert other.stats()[BACKEND_STATE] == ANSWERING  # it answers, just not usably
    lines = other.poll_notices()
    assert len(lines) == 1  # said once, when 20 or more answers had come back unreadable
    assert len(garbage.asked) == 25 and "re-asked up to 0 times" in lines[0]
    bad, asked = map(int, re.search(r"(\d+) of (\d+) answers could not be read", lines[0]).groups())
    assert bad == asked >= 20
    assert "annotator.style=reasoned" in lines[0]


def test_labels_are_keyed_by_the_model_the_server_serves_and_follow_a_change(tmp_path):
    backend = ScriptedBackendDouble(_judge)
    backend.model_id = "model-a@http://127.0.0.1:1/v1"
    configured = _store(tmp_path)  # keyed "scripted-double": a name the server never gave
    annotator = Annotator(lambda: backend, configured, _settings(), keyed_by_backend=True)
    annotator.submit({"gold": 1, "door": 1})

    async def go():
        stop = asyncio.Event()
        task = asyncio.create_task(annotator.run(stop))
        while annotator.stats()[LABELS_TOTAL] < 2:
            await asyncio.sleep(0.01)
        backend.model_id = "model-b@http://127.0.0.1:1/v1"  # the server now serves another model
        annotator.submit({"newt": 1})
        while (
            "newt" not in annotator.store.caption_labels()
            or len(annotator.store.caption_labels()) < 3
        ):
            await asyncio.sleep(0.01)
        stop.set()
        await task

    asyncio.run(asyncio.wait_for(go(), 10))
    path, version = tmp_path / "labels.sqlite", classification_prompt("x").version
    by_a = LabelStore(path, model_id="model-a@http://127.0.0.1:1/v1", prompt_version=version)
    by_b = LabelStore(path, model_id="model-b@http://127.0.0.1:1/v1", prompt_version=version)
    assert set(by_a.caption_labels()) >= {"gold", "door"}
    assert set(by_b.caption_labels()) == {"gold", "door", "newt"}  # asked again, kept apart
    never_served = LabelStore(path, model_id="scripted-double", prompt_version=version)
    assert never_served.caption_labels() == {}
    assert any("now serves model-b" in line for line in annotator.poll_notices())
