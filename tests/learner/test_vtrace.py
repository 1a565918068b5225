"""V-trace against a float64 reference written straight from the definition in Espeholt et al."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learner.vtrace import vtrace


def reference_vtrace(*, log_ratios, discounts, rewards, values, bootstrap_value, rho_bar, c_bar):
    """v_s = V(x_s) + sum_{t>=s} (prod_{i<t} discount_i * c_i) * delta_t, one (b, s) at a time."""
    steps, batch = values.shape
    ratios = np.exp(log_ratios)
    targets = np.zeros((steps, batch))
    advantages = np.zeros((steps, batch))
    for b in range(batch):
        padded_values = list(values[:, b]) + [bootstrap_value[b]]
        rhos = [r if rho_bar is None else min(rho_bar, r) for r in ratios[:, b]]
        cs = [r if c_bar is None else min(c_bar, r) for r in ratios[:, b]]
        for s in range(steps):
            total = padded_values[s]
            for t in range(s, steps):
                weight = 1.0
                for i in range(s, t):
                    weight *= discounts[i, b] * cs[i]
                delta = rhos[t] * (
                    rewards[t, b] + discounts[t, b] * padded_values[t + 1] - padded_values[t]
                )
                total += weight * delta
            targets[s, b] = total
        for s in range(steps):
            next_target = targets[s + 1, b] if s + 1 < steps else bootstrap_value[b]
            advantages[s, b] = rhos[s] * (
                rewards[s, b] + discounts[s, b] * next_target - values[s, b]
            )
    return targets, advantages


def random_inputs(rng, steps, batch, gamma=0.97):
    """Ratios spread well above and below 1; about one step in six ends an episode."""
    dones = rng.random((steps, batch)) < 1 / 6
    return {
        "log_ratios": rng.normal(0.0, 0.8, (steps, batch)),
        "discounts": gamma * (1.0 - dones),
        "rewards": rng.normal(0.0, 1.0, (steps, batch)),
        "values": rng.normal(0.0, 1.0, (steps, batch)),
        "bootstrap_value": rng.normal(0.0, 1.0, batch),
    }


def as_torch(inputs, dtype=torch.float64):
    return {name: torch.tensor(array, dtype=dtype) for name, array in inputs.items()}


@pytest.mark.parametrize("steps", [1, 5, 32])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("clips", [(1.0, 1.0), (2.0, 0.5), (None, None)])
def test_matches_reference(steps, batch, clips):
    rng = np.random.default_rng(1000 * steps + 10 * batch + int(clips[0] or 0))
    inputs = random_inputs(rng, steps, batch)
    if steps >= 5:
        inputs["discounts"][steps // 2, 0] = 0.0  # an episode end inside every longer sequence
    # Make sure both sides of every clip are exercised, whatever the draw.
    inputs["log_ratios"][0, 0] = 1.5
    inputs["log_ratios"][-1, -1] = -1.5 if steps * batch > 1 else 1.5
    rho_bar, c_bar = clips

    result = vtrace(**as_torch(inputs), rho_bar=rho_bar, c_bar=c_bar)
    expected_targets, expected_advantages = reference_vtrace(**inputs, rho_bar=rho_bar, c_bar=c_bar)

    assert result.targets.shape == (steps, batch)
    assert result.advantages.shape == (steps, batch)
    np.testing.assert_allclose(result.targets.numpy(), expected_targets, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(
        result.advantages.numpy(), expected_advantages, rtol=1e-10, atol=1e-10
    )


def test_float32_close_to_float64_reference():
    inputs = random_inputs(np.random.default_rng(7), 32, 3)
    result = vtrace(**as_torch(inputs, torch.float32))
    expected_targets, expected_advantages = reference_vtrace(**inputs, rho_bar=1.0, c_bar=1.0)
    assert result.targets.dtype == torch.float32
    np.testing.assert_allclose(result.targets.numpy(), expected_targets, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(result.advantages.numpy(), expected_advantages, rtol=1e-5, atol=1e-5)


def test_on_policy_targets_are_bootstrapped_discounted_returns():
    rng = np.random.default_rng(3)
    steps, batch, gamma = 6, 2, 0.9
    inputs = random_inputs(rng, steps, batch)
    inputs["log_ratios"] = np.zeros((steps, batch))
    inputs["discounts"] = np.full((steps, batch), gamma)

    result = vtrace(**as_torch(inputs))

    rewards, bootstrap = inputs["rewards"], inputs["bootstrap_value"]
    for b in range(batch):
        for s in range(steps):
            n_step_return = sum(gamma ** (t - s) * rewards[t, b] for t in range(s, steps))
            n_step_return += gamma ** (steps - s) * bootstrap[b]
            assert result.targets[s, b].item() == pytest.approx(n_step_return, abs=1e-12)


def test_episode_end_cuts_off_later_steps():
    inputs = random_inputs(np.random.default_rng(4), 8, 1)
    inputs["discounts"][3, 0] = 0.0
    before = vtrace(**as_torch(inputs))
    inputs["rewards"][4:, 0] += 100.0
    inputs["bootstrap_value"][0] += 100.0
    after = vtrace(**as_torch(inputs))
    torch.testing.assert_close(after.targets[:4], before.targets[:4], rtol=0, atol=1e-12)
    assert not torch.allclose(after.targets[4:], before.targets[4:])


def test_clipping_matters_only_when_ratios_exceed_the_threshold():
    inputs = random_inputs(np.random.default_rng(5), 10, 3)
    inputs["log_ratios"] = np.abs(inputs["log_ratios"]) + 0.1  # every ratio above 1
    clipped = vtrace(**as_torch(inputs), rho_bar=1.0, c_bar=1.0)
    unclipped = vtrace(**as_torch(inputs), rho_bar=None, c_bar=None)
    assert not torch.allclose(clipped.targets, unclipped.targets)
    assert not torch.allclose(clipped.advantages, unclipped.advantages)

    inputs["log_ratios"] = -inputs["log_ratios"]  # every ratio below 1: the clip never binds
    clipped = vtrace(**as_torch(inputs), rho_bar=1.0, c_bar=1.0)
    unclipped = vtrace(**as_torch(inputs), rho_bar=None, c_bar=None)
    torch.testing.assert_close(clipped.targets, unclipped.targets)
    torch.testing.assert_close(clipped.advantages, unclipped.advantages)


def test_outputs_carry_no_gradient():
    inputs = as_torch(random_inputs(np.random.default_rng(6), 4, 2))
    inputs["values"].requires_grad_(True)
    result = vtrace(**inputs)
    assert not result.targets.requires_grad
    assert not result.advantages.requires_grad


def test_rejects_mismatched_shapes():
    inputs = as_torch(random_inputs(np.random.default_rng(8), 4, 2))
    with pytest.raises(ValueError, match="rewards"):
        vtrace(**{**inputs, "rewards": inputs["rewards"][:, :1]})
    with pytest.raises(ValueError, match="bootstrap_value"):
        vtrace(**{**inputs, "bootstrap_value": inputs["bootstrap_value"][:1]})
