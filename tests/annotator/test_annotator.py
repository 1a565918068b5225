"""The annotator's promises, with a scripted backend double: nothing asked twice, newest first
under a bounded backlog, invalid answers retried a bounded number of times and never stored, an
LLM outage keeps captions pending until it returns, and a restart asks nothing already asked."""

import asyncio

import pytest

from annotator.annotator import (
    DROPPED,
    INVALID_RATE,
    LABELS_TOTAL,
    PENDING,
    Annotator,
)
from annotator.config import AnnotatorConfig
from annotator.label_store import LabelStore
from annotator.prompts import classification_prompt
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


async def _run_until(annotator, predicate, timeout=5.0):
    stop = asyncio.Event()
    task = asyncio.create_task(annotator.run(stop))
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    stop.set()
    await task


def test_labels_each_caption_once_and_stores_it(tmp_path):
    backend = ScriptedBackendDouble(_judge)
    store = _store(tmp_path)
    annotator = Annotator(lambda: backend, store, _settings(batch_size=4))
    annotator.submit({"You see 5 gold pieces.": 3, "The door is locked.": 1, "": 7})
    annotator.submit({"You see 5 gold pieces.": 1, "The door is locked.": 2})  # already pending

    async def go():
        await _run_until(annotator, lambda: annotator.stats()[LABELS_TOTAL] == 3)
        annotator.submit({"The door is locked.": 1})  # already labelled: not asked again
        await _run_until(annotator, lambda: False, timeout=0.3)

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
    asyncio.run(_run_until(annotator, lambda: annotator.stats()[PENDING] == 0))
    asked = [text.split("<message>")[1].split("</message>")[0] for text in backend.asked]
    assert asked == ["caption 4", "caption 3", "caption 2"]  # newest first, oldest two dropped


def test_a_caption_seen_again_moves_to_the_front(tmp_path):
    backend = ScriptedBackendDouble(_judge)
    settings = _settings(batch_size=1, max_in_flight=1)
    annotator = Annotator(lambda: backend, _store(tmp_path), settings)
    annotator.submit({"old but frequent": 1})
    annotator.submit({f"new {i}": 1 for i in range(3)})
    annotator.submit({"old but frequent": 5})
    asyncio.run(_run_until(annotator, lambda: annotator.stats()[LABELS_TOTAL] >= 1))
    assert "old but frequent" in backend.asked[0]


def test_garbage_is_retried_bounded_counted_and_never_stored(tmp_path):
    backend = ScriptedBackendDouble(_judge)
    backend.garbage = True
    store = _store(tmp_path)
    annotator = Annotator(lambda: backend, store, _settings(max_retries=2))
    annotator.submit({"gold": 1, "door": 1})
    asyncio.run(_run_until(annotator, lambda: annotator.stats()[PENDING] == 0))
    assert len(backend.asked) == 2 * 3  # first try plus two retries each
    assert annotator.stats()[INVALID_RATE] == 1.0
    assert store.caption_labels() == {}
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
    asyncio.run(_run_until(annotator, lambda: annotator.stats()[LABELS_TOTAL] == 2))

    second = ScriptedBackendDouble(_judge)
    again = Annotator(lambda: second, _store(tmp_path), _settings())
    assert {label.caption for label in again.poll_labels()} == {"gold", "door"}  # replayed
    again.submit({"gold": 1, "door": 1, "newt": 1})
    asyncio.run(_run_until(again, lambda: again.stats()[LABELS_TOTAL] == 3))
    assert len(second.asked) == 1 and "newt" in second.asked[0]


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
    annotator = Annotator(lambda: backend, store, _settings(pairs_per_round=3), kind="ranking")
    annotator.submit({"gold": 1, "door": 1, "newt": 1})
    asyncio.run(_run_until(annotator, lambda: annotator.stats()[LABELS_TOTAL] == 3))
    labels = annotator.poll_labels()
    assert len({frozenset((p.first, p.second)) for p in labels}) == 3
    assert len(store.pair_labels()) == 3
