"""ONI's NetHack tasks (Score, StaircaseLvlN, Oracle; 28 "extended" actions) ported to NLE 1.3.0
and registered with gymnasium on import, plus the seeding and step-info helpers that
`actors.envs` also applies to NLE's own tasks."""

from __future__ import annotations

import enum
import functools
import re

import gymnasium as gym
import numpy as np
from nle import nethack
from nle.env.base import ASCII_ESC, ASCII_SPACE, NLE, SKIP_EXCEPTIONS
from nle.env.tasks import TASK_ACTIONS

from actors.captions import decode_message

# NLE's 23 task actions plus the five ONI needs to progress (spells, potions, prayer, items, shops).
EXTENDED_ACTIONS = (
    *TASK_ACTIONS,
    nethack.Command.CAST,
    nethack.Command.QUAFF,
    nethack.Command.PRAY,
    nethack.Command.PICKUP,
    nethack.Command.PAY,
)
OBSERVATION_KEYS = ("glyphs", "blstats", "message")  # compact: no tty, no screen descriptions
SUCCESS_REWARD = 50.0
FROZEN_STEP_PENALTY = -0.01

# Success is read off this message, which NLE shows behind a --More-- *before* the new level's
# blstats appear; the auto-steps below carry it over to the post-descent observation.
DESCEND_MESSAGE = b"You descend the stairs"
CONFIDENT_MESSAGE = b"You feel more confident"  # a skill can be advanced with #enhance
# y/n prompts the agent answers itself; every other one is declined with ESC. NLE's list plus
# "drink", as in ONI, so that quaffing can complete.
YN_EXCEPTIONS = (*SKIP_EXCEPTIONS, b"drink")
ITEM_PROMPTS = (b"What do you want to eat?", b"What do you want to drink?")
_FIRST_ITEM = re.compile(rb"\[([a-zA-Z])")
YES_KEY = ord("y")  # the key of CompassDirection.NW, which doubles as "yes" in prompts
# Guard only: a game-over sequence takes a few dozen auto-steps; no legal state needs 1000.
MAX_AUTO_STEPS = 1000

# internal[] layout in NLE 1.3.0 (nle.c): 1 in_yn_function, 2 in_getlin, 3 xwaitforspace
# (a --More-- or an open menu).
_IN_YN, _IN_GETLIN, _WAITING_FOR_SPACE = 1, 2, 3
# ONI compares the *level number* blstats[24] (NLE_BL_DLEVEL), not the depth blstats[12]; they
# agree in the main Dungeons of Doom and differ only inside branches such as the Gnomish Mines.
LEVEL_INDEX = nethack.NLE_BL_DLEVEL


def nethack_seeds(rng: np.random.Generator) -> tuple[int, int]:
    """Draw NetHack's (core, disp) RNG seeds from `rng`; the same rng state gives the same pair."""
    core, disp = rng.integers(0, 2**62, size=2)
    return int(core), int(disp)


def step_info(message: np.ndarray, depth: int) -> dict:
    """The per-step info every NetHack env of this project reports."""
    return {"caption": decode_message(message), "depth": int(depth)}


def first_item_letter(prompt: bytes) -> int | None:
    """Key of the first inventory letter offered by "... [fgh or ?*]", or None if none is."""
    match = _FIRST_ITEM.search(prompt)
    return match.group(1)[0] if match else None


@functools.cache
def oracle_glyph() -> int:
    """Glyph of the (peaceful, normal) Oracle monster: GLYPH_MON_OFF + its monster index."""
    for index in range(nethack.NUMMONS):
        if nethack.permonst(index).mname == "Oracle":
            return nethack.GLYPH_MON_OFF + index
    raise RuntimeError("NLE's monster table has no Oracle")


