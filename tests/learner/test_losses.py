"""APPO loss against a per-sample numpy reference, plus gradient and mask behaviour."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from learner.losses import appo_loss


def reference_appo(
    *,
    logits,
    actions,
    behaviour_logp,
    values,
    old_values,
    vtrace_targets,
    advantages,
    clip_ratio,
    value_clip,
    value_coef,
    entropy_coef,
    normalize_advantages,
    mask,
):
    """The same quantities, one sample at a time in float64 Python."""
    valid = [i for i in range(len(actions)) if mask is None or mask[i]]
    adv = {i: float(advantages[i]) for i in valid}
    if normalize_advantages:
        mean = sum(adv.values()) / len(valid)
        std = math.sqrt(sum((a - mean) ** 2 for a in adv.values()) / len(valid))
        adv = {i: (a - mean) / (std + 1e-8) for i, a in adv.items()}
    low, high = 1.0 / (1.0 + clip_ratio), 1.0 + clip_ratio

    policy = value = entropy = clipped = kl = 0.0
    for i in valid:
        row = [float(x) for x in logits[i]]
        top = max(row)
        log_norm = top + math.log(sum(math.exp(x - top) for x in row))
        log_probs = [x - log_norm for x in row]
        entropy += -sum(math.exp(lp) * lp for lp in log_probs)
        logp = log_probs[int(actions[i])]

        ratio = math.exp(logp - behaviour_logp[i])
        policy += -min(ratio * adv[i], min(max(ratio, low), high) * adv[i])
        clipped += ratio < low or ratio > high
        kl += behaviour_logp[i] - logp

        error = (values[i] - vtrace_targets[i]) ** 2
        if value_clip is not None:
            change = min(max(values[i] - old_values[i], -value_clip), value_clip)
            error = max(error, (old_values[i] + change - vtrace_targets[i]) ** 2)
        value += error

    count = len(valid)
    policy, value, entropy = policy / count, value_coef * value / count, entropy / count
    return {
        "total": policy + value - entropy_coef * entropy,
        "policy": policy,
        "value": value,
        "entropy": entropy,
        "clip_fraction": clipped / count,
        "approx_kl": kl / count,
    }


def random_batch(rng, count=40, num_actions=5):
    """Behaviour log-probs near the current ones: ratios land inside and outside the clip."""
    logits = rng.normal(0.0, 1.0, (count, num_actions))
    actions = rng.integers(0, num_actions, count)
    shifted = logits + rng.normal(0.0, 0.3, logits.shape)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    old_values = rng.normal(0.0, 1.0, count)
    return {
        "logits": logits,
        "actions": actions,
        "behaviour_logp": log_softmax[np.arange(count), actions],
        "values": old_values + rng.normal(0.0, 1.0, count),  # some moves beyond value_clip
        "old_values": old_values,
        "vtrace_targets": rng.normal(0.0, 2.0, count),
        "advantages": rng.normal(0.5, 2.0, count),
    }


def as_torch(batch):
    out = {}
    for name, array in batch.items():
        dtype = torch.long if name == "actions" else torch.float64
        out[name] = torch.tensor(array, dtype=dtype)
    return out


SETTINGS = [
    {"clip_ratio": 0.1, "value_clip": 1.0, "normalize_advantages": True},
    {"clip_ratio": 0.3, "value_clip": 0.2, "normalize_advantages": False},
    {"clip_ratio": 0.1, "value_clip": None, "normalize_advantages": True},
]


@pytest.mark.parametrize("settings", SETTINGS)
@pytest.mark.parametrize("use_mask", [False, True])
def test_matches_reference(settings, use_mask):
    rng = np.random.default_rng(11)
    batch = random_batch(rng)
    mask = rng.random(40) < 0.7 if use_mask else None
    coefs = {"value_coef": 0.7, "entropy_coef": 0.05}

    terms = appo_loss(
        **as_torch(batch),
        **settings,
        **coefs,
        mask=None if mask is None else torch.tensor(mask),
    )
    expected = reference_appo(**batch, **settings, **coefs, mask=mask)

    assert 0.0 < expected["clip_fraction"] < 1.0  # the clip binds for some samples, not all
    for name, value in expected.items():
        assert getattr(terms, name).shape == ()
        assert getattr(terms, name).item() == pytest.approx(value, rel=1e-5, abs=1e-5), name


def test_defaults_match_reference_in_float32():
    batch = random_batch(np.random.default_rng(12))
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in as_torch(batch).items()}
    terms = appo_loss(**tensors)
    expected = reference_appo(
        **batch,
        clip_ratio=0.1,
        value_clip=1.0,
        value_coef=0.5,
        entropy_coef=0.003,
        normalize_advantages=True,
        mask=None,
    )
    for name, value in expected.items():
        assert getattr(terms, name).item() == pytest.approx(value, rel=1e-5, abs=1e-5), name


def test_policy_gradient_vanishes_where_the_clip_binds_with_the_advantage():
    batch = as_torch(random_batch(np.random.default_rng(13)))
    logits = batch.pop("logits").requires_grad_(True)
    terms = appo_loss(logits=logits, **batch, normalize_advantages=False)
    (grad,) = torch.autograd.grad(terms.policy, logits)

    log_probs = torch.log_softmax(logits.detach(), dim=-1)
    logp = log_probs.gather(1, batch["actions"].unsqueeze(1)).squeeze(1)
    ratio = torch.exp(logp - batch["behaviour_logp"])
    advantages = batch["advantages"]
    saturated = ((ratio > 1.1) & (advantages > 0)) | ((ratio < 1 / 1.1) & (advantages < 0))
    inside = (ratio > 1 / 1.1) & (ratio < 1.1)
    assert saturated.sum() >= 3 and inside.sum() >= 3

    row_norms = grad.abs().sum(dim=1)
    assert torch.all(row_norms[saturated] == 0.0)
    assert torch.all(row_norms[inside] > 0.0)


def test_masked_samples_change_nothing():
    rng = np.random.default_rng(14)
    batch = as_torch(random_batch(rng))
    mask = torch.tensor(rng.random(40) < 0.6)

    def loss_and_grads(tensors):
        logits = tensors["logits"].clone().requires_grad_(True)
        values = tensors["values"].clone().requires_grad_(True)
        rest = {k: v for k, v in tensors.items() if k not in ("logits", "values")}
        terms = appo_loss(logits=logits, values=values, **rest, mask=mask)
        terms.total.backward()
        return terms, logits.grad, values.grad

    clean_terms, clean_logit_grad, clean_value_grad = loss_and_grads(batch)

    garbage = {}
    for name, tensor in batch.items():
        if name == "actions":
            noise = torch.randint(0, 5, tensor.shape)
        elif name in ("logits", "values"):
            noise = torch.full_like(tensor, float("nan"))
        else:
            noise = torch.full_like(tensor, 1e6)
        garbage[name] = torch.where(mask.view(-1, *[1] * (tensor.dim() - 1)), tensor, noise)
    dirty_terms, dirty_logit_grad, dirty_value_grad = loss_and_grads(garbage)

    for name in ("total", "policy", "value", "entropy", "clip_fraction", "approx_kl"):
        assert getattr(dirty_terms, name).item() == getattr(clean_terms, name).item(), name
    torch.testing.assert_close(dirty_logit_grad, clean_logit_grad, rtol=0, atol=0)
    torch.testing.assert_close(dirty_value_grad, clean_value_grad, rtol=0, atol=0)
    assert torch.all(dirty_value_grad[~mask] == 0.0)

    unmasked = appo_loss(**batch)
    assert unmasked.total.item() != clean_terms.total.item()  # the mask does select


def test_gradients_reach_only_logits_and_values():
    batch = {
        k: v.requires_grad_(v.is_floating_point())
        for k, v in as_torch(random_batch(np.random.default_rng(15))).items()
    }
    appo_loss(**batch).total.backward()
    assert batch["logits"].grad is not None and batch["values"].grad is not None
    for name in ("behaviour_logp", "old_values", "vtrace_targets", "advantages"):
        assert batch[name].grad is None, name


def test_rejects_column_shaped_values():
    batch = as_torch(random_batch(np.random.default_rng(16)))
    with pytest.raises(ValueError, match="values"):
        appo_loss(**{**batch, "values": batch["values"].unsqueeze(1)})
