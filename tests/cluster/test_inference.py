"""The shared inference actor (cluster/inference.py) without Ray: requests that arrive together
are answered by one forward pass, and each answer is what the policy gives for that request
alone."""

import asyncio

import numpy as np
import pytest
import torch

from cluster.components import env_spec
from cluster.config import load_config
from cluster.inference import InferenceActor
from cluster.worker_settings import InferenceSettings
from tests.cluster.test_runner_protocol import ROOT


def _actor(tmp_path, num_workers: int, max_wait_s: float) -> InferenceActor:
    config = load_config(
        ROOT / "configs/cartpole.yaml",
        [f"run_dir={tmp_path}/run", f"rollout.num_workers={num_workers}", "model.recurrent=true"],
    )
    return InferenceActor(
        InferenceSettings.from_config(config), env_spec(config), max_wait_s=max_wait_s
    )


def _request(seed: int, envs: int, hidden: int = 64):  # configs/cartpole.yaml's hidden_size
    rng = np.random.default_rng(seed)
    obs = {"vector": rng.normal(size=(1, envs, 4)).astype(np.float32)}
    state = rng.normal(size=(envs, hidden)).astype(np.float32) * 0.1
    return obs, state


async def _ask_together(actor, requests):
    return await asyncio.gather(*(actor.act(obs, state) for obs, state in requests))


def test_requests_from_every_worker_share_one_forward_pass(tmp_path):
    actor = _actor(tmp_path, num_workers=3, max_wait_s=1.0)
    requests = [_request(seed, envs) for seed, envs in ((0, 2), (1, 3), (2, 1))]
    answers = asyncio.run(_ask_together(actor, requests))
    assert actor.stats() == {"requests": 3.0, "batches": 1.0}
    for (obs, state), (logits, values, next_state, version) in zip(requests, answers, strict=True):
        with torch.no_grad():
            want = actor.policy(
                {"vector": torch.from_numpy(obs["vector"])},
                torch.from_numpy(state),
                torch.zeros(1, state.shape[0], dtype=torch.bool),
            )
        np.testing.assert_allclose(logits, want[0][0].numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(values, want[1][0].numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(next_state, want[2].numpy(), rtol=1e-5, atol=1e-6)
        assert logits.shape == (state.shape[0], 2) and version == 0


def test_a_full_batch_is_one_request_from_each_worker_heard_from_lately(tmp_path):
    actor = _actor(tmp_path, num_workers=2, max_wait_s=1.0)
    assert actor.expected == 2  # the configured count, until workers ask

    async def ask(worker_ids):
        asked = [actor.act(*_request(w, 2), w) for w in worker_ids]
        await asyncio.gather(*asked)

    asyncio.run(ask([0, 1, 2]))  # a third worker (added, or restarted on this node) asked too
    assert actor.expected == 3
    actor.SEEN_WINDOW_S = 0.0  # every worker silent for longer than the window: retired
    assert actor.expected == 1


def test_a_lone_request_is_answered_after_the_wait(tmp_path):
    actor = _actor(tmp_path, num_workers=4, max_wait_s=0.01)
    ((logits, _, _, _),) = asyncio.run(_ask_together(actor, [_request(5, 2)]))
    assert logits.shape == (2, 2)
    assert actor.stats() == {"requests": 1.0, "batches": 1.0}


def test_weights_and_their_version_reach_the_answers(tmp_path):
    from actors.messages import PolicyWeights

    actor = _actor(tmp_path, num_workers=1, max_wait_s=0.0)
    state = {k: np.zeros_like(v.numpy()) for k, v in actor.policy.state_dict().items()}
    actor.set_weights(PolicyWeights(state, 7))
    ((logits, values, _, version),) = asyncio.run(_ask_together(actor, [_request(3, 2)]))
    assert version == 7
    np.testing.assert_array_equal(logits, 0.0)  # all-zero weights: zero logits and values
    np.testing.assert_array_equal(values, 0.0)


@pytest.mark.parametrize(
    ("overrides", "shared"),
    [
        ([], True),  # a local Ray sized for the run: room for the actor
        (["env.id=CartPole-v1"], False),  # "auto" is the MLP there: cheaper in the workers
        (["env.id=CartPole-v1", "model.kind=mlp"], False),
        (["env.id=CartPole-v1", "rollout.inference=shared"], True),
        (["mode=serial"], False),
        (["ray_address=ray://head:10001"], False),  # joined: observations would cross nodes
        (["ray_num_cpus=3"], False),  # 2 workers + learner leave no CPU for it
        (["ray_num_cpus=4"], True),
        (["rollout.inference=worker"], False),
        (["rollout.inference=shared", "ray_num_cpus=3"], True),  # asked for: check_resources
    ],
)
def test_auto_inference_is_shared_on_a_local_ray_with_room(
    tmp_path, monkeypatch, overrides, shared
):
    from cluster.placement import cpus_needed, shared_inference

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    nethack = ["env.id=NetHackScore-v0", "model.kind=auto"]  # CartPole's config, otherwise
    config = load_config(
        ROOT / "configs/cartpole.yaml", [f"run_dir={tmp_path}/r", *nethack, *overrides]
    )
    assert config.rollout.num_workers == 2 and config.reward_model.name == "none"  # no annotator
    assert shared_inference(config) is shared
    assert cpus_needed(config) == 3 + int(shared)


def test_a_ray_job_joins_its_cluster_so_auto_keeps_inference_in_the_workers(tmp_path, monkeypatch):
    from cluster.placement import shared_inference

    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    config = load_config(ROOT / "configs/cartpole.yaml", [f"run_dir={tmp_path}/r"])
    assert shared_inference(config) is False


def test_the_start_up_banner_says_where_inference_runs(tmp_path, monkeypatch):
    from cluster.console import startup_banner

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    shared = [f"run_dir={tmp_path}/r", "rollout.inference=shared"]
    ray_mode = load_config(ROOT / "configs/cartpole.yaml", shared)
    serial = load_config(ROOT / "configs/cartpole.yaml", [f"run_dir={tmp_path}/r", "mode=serial"])
    banner = "\n".join(startup_banner(ray_mode, None))
    assert "policy inference in one shared actor per node on cpu" in banner
    assert "the MLP encoder runs faster in each worker (rollout.inference=auto)" in banner
    assert "policy inference in each worker" in "\n".join(startup_banner(serial, None))
    auto = load_config(ROOT / "configs/cartpole.yaml", [f"run_dir={tmp_path}/r"])
    assert auto.mode == "ray" and "policy inference in each worker" in "\n".join(
        startup_banner(auto, None)
    )


def test_the_banner_names_a_frozen_intrinsic_reward(tmp_path):
    from cluster.console import startup_banner

    ellm = load_config(ROOT / "configs/oni/score-ellm.yaml", [f"run_dir={tmp_path}/r"])
    text = "\n".join(startup_banner(ellm, None))
    assert "reward model ellm, intrinsic coef 0.4 (frozen: no annotator" in text
    assert "extrinsic reward only" not in text and "the annotator" not in text
