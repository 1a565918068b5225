"""The Gumbel-max draw and fragment-wide log-probabilities against torch's own definitions, and
the policies' `act` drawing exactly that."""

import numpy as np
import torch

from actors.sampling import gumbel_noise, log_probs
from learner.models import UniformPolicy, build_policy, gumbel_max


def test_draws_follow_softmax_probabilities():
    rng = np.random.default_rng(0)
    logits = np.array([[2.0, 0.0, -1.0, 0.5], [0.0, 0.0, 0.0, 0.0]], np.float32)
    n = 200_000
    noise = gumbel_noise(rng, (n, *logits.shape))
    actions = gumbel_max(logits[None], noise)  # [n, 2]
    expected = torch.softmax(torch.from_numpy(logits), -1).numpy()
    for row in range(2):
        freq = np.bincount(actions[:, row], minlength=4) / n
        # Binomial standard error is at most 0.0011 here: 5 of them is a loose, still failing bar.
        np.testing.assert_allclose(freq, expected[row], atol=0.006)


def test_impossible_actions_are_never_drawn():
    rng = np.random.default_rng(1)
    logits = np.array([[-np.inf, 0.0, -np.inf, 3.0]], np.float32)
    actions = gumbel_max(logits[None], gumbel_noise(rng, (50_000, 1, 4)))
    assert set(np.unique(actions)) == {1, 3}


def test_a_policy_acts_by_the_gumbel_max_of_its_logits():
    """ActorCritic.act draws gumbel_max(logits, noise) of its own forward pass; UniformPolicy's
    shortcut (the argmax of the noise) draws what zero logits would."""
    rng = np.random.default_rng(3)
    torch.manual_seed(0)
    policy = build_policy("mlp", {"vector": ((4,), np.float32)}, 6, 8, recurrent=True)
    obs = {"vector": torch.from_numpy(rng.normal(size=(1, 5, 4)).astype(np.float32))}
    state, starts = policy.initial_state(5), torch.zeros(1, 5, dtype=torch.bool)
    uniform = UniformPolicy(6)
    for _ in range(20):
        noise = gumbel_noise(rng, (5, 6))
        with torch.no_grad():
            actions, logits, values, next_state = policy.act(obs, state, starts, noise)
            expected_logits, expected_values, expected_state = policy(obs, state, starts)
        assert actions == gumbel_max(expected_logits.numpy()[0], noise).tolist()
        torch.testing.assert_close(logits, expected_logits, rtol=0, atol=0)
        torch.testing.assert_close(values, expected_values, rtol=0, atol=0)
        torch.testing.assert_close(next_state, expected_state, rtol=0, atol=0)
        drawn, zeros, _, _ = uniform.act({}, uniform.initial_state(5), starts, noise)
        assert drawn == gumbel_max(np.zeros((5, 6), np.float32), noise).tolist()
        assert zeros.shape == (1, 5, 6) and not zeros.any()


def test_log_probs_match_torch_log_softmax():
    rng = np.random.default_rng(2)
    logits = (rng.normal(size=(5, 3, 7)) * 30).astype(np.float32)  # large: overflow-prone
    actions = rng.integers(0, 7, size=(5, 3))
    reference = torch.log_softmax(torch.from_numpy(logits).double(), -1)
    reference = reference.gather(-1, torch.from_numpy(actions)[..., None])[..., 0].numpy()
    got = log_probs(logits, actions)
    assert got.dtype == np.float32 and got.shape == (5, 3)
    np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-4)


def test_gumbel_noise_is_numpys_gumbel_and_leaves_the_stream_where_numpy_would():
    ours, numpys = np.random.default_rng(3), np.random.default_rng(3)
    for shape in ((32, 16, 28), (7,), (2, 3)):
        got = gumbel_noise(ours, shape)
        assert got.dtype == np.float32 and got.shape == shape
        np.testing.assert_array_equal(got, numpys.gumbel(size=shape).astype(np.float32))
    assert ours.random() == numpys.random()


class _ZeroUniform:
    """A generator whose next batch of uniforms holds a 0, which numpy's gumbel redraws."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.bit_generator = self.rng.bit_generator

    def random(self, size):
        uniform = self.rng.random(size=size)
        uniform.flat[3] = 0.0
        return uniform

    def gumbel(self, size):
        return self.rng.gumbel(size=size)


def test_gumbel_noise_falls_back_to_numpy_on_a_zero_uniform():
    got = gumbel_noise(_ZeroUniform(4), (5, 6))
    np.testing.assert_array_equal(
        got, np.random.default_rng(4).gumbel(size=(5, 6)).astype(np.float32)
    )
    assert np.isfinite(got).all()
