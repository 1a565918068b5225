"""The driver's calls between the annotator actor and the learner actor that must not hold the
training loop up: labels to the learner (`LabelExchange`) and the caption table
(`CaptionTableRequest`).

A Ray actor runs one caller's calls in the order they were sent, so a learner call whose
argument does not exist yet holds back every update the driver sends after it. The annotator
can be slow to answer: it runs at a lower priority (annotator.niceness) beside an LLM that
takes whatever CPU the loop leaves. So an exchange goes in two stages. The annotator's labels
are first polled as a reference, with its stats and notices (`_Poll`). Only once they exist
are they handed, still by reference, to the learner's reward model (`_Handover`), in a
concurrency group of the learner's own (`LABELS_GROUP`): the gradient steps those labels earn
(32 per 100 labels while the data set is small, ONI's schedule) run in a thread beside the
updates, as ONI ran them beside its training thread, instead of between two updates.

The caption table asks the learner for the current r_int of the annotator's top captions; that
call waits behind the updates in flight (up to two, ~2 s each on a laptop's CPU), so the driver
asks and collects the answer at a later turn of its loop instead of waiting for it.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

import ray

from cluster.placement import WORKER_LOST
from cluster.runner import CaptionRow

LABELS_GROUP = "labels"
"""The learner actor's concurrency group for `add_labels` (one thread); its other calls run in
the default group, one at a time. The reward model guards itself (reward_models/learned.py)."""
MAX_IN_FLIGHT = 2
"""Exchanges polled or handed over and not finished; a new poll starts only below this."""


@dataclass(frozen=True)
class _Poll:
    labels: ray.ObjectRef
    stats: ray.ObjectRef
    notices: ray.ObjectRef


@dataclass(frozen=True)
class _Handover:
    learner_metrics: ray.ObjectRef
    stats: dict[str, float]


class LabelExchange:
    """Moves labels from `annotator` (cluster/annotation.py's AnnotatorActor) to `learner`
    (a Learner actor, `add_labels`). `exchange` never blocks; `flush` waits for the polls."""

    def __init__(self, annotator: Any, learner: Any) -> None:
        self.annotator, self.learner = annotator, learner
        self._polls: list[_Poll] = []
        self._handovers: list[_Handover] = []
        self._notices: list[str] = []
        self._stop: tuple[ray.ObjectRef, float] | None = None  # `stop_annotator`'s call, deadline

    def exchange(self) -> list[dict[str, float]]:
        """Hand over the polls that finished, start a poll if fewer than MAX_IN_FLIGHT are
        under way, and return the metrics (reward model's and annotator's) of the handovers
        that finished, oldest first."""
        self._hand_over(wait_s=0.0)
        metrics = self._finished()
        if len(self._polls) + len(self._handovers) < MAX_IN_FLIGHT:
            self._polls.append(self._poll())
        return metrics

    def last(self, timeout_s: float = 30.0) -> list[dict[str, float]]:
        """The run's end: wait (up to `timeout_s` in all) for the polls under way, poll once
        more for the labels stored since they were sent, wait for the learner to take them all,
        and return the metrics of every handover, oldest first: the last ones count every label
        the annotator had stored (unless it did not answer within `timeout_s`)."""
        deadline = time.monotonic() + timeout_s
        self._hand_over(wait_s=timeout_s)
        self._polls.append(self._poll())
        self.flush(timeout_s=max(0.0, deadline - time.monotonic()))
        # Polls still unanswered are given up (a checkpoint's flush would wait for them again):
        # their labels are in the store, and a resumed run hands them over first.
        self._polls = []
        return self._finished()

    def stop_annotator(self, timeout_s: float = 30.0) -> dict[str, float] | None:
        """The run's very end, after `last` and the final checkpoint: stop the annotator (it
        labels on until then, so labels may have been stored since the last poll) and return
        its stats once it has stopped, which count every label it stored; None when it has not
        stopped within `timeout_s` of the first call. A later call asks nothing new: it waits
        for what is left of that time and returns the same."""
        if self._stop is None:
            self._stop = self.annotator.stop.remote(), time.monotonic() + timeout_s
        ref, deadline = self._stop
        with contextlib.suppress(Exception):  # closing anyway: the last exchange's stats stand
            return ray.get(ref, timeout=max(0.0, deadline - time.monotonic()))
        return None

    def take_notices(self) -> list[str]:
        """The annotator's console lines (and this exchange's) since the last call."""
        out, self._notices = self._notices, []
        return out

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait up to `timeout_s` for the polls under way, hand them over, and wait for the
        learner to take them, so that a learner state read next (a checkpoint's) holds every
        label polled so far: `add_labels` runs in a concurrency group of its own, so a state
        read sent after it would not wait for it. Their metrics come with the next `exchange`."""
        deadline = time.monotonic() + timeout_s
        self._hand_over(wait_s=timeout_s)
        taking = [handover.learner_metrics for handover in self._handovers]
        if taking:
            _ready(taking, max(0.0, deadline - time.monotonic()))

    def _poll(self) -> _Poll:
        return _Poll(
            self.annotator.poll_labels.remote(),
            self.annotator.stats.remote(),
            self.annotator.poll_notices.remote(),
        )

    def _finished(self) -> list[dict[str, float]]:
        """The metrics of the handovers the learner has finished, oldest first; forgets them."""
        metrics, waiting = [], []
        for handover in self._handovers:
            if _ready([handover.learner_metrics], 0.0):
                metrics.append({**ray.get(handover.learner_metrics), **handover.stats})
            else:
                waiting.append(handover)
        self._handovers = waiting
        return metrics

    def _hand_over(self, wait_s: float) -> None:
        """Hand the answered polls to the learner, waiting up to `wait_s` for all of them."""
        deadline = time.monotonic() + wait_s
        waiting = []
        for poll in self._polls:
            refs = [poll.labels, poll.stats, poll.notices]
            if not _ready(refs, max(0.0, deadline - time.monotonic())):
                waiting.append(poll)
                continue
            try:
                stats, notices = ray.get([poll.stats, poll.notices])
            except WORKER_LOST:  # the annotator restarted: start its labelling loop again
                self._notices.append("annotator: restarted after its process died")
                self.annotator.start.remote([])
                continue
            self._notices.extend(notices)
            # The labels stay in the object store: the learner fetches them itself.
            add_labels = self.learner.add_labels.options(concurrency_group=LABELS_GROUP)
            self._handovers.append(_Handover(add_labels.remote(poll.labels), stats))
        self._polls = waiting


class CaptionTableRequest:
    """The n most-seen captions with their label and current r_int, asked for without waiting:
    the annotator's top captions (`top_captions`), then the learner's r_int of them
    (`intrinsic_rewards`)."""

    def __init__(self, annotator: Any, learner: Any, n: int) -> None:
        self.learner = learner
        self._top: ray.ObjectRef | None = annotator.top_captions.remote(n)
        self._rows: list | None = None
        self._rewards: ray.ObjectRef | None = None

    def result(self) -> list[CaptionRow] | None:
        """The table once both answers are in, else None; never blocks."""
        if self._top is not None:
            if not _ready([self._top], 0.0):
                return None
            self._rows, self._top = ray.get(self._top), None
            captions = [caption for caption, _, _ in self._rows]
            self._rewards = self.learner.intrinsic_rewards.remote(captions)
        if not _ready([self._rewards], 0.0):
            return None
        rewards = ray.get(self._rewards)
        return [(*row, reward) for row, reward in zip(self._rows, rewards, strict=True)]


def _ready(refs: list, timeout_s: float) -> bool:
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    return len(ready) == len(refs)
