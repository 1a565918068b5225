"""`RolloutWorker`: steps `num_envs` environments with one batched policy call per step and
returns fixed-length `Fragment`s. A plain class: `cluster/` makes it a Ray actor, serial mode
calls it directly."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from actors.captions import normalize_caption
from actors.envs import make_env
from actors.messages import EpisodeStats, Fragment, PolicyWeights, Sightings, side_by_side
from actors.sampling import draw_actions, gumbel_noise, log_probs

_ENV_STREAM, _ACTION_STREAM = 0, 1  # spawn-key tags: env resets and action draws never share


class _Episode:
    """Running totals of the episode an environment is in."""

    __slots__ = ("return_", "length", "max_depth", "caption_counts")

    def __init__(self) -> None:
        self.return_ = 0.0
        self.length = 0
        self.max_depth = 0
        self.caption_counts: dict[str, int] = {}


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
            make_env(env_id, seed=self.episode_seed(i, 0), max_episode_steps=max_episode_steps)
            for i in range(num_envs)
        ]
        first = self._start_streams()
        self._obs_buffers = {
            key: np.zeros(
                (unroll_length + 1, num_envs, *np.shape(value)), dtype=np.asarray(value).dtype
            )
            for key, value in first[0].items()
        }
        for i, obs in enumerate(first):  # row T: `sample` moves it to row 0
            self._write_obs(unroll_length, i, obs)
        # Tensors sharing the buffers' memory, one [1, B, ...] view per row: made once, since
        # building them every step costs as much as a NetHack step.
        self._obs_rows = [
            {k: torch.from_numpy(buf[t : t + 1]) for k, buf in self._obs_buffers.items()}
            for t in range(unroll_length)
        ]
        self._num_actions = int(self.envs[0].action_space.n)
        self._state = policy.initial_state(num_envs)
        self._episodes = [_Episode() for _ in range(num_envs)]

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
        """`restarts`: how often this worker's process was lost in this run start, as the driver
        counts it (Ray constructs a restarted process with the original arguments, so it begins
        on the streams of restart 0). A new value moves every env and the action draws onto
        that restart's streams and starts new episodes there; the same value changes nothing."""
        if restarts == self._restarts:
            return
        self._restarts = restarts
        for i, obs in enumerate(self._start_streams()):
            self._write_obs(self.unroll_length, i, obs)
        self._state = self.policy.initial_state(self.num_envs)
        self._episodes = [_Episode() for _ in range(self.num_envs)]

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
        fragment = side_by_side([self._unroll() for _ in range(self.unrolls_per_sample)])
        return fragment, fragment.episodes

    def _unroll(self) -> Fragment:
        steps, num_envs = self.unroll_length, self.num_envs
        buffers = self._obs_buffers
        for buf in buffers.values():  # last fragment's final obs is this one's first
            buf[0] = buf[steps]
        actions = np.zeros((steps, num_envs), np.int64)
        logits = np.zeros((steps, num_envs, self._num_actions), np.float32)
        values = np.zeros((steps, num_envs), np.float32)
        rewards = np.zeros((steps, num_envs), np.float32)
        terminated = np.zeros((steps, num_envs), bool)
        truncated = np.zeros((steps, num_envs), bool)
        final_values = np.zeros((steps, num_envs), np.float32)
        caption_ids = np.full((steps, num_envs), -1, np.int32)
        caption_counts = np.zeros((steps, num_envs), np.int32)
        caption_index: dict[str, int] = {}
        initial_state = self._state.numpy().copy()
        finished: list[EpisodeStats] = []
        no_starts = torch.zeros(1, num_envs, dtype=torch.bool)
        noise = gumbel_noise(self._rng, logits.shape)

        with torch.no_grad(), self.policy.autocast("cpu"):  # weights cast once per unroll
            for t in range(steps):
                step_logits, value, self._state = self.policy(
                    self._obs_rows[t], self._state, no_starts
                )
                logits[t] = step_logits[0].numpy()
                actions[t] = draw_actions(logits[t], noise[t])
                values[t] = value[0].numpy()
                truncated_final: list[tuple[int, dict]] = []
                for i, (env, action) in enumerate(zip(self.envs, actions[t].tolist(), strict=True)):
                    obs, reward, term, trunc, info = env.step(action)
                    episode = self._episodes[i]
                    episode.return_ += float(reward)
                    episode.length += 1
                    episode.max_depth = max(episode.max_depth, int(info.get("depth", 0)))
                    cut = trunc and not term  # an episode that ended by its rules is not cut
                    rewards[t, i], terminated[t, i], truncated[t, i] = reward, term, cut
                    caption = info.get("caption")
                    if caption is not None:
                        if self.normalize_captions:
                            caption = normalize_caption(caption)
                        count = episode.caption_counts.get(caption, 0) + 1
                        episode.caption_counts[caption] = count
                        caption_ids[t, i] = caption_index.setdefault(caption, len(caption_index))
                        caption_counts[t, i] = count
                    if term or trunc:
                        finished.append(self._finish_episode(i, info, cut))
                        if cut:
                            truncated_final.append((i, obs))
                        obs = self._reset_env(i)
                    self._write_obs(t + 1, i, obs)
                if truncated_final:
                    final_values[t] = self._values_of(truncated_final, num_envs)
                done = terminated[t] | truncated[t]
                if self._state.shape[1] and done.any():  # a new episode starts from zero state
                    self._state[torch.from_numpy(done)] = 0.0

        fragment = Fragment(
            obs={k: buf.copy() for k, buf in buffers.items()},
            actions=actions,
            logp=log_probs(logits, actions),
            values=values,
            rewards=rewards,
            terminated=terminated,
            truncated=truncated,
            final_values=final_values,
            caption_ids=caption_ids,
            caption_counts=caption_counts,
            captions=tuple(caption_index),
            initial_state=initial_state,
            policy_version=self.acting_version,
            worker_id=self.worker_id,
            episodes=tuple(finished),
        )
        if self.caption_sink is not None and caption_index:
            seen = np.bincount(caption_ids[caption_ids >= 0], minlength=len(caption_index))
            self.caption_sink(Sightings(dict(zip(caption_index, seen.tolist(), strict=True))))
        return fragment

    def close(self) -> None:
        for env in self.envs:
            env.close()

    def _write_obs(self, t: int, i: int, obs: dict[str, np.ndarray]) -> None:
        for key, buf in self._obs_buffers.items():
            buf[t, i] = obs[key]

    def _reset_env(self, i: int) -> dict[str, np.ndarray]:
        self._resets[i] += 1
        self._episodes[i] = _Episode()
        return self.envs[i].reset(seed=self.episode_seed(i, self._resets[i]))[0]

    def _finish_episode(self, i: int, info: dict, truncated: bool) -> EpisodeStats:
        episode = self._episodes[i]
        success = info.get("success")
        return EpisodeStats(
            return_extrinsic=episode.return_,
            length=episode.length,
            success=None if success is None else bool(success),
            max_depth=episode.max_depth or None,
            truncated=truncated,
        )

    def _values_of(self, items: list[tuple[int, dict]], num_envs: int) -> np.ndarray:
        """Behaviour values of the final observations of time-limited episodes, [num_envs]."""
        index = [i for i, _ in items]
        obs = {
            k: torch.from_numpy(np.stack([o[k] for _, o in items])[None]) for k in self._obs_buffers
        }
        starts = torch.zeros(1, len(items), dtype=torch.bool)
        _, value, _ = self.policy(obs, self._state[index], starts)
        out = np.zeros(num_envs, np.float32)
        out[index] = value[0].numpy()
        return out
