"""RolloutWorker against real environments: fragment layout, continuity between fragments,
episode bookkeeping, captions and their per-episode counts, and bootstrapping at time limits."""

from collections import Counter

import numpy as np
import pytest
import torch

from actors.rollout import RolloutWorker
from learner.models import UniformPolicy, build_policy


def _worker(env_id="CartPole-v1", num_envs=3, unroll=16, policy=None, **kwargs):
    policy = policy or UniformPolicy(2)
    return RolloutWorker(
        env_id=env_id, num_envs=num_envs, unroll_length=unroll, policy=policy, **kwargs
    )


def test_fragment_shapes_and_continuity():
    worker = _worker()
    first, _ = worker.sample()
    second, _ = worker.sample()
    assert first.obs["vector"].shape == (17, 3, 4)
    assert first.actions.shape == first.logp.shape == first.rewards.shape == (16, 3)
    np.testing.assert_array_equal(first.obs["vector"][16], second.obs["vector"][0])
    np.testing.assert_allclose(first.logp, np.log(0.5), rtol=1e-6)  # uniform over 2 actions
    assert first.num_steps == 48
    assert (first.caption_ids == -1).all()  # CartPole emits no captions


def test_episode_stats_match_rewards_and_time_limits_bootstrap():
    policy = build_policy("mlp", {"vector": ((4,), np.float32)}, 2, 16, recurrent=False)
    worker = _worker(num_envs=2, unroll=50, policy=policy, max_episode_steps=20)
    episodes, rewards, truncated, final_values = [], [], [], []
    for _ in range(4):
        fragment, finished = worker.sample()
        episodes.extend(finished)
        rewards.append(fragment.rewards)
        truncated.append(fragment.truncated)
        final_values.append(fragment.final_values)
    truncated, final_values = np.concatenate(truncated), np.concatenate(final_values)
    assert episodes and all(e.length <= 20 for e in episodes)
    assert all(e.return_extrinsic == e.length for e in episodes)  # CartPole pays 1 per step
    assert truncated.any()
    assert (final_values[truncated] != 0).all() and (final_values[~truncated] == 0).all()


def test_recurrent_state_is_reset_at_episode_start():
    policy = build_policy("mlp", {"vector": ((4,), np.float32)}, 2, 8, recurrent=True)
    worker = _worker(num_envs=2, unroll=40, policy=policy, max_episode_steps=5)
    fragment, _ = worker.sample()
    # Replaying the fragment through the network with resets where episodes began must give the
    # behaviour log-probabilities: proves the worker's state handling matches the learner's.
    done = fragment.done
    starts = torch.from_numpy(np.concatenate([np.zeros((1, 2), bool), done[:-1]]))
    obs = {"vector": torch.from_numpy(fragment.obs["vector"][:-1])}
    with torch.no_grad():
        logits, _, _ = policy(obs, torch.from_numpy(fragment.initial_state), starts)
    logp = torch.log_softmax(logits, -1).gather(-1, torch.from_numpy(fragment.actions)[..., None])[
        ..., 0
    ]
    np.testing.assert_allclose(logp.numpy(), fragment.logp, atol=1e-5)


@pytest.mark.nle
def test_nethack_captions_counts_and_sink():
    sent = []
    worker = RolloutWorker(
        env_id="NetHackScoreExtendedActions-v1", num_envs=2, unroll_length=64,
        policy=UniformPolicy(28), seed=3, caption_sink=sent.append,
    )  # fmt: skip
    fragment, _ = worker.sample()
    assert set(fragment.obs) == {"glyphs", "blstats", "message"}
    assert (fragment.caption_ids >= 0).all()
    # Counts restart with each episode and grow by one per repeat of a caption.
    for env in range(2):
        seen: dict[int, int] = {}
        for t in range(64):
            cid = int(fragment.caption_ids[t, env])
            seen[cid] = seen.get(cid, 0) + 1
            assert (
                fragment.caption_counts[t, env] == seen[cid]
                or t > 0
                and fragment.done[:t, env].any()
            )
            if fragment.done[t, env]:
                seen = {}
    assert len(sent) == 1 and sum(sent[0].values()) == 128
    assert set(sent[0]) == set(fragment.captions)


