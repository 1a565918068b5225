"""`RolloutWorker`: steps `num_envs` environments with one batched policy call per step and
returns fixed-length `Fragment`s. A plain class: `cluster/` makes it a Ray actor, serial mode
calls it directly."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from actors.captions import normalize_caption
from actors.envs import copied, make_env
from actors.episodes import EpisodeTally
from actors.messages import EpisodeStats, Fragment, PolicyWeights, Sightings
from actors.nle_buffers import holds_observations, share_buffers
from actors.observation_slots import ObservationSlots, SlotObservations, release_observations
from actors.sampling import gumbel_noise, log_probs

_ENV_STREAM, _ACTION_STREAM = 0, 1  # spawn-key tags: env resets and action draws never share
_NORMALIZED_CAPTIONS = 1 << 14  # distinct captions whose normal form a worker remembers


class SampleAborted(RuntimeError):
    """Raised by `sample` after a sample failed part way (its policy's actor was lost): the
    envs and the episode books stopped mid-unroll, so the worker samples again only once moved
    onto new seed streams (`use_restart_streams` with a new count, which starts new episodes)."""


class RolloutWorker:
    """Owns `num_envs` environments and a CPU copy of the policy.

    Seeding (`episode_seed`): episode j of env e is reset with a seed drawn from numpy's
    `SeedSequence(seed)` spawned by (worker_id, incarnation, restarts, e, j), and actions are
    drawn from one spawned by (worker_id, incarnation, restarts). `incarnation` counts the
    starts of the run (0 for a new run, one more on every resume: the driver keeps it in its
    checkpointed counters) and `restarts` the losses of this worker's process within a start
    (the driver sends it with every sample request, `use_restart_streams`, since Ray restarts a
    dead worker with its original constructor arguments). So a run is reproducible from its
    seed, and neither a resumed run nor a restarted worker replays a dungeon played before.
    """

    def __init__(
        self,
        *,
        env_id: str,
        num_envs: int,
        unroll_length: int,
        policy: torch.nn.Module,
        seed: int = 0,
        worker_id: int = 0,
        max_episode_steps: int | None = None,
        normalize_captions: bool = False,
        caption_sink: Callable[[Sightings], None] | None = None,
        unrolls_per_sample: int = 1,
        incarnation: int = 0,
    ):
        torch.set_num_threads(1)  # one core per worker; batched inference is small
        self.worker_id = worker_id
        self.unroll_length = unroll_length
        self.unrolls_per_sample = unrolls_per_sample
        self.policy = policy.eval()
        self.policy_version = 0
        self.normalize_captions = normalize_captions
        self.caption_sink = caption_sink  # e.g. the annotator: {caption: sightings} per fragment
        self._seed, self._incarnation, self._restarts = seed, incarnation, 0
        self.envs = [
            # Observations as the envs' own arrays: each step's are copied into the buffers.
            make_env(
                env_id,
                seed=self.episode_seed(i, 0),
                max_episode_steps=max_episode_steps,
                copy_observations=False,
            )
            for i in range(num_envs)
        ]
        # NetHack writes the envs' observations side by side: a step's are one copy per key.
        self._blocks = share_buffers(self.envs, list(self.envs[0].observation_space.spaces))
        first = self._start_streams()
        if self._blocks is not None and not holds_observations(self._blocks, first):
            self._blocks = None  # the envs return other arrays: copy what they return
        self._obs_spec = {
            key: (np.shape(value), np.asarray(value).dtype) for key, value in first[0].items()
        }
        self._next_obs = _stacked(first)  # [B, ...] per key: what each env shows now
        self._num_actions = int(self.envs[0].action_space.n)
        self._state = policy.initial_state(num_envs)
        self._no_starts = torch.zeros(1, num_envs, dtype=torch.bool)  # no step starts an episode
        self._episodes = self._new_tally()
        self.slots: ObservationSlots | None = None  # see share_observations
        self._slot_views: dict[tuple, list[_UnrollViews]] = {}  # per slot: `_views_of`
        self._aborted = False  # a sample failed part way: new seed streams before the next

    @property
    def num_envs(self) -> int:
        return len(self.envs)

    def set_weights(self, weights: PolicyWeights) -> None:
        """Load the learner's weights (numpy arrays, as shipped through the object store)."""
        self.policy.load_state_dict(
            {k: torch.from_numpy(np.asarray(v)) for k, v in weights.state.items()}
        )
        self.policy_version = weights.version

    @property
    def acting_version(self) -> int:
        """Version of the weights choosing the actions: this worker's copy's, or, for a policy
        answered elsewhere (cluster/inference.py's RemotePolicy, which has `weights_version`),
        the version behind its latest answer."""
        return getattr(self.policy, "weights_version", self.policy_version)

    def use_restart_streams(self, restarts: int) -> None:
        """`restarts`: how often this worker lost a sample in this run start, as the driver counts
        it: its process died (Ray constructs a restarted process with the original arguments, so
        it begins on the streams of restart 0) or a sample stopped part way (`SampleAborted`).
        A new value moves every env and the action draws onto that restart's streams and starts
        new episodes there; the same value changes nothing."""
        if restarts == self._restarts:
            return
        self._restarts, self._aborted = restarts, False
        self._next_obs = _stacked(self._start_streams())
        self._state = self.policy.initial_state(self.num_envs)
        self._episodes = self._new_tally()

    def share_observations(self, num_slots: int) -> None:
        """Write samples' observations into `num_slots` shared-memory slots from now on
        (actors/observation_slots.py), for a consumer on this machine that releases them; a
        sample finding every slot busy uses ordinary arrays. Raises OSError where the machine
        cannot make the shared memory (see ObservationSlots)."""
        if self.slots is None:
            rows, cols = self.unroll_length + 1, self.num_envs * self.unrolls_per_sample
            self.slots = ObservationSlots(self._obs_spec, rows, cols, num_slots)

    def episode_seed(self, env_index: int, episode: int) -> int:
        """The reset seed of episode `episode` (0, 1, ...) of env `env_index` on this worker's
        current streams: a function of (seed, worker id, incarnation, restarts, env, episode)."""
        key = (self.worker_id, self._incarnation, self._restarts, _ENV_STREAM, env_index, episode)
        return int(self._sequence(key).generate_state(1, np.uint64)[0] >> np.uint64(1))

    def _sequence(self, spawn_key: tuple[int, ...]) -> np.random.SeedSequence:
        # SeedSequence takes entropy >= 0; the modulus keeps negative seeds distinct.
        return np.random.SeedSequence(self._seed % 2**128, spawn_key=spawn_key)

    def _start_streams(self) -> list[dict[str, np.ndarray]]:
        """Reset every env onto episode 0 of the current streams; returns the observations."""
        self._resets = [0] * self.num_envs
        key = (self.worker_id, self._incarnation, self._restarts, _ACTION_STREAM)
        self._rng = np.random.default_rng(self._sequence(key))
        return [env.reset(seed=self.episode_seed(i, 0))[0] for i, env in enumerate(self.envs)]

    def sample(self) -> tuple[Fragment, tuple[EpisodeStats, ...]]:
        """Step every env `unroll_length * unrolls_per_sample` times; return the fragment, shaped
        [unroll_length, num_envs * unrolls_per_sample] (consecutive unrolls side by side), and
        the episodes it finished.

        The stats are returned beside the fragment so that the driver can read them without
        fetching the observation arrays.
        """
        if self._aborted:
            raise SampleAborted(f"worker {self.worker_id}: its last sample stopped part way")
        steps, num_envs, unrolls = self.unroll_length, self.num_envs, self.unrolls_per_sample
        # Fresh buffers every sample (a free shared slot, or new arrays), handed to the fragment
        # as they are (no copy at the end): unroll u writes columns u*B .. (u+1)*B - 1.
        buffers = self.slots.acquire() if self.slots is not None else None
        if buffers is None:
            buffers = {
                key: np.empty((steps + 1, unrolls * num_envs, *shape), dtype)
                for key, (shape, dtype) in self._obs_spec.items()
            }
        try:
            rows = _StepRows(unrolls * steps, num_envs)
            # What the unrolls' steps read and write, made once per sample: per-call costs are
            # paid once rather than once per unroll (see `_unroll`).
            noise = gumbel_noise(self._rng, (unrolls * steps, num_envs, self._num_actions))
            for u, views in enumerate(self._views_of(buffers)):
                rows.initial_states.append(self._state.numpy().copy())
                self._unroll(views, rows, u * steps, noise[u * steps : (u + 1) * steps])
                rows.versions.append(self.acting_version)
            # A copy: a view would keep the whole sample's buffers alive once handed over.
            self._next_obs = {key: obs.copy() for key, obs in self._next_obs.items()}
            fragment = self._fragment(buffers, rows)
        except BaseException:  # e.g. the policy's actor lost: no consumer will free the slot
            self._aborted = True  # the envs and the episode rows stopped part way
            release_observations(buffers)
            raise
        return fragment, fragment.episodes

    def _views_of(self, buffers: dict[str, np.ndarray]) -> list[_UnrollViews]:
        """`_unroll_views(buffers)`, made once per shared-memory slot (a slot's arrays are the
        same memory every time it is taken) and for ordinary arrays once per sample."""
        if not isinstance(buffers, SlotObservations):
            return self._unroll_views(buffers)
        slot = buffers.address.token, buffers.address.slot  # the file's token: its memory
        if slot not in self._slot_views:
            self._slot_views[slot] = self._unroll_views(buffers)
        return self._slot_views[slot]

    def _unroll_views(self, buffers: dict[str, np.ndarray]) -> list[_UnrollViews]:
        """Per unroll u, views of columns u*B .. (u+1)*B - 1 of the sample's `buffers`
        {key: [T + 1, U * B, ...]}: the columns, each step's rows to write, its policy inputs."""
        steps, num_envs = self.unroll_length, self.num_envs
        views = []
        for u in range(self.unrolls_per_sample):
            columns = {k: b[:, u * num_envs : (u + 1) * num_envs] for k, b in buffers.items()}
            # Each step's observations go into row t + 1 in one call per key: NetHack's block
            # [B, ...] (actors/nle_buffers.py), or else the envs' arrays joined along their
            # first axis, [B * d0, d1, ...] (a view: the row's B columns are contiguous; every
            # observation has at least one axis).
            if self._blocks is not None:
                writes = _by_step(columns, lambda buf: buf[1:])
            else:
                writes = _by_step(columns, lambda buf: _joined_rows(buf[1:]))
            # The policy's [1, B, ...] input of each step: tensors sharing the buffers' memory.
            inputs = _by_step(columns, lambda buf: torch.from_numpy(buf[:steps, None]).unbind())
            views.append(_UnrollViews(columns, writes, inputs))
        return views

    def _unroll(self, views: _UnrollViews, rows: _StepRows, first: int, noise: np.ndarray):
        """One unroll into `views.columns` {key: [T + 1, B, ...]} (row 0 is where the last
        unroll left the envs), its steps kept as rows `first` .. `first + T - 1` of `rows`;
        `noise` [T, B, A]: the steps' Gumbel noise."""
        steps, blocks = self.unroll_length, self._blocks
        for key, buf in views.columns.items():
            buf[0] = self._next_obs[key]
        rows_out, obs_rows, no_starts = views.writes, views.inputs, self._no_starts
        final_values = rows.final_values[first : first + steps]
        logits, values, actions = rows.logits, rows.values, rows.actions
        terminated, truncated = rows.terminated, rows.truncated

        # Between two steps of the envs, whose NetHack code fills the core's caches, every
        # distinct call finds its own code and data evicted and costs several times what it
        # costs in a tight loop. So a step does only what the next one needs (the policy, the
        # draw, the observations) and keeps the rest as Python rows; arrays and episode
        # bookkeeping are made from them once per sample, after the last step (`_fragment`).
        with torch.no_grad(), self.policy.autocast("cpu"):  # weights cast once per unroll
            for t in range(steps):
                step_actions, step_logits, value, self._state = self.policy.act(
                    obs_rows[t], self._state, no_starts, noise[t]
                )
                results = [
                    env.step(action) for env, action in zip(self.envs, step_actions, strict=True)
                ]
                obs, reward, term, trunc, info = zip(*results, strict=True)
                logits.append(step_logits)
                values.append(value)
                actions.append(step_actions)
                terminated.append(term)
                truncated.append(trunc)
                ended = any(term) or any(trunc)
                self._episodes.add_step(reward, info, ended)
                if ended:
                    obs = list(obs)
                    final_values[t] = self._start_episodes(obs, term, trunc)
                if blocks is not None:
                    for key, out in rows_out[t].items():
                        np.copyto(out, blocks[key])
                else:
                    for key, out in rows_out[t].items():
                        np.concatenate([o[key] for o in obs], out=out)
        self._next_obs = {key: buf[steps] for key, buf in views.columns.items()}  # views, for now

    def _fragment(self, buffers: dict[str, np.ndarray], rows: _StepRows) -> Fragment:
        """The sample's fragment from its observation `buffers` and its steps' `rows` (all the
        unrolls in time order, [U * T, B]): the episode books, the log-probabilities and the
        arrays, each made once per sample, with the unrolls set side by side, [T, U * B]."""
        unrolls = self.unrolls_per_sample
        logits = torch.cat(rows.logits).numpy()
        terminated = np.array(rows.terminated, bool)
        # An episode that ended by its own rules is not cut, whatever the time limit says.
        truncated = np.array(rows.truncated, bool) & ~terminated
        tally = self._episodes.end_unroll(terminated | truncated, truncated)
        actions = np.array(rows.actions, np.int64)
        values = torch.cat(rows.values).numpy().astype(np.float32, copy=False)
        fragment = Fragment(
            obs=buffers,
            actions=_beside(actions, unrolls),
            logp=_beside(log_probs(logits, actions), unrolls),
            values=_beside(values, unrolls),
            rewards=_beside(tally.rewards, unrolls),
            terminated=_beside(terminated, unrolls),
            truncated=_beside(truncated, unrolls),
            final_values=_beside(rows.final_values, unrolls),
            caption_ids=_beside(tally.caption_ids, unrolls),
            caption_counts=_beside(tally.caption_counts, unrolls),
            captions=tally.captions,
            initial_state=np.concatenate(rows.initial_states),
            # The oldest weights behind the sample (a remote policy's answers may move on).
            policy_version=min(rows.versions),
            worker_id=self.worker_id,
            episodes=tuple(tally.finished),
        )
        if self.caption_sink is not None and tally.captions:
            ids = tally.caption_ids
            seen = np.bincount(ids[ids >= 0], minlength=len(tally.captions))
            self.caption_sink(Sightings(dict(zip(tally.captions, seen.tolist(), strict=True))))
        return fragment

    def _start_episodes(self, obs: list[dict], terminated: tuple, truncated: tuple) -> np.ndarray:
        """Reset the envs whose episode ended on this step (`terminated`, `truncated`: [B], as
        the envs returned them), putting their first observations into `obs` [B]; their
        recurrent state starts from zero. Returns the behaviour values of the observations of
        the episodes cut by the time limit (0 elsewhere), [B]."""
        ended = [
            i for i, (te, tr) in enumerate(zip(terminated, truncated, strict=True)) if te or tr
        ]
        # The envs return their own arrays, which a reset overwrites (NLE's own tasks end on
        # their post-quit screen in them; OniTask copies a last observation anyway): keep copies.
        cut = [(i, copied(obs[i])) for i in ended if truncated[i] and not terminated[i]]
        for i in ended:
            self._resets[i] += 1
            obs[i] = self.envs[i].reset(seed=self.episode_seed(i, self._resets[i]))[0]
        values = self._values_of(cut) if cut else np.zeros(self.num_envs, np.float32)
        if self._state.shape[1]:
            done = torch.zeros(self.num_envs, dtype=torch.bool)
            done[ended] = True
            self._state[done] = 0.0
        return values

    def _new_tally(self) -> EpisodeTally:
        # Captions repeat from step to step: each distinct one is normalised once (a bounded
        # cache, as numbers in messages make new ones all along).
        normalize = functools.lru_cache(maxsize=_NORMALIZED_CAPTIONS)(normalize_caption)
        return EpisodeTally(self.num_envs, normalize if self.normalize_captions else None)

    def close(self) -> None:
        for env in self.envs:
            env.close()

    def _values_of(self, items: list[tuple[int, dict]]) -> np.ndarray:
        """Behaviour values of the final observations of time-limited episodes, [num_envs]."""
        index = [i for i, _ in items]
        obs = {
            k: torch.from_numpy(np.stack([o[k] for _, o in items])[None]) for k in self._obs_spec
        }
        starts = torch.zeros(1, len(items), dtype=torch.bool)
        _, value, _ = self.policy(obs, self._state[index], starts)
        out = np.zeros(self.num_envs, np.float32)
        out[index] = value[0].numpy()
        return out


def _by_step(buffers: dict[str, np.ndarray], rows) -> list[dict]:
    """[{key: rows(buffers[key])[t] for each key} for each step t]: `rows` maps a buffer to its
    per-step rows, called once per key (a call per key and step costs more)."""
    keys, columns = list(buffers), [rows(buf) for buf in buffers.values()]
    return [dict(zip(keys, row, strict=True)) for row in zip(*columns, strict=True)]


def _stacked(observations: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One observation per env -> {key: [B, ...]}."""
    return {key: np.stack([obs[key] for obs in observations]) for key in observations[0]}


class _StepRows:
    """A sample's per-step rows, kept as Python lists while its envs step (`_unroll`): the
    policy's [1, B, A] logits and [1, B] values (joined by torch.cat, never written: a policy
    may return the same tensors every call), the [B] actions and end flags, and per unroll the
    recurrent state it began from and the version of the weights that acted."""

    def __init__(self, steps: int, num_envs: int) -> None:
        self.logits: list = []
        self.values: list = []
        self.actions: list = []
        self.terminated: list = []
        self.truncated: list = []
        self.final_values = np.zeros((steps, num_envs), np.float32)  # see _start_episodes
        self.initial_states: list[np.ndarray] = []
        self.versions: list[int] = []


@dataclass(frozen=True)
class _UnrollViews:
    """One unroll's share of a sample's buffers (`RolloutWorker._unroll_views`)."""

    columns: dict[str, np.ndarray]  # {key: [T + 1, B, ...]}
    writes: list[dict[str, np.ndarray]]  # per step t: where its observations go (row t + 1)
    inputs: list[dict[str, torch.Tensor]]  # per step t: the policy's [1, B, ...] input (row t)


def _joined_rows(buf: np.ndarray) -> np.ndarray:
    """[T, B, d0, d1, ...] -> [T, B * d0, d1, ...], a view: writes into it reach `buf`. Raises
    ValueError where numpy would have to copy (it reshapes into a copy without a word)."""
    joined = buf.reshape(buf.shape[0], -1, *buf.shape[3:])
    if not np.may_share_memory(joined, buf):
        raise ValueError(f"rows of shape {buf.shape} and strides {buf.strides} cannot be joined")
    return joined


def _beside(rows: np.ndarray, unrolls: int) -> np.ndarray:
    """[U * T, B, ...] (U consecutive unrolls, in time order) -> [T, U * B, ...] (side by side:
    unroll u in columns u*B .. (u+1)*B - 1)."""
    if unrolls == 1:
        return rows
    steps, num_envs = rows.shape[0] // unrolls, rows.shape[1]
    stacked = rows.reshape(unrolls, steps, num_envs, *rows.shape[2:]).swapaxes(0, 1)
    return stacked.reshape(steps, unrolls * num_envs, *rows.shape[2:])