def oracle_adjacent(glyphs: np.ndarray, blstats: np.ndarray) -> bool:
    """True when the Oracle glyph is in the 3x3 block around the hero (glyphs [21, 79])."""
    x, y = int(blstats[nethack.NLE_BL_X]), int(blstats[nethack.NLE_BL_Y])
    # Clamp so that a hero on row/column 0 does not turn the slice into an empty one.
    block = glyphs[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2]
    return bool(np.any(block == oracle_glyph()))


def end_status_goal_first(env: NLE, observation, done: bool) -> enum.IntEnum:
    """`env`'s end status for `observation`, with death and the task's own end (its goal)
    ranked above the step cap.

    NLE 1.3.0's `_get_end_status` asks `_check_abort` (the step cap) first, so a goal reached on
    the step that hits `max_episode_steps` came out ABORTED: no success reward, truncated, and a
    learner bootstrapping through an episode that had ended. Here the cap only decides when the
    episode would otherwise go on. `_check_abort` is still called once per step, as NLE does,
    since NetHackChallenge counts stalled steps in it.
    """
    status = env.StepStatus
    aborted = env._check_abort(observation)
    if done:  # the game is over: NLE reports that as DEATH (StepStatus(True))
        return status(True)
    end = status(env._is_episode_end(observation))
    if end != status.RUNNING:
        return end
    return status.ABORTED if aborted else status.RUNNING


def descended_to(message: np.ndarray, blstats: np.ndarray, level: int) -> bool:
    """True when the message reports a descent and the level number is now `level`."""
    return DESCEND_MESSAGE in bytes(message) and int(blstats[LEVEL_INDEX]) == level


