"""Environment construction for the actors: ONI's NetHack tasks, NLE's own tasks and any other
registered gymnasium id, all with dict observations, a Discrete action space and seeded first
resets; plus the id checks and observation/action specs the cluster reads before starting."""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import types

import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import load_env_creator
from nle import nethack
from nle.env.base import NLE
from nle.env.tasks import NetHackChallenge

from actors import nle_tasks
from actors.nle_tasks import OBSERVATION_KEYS, end_status_goal_first, nethack_seeds, step_info


def validate_env_id(env_id: str) -> None:
    """Raise ValueError unless `env_id` is registered with gymnasium. Constructs nothing.

    "module:Env-v0" ids import `module` first, as gymnasium.make does.
    """
    name = _registry_name(env_id)
    if name in gym.registry:
        return
    close = difflib.get_close_matches(name, list(gym.registry), n=5, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ValueError(
        f"unknown environment id {env_id!r}.{hint} NetHack ids: {', '.join(_nethack_ids())}. "
        "Any other registered gymnasium id (e.g. 'CartPole-v1') is accepted too."
    )


def is_nethack(env_id: str) -> bool:
    """True when `env_id` builds an NLE environment (NLE's own tasks or ours)."""
    return _builds(env_id, NLE)


def make_env(
    env_id: str,
    seed: int | None = None,
    max_episode_steps: int | None = None,
    copy_observations: bool = True,
) -> gym.Env:
    """Build `env_id`; its first `reset()` uses `seed` when called without one.

    NetHack ids give observations {glyphs [21, 79] int16, blstats [27] int64, message [256]
    uint8} and info["caption"], info["depth"] on every step; `max_episode_steps` caps agent
    steps (NLE's own counter, default 5000) and a capped episode ends truncated, not
    terminated. Other ids give {"vector": float32 [d]} (a Box flattened, a Discrete one-hot)
    and `max_episode_steps` becomes a TimeLimit. The action space must be Discrete.

    NetHack observations are copies unless `copy_observations` is False: then they are NLE's
    own arrays, valid until this env's next step or reset (a rollout worker, which copies each
    step's observations into its buffers, saves a copy per step). Other ids ignore it: their
    observations are new arrays every step.
    """
    validate_env_id(env_id)
    if is_nethack(env_id):
        env = _make_nethack(env_id, max_episode_steps, copy_observations)
    else:
        env = gym.make(env_id, max_episode_steps=max_episode_steps)
        env = _vector_observations(env, env_id)
    if not isinstance(env.action_space, gym.spaces.Discrete):
        space = env.action_space
        env.close()
        raise ValueError(f"{env_id!r} has action space {space}; only Discrete is supported")
    if seed is not None:
        env.action_space.seed(seed)
    return SeedFirstReset(env, seed)


def observation_spec(env_id: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """{key: (shape, dtype)} of the observations `make_env(env_id)` returns."""
    if is_nethack(env_id):  # known without starting NetHack
        desc = nethack.OBSERVATION_DESC
        return {key: (desc[key]["shape"], np.dtype(desc[key]["dtype"])) for key in OBSERVATION_KEYS}
    env = make_env(env_id)
    try:
        return {key: (space.shape, space.dtype) for key, space in env.observation_space.items()}
    finally:
        env.close()


def num_actions(env_id: str) -> int:
    """Size of the Discrete action space of `env_id` (constructs the env once)."""
    env = make_env(env_id)
    try:
        return int(env.action_space.n)
    finally:
        env.close()


class SeedFirstReset(gym.Wrapper):
    """Makes the first `reset()` without a seed use the seed given at construction."""

    def __init__(self, env: gym.Env, seed: int | None):
        super().__init__(env)
        self._first_seed = seed

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is None:
            seed = self._first_seed
        self._first_seed = None
        return self.env.reset(seed=seed, options=options)


class NetHackInfo(gym.Wrapper):
    """Gives NLE's own tasks what `OniTask` does natively: seeded NetHack RNGs, copied
    observations (NLE's own arrays with `copy_observations` False), info caption/depth (and
    success where the task has one), step caps reported as truncated, and death or the task's
    goal ranked above the step cap (NLE's own order makes a goal reached on the capped step a
    time-limit cut; `end_status_goal_first` is installed on the env instance). NetHackChallenge
    forbids seeding, so its games stay random. Unlike `OniTask`, the last observation of a
    capped or won episode is NLE's post-quit screen."""

    def __init__(self, env: gym.Env, copy_observations: bool = True):
        super().__init__(env)
        self._copy = copy_observations
        nle_env = env.unwrapped
        nle_env._get_end_status = types.MethodType(end_status_goal_first, nle_env)
        self._rng = np.random.default_rng()
        self._depth = 0
        status = type(env.unwrapped).StepStatus
        self._success_status = getattr(status, "TASK_SUCCESSFUL", None)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        if not isinstance(self.env.unwrapped, NetHackChallenge):
            core, disp = nethack_seeds(self._rng)
            self.env.unwrapped.seed(core, disp, reseed=False)
        self._depth = 0
        obs, info = self.env.reset(seed=seed, options=options)
        info.update(self._info(obs))
        return self._observations(obs), info

    def step(self, action: int):
        obs, reward, terminated, truncated, info = self.env.step(action)
        info.update(self._info(obs))
        # NLE 1.3.0 reports its step cap as terminated=True (and its own `truncated` flag is
        # computed before the step is counted): the end status alone says which end it was.
        aborted = info.get("end_status") == NLE.StepStatus.ABORTED
        ended = terminated or truncated
        terminated, truncated = ended and not aborted, ended and aborted
        if (terminated or truncated) and self._success_status is not None:
            info["success"] = info.get("end_status") == self._success_status
        return self._observations(obs), reward, terminated, truncated, info

    def _observations(self, obs: dict) -> dict:
        return copied(obs) if self._copy else obs

    def _info(self, obs: dict) -> dict:
        depth = int(obs["blstats"][nethack.NLE_BL_DEPTH])  # zeroed once the game is over
        self._depth = depth or self._depth
        return step_info(obs["message"], self._depth)


def _make_nethack(env_id: str, max_episode_steps: int | None, copy_observations: bool) -> gym.Env:
    spec = gym.spec(_registry_name(env_id))
    if max_episode_steps is not None:
        # gym.make(max_episode_steps=...) would add a TimeLimit; NLE takes it as a kwarg instead.
        kwargs = {**spec.kwargs, "max_episode_steps": max_episode_steps}
        spec = dataclasses.replace(spec, kwargs=kwargs)
    kwargs = {"observation_keys": OBSERVATION_KEYS, "fix_moon_phase": True}
    if _builds(env_id, nle_tasks.OniTask):
        # Only when asked for: a task subclass's own __init__ need not know the keyword.
        extra = {} if copy_observations else {"copy_observations": False}
        return gym.make(spec, **kwargs, **extra)
    return NetHackInfo(gym.make(spec, **kwargs), copy_observations)


def _vector_observations(env: gym.Env, env_id: str) -> gym.Env:
    space = env.observation_space
    if isinstance(space, gym.spaces.Box):
        size = int(np.prod(space.shape))
        box = gym.spaces.Box(space.low.reshape(-1), space.high.reshape(-1), (size,), np.float32)

        def to_vector(obs) -> np.ndarray:
            return np.asarray(obs, np.float32).reshape(-1)

    elif isinstance(space, gym.spaces.Discrete):
        size, start = int(space.n), int(space.start)
        box = gym.spaces.Box(0.0, 1.0, (size,), np.float32)

        def to_vector(obs) -> np.ndarray:
            one_hot = np.zeros(size, np.float32)
            one_hot[int(obs) - start] = 1.0
            return one_hot

    else:
        env.close()
        raise ValueError(
            f"{env_id!r} has observation space {space}; only Box and Discrete are supported"
        )
    space = gym.spaces.Dict({"vector": box})
    return gym.wrappers.TransformObservation(env, lambda obs: {"vector": to_vector(obs)}, space)


def copied(obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """An observation {key: array} whose arrays are copies (of an env's own, which it reuses)."""
    return {key: value.copy() for key, value in obs.items()}


def _builds(env_id: str, cls: type) -> bool:
    """True when the registered constructor of `env_id` is `cls` or a subclass."""
    validate_env_id(env_id)
    entry_point = gym.spec(_registry_name(env_id)).entry_point
    creator = entry_point if callable(entry_point) else load_env_creator(entry_point)
    return isinstance(creator, type) and issubclass(creator, cls)


def _registry_name(env_id: str) -> str:
    """The registry key of `env_id`, importing the module of a "module:Env-v0" id."""
    if not isinstance(env_id, str) or not env_id:
        raise ValueError(f"environment id must be a non-empty string, got {env_id!r}")
    module, sep, name = env_id.rpartition(":")
    if sep:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ValueError(f"environment id {env_id!r}: cannot import {module!r}: {err}") from err
    return name


def _nethack_ids() -> list[str]:
    # By name, not by constructor: cheap, and every NLE id starts with "NetHack".
    return sorted(key for key in gym.registry if key.startswith("NetHack"))
