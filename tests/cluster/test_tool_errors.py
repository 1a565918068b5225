"""The messages docs/errors.md lists for the tools' bad input (`rogueray evaluate`, `replay`,
`compare`, `doctor`, `judge`): exit code 2 and the documented line on stderr, no traceback."""

import importlib.util
import json
from pathlib import Path

import pytest

from cluster.cli import main

ROOT = Path(__file__).resolve().parents[2]
CARTPOLE = str(ROOT / "configs" / "cartpole.yaml")


def _error(capsys, args: list[str]) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("rogueray: error: ") and "Traceback" not in err
    return err


@pytest.mark.parametrize("command", ["evaluate", "replay"])
def test_evaluate_and_replay_name_a_bad_target(tmp_path, capsys, command):
    missing = tmp_path / "missing"
    err = _error(capsys, [command, str(missing)])
    assert f"'{missing}' is neither a run directory nor a checkpoint file" in err
    (tmp_path / "empty").mkdir()
    err = _error(capsys, [command, str(tmp_path / "empty")])
    assert f"no loadable checkpoint in {tmp_path / 'empty' / 'checkpoints'}" in err
    junk = tmp_path / "checkpoint_000000001024.pt"
    junk.write_bytes(bytes(range(256)) * 4)
    err = _error(capsys, [command, str(junk)])
    assert f"cannot read {junk} as a rogueray checkpoint (not a PyTorch checkpoint file)" in err


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("tool-errors") / "run"
    args = ["train", CARTPOLE, f"run_dir={run_dir}", "mode=serial", "total_env_steps=512",
            "rollout.num_workers=1", "model.hidden_size=32", "--quiet"]  # fmt: skip
    assert main(args) == 0
    return run_dir


@pytest.mark.slow
@pytest.mark.parametrize("command", ["evaluate", "replay"])
def test_evaluate_and_replay_name_bad_options(cartpole_run, capsys, command):
    err = _error(capsys, [command, str(cartpole_run), "--episodes", "0"])
    assert "--episodes must be >= 1, got 0" in err
    err = _error(capsys, [command, str(cartpole_run), "--env", "CartPol-v1"])
    assert "the run's config does not load here: config key 'env.id': unknown environment " in err
    assert "Did you mean CartPole-v1" in err
    err = _error(capsys, [command, str(cartpole_run), "--env", "NetHackScore-v0"])
    assert "model.kind 'mlp' needs a 'vector' observation" in err
    err = _error(capsys, [command, str(cartpole_run), "--env", "Acrobot-v1"])
    assert "the checkpoint's policy does not fit Acrobot-v1 (observations or actions differ" in err


