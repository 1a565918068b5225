"""ONI's NetHack tasks on real NLE 1.3.0: registration, actions, rewards, prompt handling,
success detection and seeding."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
from nle import nethack

from actors import nle_tasks
from actors.nle_tasks import (
    EXTENDED_ACTIONS,
    FROZEN_STEP_PENALTY,
    SUCCESS_REWARD,
    oracle_adjacent,
    oracle_glyph,
)

pytestmark = pytest.mark.nle

SCORE = "NetHackScoreExtendedActions-v1"
ACTION = {a: i for i, a in enumerate(EXTENDED_ACTIONS)}
CAST, EAT, PRAY = nethack.Command.CAST, nethack.Command.EAT, nethack.Command.PRAY
PICKUP, QUAFF, SEARCH = nethack.Command.PICKUP, nethack.Command.QUAFF, nethack.Command.SEARCH
YES, NORTH, DOWN = (
    nethack.CompassDirection.NW,
    nethack.CompassDirection.N,
    nethack.MiscDirection.DOWN,
)
TIME, SCORE_BL = nethack.NLE_BL_TIME, nethack.NLE_BL_SCORE


def make(env_id=SCORE, **kwargs):
    return gym.make(env_id, **kwargs)


def step(env, action):
    return env.step(ACTION[action])


def test_all_task_ids_registered_and_reregistering_is_silent():
    expected = {
        "NetHackScoreExtendedActions-v1",
        "NetHackStaircaseLvl2ExtendedActions-v1",
        "NetHackStaircaseLvl3ExtendedActions-v1",
        "NetHackStaircaseLvl4ExtendedActions-v1",
        "NetHackOracleExtendedActions-v1",
    }
    assert expected <= set(gym.registry)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # gymnasium warns when an id is overridden
        nle_tasks.register_tasks()
    for env_id in expected:
        spec = gym.spec(env_id)
        assert spec.max_episode_steps is None  # the cap is NLE's own counter


def test_extended_action_set():
    assert len(EXTENDED_ACTIONS) == 28 and len(set(EXTENDED_ACTIONS)) == 28
    assert EXTENDED_ACTIONS[23:] == (CAST, QUAFF, nethack.Command.PRAY, PICKUP, nethack.Command.PAY)
    env = make()
    try:
        assert env.action_space.n == 28
        assert tuple(env.unwrapped.actions) == EXTENDED_ACTIONS
    finally:
        env.close()


def test_defaults_and_compact_observations():
    env = make()
    try:
        u = env.unwrapped
        assert u.character == "mon-hum-neu-mal" and u._max_episode_steps == 5000
        obs, info = env.reset(seed=0)
        assert set(obs) == {"glyphs", "blstats", "message"}
        assert obs["glyphs"].shape == (21, 79) and obs["glyphs"].dtype == np.int16
        assert obs["blstats"].shape == (27,) and obs["blstats"].dtype == np.int64
        assert obs["message"].shape == (256,) and obs["message"].dtype == np.uint8
        assert info["caption"] != "" and info["depth"] == 1  # welcome or moon-phase news
        before = obs["glyphs"].copy()
        for _ in range(5):
            env.step(ACTION[NORTH])
        np.testing.assert_array_equal(obs["glyphs"], before)  # returned arrays are copies
    finally:
        env.close()


def test_score_frozen_step_penalty():
    env = make()
    try:
        obs, _ = env.reset(seed=0)
        new, reward, *_ = step(env, PICKUP)  # nothing to pick up: no game time passes
        assert new["blstats"][TIME] == obs["blstats"][TIME]
        assert reward == pytest.approx(FROZEN_STEP_PENALTY)
        obs = new
        new, reward, *_ = step(env, SEARCH)  # searching takes a turn
        assert new["blstats"][TIME] > obs["blstats"][TIME]
        assert reward == pytest.approx(float(new["blstats"][SCORE_BL] - obs["blstats"][SCORE_BL]))
    finally:
        env.close()


def test_score_reward_matches_score_delta_and_frozen_steps_over_a_rollout():
    env = make()
    rng = np.random.default_rng(1)
    frozen_seen = moved_seen = 0
    try:
        obs, _ = env.reset(seed=1)
        for _ in range(400):
            new, reward, terminated, truncated, _ = env.step(int(rng.integers(28)))
            if terminated or truncated:  # blstats are zeroed once the game is over
                obs, _ = env.reset()
                continue
            old_bl, new_bl = obs["blstats"], new["blstats"]
            frozen = new_bl[TIME] == old_bl[TIME]
            expected = float(new_bl[SCORE_BL] - old_bl[SCORE_BL]) + FROZEN_STEP_PENALTY * frozen
            assert reward == pytest.approx(expected)
            frozen_seen += frozen
            moved_seen += not frozen
            obs = new
    finally:
        env.close()
    assert frozen_seen > 10 and moved_seen > 10


def test_step_cap_counts_agent_steps_only_and_truncates():
    env = make(max_episode_steps=6)
    # CAST (spell menu), EAT + 'y' (prompt, multi-turn meal) all need auto-steps.
    actions = [CAST, EAT, YES, QUAFF, NORTH, SEARCH]
    try:
        env.reset(seed=0)
        for i, action in enumerate(actions):
            _, _, terminated, truncated, info = step(env, action)
            assert not terminated
            assert truncated == (i == len(actions) - 1)
        assert "success" not in info  # Score has no goal
    finally:
        env.close()


def test_eat_prompt_yes_picks_the_first_item_and_other_keys_cancel():
    env = make()
    try:
        env.reset(seed=0)
        _, _, _, _, info = step(env, EAT)
        assert info["caption"].startswith("What do you want to eat? [")
        _, _, _, _, info = step(env, NORTH)
        assert info["caption"] == "Never mind."
        obs, *_ = step(env, EAT)
        new, _, _, _, info = step(env, YES)
        assert "What do you want to eat" not in info["caption"]
        assert "You don't have that object" not in info["caption"]
        assert new["blstats"][TIME] > obs["blstats"][TIME]  # the meal took game time
    finally:
        env.close()


def test_pray_prompt_is_left_to_the_agent():
    env = make()
    try:
        obs, _ = env.reset(seed=0)
        _, _, _, _, info = step(env, PRAY)
        assert "pray?" in info["caption"]
        new, *_ = step(env, YES)
        assert new["blstats"][TIME] > obs["blstats"][TIME]  # praying takes turns
    finally:
        env.close()


def test_cast_chooses_the_first_spell():
    env = make()
    try:
        env.reset(seed=0)
        _, _, _, _, info = step(env, CAST)
        # Without the auto 'a' the spell menu would be dismissed silently (empty caption).
        assert info["caption"] != ""
        assert not env.unwrapped.last_observation[env.unwrapped._internal_index][3]
    finally:
        env.close()


def _crafted(env, message=b"", level=1, glyphs=None, hero=(10, 5)):
    """An NLE observation tuple in `env`'s internal layout."""
    u = env.unwrapped
    obs = [np.zeros(**nethack.OBSERVATION_DESC[k]) for k in u._observation_keys]
    obs[u._message_index][: len(message)] = np.frombuffer(message, np.uint8)
    blstats = obs[u._blstats_index]
    blstats[nethack.NLE_BL_X], blstats[nethack.NLE_BL_Y] = hero
    blstats[nethack.NLE_BL_DLEVEL] = blstats[nethack.NLE_BL_DEPTH] = level
    if glyphs is not None:
        obs[u._glyph_index][:] = glyphs
    return tuple(obs)


