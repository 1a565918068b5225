"""Shared policy inference (`rollout.inference: shared`): one actor per node runs the policy for
the rollout workers of that node, batching their requests into one forward pass (SEED RL,
Espeholt et al. 2020, section 2; Sample Factory's policy workers, Petrenko et al. 2020, section
3.1). The actors of a run are kept by `cluster/inference_pool.py`.

Workers then only step environments. Each step a worker sends its envs' observations and
recurrent state (`act`), and the actor answers once it has a request from every worker it has
heard from in the last `SEEN_WINDOW_S` seconds, or `max_wait_s` has passed. The GRU state
travels with the request, so the actor holds no per-worker state and a restarted worker loses
nothing. The actor is the only holder of the
policy's weights: the runner sends them here instead of to every worker.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import torch

from actors.messages import PolicyWeights
from cluster.components import EnvSpec, make_policy
from cluster.worker_settings import InferenceSettings
from learner.models import gumbel_max

Obs = dict[str, np.ndarray]


class InferenceActor:
    """Batched policy forward passes for the rollout workers of one node (a Ray async actor).

    `act(obs [1, N, ...], state [N, H], worker_id)` -> (logits float32 [N, A], values float32
    [N], next state float32 [N, H], weights version int). Requests are answered in arrival order.
    How many requests make a full batch is learned from the callers: the workers that asked in
    the last SEEN_WINDOW_S seconds (`settings.num_workers` before any has asked), so a worker
    added, retired or restarted on another node needs no message.
    """

    #: seconds a worker counts towards a full batch after its last request
    SEEN_WINDOW_S = 5.0

    def __init__(self, settings: InferenceSettings, spec: EnvSpec, max_wait_s: float = 0.002):
        """`settings`: `InferenceSettings.from_config(config)`; `max_wait_s`: how long (seconds)
        a batch waits for the requests of the workers that have not asked yet."""
        from learner.learner import resolve_device

        torch.set_num_threads(1)  # one CPU, as Ray reserved
        self.device = resolve_device(settings.device)
        self.policy = make_policy(settings, spec).to(self.device).eval()
        self.version = 0
        self._first_guess = max(1, settings.num_workers)
        self._seen: dict[int, float] = {}  # worker id -> monotonic time of its last request
        self.max_wait_s = max_wait_s
        self._queue: list[tuple[Obs, np.ndarray, asyncio.Future]] = []
        self._arrived = asyncio.Event()
        self._batcher: asyncio.Task | None = None
        self.batches = self.requests = 0

    def set_weights(self, weights: PolicyWeights) -> None:
        self.policy.load_state_dict(
            {k: torch.from_numpy(np.asarray(v)) for k, v in weights.state.items()}
        )
        self.version = weights.version

    @property
    def expected(self) -> int:
        """Requests that make a full batch: the workers heard from in the last SEEN_WINDOW_S."""
        if not self._seen:
            return self._first_guess
        now = time.monotonic()
        self._seen = {w: t for w, t in self._seen.items() if now - t < self.SEEN_WINDOW_S}
        return max(1, len(self._seen))

    def stats(self) -> dict[str, float]:
        """Requests and batches so far (their ratio is the mean number of workers per batch)."""
        return {"requests": float(self.requests), "batches": float(self.batches)}

    async def act(self, obs: Obs, state: np.ndarray, worker_id: int = -1):
        self._seen[worker_id] = time.monotonic()
        future = asyncio.get_running_loop().create_future()
        self._queue.append((obs, state, future))
        self._arrived.set()
        if self._batcher is None or self._batcher.done():
            self._batcher = asyncio.create_task(self._serve())
        return await future

    async def _serve(self) -> None:
        """Answer queued requests in batches until the queue is empty."""
        while self._queue:
            deadline = time.monotonic() + self.max_wait_s
            expected = self.expected
            while len(self._queue) < expected and time.monotonic() < deadline:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), deadline - time.monotonic())
                except TimeoutError:
                    break
            batch, self._queue = self._queue, []
            try:
                results = self._forward([(obs, state) for obs, state, _ in batch])
            except Exception as exc:  # noqa: BLE001 - every waiting worker gets the error
                for _, _, future in batch:
                    future.set_exception(exc)
                continue
            for (_, _, future), result in zip(batch, results, strict=True):
                future.set_result(result)

    def _forward(self, requests: list[tuple[Obs, np.ndarray]]) -> list[tuple]:
        sizes = [state.shape[0] for _, state in requests]
        dev = self.device
        obs = {
            k: torch.from_numpy(np.concatenate([o[k] for o, _ in requests], axis=1)).to(dev)
            for k in requests[0][0]
        }
        state = torch.from_numpy(np.concatenate([s for _, s in requests])).to(dev)
        starts = torch.zeros(1, sum(sizes), dtype=torch.bool, device=dev)
        with torch.no_grad():
            logits, values, state = (x.cpu() for x in self.policy(obs, state, starts))
        self.batches += 1
        self.requests += len(requests)
        bounds = np.cumsum([0, *sizes])
        return [
            (
                logits[0, a:b].numpy(),
                values[0, a:b].numpy(),
                state[a:b].numpy(),
                self.version,
            )
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]


class InferenceMissing(Exception):
    """A worker's node has no inference actor yet: the runner starts one there and asks again."""

    def __init__(self, node_id: str):
        super().__init__(node_id)
        self.node_id = node_id


