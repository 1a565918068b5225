"""What a rollout worker and the shared inference actor are sent (cluster/worker_settings.py):
built once from the run config, carrying what they read and nothing of the rest, frozen; a real
CartPole worker built from WorkerSettings alone samples a fragment of the configured shape."""

import dataclasses
import pickle

import pytest

from cluster.components import env_spec, make_policy, make_worker
from cluster.config import load_config
from cluster.worker_settings import InferenceSettings, PolicySettings, WorkerSettings
from tests.cluster.test_runner_protocol import ROOT


def _config(tmp_path, *extra: str):
    return load_config(
        ROOT / "configs/cartpole.yaml",
        [
            f"run_dir={tmp_path}/run",
            "seed=7",
            "env.num_envs_per_worker=3",
            "env.max_episode_steps=50",
            "env.normalize_captions=true",
            "rollout.unroll_length=5",
            "rollout.unrolls_per_sample=2",
            "learner.batch_size=30",
            *extra,
        ],
    )


def test_built_from_the_run_config(tmp_path):
    config = _config(tmp_path, "model.recurrent=true", "rollout.inference_device=cpu")
    settings = WorkerSettings.from_config(config)
    assert settings == WorkerSettings(
        env_id="CartPole-v1",
        num_envs=3,
        unroll_length=5,
        unrolls_per_sample=2,
        seed=7,
        max_episode_steps=50,
        normalize_captions=True,
        model=PolicySettings(
            kind="mlp", hidden_size=64, recurrent=True, crop_size=9, precision="auto"
        ),
    )
    assert settings.model.state_size == 64
    inference = InferenceSettings.from_config(config)
    assert (inference.num_workers, inference.device) == (2, "cpu")
    assert inference.model == settings.model


def test_carries_no_other_section(tmp_path):
    config = _config(tmp_path)
    settings = WorkerSettings.from_config(config)
    names = {f.name for f in dataclasses.fields(settings)}
    assert not names & {"learner", "annotator", "reward_model", "run_dir", "evaluation"}
    assert len(pickle.dumps(settings)) < len(pickle.dumps(config)) / 4
    assert PolicySettings.from_config(config.model).state_size == 0  # cartpole: feed-forward


def test_is_frozen(tmp_path):
    settings = WorkerSettings.from_config(_config(tmp_path))
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.seed = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.model.hidden_size = 8  # type: ignore[misc]


def test_a_worker_built_from_it_samples_the_configured_fragment(tmp_path):
    config = _config(tmp_path)
    spec = env_spec(config)
    settings = WorkerSettings.from_config(config)
    worker = make_worker(settings, spec, worker_id=1)
    try:
        fragment, _ = worker.sample()
    finally:
        worker.close()
    assert fragment.actions.shape == (5, 3 * 2)  # [unroll_length, num_envs * unrolls]
    same = make_policy(config, spec).state_dict()
    mine = make_policy(settings, spec).state_dict()
    assert {k: tuple(v.shape) for k, v in same.items()} == {
        k: tuple(v.shape) for k, v in mine.items()
    }
