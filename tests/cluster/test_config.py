"""Config loading: defaults, YAML, dotted overrides, and the errors users can hit (the table in
docs/errors.md), each naming the key and what is allowed."""

import dataclasses
import math
import os
from pathlib import Path

import pytest

from cluster.config import ConfigError, RunConfig, load_config
from cluster.config_docs import COMMAND, render
from config_schema.domains import Positive
from config_schema.keys import config_keys, field_docs, sections

ROOT = Path(__file__).resolve().parents[2]
KEYS = config_keys(RunConfig)
NUMERIC = [key for key in KEYS if key.numeric]


def _bad_values(key):
    """NaN, the infinities and finite values just outside the key's declared domain."""
    return ["nan", "inf", "-inf", *(repr(v) for v in key.domain.outside())]


def _shown(key, text):
    """How the error message shows the value `text` once read as a number for `key`."""
    value = float(text)
    return repr(int(value) if key.type is int and value.is_integer() else value)


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
        (
            ["learner.learning_rate=fast"],
            "config key 'learner.learning_rate' is 'fast'; allowed: a finite number > 0",
        ),
        (["rollout.num_workers=0"], "'rollout.num_workers' is 0; allowed: an integer >= 1"),
        (["rollout.num_workers=2.5"], "'rollout.num_workers' is 2.5; allowed: an integer >= 1"),
        (["env.num_envs_per_worker=0"], "'env.num_envs_per_worker' is 0; allowed: an integer >= 1"),
        (["mode=cluster"], "'mode' must be one of ray, serial; got 'cluster'"),
        (["model.kind=transformer"], "'model.kind' must be one of auto, nethack, mlp"),
        (["learner.gamma=1.5"], "'learner.gamma' is 1.5; allowed: a number in (0, 1]"),
        (["learner.batch_size=100"], "'learner.batch_size' (100) must be a positive multiple of"),
        (["learner.batch_size=100"], "= 256, e.g. learner.batch_size=256"),
        (
            ["rollout.unrolls_per_sample=0"],
            "'rollout.unrolls_per_sample' is 0; allowed: an integer",
        ),
        (["rollout.node_resource=GPU"], "'rollout.node_resource' must name a custom Ray resource"),
        (
            ["rollout.unrolls_per_sample=3"],  # 32 x 8 x 3 = 768 does not divide 1024
            "rollout.unrolls_per_sample = 768, e.g. learner.batch_size=768",
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
        (["model.precision=half"], "'model.precision' must be one of auto, float32, bfloat16"),
        (["rollout.inference=gpu"], "'rollout.inference' must be one of auto, worker, shared"),
        (["rollout.inference=shared", "mode=serial"], "'rollout.inference' is 'shared', which"),
        (["rollout.inference_device=tpu"], "'rollout.inference_device' must be auto, cpu, cuda"),
        (["annotator.goal=fun"], "'annotator.goal' must be one of default"),
        (
            ["annotator.calibration_quantile=1.5"],
            "'annotator.calibration_quantile' is 1.5; allowed: a number in (0, 1)",
        ),
        (["annotator.max_retries=-1"], "'annotator.max_retries' is -1; allowed: an integer >= 0"),
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
    with pytest.raises(ConfigError, match="is a directory, not a YAML file"):
        load_config(tmp_path)
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


def test_the_schema_has_every_section_and_key():
    assert set(sections(RunConfig)) >= {"", "env", "learner", "reward_model", "annotator"}
    assert {"learner.learning_rate", "annotator.request_retries", "seed"} <= {k.key for k in KEYS}


def test_every_numeric_key_declares_a_domain():
    # config_keys raises for a numeric key without a domain, so this covers keys added later.
    assert all(key.domain is not None for key in NUMERIC)

    @dataclasses.dataclass
    class Undeclared:
        fine: Positive = 1.0
        bare: float = 0.5

    with pytest.raises(TypeError, match="'bare' .* declares no domain"):
        config_keys(Undeclared)


@pytest.mark.parametrize(
    ("key", "text"),
    [(key, text) for key in NUMERIC for text in _bad_values(key)],
    ids=lambda item: getattr(item, "key", item),
)
def test_every_numeric_key_rejects_values_outside_its_domain(tmp_path, key, text):
    with pytest.raises(ConfigError) as info:
        load_config(None, [f"{key.key}={text}", f"run_dir={tmp_path}/run"])
    assert str(info.value) == (
        f"config key {key.key!r} is {_shown(key, text)}; allowed: {key.allowed()}"
    )


def test_every_numeric_default_is_inside_its_domain():
    for key in NUMERIC:
        assert (key.default is None and key.optional) or key.domain.contains(key.default), key.key


def test_nan_from_a_yaml_file_is_rejected(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("learner:\n  learning_rate: .nan\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, [f"run_dir={tmp_path}/run"])
    assert str(info.value) == (
        "config key 'learner.learning_rate' is nan; allowed: a finite number > 0"
    )


def test_null_only_where_allowed(tmp_path):
    config = load_config(None, ["ray_num_cpus=null", f"run_dir={tmp_path}/run"])
    assert config.ray_num_cpus is None
    with pytest.raises(ConfigError, match="'learner.gamma' is null; allowed: a number in"):
        load_config(None, ["learner.gamma=null", f"run_dir={tmp_path}/run"])


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [
        ("learner.learnig_rate", "learner.learning_rate"),
        ("annotator.gaol", "annotator.goal"),
        ("total_env_step", "total_env_steps"),
        ("num_workers", "rollout.num_workers"),  # right name, wrong section
        ("leaner.gamma", "learner"),
    ],
)
def test_misspelt_keys_get_a_suggestion(tmp_path, key, suggestion):
    with pytest.raises(ConfigError) as info:
        load_config(None, [f"{key}=1", f"run_dir={tmp_path}/run"])
    assert f"(did you mean {suggestion!r}?)" in str(info.value)


def test_no_suggestion_when_nothing_is_close(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(None, ["learner.lr=1", f"run_dir={tmp_path}/run"])
    assert "did you mean" not in str(info.value)


def test_a_run_directory_given_as_config_points_to_resume(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("total_env_steps: 10\n")
    with pytest.raises(ConfigError) as info:
        load_config(run_dir)
    assert (
        f"is a run directory, not a config file; to continue that run: rogueray resume {run_dir}"
        in str(info.value)
    )


def test_every_key_and_section_has_a_docstring():
    missing = [
        f"{name + '.' if name else ''}{f.name}"
        for name, cls in sections(RunConfig).items()
        for f in dataclasses.fields(cls)
        if not field_docs(cls).get(f.name)
    ]
    assert not missing, f"config keys without a docstring: {missing}"


def test_docs_config_md_matches_the_dataclasses():
    written = (ROOT / "docs" / "config.md").read_text()
    assert written == render(), f"docs/config.md is out of date; regenerate it: {COMMAND}"
    for key in KEYS:
        assert f"`{key.key}`" in written


def test_domains_describe_themselves():
    learning_rate = next(k for k in KEYS if k.key == "learner.learning_rate")
    assert learning_rate.allowed() == "a finite number > 0"
    assert not learning_rate.domain.contains(math.nan)
    value_clip = next(k for k in KEYS if k.key == "learner.value_clip")
    assert value_clip.allowed() == "a finite number > 0, or null"


def test_the_values_validation_repeats_match_their_owners():
    # repeated so that checking a config imports no torch (cluster/validation.py)
    from cluster import validation
    from learner.precision import PRECISIONS

    assert validation.PRECISIONS == PRECISIONS