@pytest.mark.parametrize("target", [3, 4])
def test_staircase_success_needs_the_message_and_the_level(target):
    env = make(f"NetHackStaircaseLvl{target}ExtendedActions-v1")
    u = env.unwrapped
    status = u.StepStatus
    try:
        cases = {
            (b"You descend the stairs.", target): status.TASK_SUCCESSFUL,
            (b"You descend the stairs.", target - 1): status.RUNNING,
            (b"You descend the stairs.", target + 1): status.RUNNING,
            (b"", target): status.RUNNING,  # fell through a trapdoor: no success, as in ONI
        }
        for (message, level), expected in cases.items():
            obs = _crafted(env, message, level)
            assert u._is_episode_end(obs) == expected, (message, level)
            reward = u._reward_fn(obs, 0, obs, u._is_episode_end(obs))
            assert reward == (SUCCESS_REWARD if expected == status.TASK_SUCCESSFUL else 0.0)
    finally:
        env.close()


def test_staircase_lvl2_success_by_play(monkeypatch):
    """Walk to the stairs with wizard-mode helpers, then let the agent press '>'."""
    monkeypatch.setenv("USER", "rogueray")  # wizard mode asks for it
    env = make("NetHackStaircaseLvl2ExtendedActions-v1", wizard=True)
    u = env.unwrapped
    try:
        for seed in range(40):
            env.reset(seed=seed)
            obs, done = u.nethack.step(nethack.C("f"))  # map the level
            for _ in range(5):  # travel ('_' '>' '.') may stop early; retry
                for key in (ord("_"), ord(">"), ord(".")):
                    obs, done = u.nethack.step(key)
                obs, done = u._perform_known_steps(obs, done)
                if obs[u._internal_index][4]:  # standing on stairs down
                    break
            if obs[u._internal_index][4]:
                break
        else:
            pytest.skip("no seed put the hero on reachable stairs")
        u.last_observation = obs
        new, reward, terminated, truncated, info = step(env, DOWN)
        assert reward == SUCCESS_REWARD and terminated and not truncated
        assert info["success"] is True and info["depth"] == 2
        # NLE shows this behind a --More-- before the level changes; it must survive.
        assert "You descend the stairs." in info["caption"]
        assert new["blstats"][nethack.NLE_BL_DLEVEL] == 2
    finally:
        env.close()


