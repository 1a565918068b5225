"""The contract between the driver's loop and where the work runs: `Runner`, implemented by
`SerialRunner` (every component in this process) and `RayRunner` (Ray actors). The driver
programs against this protocol only, so both modes share one loop."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from actors.messages import EpisodeStats

FragmentHandle = Any
"""What `collect` returns per fragment and `train` accepts: opaque to the driver, which only
counts and forwards them. Serial mode: the `Fragment` itself; Ray mode: an object reference to
one, which stays in the object store until the learner's node fetches it."""

CaptionRow = tuple[str, int, float | None, float]
"""(caption, sightings, LLM label or None while pending, current r_int before count scaling)."""


@runtime_checkable
class Runner(Protocol):
    """Rollout workers, the learner and the annotator (when the reward model wants labels).

    Blocking: methods return once their effect is submitted unless said otherwise; in serial mode
    submitting is doing. Calls come from one thread (the driver's), in the order of `train`.
    """

    restarts: int
    """Rollout worker processes lost and restarted so far (always 0 in serial mode)."""

    @property
    def workers_alive(self) -> int:
        """Rollout workers placed and sampling."""

    @property
    def workers_waiting(self) -> int:
        """Workers added by `resize` that wait for a CPU (a joined cluster's autoscaler)."""

    @property
    def updates_in_flight(self) -> int:
        """Learner updates submitted by `train` whose metrics `finished_updates` has not returned."""

    @property
    def has_annotator(self) -> bool:
        """Whether an annotator runs (the reward model learns from labels)."""

    def start(self, annotator_backlog: list | None = None) -> None:
        """Start the annotator's labelling loop with a checkpoint's backlog. Blocks until it
        runs and, on a local Ray, until the learner and the workers are constructed (at most
        300 s: cluster/ray_runner.py's START_WAIT_S)."""

    def load_learner_state(self, state: dict) -> None:
        """Restore the learner from `learner_state`'s output. Blocks until done."""

    def learner_state(self) -> dict:
        """The learner's state for a checkpoint (policy, optimiser, `version`, reward model),
        including every update submitted before the call. Blocks."""

    def annotator_state(self) -> dict:
        """The annotator's own state for a checkpoint, plain data; {} without one. Blocks."""

    def load_annotator_state(self, state: dict) -> None:
        """Restore `annotator_state`'s output ({} changes nothing). Blocks."""

    def annotator_backlog(self) -> list:
        """The captions or pairs still waiting for the LLM; [] without an annotator. Blocks."""

    def sync_weights(self) -> None:
        """Send the learner's current weights to every worker (in Ray mode by one object
        reference, without waiting; the first call also starts every worker's sampling)."""

    def resize(self, num_workers: int) -> str:
        """Add or retire rollout workers; returns one console line saying what was done."""

    def collect(self) -> tuple[list[FragmentHandle], list[EpisodeStats], int]:
        """Blocks until at least one worker's sample is ready. Returns (fragment handles for
        `train`, the episodes that finished in them, the env steps they hold). Ray mode may
        return no handle when the only ready sample came from a lost worker, and raises
        InferenceUnavailable when a node's shared inference actor is dead for good."""

    def can_train(self) -> bool:
        """Whether `train` may be called now without exceeding the updates allowed in flight."""

    def train(self, fragments: list[FragmentHandle]) -> None:
        """Submit one learner update on these fragments (serial mode runs it now)."""

    def finished_updates(self, wait: bool = False) -> list[dict[str, float]]:
        """Metrics of updates finished since the last call, oldest first. `wait`: block until at
        least one finishes when any is in flight; [] when none is."""

    def exchange_labels(self, last: bool = False) -> list[dict[str, float]]:
        """Hand the annotator's new labels to the learner's reward model. Returns the metrics
        (reward model's and annotator's) of every exchange that finished; never blocks on the
        LLM (Ray mode returns an exchange's metrics at a later call). `last` (the run's end):
        waits (up to 30 s) until every label stored so far is with the learner and returns
        every metric."""

    def poll_notices(self) -> list[str]:
        """Console lines from the annotator since the last call (each without a prefix)."""

    def caption_table(self, n: int, wait: bool = True) -> list[CaptionRow] | None:
        """The n most-seen captions with their label and current r_int. Reads without changing
        any state (the reward model's normalisation statistics included). Blocks, unless
        `wait` is False: then each call moves a request along (Ray mode asks the annotator,
        then the learner, whose answer waits behind the updates in flight) and returns None
        until its table is ready; the call after a table was returned asks anew."""

    def stop_annotator(self) -> dict[str, float] | None:
        """The run's end, after the final checkpoint: stop the annotator, which labels until
        then (labels stored after the last `exchange_labels` are handed over on resume), and
        return its stats once it has stopped: `annotator/labels_total` counts every label it
        stored. None without an annotator, or (Ray mode) when it has not stopped within 30 s.
        Blocks: serial mode until its thread has stopped. `close` calls it too; a second call
        asks nothing new."""

    def close(self) -> None:
        """Stop the annotator (letting it flush) and every worker. Blocks."""