class InferenceUnavailable(RuntimeError):
    """A node's inference actor died and Ray will not restart it (its constructor failed when
    Ray restarted it, or it was killed without restart): the run stops, with a checkpoint and
    the command that goes on without shared inference."""


class InferenceLost(Exception):
    """A worker's inference actor died, or is restarting, while the worker's sample waited on it:
    Ray restarts the actor by itself; the runner asks the worker again on fresh streams (its envs
    stopped part way through the sample) and does not count the worker lost."""

    def __init__(self, node_id: str):
        super().__init__(node_id)
        self.node_id = node_id


class RemotePolicy:
    """The policy interface a RolloutWorker calls (ActorCritic's call, `act`, `initial_state`,
    `autocast`), answered by the InferenceActor of the worker's node, found by name
    (`inference_actor_name`) before each sample. `weights_version` is the version of the
    weights behind the last answer; the worker stamps its fragments with it."""

    def __init__(self, name_prefix: str, state_size: int, worker_id: int = -1):
        self.name_prefix = name_prefix
        self.state_size = state_size
        self.worker_id = worker_id
        self.weights_version = 0
        self.actor = None

    def find_actor(self) -> None:
        """Look up this node's inference actor (once; a restarted process looks again).

        Raises InferenceMissing(node id) when the node has none yet."""
        if self.actor is not None:
            return
        import ray

        node_id = ray.get_runtime_context().get_node_id()
        try:
            self.actor = ray.get_actor(inference_actor_name(self.name_prefix, node_id))
        except ValueError:
            raise InferenceMissing(node_id) from None

    def __call__(self, obs: dict[str, torch.Tensor], state: torch.Tensor, starts: torch.Tensor):
        import ray

        obs_np = {k: v.numpy() for k, v in obs.items()}
        ref = self.actor.act.remote(obs_np, state.numpy(), self.worker_id)
        try:
            logits, values, next_state, self.weights_version = ray.get(ref)
        # cluster/placement.py's WORKER_LOST, not imported: placement pulls in the annotator
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError):
            raise InferenceLost(ray.get_runtime_context().get_node_id()) from None
        return (
            torch.from_numpy(logits)[None],
            torch.from_numpy(values)[None],
            torch.from_numpy(next_state),
        )

    def act(self, obs, state: torch.Tensor, starts: torch.Tensor, noise: np.ndarray):
        """ActorCritic.act: the answer's logits, the actions drawn from them here."""
        logits, values, state = self(obs, state, starts)
        return gumbel_max(logits.numpy()[0], noise).tolist(), logits, values, state

    def initial_state(self, batch_size: int) -> torch.Tensor:
        return torch.zeros(batch_size, self.state_size)

    def eval(self) -> RemotePolicy:
        return self

    def autocast(self, device_type: str = "cpu"):
        import contextlib

        return contextlib.nullcontext()


def inference_actor_name(prefix: str, node_id: str) -> str:
    """The Ray name of a run's inference actor on a node (`prefix` is unique to the run)."""
    return f"{prefix}-{node_id}"
