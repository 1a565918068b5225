"""A goal or a death on the very step that hits `max_episode_steps` ends the episode by the task's
rules (terminated, success, the goal's reward), not as a time-limit cut; on every task, ONI's and
NLE's own, through `make_env` as the workers build them. Real NetHack; the goal situation is
scripted into the observation of the chosen step by a test double."""

import numpy as np
import pytest
from nle import nethack

from actors.envs import make_env
from actors.nle_tasks import SUCCESS_REWARD
from tests.doubles.scripted_situation import (
    ScriptedSituationDouble,
    descended,
    next_to,
    nle_oracle,
    on_stairs_down,
    on_stairs_down_with_pet,
    oni_oracle,
)

pytestmark = pytest.mark.nle

CAP = 3
# env id -> (the goal situation, the reward a goal step pays when nothing else happens)
GOAL_TASKS = {
    "NetHackStaircaseLvl2ExtendedActions-v1": (descended(2), SUCCESS_REWARD),
    "NetHackStaircaseLvl3ExtendedActions-v1": (descended(3), SUCCESS_REWARD),
    "NetHackStaircaseLvl4ExtendedActions-v1": (descended(4), SUCCESS_REWARD),
    "NetHackOracleExtendedActions-v1": (next_to(oni_oracle), SUCCESS_REWARD),
    "NetHackStaircase-v0": (on_stairs_down, 1.0),
    "NetHackStaircasePet-v0": (on_stairs_down_with_pet, 1.0),
    "NetHackOracle-v0": (next_to(nle_oracle), 1.0),
}
NO_GOAL_TASKS = ("NetHackScoreExtendedActions-v1", "NetHackScore-v0", "NetHackGold-v0")


def _search(env) -> int:
    """A quiet action (search): it takes one game turn and opens no prompt."""
    return list(env.unwrapped.actions).index(nethack.Command.SEARCH)


def _play(env, steps: int) -> list[tuple]:
    env.reset()
    action = _search(env)
    return [env.step(action)[1:] for _ in range(steps)]


@pytest.mark.parametrize("env_id", sorted(GOAL_TASKS))
@pytest.mark.parametrize("goal_step", [CAP, CAP - 1])
def test_goal_on_the_capped_step_is_a_success(env_id, goal_step):
    situation, goal_reward = GOAL_TASKS[env_id]
    env = make_env(env_id, seed=0, max_episode_steps=CAP)
    try:
        ScriptedSituationDouble(env, on_step=goal_step, situation=situation)
        results = _play(env, goal_step)
        for _, terminated, truncated, _ in results[:-1]:
            assert not terminated and not truncated
        reward, terminated, truncated, info = results[-1]
        # NLE's own tasks add -0.01 on a step after which the turn counter did not move.
        assert reward == pytest.approx(goal_reward, abs=0.0101)
        assert terminated is True and truncated is False
        assert info["success"] is True
    finally:
        env.close()


@pytest.mark.parametrize("env_id", sorted(GOAL_TASKS))
def test_the_cap_alone_is_still_a_time_limit_cut(env_id):
    env = make_env(env_id, seed=0, max_episode_steps=CAP)
    try:
        reward, terminated, truncated, info = _play(env, CAP)[-1]
        assert reward <= 0.0 and terminated is False and truncated is True
        assert info["success"] is False
    finally:
        env.close()


@pytest.mark.parametrize("env_id", [*NO_GOAL_TASKS, *sorted(GOAL_TASKS)])
def test_death_on_the_capped_step_terminates(env_id):
    env = make_env(env_id, seed=0, max_episode_steps=CAP)
    try:
        ScriptedSituationDouble(env, on_step=CAP, die=True)
        _, terminated, truncated, info = _play(env, CAP)[-1]
        assert terminated is True and truncated is False
        if env_id in GOAL_TASKS:
            assert info["success"] is False
        else:
            assert "success" not in info
        env.reset()  # the env is usable afterwards
    finally:
        env.close()


def test_rollout_records_a_capped_step_goal_as_an_ended_episode():
    """What the learner gets: terminated (no bootstrap value), not truncated, +50, success."""
    from actors.rollout import RolloutWorker
    from learner.models import UniformPolicy

    worker = RolloutWorker(
        env_id="NetHackStaircaseLvl2ExtendedActions-v1", num_envs=2, unroll_length=CAP,
        policy=UniformPolicy(28), max_episode_steps=CAP,
    )  # fmt: skip
    try:
        for env in worker.envs:  # every episode reaches the goal on its capped step
            ScriptedSituationDouble(env, on_step=CAP, situation=descended(2))
        fragment, episodes = worker.sample()
        assert fragment.terminated[-1].all() and not fragment.truncated.any()
        assert (fragment.final_values == 0).all()
        np.testing.assert_array_equal(fragment.rewards[-1], [SUCCESS_REWARD] * 2)
        assert [(e.success, e.truncated, e.length) for e in episodes] == [(True, False, CAP)] * 2
    finally:
        worker.close()
