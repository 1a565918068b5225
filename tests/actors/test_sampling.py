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


def test_gumbel_noise_is_standard_gumbel():
    """The noise's empirical CDF against exp(-exp(-x)): the Kolmogorov-Smirnov distance of
    400,000 draws stays under 0.004 (its 0.1 % critical value is 1.95 / sqrt(n) = 0.0031)."""
    noise = gumbel_noise(np.random.default_rng(3), (1000, 20, 20))
    assert noise.dtype == np.float32 and noise.shape == (1000, 20, 20)
    x = np.sort(noise.ravel().astype(np.float64))
    cdf = np.exp(-np.exp(-x))
    n = x.size
    distance = max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n))
    assert distance < 0.004
    assert abs(x.mean() - np.euler_gamma) < 0.01 and abs(x.var() - np.pi**2 / 6) < 0.02


def test_gumbel_noise_is_the_same_for_the_same_stream():
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    np.testing.assert_array_equal(gumbel_noise(a, (32, 16, 28)), gumbel_noise(b, (32, 16, 28)))
    assert not np.array_equal(gumbel_noise(a, (4, 3)), gumbel_noise(a, (4, 3)))


class ZeroExponentialRngDouble:
    """Test double of a numpy Generator whose next exponentials hold a 0 (numpy's ziggurat can
    return one, about once in 2**53 draws)."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def standard_exponential(self, size):
        exponential = self.rng.standard_exponential(size=size)
        exponential.flat[3] = 0.0
        return exponential


def test_a_zero_exponential_gives_a_finite_noise_that_never_picks_an_impossible_action():
    noise = gumbel_noise(ZeroExponentialRngDouble(4), (5, 6))
    assert np.isfinite(noise).all() and noise.flat[3] == noise.max()
    logits = np.zeros((5, 6), np.float32)
    logits[0, 3] = -np.inf  # the zero's action is impossible: another is drawn
    assert gumbel_max(logits, noise)[0] != 3
