"""Label latency: from a caption's first sighting to its stored label, p50/p95 over recent
labels, for single captions and for pairs (from the later caption's first sighting)."""

import asyncio

import pytest

from annotator.annotator import Annotator
from annotator.config import AnnotatorConfig
from annotator.label_store import LabelStore
from annotator.latency import LabelLatency
from annotator.metrics import LABEL_LATENCY_P50, LABEL_LATENCY_P95, LABELS_TOTAL
from annotator.prompts import classification_prompt
from tests.doubles.scripted_backend import ScriptedBackendDouble


def test_latency_counts_from_the_first_sighting_not_a_later_one():
    latency = LabelLatency()
    latency.seen(["gold"], now=10.0)
    latency.seen(["gold", "door"], now=12.0)  # gold again: its first sighting stays 10
    latency.labelled("gold", now=15.0)
    latency.labelled("door", now=13.0)
    stats = latency.stats()
    assert stats[LABEL_LATENCY_P50] == pytest.approx(3.0)  # median of 5 and 1
    assert stats[LABEL_LATENCY_P95] == pytest.approx(4.8)


def test_a_pair_waits_from_its_later_caption_and_unseen_items_are_not_counted():
    latency = LabelLatency()
    assert latency.stats() == {}
    latency.seen(["a"], now=0.0)
    latency.seen(["b"], now=4.0)
    latency.labelled(("a", "b"), now=6.0)
    latency.labelled("restored from a checkpoint", now=6.0)
    assert latency.stats() == {LABEL_LATENCY_P50: 2.0, LABEL_LATENCY_P95: 2.0}


def test_sightings_kept_are_bounded_oldest_first():
    latency = LabelLatency(bound=2)
    latency.seen(["a", "b", "c"], now=1.0)
    assert list(latency.first_seen) == ["b", "c"]


def test_the_annotator_reports_latency_in_its_stats(tmp_path):
    backend = ScriptedBackendDouble(lambda text: 0.9, delay_s=0.2)
    store = LabelStore(
        tmp_path / "labels.sqlite",
        model_id="scripted-double",
        prompt_version=classification_prompt("x").version,
    )
    annotator = Annotator(lambda: backend, store, AnnotatorConfig(calibration="none"))
    annotator.submit({"You see 5 gold pieces.": 1, "The door is locked.": 2})

    async def until_labelled():
        stop = asyncio.Event()
        task = asyncio.create_task(annotator.run(stop))
        while annotator.stats()[LABELS_TOTAL] < 2:
            await asyncio.sleep(0.01)
        stop.set()
        await task

    asyncio.run(asyncio.wait_for(until_labelled(), timeout=10))
    stats = annotator.stats()
    assert 0.2 <= stats[LABEL_LATENCY_P50] <= stats[LABEL_LATENCY_P95] < 10