class OniTask(NLE):
    """Base of the ONI tasks: the 28 extended actions and the prompt handling that makes them
    playable, on NLE 1.3.0's gymnasium API.

    One agent step sends one key, then auto-steps until the game waits for a command: --More--
    and menus get Space, line input gets ESC, y/n prompts get ESC unless they mention one of
    YN_EXCEPTIONS. Extras, as in ONI: after CAST the first spell ('a') is chosen; "You feel more
    confident" triggers #enhance then 'a'; at "What do you want to eat/drink? [f...]" the agent's
    'y' key picks the first listed item and any other key cancels. Auto-steps do not count
    toward `max_episode_steps`.

    Seeding: `reset(seed=s)` seeds the env's `np_random` with s; every reset then draws NetHack's
    core and disp seeds from it (`nethack_seeds`) and sets them with reseed=False, so the same s
    and the same actions replay the same game, and seedless resets continue the stream with new
    games. `fix_moon_phase` defaults to True so that wall-clock effects (full moon, night) follow
    the seed too. The level generator is not separately seeded (lgen=None): levels depend on s
    and on the actions taken, as in normal NetHack.

    Episode ends: death or success -> terminated; the step cap -> truncated (NLE 1.3.0 itself
    reports the cap as terminated). Death and success rank above the cap: a goal reached on the
    capped step is a success (`end_status_goal_first`). info: `caption` and `depth` every step;
    `success` on the last step of tasks with a goal. Observations are copies (NLE reuses its
    arrays); with `copy_observations=False` they are NLE's own arrays, overwritten by this env's
    next step or reset (a rollout worker copies them into its buffers itself), except for the
    last observation of an episode NLE ends by quitting, which quitting would overwrite.
    """

    class StepStatus(enum.IntEnum):
        ABORTED = -1
        RUNNING = 0
        DEATH = 1
        TASK_SUCCESSFUL = 2

    has_goal = False  # whether episodes can end in success (then info carries "success")

    def __init__(self, *args, copy_observations: bool = True, **kwargs):
        self.copy_observations = copy_observations
        kwargs.setdefault("observation_keys", OBSERVATION_KEYS)
        kwargs.setdefault("fix_moon_phase", True)
        kwargs.setdefault("actions", EXTENDED_ACTIONS)
        super().__init__(*args, **kwargs)
        self._enhance_pending = False
        self._depth = 0
        # What step() reads of the previous observation; only these are copied before NLE
        # overwrites its buffers (copying every array cost more than NetHack's own step).
        self._kept_indices = {self._blstats_index, self._message_index, self._internal_index}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            gym.Env.reset(self, seed=seed)  # seeds self.np_random
        core, disp = nethack_seeds(self.np_random)
        self.seed(core, disp, reseed=False)
        self._enhance_pending = False
        self._depth = 0
        # seed=None: np_random must not be re-seeded, or seedless resets would replay episode 1.
        observation, info = super().reset(seed=None, options=options)
        info.update(self._info(self.last_observation))
        return observation, info

    def step(self, action: int):
        kept = self._kept_indices
        last_observation = tuple(
            a.copy() if i in kept else a for i, a in enumerate(self.last_observation)
        )
        key = self._key_for(action, last_observation)
        observation, done = self.nethack.step(key)
        observation, done = self._perform_known_steps(observation, done, sent_key=key)
        self._steps += 1
        self.last_observation = observation

        end_status = self._get_end_status(observation, done)
        reward = float(self._reward_fn(last_observation, action, observation, end_status))
        # Copy before quitting: quitting overwrites NLE's buffers with the post-game screen.
        quitting = bool(end_status) and not done
        result = self._get_observation(observation, copy=quitting or self.copy_observations)
        info = self._get_information(end_status)
        info.update(self._info(observation))
        if quitting:
            self._quit_game(observation, done)
            done = True
        truncated = end_status == self.StepStatus.ABORTED
        if done and self.has_goal:
            info["success"] = end_status == self.StepStatus.TASK_SUCCESSFUL
        return result, reward, done and not truncated, truncated, info

    def _get_end_status(self, observation, done):
        return end_status_goal_first(self, observation, done)

    def _get_observation(self, observation, copy: bool | None = None):
        copy = self.copy_observations if copy is None else copy
        return {
            key: observation[i].copy() if copy else observation[i]
            for key, i in zip(self._original_observation_keys, self._original_indices, strict=True)
        }

    def _info(self, observation) -> dict:
        # After death NLE zeroes blstats; keep reporting the last real depth.
        depth = int(observation[self._blstats_index][nethack.NLE_BL_DEPTH])
        self._depth = depth or self._depth
        return step_info(observation[self._message_index], self._depth)

    def _key_for(self, action: int, last_observation) -> int:
        """The key to send for agent action `action`, given the screen it was chosen on."""
        key = int(self.actions[action])
        if not last_observation[self._internal_index][_IN_YN]:
            return key
        prompt = bytes(last_observation[self._message_index])
        if not any(p in prompt for p in ITEM_PROMPTS):
            return key
        # An item prompt: only 'y' means "the first item"; the other actions are no letters.
        letter = first_item_letter(prompt)
        return letter if key == YES_KEY and letter is not None else ASCII_ESC

    def _perform_known_steps(self, observation, done, exceptions=True, sent_key=None):
        if not exceptions:  # NLE's _quit_game path: decline everything
            return super()._perform_known_steps(observation, done, exceptions=False)
        if (
            sent_key == nethack.Command.CAST
            and not done
            and observation[self._internal_index][_WAITING_FOR_SPACE]
        ):
            observation, done = self.nethack.step(ord("a"))  # spell menu open: first spell
        kept_message, enhanced = None, False
        for _ in range(MAX_AUTO_STEPS):
            if done:
                break
            internal = observation[self._internal_index]
            text = bytes(observation[self._message_index])
            self._enhance_pending |= CONFIDENT_MESSAGE in text
            if internal[_WAITING_FOR_SPACE]:
                if DESCEND_MESSAGE in text:
                    kept_message = observation[self._message_index].copy()
                key = ASCII_SPACE
            elif internal[_IN_GETLIN]:
                key = ASCII_ESC
            elif internal[_IN_YN]:
                if self._allow_all_yn_questions or any(e in text for e in YN_EXCEPTIONS):
                    break  # the agent answers this one
                key = ASCII_ESC
            elif self._enhance_pending and not enhanced:
                observation, done = self._enhance()
                enhanced = True  # once per agent step, in case the message lingers
                continue
            else:
                break
            observation, done = self.nethack.step(key)
        message = observation[self._message_index]
        if kept_message is not None and DESCEND_MESSAGE not in bytes(message):
            # Into NLE's own buffer, which NetHack rewrites whole on the next step: the arrays
            # this env returns stay NLE's (a rollout worker may read them there, nle_buffers.py).
            message[:] = kept_message
        return observation, done

    def _enhance(self):
        self._enhance_pending = False
        observation, done = self.nethack.step(nethack.Command.ENHANCE)
        if not done and observation[self._internal_index][_WAITING_FOR_SPACE]:
            observation, done = self.nethack.step(ord("a"))  # first advanceable skill
        return observation, done


