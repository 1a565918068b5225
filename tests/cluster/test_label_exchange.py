"""cluster/label_exchange.py on a real local Ray: labels reach the learner by reference, and an
annotator slow to answer never holds back the learner's updates (a Ray actor runs one caller's
calls in order, so a learner call waiting for its argument would hold every update after it)."""

import asyncio
import os
import time
from pathlib import Path

import pytest
import ray

from annotator.label_store import open_readonly
from annotator.metrics import LABELS_TOTAL
from cluster.annotation import AnnotatorActor
from cluster.config import load_config
from cluster.label_exchange import (
    LABELS_GROUP,
    MAX_IN_FLIGHT,
    CaptionTableRequest,
    LabelExchange,
)
from tests.waiting import wait_for


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


@ray.remote
class HeldAnnotatorDouble:
    """Answers each poll only when released, as a starved annotator would answer late."""

    def __init__(self):
        self.released = asyncio.Event()
        self.polls = 0

    async def poll_labels(self):
        self.polls += 1
        await self.released.wait()
        return [f"label {self.polls}"]

    async def stats(self):
        return {"annotator/labels_total": 7.0}

    async def poll_notices(self):
        return ["a notice"]

    async def release(self):
        self.released.set()

    async def start(self, backlog):
        return None

    async def top_captions(self, n):
        return [("You see a door", 3, 1.0), ("It's dark", 2, None)][:n]


@ray.remote(concurrency_groups={LABELS_GROUP: 1})  # as RayRunner's learner
class LearnerDouble:
    """Records the labels it is given; `update` stands for a training step."""

    def __init__(self):
        self.labels = []

    def add_labels(self, labels):
        self.labels.extend(labels)
        return {"reward_model/dataset_size": float(len(self.labels))}

    def update(self):
        return "updated"

    def received(self):
        return list(self.labels)

    def intrinsic_rewards(self, captions):
        return [0.25 * (i + 1) for i in range(len(captions))]

    def hold_until(self, path):
        """Busy until `path` exists, as a long update would be."""
        while not os.path.exists(path):
            time.sleep(0.01)


def _exchange_until_metrics(exchange, tries=200):
    for _ in range(tries):
        metrics = exchange.exchange()
        if metrics:
            return metrics
        ray.get(exchange.learner.received.remote())  # let time pass without a sleep loop
    raise AssertionError("no exchange finished")


def test_an_update_is_not_held_behind_a_poll_the_annotator_has_not_answered(local_ray):
    annotator, learner = HeldAnnotatorDouble.remote(), LearnerDouble.remote()
    exchange = LabelExchange(annotator, learner)
    assert exchange.exchange() == []  # a poll under way, unanswered
    # The learner takes the next update although the annotator has not answered.
    assert ray.get(learner.update.remote(), timeout=20) == "updated"
    assert ray.get(learner.received.remote()) == []

    ray.get(annotator.release.remote())
    metrics = _exchange_until_metrics(exchange)
    assert metrics[0]["reward_model/dataset_size"] == 1.0
    assert metrics[0]["annotator/labels_total"] == 7.0
    assert ray.get(learner.received.remote())[0] == "label 1"
    assert "a notice" in exchange.take_notices()


def test_no_more_than_max_in_flight_polls_are_under_way(local_ray):
    annotator, learner = HeldAnnotatorDouble.remote(), LearnerDouble.remote()
    exchange = LabelExchange(annotator, learner)
    for _ in range(MAX_IN_FLIGHT + 3):
        exchange.exchange()
    ray.get(annotator.release.remote())
    exchange.flush()
    assert len(ray.get(learner.received.remote())) == MAX_IN_FLIGHT


def test_flush_hands_over_every_answered_poll_before_a_state_read(local_ray):
    annotator, learner = HeldAnnotatorDouble.remote(), LearnerDouble.remote()
    exchange = LabelExchange(annotator, learner)
    exchange.exchange()
    ray.get(annotator.release.remote())
    exchange.flush()
    # flush waited for the learner to take them: its next call (a checkpoint's state read)
    # sees them, although add_labels runs in a concurrency group of its own.
    assert ray.get(learner.received.remote()) == ["label 1"]


