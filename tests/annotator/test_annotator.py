"""The annotator's promises, with a scripted backend double: nothing asked twice, newest first
under a bounded backlog, invalid answers retried a bounded number of times and never stored, an
LLM outage keeps captions pending until it returns, and a restart asks nothing already asked."""

import asyncio
import re

import pytest

from annotator.annotator import Annotator
from annotator.label_store import LabelStore
from annotator.metrics import (
    ANSWERING,
    BACKEND_STATE,
    DROPPED,
    FAILED_REQUESTS,
    INVALID_RATE,
    LABELS_TOTAL,
    NOT_ANSWERING,
    PENDING,
    STARTING,
    WAITING,
)
from annotator.prompts import classification_prompt
from tests.annotator.running import gold_judge as _judge
from tests.annotator.running import run_until
from tests.annotator.running import scripted_settings as _settings
from tests.annotator.running import scripted_store as _store
from tests.doubles.scripted_backend import ScriptedBackendDouble


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
        line.startswith("annotator: first 1 new label stored") for line in again.poll_notices()
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


def test_a_server_not_answered_yet_is_waited_for_not_loading(tmp_path):
    class _ServerDouble(ScriptedBackendDouble):
        answers = asyncio.Event()  # made inside the test's loop below

        async def wait_ready(self, timeout):  # as OpenAIBackend: until GET /v1/models answers
            await self.answers.wait()

    annotator = Annotator(lambda: _ServerDouble(_judge), _store(tmp_path), _settings())
    annotator.submit({"gold": 1})

    async def go():
        _ServerDouble.answers, stop = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(annotator.run(stop))
        while annotator.stats()[BACKEND_STATE] == STARTING:  # the factory runs in a thread
            await asyncio.sleep(0.005)
        state = annotator.stats()[BACKEND_STATE]
        _ServerDouble.answers.set()
        while annotator.stats()[LABELS_TOTAL] < 1:
            await asyncio.sleep(0.01)
        stop.set()
        await task
        return state

    assert asyncio.run(asyncio.wait_for(go(), 20)) == WAITING
    assert annotator.stats()[BACKEND_STATE] == ANSWERING


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