class ScoreTask(OniTask):
    """Reward: change in in-game score, plus FROZEN_STEP_PENALTY on every agent step after which
    the in-game turn counter has not advanced (menus, failed commands)."""

    def _reward_fn(self, last_observation, action, observation, end_status):
        old, new = last_observation[self._blstats_index], observation[self._blstats_index]
        # Before the game starts and after it ends NLE zeroes blstats: no score delta then.
        score = float(new[nethack.NLE_BL_SCORE] - old[nethack.NLE_BL_SCORE])
        if not self.nethack.in_normal_game():
            score = 0.0
        frozen = new[nethack.NLE_BL_TIME] == old[nethack.NLE_BL_TIME]
        return score + (FROZEN_STEP_PENALTY if frozen else 0.0)


class _GoalTask(OniTask):
    """SUCCESS_REWARD once, on the step that reaches the goal; 0 otherwise (no time penalty)."""

    has_goal = True

    def _reward_fn(self, last_observation, action, observation, end_status):
        return SUCCESS_REWARD if end_status == self.StepStatus.TASK_SUCCESSFUL else 0.0


class StaircaseTask(_GoalTask):
    """Success: take the stairs down to dungeon level `target_level` (2, 3 or 4 in ONI)."""

    def __init__(self, *args, target_level: int = 3, **kwargs):
        self.target_level = target_level
        super().__init__(*args, **kwargs)

    def _is_episode_end(self, observation):
        message, blstats = observation[self._message_index], observation[self._blstats_index]
        if descended_to(message, blstats, self.target_level):
            return self.StepStatus.TASK_SUCCESSFUL
        return self.StepStatus.RUNNING


class OracleTask(_GoalTask):
    """Success: stand next to the Oracle (Delphi, dungeon level 5-9)."""

    def _is_episode_end(self, observation):
        glyphs, blstats = observation[self._glyph_index], observation[self._blstats_index]
        if oracle_adjacent(glyphs, blstats):
            return self.StepStatus.TASK_SUCCESSFUL
        return self.StepStatus.RUNNING


TASKS = {
    "NetHackScoreExtendedActions-v1": ("ScoreTask", {}),
    "NetHackStaircaseLvl2ExtendedActions-v1": ("StaircaseTask", {"target_level": 2}),
    "NetHackStaircaseLvl3ExtendedActions-v1": ("StaircaseTask", {"target_level": 3}),
    "NetHackStaircaseLvl4ExtendedActions-v1": ("StaircaseTask", {"target_level": 4}),
    "NetHackOracleExtendedActions-v1": ("OracleTask", {}),
}


def register_tasks() -> None:
    """Register TASKS with gymnasium; safe to call again. No TimeLimit wrapper is registered:
    the cap is NLE's own `max_episode_steps` constructor argument (default 5000)."""
    for env_id, (class_name, kwargs) in TASKS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=f"{__name__}:{class_name}", kwargs=kwargs)


register_tasks()
