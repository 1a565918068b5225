"""Test double: puts a scripted situation (a goal reached, or death) into the real NetHack
observation of one chosen agent step, so that tests can make it coincide with the step cap.
Named as a double; product code never uses it.

It wraps the env instance's `_perform_known_steps`, which both NLE's `step` and `OniTask.step`
call right after sending the agent's key and before deciding how the step ends; the observation
it returns is NLE's own buffers, edited in place (the next NetHack step overwrites them)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from nle import nethack

from actors.nle_tasks import DESCEND_MESSAGE, oracle_glyph

_STAIRS_DOWN = 4  # internal[4]: the hero stands on stairs down (what NLE's Staircase tasks read)


class ScriptedSituationDouble:
    """On agent step `on_step` (1-based), `situation(env, observation)` edits the observation;
    `die=True` also reports the game as over (done=True) on that step."""

    def __init__(
        self,
        env,
        on_step: int,
        situation: Callable[[object, tuple], None] | None = None,
        die: bool = False,
    ):
        self.env = env.unwrapped
        self.on_step, self.situation, self.die = on_step, situation, die
        self._real = self.env._perform_known_steps
        self.env._perform_known_steps = self._perform_known_steps

    def _perform_known_steps(self, observation, done, exceptions=True, **kwargs):
        observation, done = self._real(observation, done, exceptions=exceptions, **kwargs)
        # Agent steps only: NLE's quitting sequence calls this with exceptions=False.
        if exceptions and self.env._steps + 1 == self.on_step and not done:
            if self.situation is not None:
                self.situation(self.env, observation)
            done = done or self.die
        return observation, done


def _hero(env, observation) -> tuple[int, int]:
    blstats = observation[env._blstats_index]
    return int(blstats[nethack.NLE_BL_X]), int(blstats[nethack.NLE_BL_Y])


def descended(level: int) -> Callable:
    """ONI Staircase: NLE's descent message and the new level number."""

    def edit(env, observation) -> None:
        message = observation[env._message_index]
        message[:] = 0
        text = DESCEND_MESSAGE + b"."
        message[: len(text)] = np.frombuffer(text, np.uint8)
        blstats = observation[env._blstats_index]
        blstats[nethack.NLE_BL_DLEVEL] = blstats[nethack.NLE_BL_DEPTH] = level

    return edit


def next_to(glyph_of: Callable[[object], int]) -> Callable:
    """The glyph `glyph_of(env)` on the square east of the hero."""

    def edit(env, observation) -> None:
        x, y = _hero(env, observation)
        observation[env._glyph_index][y, x + 1] = glyph_of(env)

    return edit


def oni_oracle(env) -> int:
    return oracle_glyph()


def nle_oracle(env) -> int:
    return env.oracle_glyph


def pet(env) -> int:
    return nethack.GLYPH_PET_OFF  # a tame giant ant: any pet glyph will do


def on_stairs_down(env, observation) -> None:
    """NLE's Staircase: the hero stands on stairs down."""
    observation[env._internal_index][_STAIRS_DOWN] = 1


def on_stairs_down_with_pet(env, observation) -> None:
    """NLE's StaircasePet: on stairs down with a pet beside the hero."""
    on_stairs_down(env, observation)
    next_to(pet)(env, observation)
