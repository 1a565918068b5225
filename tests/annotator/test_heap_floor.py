"""The annotator's memory reading (annotator/heap_floor.py): the lowest of the last READINGS
post-batch heap readings, reported in `Annotator.stats` only where a reader was given."""

import asyncio

from annotator.annotator import Annotator
from annotator.config import AnnotatorConfig
from annotator.heap_floor import READINGS, HeapFloor
from annotator.label_store import LabelStore
from annotator.metrics import HEAP_FLOOR_MB, LABELS_TOTAL
from annotator.prompts import classification_prompt
from tests.annotator.running import run_until
from tests.doubles.scripted_backend import ScriptedBackendDouble


def test_the_floor_is_the_lowest_of_the_recent_readings():
    values = iter([50.0, None, 40.0, *[60.0] * READINGS])
    floor = HeapFloor(lambda: next(values))
    assert floor.floor() is None
    for _ in range(3):
        floor.read()
    assert floor.floor() == 40.0  # None readings are skipped
    for _ in range(READINGS - 1):
        floor.read()
    assert floor.floor() == 40.0  # still one of the last READINGS
    floor.read()
    assert floor.floor() == 60.0  # 40 has left the window: growth shows


def test_no_reader_no_reading():
    floor = HeapFloor(None)
    floor.read()
    assert floor.floor() is None


def _annotator(tmp_path, reader):
    store = LabelStore(
        tmp_path / "labels.sqlite",
        model_id="scripted-double",
        prompt_version=classification_prompt("x").version,
    )
    backend = ScriptedBackendDouble(lambda text: 0.5)
    return Annotator(
        lambda: backend, store, AnnotatorConfig(calibration="none"), heap_reader=reader
    )


async def _label_two_captions(annotator) -> None:
    annotator.submit({"You see a jackal.": 1, "The door opens.": 1})
    await run_until(annotator, lambda: annotator.stats()[LABELS_TOTAL] == 2)


def test_stats_report_the_floor_after_a_batch_only_with_a_reader(tmp_path):
    readings = []

    def reader() -> float:
        readings.append(123.0 - len(readings))
        return readings[-1]

    with_reader = _annotator(tmp_path / "a", reader)
    assert HEAP_FLOOR_MB not in with_reader.stats()  # no batch has come back yet
    asyncio.run(_label_two_captions(with_reader))
    stats = with_reader.stats()
    assert stats[LABELS_TOTAL] == 2 and readings  # one reading per answered batch
    assert stats[HEAP_FLOOR_MB] == min(readings)

    without = _annotator(tmp_path / "b", None)
    asyncio.run(_label_two_captions(without))
    assert without.stats()[LABELS_TOTAL] == 2
    assert HEAP_FLOOR_MB not in without.stats()
