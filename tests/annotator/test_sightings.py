"""What the annotator keeps per distinct caption stays within a bound however many captions a run
sees (NetHack's carry numbers, so a long run sees ever more), while labels are never lost: the
in-memory sighting counts (annotator/sightings.py), the first-sighting times (latency.py) and the
backlog are capped; the label store and the known labels are not."""

from actors.messages import CaptionLabel
from annotator.annotator import Annotator
from annotator.config import AnnotatorConfig
from annotator.label_store import LabelStore
from annotator.latency import SIGHTINGS_BOUND
from annotator.prompts import classification_prompt
from annotator.sightings import CAPTIONS_COUNTED, Sightings

FREQUENT = {"It's a wall.": 5, "The kitten bites!": 3}


def _distinct(start: int, n: int) -> dict[str, int]:
    return {f"$ - {i} gold pieces.": 1 for i in range(start, start + n)}


def test_sightings_stay_under_their_bound_and_keep_the_most_seen():
    sightings = Sightings(bound=1_000)
    for start in range(0, 100_000, 100):
        sightings.update({**_distinct(start, 100), **FREQUENT})
        assert len(sightings) <= 1_000
    assert sightings.most_common(2) == [("It's a wall.", 5_000), ("The kitten bites!", 3_000)]
    assert sightings.forgotten >= 100_000 - 1_000
    assert sightings.take() and not sightings and len(sightings) == 0


def test_an_annotator_fed_100k_distinct_captions_stays_bounded_and_loses_no_label(tmp_path):
    store = LabelStore(
        tmp_path / "labels.sqlite",
        model_id="scripted-double",
        prompt_version=classification_prompt("x").version,
    )
    labelled = [CaptionLabel("It's a wall.", 0.1), CaptionLabel("$ - 7 gold pieces.", 0.9)]
    store.put_captions(labelled)
    settings = AnnotatorConfig(calibration="none", max_backlog=10_000)
    annotator = Annotator(lambda: None, store, settings)  # its labelling loop never runs
    for start in range(0, 100_000, 100):  # a worker's fragment: ~100 captions
        annotator.submit({**_distinct(start, 100), **FREQUENT})
        if start % 10_000 == 0:
            annotator._flush_sightings()  # as its loop does every 2 s
    assert len(annotator._sightings) <= CAPTIONS_COUNTED
    assert len(annotator._unflushed) <= CAPTIONS_COUNTED
    assert len(annotator._latency.first_seen) <= SIGHTINGS_BOUND
    assert len(annotator._queue.waiting) <= settings.max_backlog
    # the most seen keep their counts, and their labels
    assert annotator.top_captions(2) == [
        ("It's a wall.", 5_000, 0.1),
        ("The kitten bites!", 3_000, None),
    ]
    # every label stays: in the store, handed out, and known (never asked again)
    assert store.caption_labels() == {label.caption: label.value for label in labelled}
    assert annotator.poll_labels() == labelled
    assert "$ - 7 gold pieces." not in annotator._queue.waiting
    assert {label.caption for label in labelled} <= annotator._queue.known
