"""Config loading: defaults, YAML, dotted overrides, and the errors users can hit (the table in
docs/errors.md), each naming the key and what is allowed."""

import os

import pytest

from cluster.config import ConfigError, load_config


def test_defaults_yaml_and_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("env:\n  id: CartPole-v1\nlearner:\n  learning_rate: 0.001\n")
    config = load_config(
        path, ["learner.gamma=0.95", "rollout.num_workers=3", f"run_dir={tmp_path}/r"]
    )
    assert config.env.id == "CartPole-v1"
    assert config.learner.learning_rate == 0.001
    assert config.learner.gamma == 0.95
    assert config.rollout.num_workers == 3
    assert config.learner.clip_ratio == 0.1  # untouched default


def test_integer_given_for_float_is_accepted(tmp_path):
    config = load_config(None, ["learner.learning_rate=1", f"run_dir={tmp_path}"])
    assert config.learner.learning_rate == 1.0 and isinstance(config.learner.learning_rate, float)


def test_exponent_notation_is_a_number(tmp_path):
    config = load_config(
        None, ["learner.learning_rate=3e-4", "total_env_steps=1e6", f"run_dir={tmp_path}"]
    )
    assert config.learner.learning_rate == 3e-4
    assert config.total_env_steps == 1_000_000 and isinstance(config.total_env_steps, int)


def test_optional_value_can_be_null(tmp_path):
    config = load_config(None, ["learner.value_clip=null", f"run_dir={tmp_path}"])
    assert config.learner.value_clip is None


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["learner.lr=0.1"],
            "unknown config key 'learner.lr'; allowed keys here: learner.batch_size",
        ),
        (["bogus=1"], "unknown config key 'bogus'"),
        (["learner.learning_rate=fast"], "'learner.learning_rate' must be a number, got 'fast'"),
        (["rollout.num_workers=0"], "'rollout.num_workers' must be > 0, got 0"),
        (["rollout.num_workers=2.5"], "'rollout.num_workers' must be an integer, got 2.5"),
        (["env.num_envs_per_worker=0"], "'env.num_envs_per_worker' must be > 0"),
        (["mode=cluster"], "'mode' must be one of ray, serial; got 'cluster'"),
        (["model.kind=transformer"], "'model.kind' must be one of auto, nethack, mlp"),
        (["learner.gamma=1.5"], "'learner.gamma' must be in (0, 1]"),
        (["learner.batch_size=100"], "'learner.batch_size' (100) must be a positive multiple of"),
        (["rollout.unrolls_per_sample=0"], "'rollout.unrolls_per_sample' must be > 0, got 0"),
        (["rollout.node_resource=GPU"], "'rollout.node_resource' must name a custom Ray resource"),
        (
            ["rollout.unrolls_per_sample=3"],  # 32 x 8 x 3 = 768 does not divide 1024
            "rollout.unrolls_per_sample = 768",
        ),
        (["learner.device=tpu"], "'learner.device' must be auto, cpu, cuda or cuda:N; got 'tpu'"),
        (["env.id=NetHackScor-v0"], "'env.id'"),
        (["env.normalize_captions=maybe"], "'env.normalize_captions' must be true or false"),
        (["learner=3"], "'learner' is a section"),
        (["nonsense"], "must look like key=value"),
        (["reward_model.name=lookup"], "'reward_model.name' must be one of none, hashing"),
        (["reward_model.width=huge"], "'reward_model.width' must be one of oni, small"),
        (
            ["reward_model.name=hashing", "reward.intrinsic_coef=0"],
            "needs reward.intrinsic_coef > 0",
        ),
        (["annotator.backend=llama"], "'annotator.backend' must be one of auto, transformers"),
        (["annotator.backend=openai"], "'annotator.base_url' must be an http(s) URL"),
        (["annotator.backend=openai", "annotator.base_url=localhost:8000"], "got 'localhost:8000'"),
        (["annotator.style=verbose"], "'annotator.style' must be one of reasoned, direct"),
        (["annotator.goal=fun"], "'annotator.goal' must be one of default"),
        (
            ["annotator.calibration_quantile=1.5"],
            "'annotator.calibration_quantile' must be in (0, 1)",
        ),
        (["annotator.max_retries=-1"], "'annotator.max_retries' must be >= 0"),
        (
            [
                "reward_model.name=hashing",
                "reward.intrinsic_coef=0.4",
                "annotator.model=/no/such/model",
            ],
            "'annotator.model': '/no/such/model' is not usable",
        ),
    ],
)
def test_bad_values_name_the_key(tmp_path, overrides, expected):
    with pytest.raises(ConfigError) as info:
        load_config(None, [*overrides, f"run_dir={tmp_path}/run"])
    assert expected in str(info.value)


def test_unknown_env_id_suggests_close_match(tmp_path):
    with pytest.raises(ConfigError, match="NetHackScore"):
        load_config(None, ["env.id=NetHackScor-v0", f"run_dir={tmp_path}"])


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("env: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(listy)


def test_run_dir_that_is_a_file(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(ConfigError, match="exists and is not a directory"):
        load_config(None, [f"run_dir={target}"])


def test_run_dir_below_a_file(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(ConfigError, match="cannot be created"):
        load_config(None, [f"run_dir={target}/run"])


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_run_dir(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(ConfigError, match="not writable"):
        load_config(None, [f"run_dir={locked}/run"])