@pytest.mark.parametrize("recurrent", [False, True])
def test_unrolls_per_sample_are_consecutive_unrolls_side_by_side(recurrent):
    """k unrolls per call give exactly the fragments of k calls, stacked along the env axis:
    with the uniform policy, and with a recurrent NetHack network (values, the values of cut
    episodes and each unroll's initial state), and the caption sightings sent."""
    from actors.envs import observation_spec

    env_id = "NetHackScoreExtendedActions-v1"
    torch.manual_seed(0)
    policy = UniformPolicy(28)
    if recurrent:
        policy = build_policy("nethack", observation_spec(env_id), 28, 16, recurrent=True)
    sent = {"one": [], "two": []}
    one = _worker(
        env_id, num_envs=2, unroll=8, policy=policy, seed=5, max_episode_steps=12,
        caption_sink=sent["one"].append,
    )  # fmt: skip
    two = _worker(
        env_id, num_envs=2, unroll=8, policy=policy, seed=5, max_episode_steps=12,
        unrolls_per_sample=2, caption_sink=sent["two"].append,
    )  # fmt: skip
    expected = [one.sample()[0] for _ in range(2)]
    fragment, episodes = two.sample()
    assert fragment.actions.shape == (8, 4) and fragment.obs["glyphs"].shape == (9, 4, 21, 79)
    names = ("actions", "logp", "values", "rewards", "terminated", "truncated", "final_values")
    for name in (*names, "caption_counts", "initial_state"):
        joined = np.concatenate(
            [getattr(f, name) for f in expected], axis=int(name != "initial_state")
        )
        np.testing.assert_array_equal(getattr(fragment, name), joined, err_msg=name)
    assert fragment.truncated.any() and (fragment.final_values != 0).any() == recurrent
    for key in fragment.obs:
        np.testing.assert_array_equal(
            fragment.obs[key], np.concatenate([f.obs[key] for f in expected], axis=1)
        )
    # Caption ids point into the merged tuple at the same strings as before.
    got = [[fragment.captions[i] for i in row] for row in fragment.caption_ids]
    want = [[f.captions[i] for f in expected for i in f.caption_ids[t]] for t in range(8)]
    assert got == want
    assert len(set(fragment.captions)) == len(fragment.captions)
    assert episodes == expected[0].episodes + expected[1].episodes and len(episodes) == 2
    assert len(sent["two"]) == 1  # one message per sample, with the counts of both unrolls
    assert Counter(sent["two"][0]) == Counter(sent["one"][0]) + Counter(sent["one"][1])


class CountingRemotePolicyDouble(UniformPolicy):
    """Test double of a policy answered elsewhere (cluster/inference.py's RemotePolicy): the
    version behind its latest answer moves on by one with every step."""

    weights_version = 0

    def act(self, obs, state, starts, noise):
        self.weights_version += 1
        return super().act(obs, state, starts, noise)


def test_a_sample_carries_the_oldest_version_that_ended_an_unroll():
    """With answers from newer weights arriving mid-sample, the fragment's policy_version is the
    version read at the end of its first unroll (steps 1-4), not its last (steps 5-8)."""
    worker = _worker(unroll=4, policy=CountingRemotePolicyDouble(2), unrolls_per_sample=2)
    first, _ = worker.sample()
    second, _ = worker.sample()
    assert (first.policy_version, second.policy_version) == (4, 12)


def test_fragments_keep_their_observations_after_later_samples():
    """Each fragment owns its observation arrays: later samples and a move onto restart streams
    (which resets every env) write elsewhere."""
    worker = _worker(num_envs=2, unroll=8, max_episode_steps=5)
    first, _ = worker.sample()
    kept = first.obs["vector"].copy()
    second, _ = worker.sample()
    worker.use_restart_streams(1)
    third, _ = worker.sample()
    np.testing.assert_array_equal(first.obs["vector"], kept)
    np.testing.assert_array_equal(first.obs["vector"][8], second.obs["vector"][0])
    assert not np.array_equal(third.obs["vector"][0], second.obs["vector"][8])  # new episodes


