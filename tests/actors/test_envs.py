"""make_env and the env-id helpers, on gymnasium classic envs and real NLE."""

import gymnasium as gym
import numpy as np
import pytest

from actors import envs
from actors.envs import is_nethack, make_env, num_actions, observation_spec, validate_env_id

NETHACK_SPEC = {
    "glyphs": ((21, 79), np.dtype(np.int16)),
    "blstats": ((27,), np.dtype(np.int64)),
    "message": ((256,), np.dtype(np.uint8)),
}


def test_cartpole_gives_a_float32_vector_and_is_seeded_on_first_reset():
    env = make_env("CartPole-v1", seed=3)
    reference = gym.make("CartPole-v1")
    try:
        obs, _ = env.reset()
        assert set(obs) == {"vector"}
        assert obs["vector"].dtype == np.float32 and obs["vector"].shape == (4,)
        np.testing.assert_array_equal(obs["vector"], reference.reset(seed=3)[0])
        assert not np.array_equal(env.reset()[0]["vector"], obs["vector"])  # later: new stream
        assert env.observation_space["vector"].shape == (4,)
    finally:
        env.close()
        reference.close()


def test_max_episode_steps_applies_to_gymnasium_envs():
    env = make_env("CartPole-v1", seed=0, max_episode_steps=3)
    try:
        env.reset()
        results = [env.step(0)[2:4] for _ in range(3)]
        assert results[-1][1] or results[-1][0]
    finally:
        env.close()


def test_discrete_observations_become_one_hot():
    env = make_env("FrozenLake-v1", seed=0)
    try:
        obs, _ = env.reset()
        np.testing.assert_array_equal(obs["vector"], np.eye(16, dtype=np.float32)[0])
    finally:
        env.close()


def test_unsupported_spaces_raise_clear_errors():
    with pytest.raises(ValueError, match=r"'Pendulum-v1'.*action space Box"):
        make_env("Pendulum-v1")
    with pytest.raises(ValueError, match=r"'Blackjack-v1'.*observation space Tuple"):
        make_env("Blackjack-v1")


def test_validate_env_id_error_names_id_suggestions_and_nethack_ids():
    with pytest.raises(ValueError) as err:
        validate_env_id("NetHackScoreExtendedAction-v1")
    text = str(err.value)
    assert "'NetHackScoreExtendedAction-v1'" in text
    assert "Did you mean NetHackScoreExtendedActions-v1" in text
    assert "NetHackStaircaseLvl4ExtendedActions-v1" in text and "NetHackScore-v0" in text
    assert "gymnasium" in text
    with pytest.raises(ValueError, match="cannot import"):
        validate_env_id("no_such_module_xyz:Foo-v0")
    with pytest.raises(ValueError):
        validate_env_id("")


def test_validate_env_id_accepts_known_ids_without_building_them(monkeypatch):
    def no_make(*args, **kwargs):
        raise AssertionError("validate_env_id must not construct the env")

    monkeypatch.setattr(gym, "make", no_make)
    for env_id in ("CartPole-v1", "NetHackScore-v0", "NetHackOracleExtendedActions-v1"):
        validate_env_id(env_id)


def test_is_nethack():
    assert is_nethack("NetHackScore-v0") and is_nethack("NetHackStaircaseLvl3ExtendedActions-v1")
    assert not is_nethack("CartPole-v1")
    with pytest.raises(ValueError):
        is_nethack("NoSuchEnv-v0")


def test_specs_for_classic_envs():
    assert observation_spec("CartPole-v1") == {"vector": ((4,), np.dtype(np.float32))}
    assert num_actions("CartPole-v1") == 2


@pytest.mark.nle
def test_specs_for_nethack_envs_match_what_make_env_returns():
    for env_id, actions in (("NetHackScoreExtendedActions-v1", 28), ("NetHackScore-v0", 23)):
        assert observation_spec(env_id) == NETHACK_SPEC
        assert num_actions(env_id) == actions
        env = make_env(env_id, seed=0)
        try:
            obs, _ = env.reset()
            assert {k: (v.shape, v.dtype) for k, v in obs.items()} == NETHACK_SPEC
        finally:
            env.close()


@pytest.mark.nle
@pytest.mark.parametrize(
    "env_id, has_goal",
    [
        ("NetHackScore-v0", False),
        ("NetHackStaircase-v0", True),
        ("NetHackScoreExtendedActions-v1", False),
        ("NetHackStaircaseLvl3ExtendedActions-v1", True),
    ],
)
def test_nethack_info_and_step_cap(env_id, has_goal):
    env = make_env(env_id, seed=1, max_episode_steps=4)
    try:
        _, info = env.reset()
        assert isinstance(info["caption"], str) and info["depth"] == 1
        for i in range(4):
            _, _, terminated, truncated, info = env.step(1)
            assert isinstance(info["caption"], str) and info["depth"] == 1
            assert not terminated and truncated == (i == 3)
        if has_goal:
            assert info["success"] is False
        else:
            assert "success" not in info
    finally:
        env.close()


@pytest.mark.nle
def test_nle_own_tasks_are_seeded():
    def first_frames(seed):
        env = make_env("NetHackScore-v0", seed=seed)
        try:
            frames = [env.reset()[0]]
            frames += [env.step(a)[0] for a in (1, 2, 3, 4, 5, 6, 7, 8)]
            return frames
        finally:
            env.close()

    a, b, c = first_frames(11), first_frames(11), first_frames(12)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x["glyphs"], y["glyphs"])
        np.testing.assert_array_equal(x["message"], y["message"])
    assert not np.array_equal(a[0]["glyphs"], c[0]["glyphs"])


@pytest.mark.nle
def test_oni_ids_are_built_without_extra_wrappers():
    env = make_env("NetHackOracleExtendedActions-v1")
    try:
        assert not any(isinstance(e, envs.NetHackInfo) for e in _wrappers(env))
        assert not any(isinstance(e, gym.wrappers.TimeLimit) for e in _wrappers(env))
    finally:
        env.close()


def _wrappers(env):
    while isinstance(env, gym.Wrapper):
        yield env
        env = env.env


@pytest.mark.nle
@pytest.mark.parametrize("env_id", ["NetHackScoreExtendedActions-v1", "NetHackScore-v0"])
def test_uncopied_observations_are_the_copied_ones_until_the_next_step(env_id):
    """copy_observations=False gives the same observations, rewards and ends as the default,
    as NLE's own arrays: the env's next step overwrites what it returned before (counted)."""
    copied = make_env(env_id, seed=3, max_episode_steps=30)
    shared = make_env(env_id, seed=3, max_episode_steps=30, copy_observations=False)
    actions = np.random.default_rng(0).integers(0, copied.action_space.n, 200).tolist()
    first, _ = copied.reset()
    previous, _ = shared.reset()
    for key in first:
        np.testing.assert_array_equal(previous[key], first[key])
    overwritten = ends = 0
    for action in actions:
        want, reward, terminated, truncated, info = copied.step(action)
        kept = {key: value.copy() for key, value in previous.items()}
        got, *rest = shared.step(action)
        assert rest == [reward, terminated, truncated, info]
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
        overwritten += any(not np.array_equal(previous[k], kept[k]) for k in kept)
        if terminated or truncated:
            ends += 1
            first, _ = copied.reset()
            previous, _ = shared.reset()
        else:
            previous = got
    assert ends >= 2 and overwritten > 100