def test_a_poll_the_annotator_never_answers_is_left_under_way_by_flush(local_ray):
    annotator, learner = HeldAnnotatorDouble.remote(), LearnerDouble.remote()
    exchange = LabelExchange(annotator, learner)
    exchange.exchange()
    exchange.flush(timeout_s=0.2)
    assert ray.get(learner.received.remote()) == []
    ray.get(annotator.release.remote())
    assert _exchange_until_metrics(exchange)[0]["reward_model/dataset_size"] == 1.0


def test_the_caption_table_is_collected_later_while_the_learner_is_busy(local_ray, tmp_path):
    annotator, learner = HeldAnnotatorDouble.remote(), LearnerDouble.remote()
    go = tmp_path / "go"
    learner.hold_until.remote(str(go))  # an update in flight
    request = CaptionTableRequest(annotator, learner, 2)
    ray.get(annotator.top_captions.remote(2))  # the annotator has answered by now
    # Asked again and again, the request never blocks and has no table while the learner's r_int
    # waits behind the update.
    assert all(request.result() is None for _ in range(50))
    go.touch()
    for _ in range(200):
        if (table := request.result()) is not None:
            break
        ray.get(learner.received.remote())  # let time pass without a sleep loop
    assert table == [("You see a door", 3, 1.0, 0.25), ("It's dark", 2, None, 0.5)]


@ray.remote
class StoringAnnotatorDouble:
    """Hands out, at each poll, the labels stored since the last one; its stats count all."""

    def __init__(self):
        self.stored, self.handed = [], 0

    def store(self, n):
        self.stored.extend(f"label {len(self.stored) + i}" for i in range(n))

    def poll_labels(self):
        new, self.handed = self.stored[self.handed :], len(self.stored)
        return new

    def stats(self):
        return {"annotator/labels_total": float(len(self.stored))}

    def poll_notices(self):
        return []


def test_the_last_exchange_takes_every_label_stored_and_returns_its_metrics(local_ray):
    annotator, learner = StoringAnnotatorDouble.remote(), LearnerDouble.remote()
    exchange = LabelExchange(annotator, learner)
    ray.get(annotator.store.remote(3))
    exchange.exchange()  # a poll under way, as at any turn of the loop
    ray.get(annotator.store.remote(4))  # stored after that poll was sent, before the run ends
    metrics = exchange.last()
    # Nothing is left for a later exchange: the run's end reads these counts.
    assert len(ray.get(learner.received.remote())) == 7
    assert metrics[-1]["annotator/labels_total"] == 7.0
    assert metrics[-1]["reward_model/dataset_size"] == 7.0


def test_the_annotator_stopped_at_the_end_counts_labels_stored_after_the_last_exchange(
    local_ray, tmp_path
):
    """The real annotator actor (the rules judge) labels on after the run's last exchange until
    it is stopped: its stats then count every label in the store, what the done line says."""
    overrides = [
        f"run_dir={tmp_path}", "reward_model.name=hashing", "reward.intrinsic_coef=0.4",
        "annotator.backend=rules",
    ]  # fmt: skip
    config = load_config(Path(__file__).resolve().parents[2] / "configs/cartpole.yaml", overrides)
    annotator, learner = ray.remote(AnnotatorActor).remote(config), LearnerDouble.remote()
    ray.get(annotator.start.remote([]))
    exchange = LabelExchange(annotator, learner)

    def labelled(n):
        def check():
            total = ray.get(annotator.stats.remote())[LABELS_TOTAL]
            return total == n, f"{total:.0f} labels"

        wait_for(f"{n} labels stored", check, interval_s=0.05)

    ray.get(annotator.submit.remote({"You find a hidden door.": 1}))
    labelled(1)
    assert exchange.last()[-1][LABELS_TOTAL] == 1.0
    ray.get(annotator.submit.remote({"You kill the newt!": 2, "It's a wall.": 1}))
    labelled(3)  # stored after the last exchange, as during the final checkpoint

    stats = exchange.stop_annotator()
    with open_readonly(tmp_path / "labels.sqlite") as store:
        stored = sum(group[2] for group in store.groups())
    assert stats[LABELS_TOTAL] == stored == 3
    assert exchange.stop_annotator()[LABELS_TOTAL] == 3.0  # again (the runner's close): the same