@pytest.mark.nle
def test_normalized_captions_are_the_normal_forms_of_the_raw_ones():
    """normalize_captions=True keys every step on normalize_caption(raw caption) (a worker
    remembers normal forms it has computed) and counts sightings under that key."""
    from actors.captions import normalize_caption

    def run(normalize):
        worker = RolloutWorker(
            env_id="NetHackScoreExtendedActions-v1", num_envs=2, unroll_length=40,
            policy=UniformPolicy(28), seed=9, normalize_captions=normalize,
        )  # fmt: skip
        return [worker.sample()[0] for _ in range(3)]

    raw, normal = run(False), run(True)
    text = {}
    for name, fragments in (("raw", raw), ("normal", normal)):
        text[name] = np.concatenate(
            [np.array(f.captions, object)[f.caption_ids] for f in fragments]
        )  # [3T, B] caption strings
    np.testing.assert_array_equal(
        np.concatenate([f.actions for f in raw]), np.concatenate([f.actions for f in normal])
    )
    assert [normalize_caption(c) for c in text["raw"].flat] == list(text["normal"].flat)
    # Counts are per episode and per normal form: recount them along each env's steps.
    done = np.concatenate([f.done for f in normal])
    counts = np.concatenate([f.caption_counts for f in normal])
    for env in range(2):
        seen: dict[str, int] = {}
        for t, caption in enumerate(text["normal"][:, env]):
            seen[caption] = seen.get(caption, 0) + 1
            assert counts[t, env] == seen[caption]
            if done[t, env]:
                seen = {}
    assert set(text["normal"].flat) != set(text["raw"].flat)  # normalising changed some


@pytest.mark.nle
@pytest.mark.parametrize("env_id", ["NetHackScoreExtendedActions-v1", "NetHackScore-v0"])
def test_nethack_fragments_replay_on_copying_envs(env_id):
    """NetHack writes the worker's envs' observations side by side (actors/nle_buffers.py) and
    the worker copies them from there: every observation of a fragment, reset ones included,
    and the value of every episode cut by the step cap equal those of envs that copy, replayed
    with the fragment's actions and seeds."""
    from actors.envs import make_env, num_actions, observation_spec

    cap = 10
    torch.manual_seed(0)
    spec, n = observation_spec(env_id), num_actions(env_id)
    policy = build_policy("nethack", spec, n, 16, recurrent=False)
    worker = _worker(
        env_id, num_envs=2, unroll=8, policy=policy, seed=4, max_episode_steps=cap,
        unrolls_per_sample=2,
    )  # fmt: skip
    assert worker._blocks is not None  # NetHack writes into the worker's blocks (nle_buffers.py)
    fragments = [worker.sample()[0] for _ in range(2)]
    envs = [make_env(env_id, max_episode_steps=cap) for _ in range(2)]
    obs = [env.reset(seed=worker.episode_seed(i, 0))[0] for i, env in enumerate(envs)]
    episodes, cut = [0, 0], 0
    for fragment in fragments:
        for unroll in range(2):
            for t in range(8):
                for i, env in enumerate(envs):
                    column = 2 * unroll + i
                    for key in obs[i]:
                        np.testing.assert_array_equal(fragment.obs[key][t, column], obs[i][key])
                    obs[i], _, terminated, truncated, _ = env.step(int(fragment.actions[t, column]))
                    if truncated and not terminated:
                        cut += 1
                        with torch.no_grad():
                            rows = {k: torch.from_numpy(v[None, None]) for k, v in obs[i].items()}
                            start = torch.zeros(1, 1, dtype=torch.bool)
                            _, value, _ = policy(rows, policy.initial_state(1), start)
                        assert fragment.final_values[t, column] == pytest.approx(
                            float(value), rel=1e-4
                        )
                    if terminated or truncated:
                        episodes[i] += 1
                        obs[i] = env.reset(seed=worker.episode_seed(i, episodes[i]))[0]
            for i in range(2):
                for key in obs[i]:
                    np.testing.assert_array_equal(fragment.obs[key][8, 2 * unroll + i], obs[i][key])
    assert cut >= 4
