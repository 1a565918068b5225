"""`Annotator`: turns the captions agents see into LLM labels, asynchronously. It deduplicates
against known labels and a pending set (nothing is asked twice), batches, keeps several requests
in flight, prefers the newest captions when the backlog is over its bound (ONI's policy), retries
invalid answers a bounded number of times, backs off while the LLM is down, and stores every
label durably before handing it out. Pure asyncio: `cluster/` runs it as a Ray actor or thread."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from actors.messages import CaptionLabel, PairLabel
from annotator import metrics as am
from annotator.asking import INVALID, ask
from annotator.backlog import Backlog
from annotator.calibration import Calibrator
from annotator.config import AnnotatorConfig
from annotator.heap_floor import HeapFloor
from annotator.kinds import annotation_kind
from annotator.label_store import LabelStore
from annotator.latency import LabelLatency
from annotator.pacing import BatchSizer, DutyCycle, Notices, sleep_or_stop, unreadable_notice
from annotator.sightings import Sightings
from reward_models import sample_pairs

NOTICE_INTERVAL_S = 60.0  # one console line per kind of trouble at most this often
FIRST_BATCH = 4  # small, so the first labels arrive within seconds on a loaded machine
READY_WAIT_S = 5.0  # one look for a server at start; then "not answering", and look again


class Annotator:
    """Labels captions with an LLM backend. Thread-safe `submit`/`poll_labels`/`stats`;
    `run()` is the labelling loop (an asyncio task)."""

    def __init__(
        self,
        backend_factory: Callable[[], object],
        store: LabelStore,
        config: AnnotatorConfig,
        kind: str = "caption",
        seed: int = 0,
        keyed_by_backend: bool = False,
        heap_reader: Callable[[], float | None] | None = None,
    ):
        """`keyed_by_backend`: labels are keyed by the model the backend says it serves
        (``backend.model_id``, known once it has started, and followed when it changes), not by
        the store's configured model id. For servers, whose model is theirs to choose.
        `heap_reader`: this process's live heap in MB, read as each batch comes back (metrics'
        `HEAP_FLOOR_MB`); given only where the process is the annotator's own."""
        self.kind = annotation_kind(kind)  # "caption" (classification) or "pair" (ranking)
        self.settings = config
        self.store = store
        self._backend_factory = backend_factory
        self.backend = None
        self.calibrator = Calibrator(
            config.calibration, config.calibration_quantile, config.calibration_window
        )
        self._lock = threading.Lock()
        self._rng = np.random.default_rng(seed)
        self._pairs = self.kind.name == "pair"
        self._keyed_by_backend = keyed_by_backend
        self._server_wait = False  # a server asked whether it answers (metrics.WAITING)
        self._outbox: list[CaptionLabel | PairLabel] = []
        self._queue = Backlog(config.max_backlog, self.kind.key)
        self._pool: OrderedDict[str, None] = OrderedDict()  # distinct captions for pairs
        self._sightings = Sightings()  # sightings this run, bounded (top captions)
        self._unflushed = Sightings()  # sightings not yet in the store
        self.counts = Counter()
        self._started = time.monotonic()
        self._first_caption: float | None = None
        self._first_label_delay: float | None = None
        self._latency = LabelLatency()  # first sighting -> label, p50/p95 in stats()
        self._backend_up = False
        self._sizer = BatchSizer(FIRST_BATCH, config.batch_size, config.target_batch_s)
        self._duty = DutyCycle(1.0)  # until the backend is up and says where it computes
        self._notices = Notices(NOTICE_INTERVAL_S)
        self._keyed = not keyed_by_backend  # labels are keyed by the right model id
        self._retired_stores: list[LabelStore] = []
        self._heap = HeapFloor(heap_reader)
        if not keyed_by_backend:
            self._load_known()

    def _load_known(self) -> None:
        """Labels already in the store (this model + prompt version) are known and handed out
        first, so a resumed or shared-store run asks nothing twice."""
        stored = self.kind.stored(self.store)
        with self._lock:
            self._queue.known = {self.kind.key_of(label) for label in stored}
            self._outbox.extend(stored)
            if not self._pairs:
                for caption in self._sightings:  # seen before the key was known: ask now
                    self._queue.add(caption)

    # -- called by rollout workers and the driver ------------------------------------------
    def submit(self, caption_counts: Mapping[str, int]) -> None:
        """Captions seen by agents with how often they were seen; unseen ones are queued."""
        with self._lock:
            if self._first_caption is None and caption_counts:
                self._first_caption = time.monotonic()
            self._sightings.update(caption_counts)
            self._latency.seen(caption_counts, time.monotonic())
            self._unflushed.update(caption_counts)
            # Least seen first, so that the run's most-seen captions of this submit end newest
            # and are asked first: a fragment lists its captions as they first appeared, which
            # put the constant ones behind that fragment's rare ones (stable: ties keep order).
            for caption in sorted(caption_counts, key=self._sightings.count):
                if self._pairs:
                    self._pool[caption] = None
                    self._pool.move_to_end(caption)
                    if len(self._pool) > self.settings.caption_pool_size:
                        self._pool.popitem(last=False)
                else:
                    self._queue.add(caption)

    def poll_labels(self) -> list[CaptionLabel | PairLabel]:
        """Labels that arrived since the last poll (all stored labels on the first poll)."""
        with self._lock:
            out, self._outbox = self._outbox, []
        return out

    def stats(self) -> dict[str, float]:
        with self._lock:
            asked, total = self.counts["answers"], len(self._queue.known)
            up = None if self.backend is None else self._backend_up  # None: not made yet
            delay, heap = self._first_label_delay, self._heap.floor()
            elapsed = max(time.monotonic() - self._started, 1e-9)
            return {
                am.LABELS_TOTAL: float(total),
                am.LABELS_PER_S: self.counts["labelled"] / elapsed,
                am.PENDING: float(len(self._queue)),
                am.INVALID_RATE: self.counts["invalid"] / asked if asked else 0.0,
                am.POSITIVE_FRACTION: self.counts["positive"] / max(self.counts["labelled"], 1),
                am.DROPPED: float(self._queue.dropped),
                am.FAILED_REQUESTS: float(self.counts["failed"]),
                am.BACKEND_UP: float(self._backend_up),
                am.BACKEND_STATE: am.backend_state(
                    up, self.counts["start_failures"], self._server_wait
                ),
                am.BATCH_SIZE: float(self._sizer.size),
                **self._latency.stats(),
                **({} if delay is None else {am.FIRST_LABEL_DELAY: delay}),
                **({} if heap is None else {am.HEAP_FLOOR_MB: heap}),
            }

    def poll_notices(self) -> list[str]:
        """What the user must know since the last poll, one console line each (a backend that
        does not start or answer, unreadable answers, a changed served model, the first labels,
        the judge resting); each kind at most once per NOTICE_INTERVAL_S."""
        if self.backend is not None:
            for key, message in self.backend.drain_notices():
                self._notice(key, message)
        with self._lock:
            return self._notices.drain()

    def _notice(self, key: str, message: str) -> None:
        with self._lock:
            self._notices.add(key, f"annotator: {message}", time.monotonic())

    def top_captions(self, n: int = 20) -> list[tuple[str, int, float | None]]:
        """The captions agents saw most this run: (caption, sightings, LLM label or None)."""
        with self._lock:
            top = self._sightings.most_common(n)
        labels = {} if self._pairs else self.store.caption_labels()
        return [(caption, seen, labels.get(caption)) for caption, seen in top]

    def backlog(self) -> list:
        """Pending items, oldest first (checkpointed, so a restart keeps its queue)."""
        with self._lock:
            return self._queue.items()

    def state_dict(self) -> dict:
        """What a resume needs beyond the label store and the backlog, as plain data: the
        calibration window (recent P(yes) values), so quantile labels mean the same after it."""
        with self._lock:
            return {"calibration": self.calibrator.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        with self._lock:
            if "calibration" in state:
                self.calibrator.load_state_dict(state["calibration"])

    def restore_backlog(self, items: Sequence) -> None:
        with self._lock:
            for item in items:
                self._queue.add(tuple(item) if isinstance(item, list) else item)

    # -- the labelling loop -----------------------------------------------------------------
    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Label until `stop` is set. Never raises for LLM trouble: it waits and retries."""
        stop = stop or asyncio.Event()
        self.backend = await self._start_backend(stop)
        if self.backend is not None:
            self._duty = DutyCycle.chosen(self.settings.busy_share, self.backend.cpu_threads)
            if self._duty.notice:
                self._notice("resting", self._duty.notice)
            if self._keyed_by_backend:
                self._rekey(self.backend.model_id)
        tasks: set[asyncio.Task] = set()
        failures = 0
        try:
            last_flush = time.monotonic()
            while not stop.is_set() and self.backend is not None:
                if time.monotonic() - last_flush > 2.0:  # one small transaction every 2 s
                    self._flush_sightings()
                    last_flush = time.monotonic()
                if self._pairs:
                    self._refill_pairs()
                while len(tasks) < self.settings.max_in_flight and (batch := self._take_batch()):
                    tasks.add(asyncio.create_task(self._label(batch)))
                if not tasks:
                    await sleep_or_stop(stop, 0.05)
                    continue
                done, tasks = await asyncio.wait(
                    tasks, timeout=0.5, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    ok = task.result()
                    failures = 0 if ok else failures + 1
                if failures:  # the LLM is down or failing: back off, keep everything pending
                    delay = min(
                        self.settings.max_backoff_s,
                        self.settings.backoff_initial_s * 2 ** min(failures - 1, 10),
                    )
                    await sleep_or_stop(stop, delay * (0.5 + random.random()))
        finally:
            for task in tasks:
                task.cancel()
            self._flush_sightings()
            if self.backend is not None:
                await self.backend.close()
            for store in self._retired_stores:
                store.close()

    async def _start_backend(self, stop: asyncio.Event):
        delay = 1.0
        while not stop.is_set():
            backend = None
            try:
                backend = await asyncio.to_thread(self._backend_factory)
                ready = getattr(backend, "wait_ready", None)  # servers: answering, and which model
                if ready is not None:
                    self._server_wait = True
                    await ready(timeout=READY_WAIT_S)
                self._backend_up = True
                return backend
            except Exception as exc:  # noqa: BLE001 - any start failure: report, wait, retry
                with self._lock:
                    self.counts["start_failures"] += 1
                if backend is not None:
                    await backend.close()
                self._notice(
                    "start", f"the LLM backend failed to start ({exc}); retrying in {delay:.0f} s"
                )
                await sleep_or_stop(stop, delay)
                delay = min(delay * 2, self.settings.max_backoff_s)
        return None

    def _rekey(self, model_id: str) -> None:
        """Key labels by `model_id` from now on: the labels stored for it are known (and handed
        out), captions it has not labelled are asked again. Used when the backend tells which
        model it serves, at start and whenever that changes."""
        if self._keyed and model_id == self.store.model_id:
            return
        previous = self.store.model_id if self._keyed else None
        if self._keyed:
            self._flush_sightings()
        self._retired_stores.append(self.store)
        self.store = LabelStore(
            self.store.path, model_id=model_id, prompt_version=self.store.prompt_version
        )
        with self._lock:
            self._keyed = True
            self._queue.forget_labels()
            if previous is not None:
                self.calibrator.recent.clear()  # another judge: another P(yes) distribution
        self._load_known()
        if previous is not None:
            self._notice(
                "rekeyed",
                f"the server now serves {model_id} (was {previous}); its labels are kept apart "
                "from the old model's and captions are asked again",
            )

    async def _label(self, batch: list) -> bool:
        """Ask about one batch; returns False when the LLM could not be reached. No wall-clock
        limit here: in-process backends finish what they start, and the HTTP backend bounds
        each attempt itself (`request_timeout_s`)."""
        s = self.settings
        prompts = [self.kind.prompt(item, goal=s.goal, style=s.style) for item in batch]
        key = self.store.model_id
        sent = time.monotonic()
        try:
            with self._lock:
                retries = [self._queue.is_retry(item) for item in batch]
            outcomes = await ask(self.backend, prompts, retries)
        except Exception as exc:  # noqa: BLE001 - transport errors: all stay pending
            self._notice("error", f"a request failed ({type(exc).__name__}: {exc})")
            outcomes = [None] * len(batch)
        if self._keyed_by_backend and self.backend.model_id != key:
            # The served model changed while this batch was out: its answers may be either
            # model's, so none is stored; the batch is asked again under the new key.
            with self._lock:
                for item in batch:
                    self._queue.failed(item)
            self._rekey(self.backend.model_id)
            return True
        failed = [item for item, out in zip(batch, outcomes, strict=True) if out is None]
        answered = [
            (item, out) for item, out in zip(batch, outcomes, strict=True) if out is not None
        ]
        if answered:
            self._sizer.measured(len(batch), sent, done := time.monotonic())
            self._duty.measured(sent, done, self.backend.cpu_seconds)
            self._heap.read()
        valid = [(item, out) for item, out in answered if out is not INVALID]
        values = self.calibrator([value for _, value in valid]) if valid else []
        labels = [self.kind.label(item, v) for (item, _), v in zip(valid, values, strict=True)]
        raw = [f"{value:.6g}" for _, value in valid]
        if labels:
            self.kind.put(self.store, labels, raw)
        invalid = [item for item, out in answered if out is INVALID]
        if answered:  # the store's invalid share over runs: invalid_answers / requests
            self.store.record_requests(len(answered))
        if invalid:
            self.store.record_invalid(len(invalid))
        reached = not failed or bool(answered)
        with self._lock:
            self._backend_up = reached
            self.counts["answers"] += len(answered)
            self.counts["invalid"] += len(invalid)
            self.counts["failed"] += len(failed)
            self.counts["labelled"] += len(labels)
            self.counts["positive"] += sum(self.kind.positive(label) for label in labels)
            for (item, _), label in zip(valid, labels, strict=True):
                self._queue.labelled(item)
                self._latency.labelled(item, time.monotonic())
                self._outbox.append(label)
            for item in invalid:
                self._queue.unreadable(item, self._retry_limit())
            for item in failed:  # not the answer's fault: pending again at no retry cost
                self._queue.failed(item)
        self._report(batch, failed, invalid, labels)
        return reached

    def _report(self, batch: list, failed: list, invalid: list, labels: list) -> None:
        """Notices for what the user must know about this batch's outcome."""
        if labels and self._first_label_delay is None:
            since = self._first_caption if self._first_caption is not None else self._started
            self._first_label_delay = time.monotonic() - since
            n, new = len(labels), "new " if len(self._queue.known) > len(labels) else ""
            self._notice(
                "first_label",
                f"first {n} {new}label{'s' * (n > 1)} stored, {self._first_label_delay:.0f} s "
                f"after the first caption (batches of {self._sizer.size} now)",
            )
        if failed and len(failed) == len(batch):
            where = getattr(self.backend, "base_url", None) or "the LLM backend"
            self._notice(
                "unreachable",
                f"{where} did not answer {len(failed)} requests ({self.counts['failed']} so far); "
                "they stay pending and are retried with back-off",
            )
        answers, bad = self.counts["answers"], self.counts["invalid"]
        line = unreadable_notice(bad, answers, self.settings.style, self._retry_limit())
        if invalid and line is not None:
            self._notice("invalid", line)

    def _retry_limit(self) -> int:
        """Re-asks of an unreadable answer: sampled ones in reasoned style, none in direct."""
        return self.settings.max_retries if self.settings.style == "reasoned" else 0

    # -- helpers ----------------------------------------------------------------------------
    def _take_batch(self) -> list:
        resting = self._duty.wait_s(time.monotonic())  # annotator.busy_share
        with self._lock:
            return [] if resting else self._queue.take(self._sizer.size)

    def _refill_pairs(self) -> None:
        with self._lock:
            if len(self._queue.waiting) >= self.settings.batch_size or len(self._pool) < 2:
                return
            exclude = self._queue.known | self._queue.pending_keys()
            pool, count = list(self._pool), self.settings.pairs_per_round
            for pair in sample_pairs(pool, count, self._rng, exclude):
                self._queue.add(pair)

    def _flush_sightings(self) -> None:
        if not self._keyed:  # the model, and so where sightings belong, is not known yet
            return
        with self._lock:
            counts = self._unflushed.take()
        if counts:
            self.store.record_sightings(counts)