def test_compare_names_what_is_not_a_run(tmp_path, capsys):
    err = _error(capsys, ["compare", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert f"'{tmp_path / 'missing'}' is not a directory" in err
    err = _error(capsys, ["compare", str(tmp_path), "--out", str(tmp_path / "o")])
    assert "has no tensorboard folder: not a rogueray run directory" in err
    (tmp_path / "run" / "tensorboard").mkdir(parents=True)
    err = _error(capsys, ["compare", str(tmp_path / "run"), "--out", str(tmp_path / "o")])
    assert "none of the runs logged episode returns yet: nothing to draw" in err


def test_compare_names_an_output_folder_it_cannot_make(tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    out = tmp_path / "a-file" / "x"
    err = _error(capsys, ["compare", str(tmp_path), "--out", str(out)])
    assert f"cannot make the output folder {out}: Not a directory" in err


def test_doctor_names_a_missing_config(tmp_path, capsys):
    err = _error(capsys, ["doctor", str(tmp_path / "nope.yaml")])
    assert f"config file '{tmp_path / 'nope.yaml'}' does not exist" in err


def test_judge_names_bad_input(tmp_path, capsys):
    assert "'nonsense' is not key=value" in _error(capsys, ["judge", "nonsense"])
    err = _error(capsys, ["judge", "annotator.backend=rules", "--set", str(tmp_path)])
    assert f"no judge set at '{tmp_path}' (captions.csv missing)" in err
    err = _error(capsys, ["judge", "annotator.backend=rules", "--goals", "nope"])
    assert "goal 'nope' is not labelled in the set; labelled: " in err


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_judge_with_vllm_missing_is_one_line_with_the_install_command(tmp_path, capsys):
    from cluster.config import load_config, shipped_config
    from cluster.doctor import Failed, check_llm

    err = _error(capsys, ["judge", "annotator.backend=vllm", "--limit", "5"])
    assert "annotator.backend=vllm but vLLM is not installed: pip install vllm==0.32.0" in err
    assert len(err.strip().splitlines()) == 1
    overrides = ["annotator.backend=vllm", f"run_dir={tmp_path}"]
    config = load_config(shipped_config("default.yaml"), overrides)
    with pytest.raises(Failed, match="vLLM is not installed: pip install vllm==0.32.0"):
        check_llm(config, timeout_s=5)  # doctor's "llm backend" line says the same


def test_judge_without_a_server_is_one_line(capsys):
    args = ["judge", "annotator.backend=openai", "annotator.base_url=http://127.0.0.1:9/v1"]
    err = _error(capsys, [*args, "annotator.request_timeout_s=1", "--limit", "5"])
    assert "no OpenAI-compatible server answered GET http://127.0.0.1:9/v1/models" in err
    assert len(err.strip().splitlines()) == 1


def _usage_error(capsys, args: list[str]) -> str:
    """A bad option refused while the command line is read (argparse: exit 2, usage, one line
    naming the option), before any model loads."""
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("value", "message"),
    [("0", "must be 1 or more, got 0"), ("-3", "must be 1 or more, got -3"),
     ("ten", "'ten' is not a whole number")],
)  # fmt: skip
def test_judge_limit_is_checked_when_read(capsys, value, message):
    line = _usage_error(capsys, ["judge", "annotator.backend=rules", "--limit", value])
    assert line == f"rogueray judge: error: argument --limit: {message}"


@pytest.mark.parametrize("flag", ["--json", "--answers"])
def test_judge_output_files_are_checked_when_read(tmp_path, capsys, flag):
    missing = tmp_path / "missing" / "out.txt"
    line = _usage_error(capsys, ["judge", "annotator.backend=rules", flag, str(missing)])
    assert line.endswith(
        f"argument {flag}: folder {missing.parent} does not exist; create it first"
    )
    line = _usage_error(capsys, ["judge", "annotator.backend=rules", flag, str(tmp_path)])
    assert line.endswith(f"argument {flag}: {tmp_path} is a folder; give a file name inside it")


def _training_keys() -> list[str]:
    """A key of every config section but annotator's (learner.x, env.x, ...) and every top-level
    key (run_dir, seed, ...)."""
    import dataclasses
    import typing

    from cluster.config import RunConfig

    hints = typing.get_type_hints(RunConfig)
    sections = [name for name, hint in hints.items() if dataclasses.is_dataclass(hint)]
    assert {"learner", "rollout", "reward_model", "env", "model", "annotator"} <= set(sections)
    plain = [f.name for f in dataclasses.fields(RunConfig) if f.name not in sections]
    return [f"{s}.x=1" for s in sections if s != "annotator"] + [f"{k}=1" for k in plain]


@pytest.mark.parametrize("item", ["learner.learning_rate=3", "rollout.num_workers=2",
                                  *_training_keys()])  # fmt: skip
def test_judge_refuses_training_settings(capsys, item):
    key = item.partition("=")[0]
    err = _error(capsys, ["judge", "annotator.backend=rules", item])
    assert f"judge takes annotator.* settings only; {key!r} is a training setting" in err
    assert len(err.strip().splitlines()) == 1


def test_judge_model_without_a_dot_is_still_the_annotators(capsys):
    from cluster.judge_cli import _overrides

    assert _overrides(["model=x.gguf", "goal=gold"]) == [
        "annotator.model=x.gguf", "annotator.goal=gold"]  # fmt: skip


@pytest.mark.parametrize("item", ["annotator.goal=gold", "goal=gold"])
def test_judge_goal_setting_asks_that_goal_only(tmp_path, capsys, item):
    out = tmp_path / "r.json"
    args = ["judge", "annotator.backend=rules", item, "--limit", "10", "--no-progress"]
    assert main([*args, "--json", str(out)]) == 0
    assert list(json.loads(out.read_text())["per_goal"]) == ["gold"]
    err = _error(capsys, ["judge", "annotator.backend=rules", item, "--goals", "combat"])
    assert (
        "annotator.goal=gold and --goals combat disagree; give the goals once, with --goals" in err
    )


def test_judge_table_names_the_rules_file_explains_itself_and_counts_in_words(capsys):
    args = ["judge", "annotator.backend=rules", "--limit", "1", "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0]
    assert header.startswith("judge: rules (shipped rules annotator/rules_default.yaml), style")
    assert "smollm2" not in header
    assert "\n1 caption, 0 pairs; calibration quantile (q=0.8);" in out
    assert "labels/s in the backend" in out
    assert "pos / team: share the judge / the team calls helpful; pairs: pair agreement" in out
    assert "n/a: not defined" in out
    assert out.rstrip().endswith(
        "the progress line's /s: questions per second of wall time, set-up included"
    )


def test_judge_says_at_once_that_the_server_does_not_answer(capsys):
    url = "http://127.0.0.1:9/v1"
    args = ["judge", "annotator.backend=openai", f"annotator.base_url={url}"]
    assert main([*args, "annotator.request_timeout_s=3", "--limit", "5"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == (
        f"judge: no answer from {url} (cannot connect); retrying for up to 3 s, "
        "annotator.request_timeout_s=SECONDS shortens this"
    )
    assert len(lines) == 2 and lines[1].startswith("rogueray: error: no OpenAI-compatible server")