def test_oracle_adjacency_on_crafted_glyphs():
    assert nethack.permonst(oracle_glyph() - nethack.GLYPH_MON_OFF).mname == "Oracle"
    floor = nethack.GLYPH_CMAP_OFF + 19
    x, y = 40, 10
    for (dx, dy), expected in {(1, -1): True, (0, 1): True, (-1, 0): True, (2, 0): False}.items():
        glyphs = np.full((21, 79), floor, np.int16)
        glyphs[y + dy, x + dx] = oracle_glyph()
        assert oracle_adjacent(glyphs, _bl(x, y)) == expected, (dx, dy)
    glyphs = np.full((21, 79), floor, np.int16)
    glyphs[1, 1] = oracle_glyph()
    assert oracle_adjacent(glyphs, _bl(0, 0))  # corner: the clamped block is not empty
    glyphs[1, 1] = nethack.GLYPH_PET_OFF + (oracle_glyph() - nethack.GLYPH_MON_OFF)
    assert not oracle_adjacent(glyphs, _bl(0, 0))  # a tame Oracle glyph is a different glyph


def _bl(x, y):
    blstats = np.zeros(27, np.int64)
    blstats[nethack.NLE_BL_X], blstats[nethack.NLE_BL_Y] = x, y
    return blstats


def test_oracle_task_success_and_reward():
    env = make("NetHackOracleExtendedActions-v1")
    u = env.unwrapped
    try:
        glyphs = np.zeros((21, 79), np.int16)
        glyphs[6, 11] = oracle_glyph()
        near, far = _crafted(env, glyphs=glyphs), _crafted(env, glyphs=glyphs, hero=(30, 5))
        assert u._is_episode_end(near) == u.StepStatus.TASK_SUCCESSFUL
        assert u._is_episode_end(far) == u.StepStatus.RUNNING
        assert u._reward_fn(near, 0, near, u.StepStatus.TASK_SUCCESSFUL) == SUCCESS_REWARD
    finally:
        env.close()


def _rollout(seed, actions, env_id=SCORE):
    env = make(env_id)
    try:
        frames = [env.reset(seed=seed)[0]]
        for action in actions:
            obs, _, terminated, truncated, _ = env.step(int(action))
            frames.append(obs)
            if terminated or truncated:
                frames.append(env.reset()[0])
        frames.append(env.reset()[0])  # a seedless reset continues the seeded stream
        return frames
    finally:
        env.close()


def test_same_seed_same_game_different_seed_different_game():
    actions = np.random.default_rng(0).integers(0, 23, size=150)  # no prayer: long episodes
    first, second = _rollout(7, actions), _rollout(7, actions)
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    other = _rollout(8, actions)
    assert any(
        not np.array_equal(a["glyphs"], b["glyphs"]) for a, b in zip(first, other, strict=False)
    )
    assert not np.array_equal(first[0]["glyphs"], first[-1]["glyphs"])  # next episode is new


def test_drink_prompt_is_left_to_the_agent_and_yes_quaffs_the_first_potion():
    env = make()
    try:
        obs, _ = env.reset(seed=0)
        _, _, _, _, info = step(env, QUAFF)
        assert info["caption"].startswith("What do you want to drink? [")
        new, _, _, _, info = step(env, YES)
        assert "What do you want to drink" not in info["caption"]
        assert new["blstats"][TIME] > obs["blstats"][TIME]
    finally:
        env.close()


def test_pending_enhance_opens_the_skill_menu_picks_a_and_leaves_no_menu_open():
    env = make()
    u = env.unwrapped
    sent = []
    real_step = u.nethack.step

    def recording_step(key):  # the real game; only the keys are recorded
        sent.append(int(key))
        return real_step(key)

    try:
        env.reset(seed=0)
        u.nethack.step = recording_step
        u._enhance_pending = True  # what "You feel more confident" sets
        step(env, SEARCH)
        assert sent[:3] == [SEARCH, nethack.Command.ENHANCE, ord("a")]
        assert not u._enhance_pending
        assert not u.last_observation[u._internal_index][3]  # the menu was closed
    finally:
        env.close()
