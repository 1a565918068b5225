"""Playing episodes for evaluation: a policy over N envs at once, greedily (argmax) or sampled
(Gumbel-max), on the CPU in this process, with the intrinsic return the reward model gives each
episode (the training rule: c_int * r_int(caption) * N_ep(caption)^-beta, summed). Used by
`rogueray evaluate` (cluster/evaluate.py) and the periodic evaluation (cluster/periodic_eval.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

MODES = ("greedy", "sampled")


@dataclass(frozen=True)
class EpisodeResult:
    mode: str
    episode: int
    seed: int
    return_extrinsic: float
    success: float | None  # 1.0 / 0.0 where the task has a goal
    max_depth: int | None
    length: int
    return_intrinsic: float | None  # None without a reward model
    truncated: bool


class _EnvSlots:
    """`num_envs` envs, each playing one episode at a time until `episodes` have started:
    episode k plays seed `seed + k`. A slot holds the running episode's rewards, captions and
    depth; None once no episode is left for it."""

    def __init__(self, config, reward_model, envs: list, *, mode: str, episodes: int, seed: int):
        self.config, self.reward_model, self.envs = config, reward_model, envs
        self.mode, self.episodes, self.seed = mode, episodes, seed
        self.next_episode = 0
        self.slots: list[dict | None] = [None] * len(envs)
        self.obs_rows: list[dict | None] = [None] * len(envs)

    def active(self) -> list[int]:
        return [i for i, slot in enumerate(self.slots) if slot is not None]

    def start(self, i: int) -> None:
        """The next episode in env i (reset to its seed), or the slot emptied when none is left."""
        if self.next_episode >= self.episodes:
            self.slots[i] = None
            return
        index, self.next_episode = self.next_episode, self.next_episode + 1
        self.obs_rows[i] = self.envs[i].reset(seed=self.seed + index)[0]
        self.slots[i] = {"index": index, "rewards": [], "captions": [], "depth": 0}

    def step(self, i: int, action: int) -> EpisodeResult | None:
        """One step of env i; the episode's result when it ended (the slot is then stale until
        `start(i)`)."""
        from actors.captions import normalize_caption

        slot = self.slots[i]
        obs, reward, term, trunc, info = self.envs[i].step(action)
        slot["rewards"].append(float(reward))
        slot["depth"] = max(slot["depth"], int(info.get("depth", 0)))
        caption = info.get("caption")
        if caption is not None and self.config.env.normalize_captions:
            caption = normalize_caption(caption)
        slot["captions"].append(caption)
        self.obs_rows[i] = obs
        return self._result(slot, info, trunc and not term) if term or trunc else None

    def _result(self, slot: dict, info: dict, truncated: bool) -> EpisodeResult:
        from learner.reward import episode_intrinsic

        intrinsic = None
        if self.reward_model is not None:
            intrinsic = float(
                episode_intrinsic(
                    captions=slot["captions"],
                    rewards=slot["rewards"],
                    reward_config=self.config.reward,
                    read_rewards=self.reward_model.read_rewards,
                ).sum()
            )
        success = info.get("success")
        return EpisodeResult(
            mode=self.mode,
            episode=slot["index"],
            seed=self.seed + slot["index"],
            return_extrinsic=float(np.sum(slot["rewards"])),
            success=None if success is None else float(bool(success)),
            max_depth=slot["depth"] or None,
            length=len(slot["rewards"]),
            return_intrinsic=intrinsic,
            truncated=truncated,
        )


def play(
    config: Any,
    policy,
    reward_model,
    *,
    mode: str,
    episodes: int,
    seed: int,
    num_envs: int,
    max_episode_steps: int | None,
    on_episode: Callable[[EpisodeResult], None] | None = None,
    on_steps: Callable[[int], None] | None = None,
) -> list[EpisodeResult]:
    """Play `episodes` episodes (seeds seed..seed+episodes-1) with `num_envs` envs at once;
    `config` is the run's RunConfig. Returns the results in episode order; `on_episode` sees
    each as it ends, `on_steps` the env steps played so far after every batched step (NetHack
    episodes run for thousands). Raises ValueError for a mode not in MODES."""
    import torch

    from actors.envs import make_env

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    rng = np.random.default_rng([seed, MODES.index(mode)])
    num_envs = max(1, min(num_envs, episodes))
    envs = [make_env(config.env.id, max_episode_steps=max_episode_steps) for _ in range(num_envs)]
    table = _EnvSlots(config, reward_model, envs, mode=mode, episodes=episodes, seed=seed)
    results: dict[int, EpisodeResult] = {}
    try:
        for i in range(num_envs):
            table.start(i)
        state = policy.initial_state(num_envs)
        starts = torch.zeros(1, num_envs, dtype=torch.bool)
        keys = list(table.obs_rows[0])
        steps = 0
        with torch.no_grad():
            while active := table.active():
                # finished envs keep stepping their last observation's row; their actions unused
                rows = table.obs_rows
                batch = {k: torch.from_numpy(np.stack([r[k] for r in rows])[None]) for k in keys}
                logits, _, state = policy(batch, state, starts)
                actions = choose_actions(logits[0].numpy(), mode, rng)
                steps += len(active)
                if on_steps is not None:
                    on_steps(steps)
                for i in active:
                    result = table.step(i, int(actions[i]))
                    if result is None:
                        continue
                    results[result.episode] = result
                    if on_episode is not None:
                        on_episode(result)
                    table.start(i)
                    if state.shape[1]:
                        state[i] = 0.0
    finally:
        for env in envs:
            env.close()
    return [results[k] for k in sorted(results)]


def choose_actions(logits: np.ndarray, mode: str, rng: np.random.Generator) -> np.ndarray:
    """Actions [...] from logits [..., num_actions] (evaluate: [num_envs, A]; replay: [A]):
    argmax in mode "greedy", else drawn from their softmax (`gumbel_max`, as the rollout
    workers draw) with Gumbel noise from `rng`."""
    from learner.models import gumbel_max

    if mode == "greedy":
        return np.argmax(logits, axis=-1)
    return gumbel_max(logits, rng.gumbel(size=logits.shape))
