"""NetHack writing a worker's envs' observations into one array per key (actors/nle_buffers.py):
each env's rows hold exactly what the same env returns when it copies, through steps, resets
and episode ends; envs that are not NLE's, or already reset, are left as they were."""

import numpy as np
import pytest

from actors.envs import make_env
from actors.nle_buffers import holds_observations, share_buffers

pytestmark = pytest.mark.nle
NETHACK = ["NetHackScoreExtendedActions-v1", "NetHackScore-v0"]
KEYS = ["glyphs", "blstats", "message"]


@pytest.mark.parametrize("env_id", NETHACK)
def test_rows_hold_what_copying_envs_return(env_id):
    envs = [make_env(env_id, copy_observations=False, max_episode_steps=12) for _ in range(3)]
    copying = [make_env(env_id, max_episode_steps=12) for _ in range(3)]
    blocks = share_buffers(envs, KEYS)
    assert blocks is not None and blocks["glyphs"].shape == (3, 21, 79)
    assert blocks["glyphs"].dtype == np.int16 and blocks["blstats"].dtype == np.int64
    first = [env.reset(seed=i)[0] for i, env in enumerate(envs)]
    expected = [env.reset(seed=i)[0] for i, env in enumerate(copying)]
    assert holds_observations(blocks, first)
    rng, ends = np.random.default_rng(0), 0
    for _ in range(40):
        for i, action in enumerate(rng.integers(0, envs[0].action_space.n, 3).tolist()):
            _, _, terminated, truncated, _ = envs[i].step(action)
            expected[i], *_ = copying[i].step(action)
            if terminated or truncated:  # what a worker stores: the next episode's first
                ends += 1
                envs[i].reset(seed=100 + ends)
                expected[i] = copying[i].reset(seed=100 + ends)[0]
            for key in KEYS:
                np.testing.assert_array_equal(blocks[key][i], expected[i][key])
    assert ends >= 6
    for env in envs + copying:
        env.close()


def test_other_envs_and_reset_envs_are_left_as_they_were():
    cartpole = [make_env("CartPole-v1") for _ in range(2)]
    assert share_buffers(cartpole, ["vector"]) is None
    nethack = make_env(NETHACK[0], copy_observations=False)
    before, _ = nethack.reset(seed=0)
    assert share_buffers([nethack], KEYS) is None  # NLE takes buffers before a first reset only
    after, *_ = nethack.step(0)
    assert after["glyphs"] is nethack.unwrapped.nethack._obs_buffers["glyphs"]
    assert share_buffers([make_env(NETHACK[0])], ["glyphs", "chars"]) is None  # no such buffer
    # One env refused after another was redirected: that one is put back on its own buffers.
    fresh = make_env(NETHACK[0], copy_observations=False)
    assert share_buffers([fresh, nethack], KEYS) is None
    buffers = fresh.unwrapped.nethack._obs_buffers
    obs, _ = fresh.reset(seed=1)
    assert all(obs[key] is buffers[key] for key in KEYS) and obs["blstats"].any()
    for env in [*cartpole, nethack, fresh]:
        env.close()
