"""NetHack writing a rollout worker's envs' observations side by side.

NLE fills one buffer per observation key per env, which NetHack's C code rewrites whole on every
step and reset. A worker that copies each step's observations from B envs makes B small copies
per key, a library call each, between NetHack steps that evict the code of those calls from the
core's caches. Pointing the buffers of a worker's envs at the rows of one array per key,
[B, ...], makes a step's observations one contiguous block per key, copied in one call.

This relies on NLE 1.3.0's private layout: `Nethack._obs_buffers` (key -> array),
`Nethack._obs` (the tuple its `step` returns) and `_pynethack.set_buffers`, which NLE accepts
before an env's first reset only. `share_buffers` returns None, and the worker copies env by env
from the observations the envs return, wherever that layout is not found.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import gymnasium as gym
import numpy as np


def share_buffers(envs: Sequence[gym.Env], keys: Sequence[str]) -> dict[str, np.ndarray] | None:
    """Have NetHack write observation `keys` of env i into row i of one array per key; returns
    {key: [len(envs), *shape]} (NLE's dtypes), or None, leaving every env as it was, where any
    env is not an NLE env that has not been reset yet, lacks a key, or has buffers of another
    shape or dtype than the first env's.

    After every step or reset of env i, the arrays' row i holds what NetHack wrote; an env
    returns views of those rows as its observations (check `holds_observations` after the first
    reset: a task that returns other arrays is not covered by these rows).
    """
    nethacks = [getattr(env.unwrapped, "nethack", None) for env in envs]
    if not nethacks or not all(_has_layout(n, keys) for n in nethacks):
        return None
    first = nethacks[0]._obs_buffers
    if not all(_same_layout(n._obs_buffers, first, keys) for n in nethacks):
        return None
    blocks = {key: np.zeros((len(envs), *first[key].shape), first[key].dtype) for key in keys}
    rows = [
        {**n._obs_buffers, **{key: blocks[key][i] for key in keys}} for i, n in enumerate(nethacks)
    ]
    for i, nethack in enumerate(nethacks):
        try:
            nethack._pynethack.set_buffers(**rows[i])
        except (RuntimeError, TypeError, ValueError):  # e.g. "set_buffers called after reset()"
            # NLE may have taken some of env i's keys before it raised; one already reset (the
            # usual error) refuses again, its buffers untouched.
            for undo in nethacks[: i + 1]:
                with contextlib.suppress(RuntimeError):
                    undo._pynethack.set_buffers(**undo._obs_buffers)
            return None
    for nethack, buffers in zip(nethacks, rows, strict=True):
        nethack._obs_buffers = buffers
        nethack._obs = tuple(buffers.values())  # in the order of its observation keys
    return blocks


def holds_observations(blocks: dict[str, np.ndarray], observations: Sequence[dict]) -> bool:
    """True when every env's observation (one dict per env, in order) has the keys of `blocks`
    and no other, each its rows of them: the same memory, shape and dtype."""
    return all(
        obs.keys() == blocks.keys() and all(_same_array(obs[key], blocks[key][i]) for key in obs)
        for i, obs in enumerate(observations)
    )


def _same_array(a: np.ndarray, b: np.ndarray) -> bool:
    address = a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
    return address and a.shape == b.shape and a.strides == b.strides and a.dtype == b.dtype


def _same_layout(buffers: dict, first: dict, keys: Sequence[str]) -> bool:
    return all(
        buffers[key].shape == first[key].shape and buffers[key].dtype == first[key].dtype
        for key in keys
    )


def _has_layout(nethack, keys: Sequence[str]) -> bool:
    buffers = getattr(nethack, "_obs_buffers", None)
    return (
        isinstance(buffers, dict)
        and hasattr(nethack, "_obs")
        and hasattr(getattr(nethack, "_pynethack", None), "set_buffers")
        and all(key in buffers for key in keys)
    )
