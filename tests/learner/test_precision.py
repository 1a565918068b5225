"""model.precision: bfloat16 autocast changes the encoder's arithmetic only, and every output the
loss and the workers read stays float32."""

import numpy as np
import pytest
import torch

from learner.models import build_policy
from learner.precision import autocast_dtype, native_bfloat16

NETHACK_SPEC = {
    "glyphs": ((21, 79), np.int16),
    "blstats": ((27,), np.int64),
    "message": ((256,), np.uint8),
}


def nethack_obs(steps: int, batch: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    blstats = torch.randint(0, 20, (steps, batch, 27), generator=g)
    blstats[..., 0] = torch.randint(0, 79, (steps, batch), generator=g)  # x
    blstats[..., 1] = torch.randint(0, 21, (steps, batch), generator=g)  # y
    return {
        "glyphs": torch.randint(0, 5976, (steps, batch, 21, 79), generator=g).to(torch.int16),
        "blstats": blstats,
        "message": torch.randint(0, 256, (steps, batch, 256), generator=g).to(torch.uint8),
    }


def test_autocast_dtype_per_precision():
    assert autocast_dtype("float32", "cpu") is None
    assert autocast_dtype("bfloat16", "cpu") is torch.bfloat16
    assert autocast_dtype("auto", "cpu") is (torch.bfloat16 if native_bfloat16("cpu") else None)
    with pytest.raises(ValueError, match="auto, float32, bfloat16"):
        autocast_dtype("fp16", "cpu")


def test_unknown_precision_is_refused_when_the_network_is_built():
    with pytest.raises(ValueError, match="got 'half'"):
        build_policy("nethack", NETHACK_SPEC, 23, 64, True, precision="half")


def test_mlp_auto_stays_float32():
    policy = build_policy("mlp", {"vector": ((4,), np.float32)}, 2, 16, True, precision="auto")
    assert policy.precision == "float32"


def test_bfloat16_outputs_are_float32_and_close_to_float32_ones():
    torch.manual_seed(0)
    exact = build_policy("nethack", NETHACK_SPEC, 23, 64, True, precision="float32")
    fast = build_policy("nethack", NETHACK_SPEC, 23, 64, True, precision="bfloat16")
    fast.load_state_dict(exact.state_dict())
    obs, state = nethack_obs(5, 3), torch.randn(3, 64) * 0.5
    starts = torch.zeros(5, 3, dtype=torch.bool)
    with torch.no_grad():
        want = exact(obs, state, starts)
        got = fast(obs, state, starts)
    for w, g in zip(want, got, strict=True):
        assert g.dtype == torch.float32 and g.shape == w.shape
    # bfloat16 keeps 8 bits of mantissa: the encoder's features move by ~1e-2 relative, so the
    # outputs agree to that order, and are not bit-identical (the encoder did run in bfloat16).
    for w, g in zip(want, got, strict=True):
        assert torch.allclose(g, w, rtol=0.05, atol=0.02)
    assert not torch.equal(got[2], want[2])


def test_bfloat16_gradients_are_float32_and_point_the_same_way():
    torch.manual_seed(1)
    exact = build_policy("nethack", NETHACK_SPEC, 23, 64, True, precision="float32")
    fast = build_policy("nethack", NETHACK_SPEC, 23, 64, True, precision="bfloat16")
    fast.load_state_dict(exact.state_dict())
    obs, starts = nethack_obs(4, 6), torch.zeros(4, 6, dtype=torch.bool)
    grads = []
    for policy in (exact, fast):
        logits, values, _ = policy(obs, torch.zeros(6, 64), starts)
        (logits.logsumexp(-1).mean() + values.pow(2).mean()).backward()
        grad = torch.cat([p.grad.flatten() for p in policy.parameters()])
        assert grad.dtype == torch.float32
        grads.append(grad)
    cosine = torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0)
    assert cosine > 0.99


def test_a_bfloat16_worker_writes_float32_fragments_the_learner_can_score():
    from actors.envs import num_actions, observation_spec
    from actors.rollout import RolloutWorker

    env_id = "NetHackScoreExtendedActions-v1"
    spec, actions = observation_spec(env_id), num_actions(env_id)
    policy = build_policy("nethack", spec, actions, 64, True, precision="bfloat16")
    worker = RolloutWorker(env_id=env_id, num_envs=2, unroll_length=8, policy=policy, seed=3)
    fragment, _ = worker.sample()
    assert worker._state.dtype == torch.float32  # the GRU state carried between steps
    assert fragment.logp.dtype == np.float32 and np.isfinite(fragment.logp).all()
    # The learner's recomputation (one call over the whole unroll, as in an update) gives the
    # same log-probabilities up to bfloat16 rounding: the importance ratios start near 1.
    obs = {k: torch.as_tensor(v[:8]) for k, v in fragment.obs.items()}
    starts = torch.as_tensor(fragment.terminated | fragment.truncated)
    starts = torch.cat([torch.zeros_like(starts[:1]), starts[:-1]])
    with torch.no_grad():
        logits, _, _ = policy(obs, torch.as_tensor(fragment.initial_state), starts)
    logp = logits.log_softmax(-1).gather(-1, torch.as_tensor(fragment.actions)[..., None])
    np.testing.assert_allclose(logp[..., 0].numpy(), fragment.logp, atol=0.02)
