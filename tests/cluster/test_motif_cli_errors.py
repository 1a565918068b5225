"""Offline Motif's bad input: each is exit 2 with one line naming what is wrong (no LLM, no
training), and a motif run config is refused before Ray when its fitted file is unusable."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from cluster.cli import main
from cluster.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rogueray: error: ") and "Traceback" not in err
    return err


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("errors") / "data"
    args = ["--steps", "64", "--num-envs", "1", "--unroll-length", "64", "--no-progress"]
    assert main(["collect", str(path), *args]) == 0
    return path


def test_missing_dataset(capsys, tmp_path):
    for command in ("annotate", "fit-reward"):
        err = _error(capsys, [command, str(tmp_path / "nowhere")])
        assert "is not a directory" in err and "rogueray collect" in err
    (tmp_path / "empty").mkdir()
    assert "no manifest.json" in _error(capsys, ["annotate", str(tmp_path / "empty")])


def test_corrupt_manifest(capsys, small_dataset, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(small_dataset, copy)
    (copy / "manifest.json").write_text('{"format": "rogueray-caption-dataset", "ver')
    err = _error(capsys, ["annotate", str(copy)])
    assert "manifest.json is not valid JSON" in err
    manifest = json.loads((small_dataset / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps(manifest))
    (copy / manifest["chunks"][0]).write_bytes(b"short")
    assert "is missing or not the" in _error(capsys, ["fit-reward", str(copy)])


def test_no_labels_and_bad_options(capsys, small_dataset):
    err = _error(capsys, ["fit-reward", str(small_dataset)])
    assert "no pairs were labelled" in err and "rogueray annotate" in err
    err = _error(capsys, ["annotate", str(small_dataset), "annotator.backend=nope"])
    assert "annotator.backend" in err
    assert "--pairs" in _error(capsys, ["annotate", str(small_dataset), "--pairs", "0"])
    err = _error(capsys, ["collect", str(small_dataset), "--env", "NoSuchEnv-v0"])
    assert "NoSuchEnv-v0" in err
    err = _error(capsys, ["collect", str(small_dataset), "--policy", str(small_dataset)])
    assert "--policy" in err


def test_motif_config_errors_before_ray(tmp_path):
    from cluster.run_files import check_run_files

    config = ROOT / "configs/oni/score-motif.yaml"
    run = f"run_dir={tmp_path}/run"
    with pytest.raises(ConfigError, match="needs reward_model.path"):
        load_config(config, [run, "reward_model.path=null"])
    with pytest.raises(ConfigError, match=r"reward_model.quantile.*0\.05"):
        load_config(config, [run, "reward_model.quantile=0.42"])
    missing = load_config(config, [run, f"reward_model.path={tmp_path}/none.pt"])
    with pytest.raises(ConfigError, match="reward_model.path.*does not exist.*fit-reward"):
        check_run_files(missing)
    (tmp_path / "bad.pt").write_text("garbage")
    corrupt = load_config(config, [run, f"reward_model.path={tmp_path}/bad.pt"])
    with pytest.raises(ConfigError, match="not a readable fitted Motif reward"):
        check_run_files(corrupt)


def test_doctor_checks_the_fitted_file(tmp_path):
    from cluster.doctor import Failed, check_motif_reward

    config = load_config(ROOT / "configs/oni/score-motif.yaml",
                         [f"run_dir={tmp_path}/run", f"reward_model.path={tmp_path}/none.pt"])  # fmt: skip
    with pytest.raises(Failed, match="does not exist.*fit-reward"):
        check_motif_reward(config)


def test_a_fit_that_ranks_nothing_says_so(capsys, small_dataset, tmp_path):
    """Pairs the judge called ties only (as a judge with no opinion would): the fit has no
    non-tie validation pair to be right about, and the command warns instead of a quiet "done"."""
    import shutil

    from actors.messages import PairLabel
    from annotator.label_store import LabelStore
    from cluster.motif_annotate import LABEL_STORE

    data = tmp_path / "ties"
    shutil.copytree(small_dataset, data)
    captions = [f"You see here {n} gold pieces." for n in range(2, 42)]
    ties = [PairLabel(a, b, 0.5) for a, b in zip(captions[::2], captions[1::2], strict=True)]
    with LabelStore(data / LABEL_STORE, model_id="judge", prompt_version="v1") as store:
        store.put_pairs(ties)
    args = ["--width", "small", "--epochs", "1", "--min-steps", "2", "--no-progress"]
    assert main(["fit-reward", str(data), *args]) == 0
    out = capsys.readouterr().out
    assert "fit-reward done" in out and "[rogueray] warning: validation accuracy nan" in out
    assert "--both-orders" in out


def test_annotate_with_nothing_left_to_ask_says_so_before_loading_the_llm(
    capsys, small_dataset, tmp_path, monkeypatch
):
    import shutil

    import annotator.backends
    from cluster.collect import load_dataset
    from cluster.motif_annotate import candidate_captions

    data = tmp_path / "data"
    shutil.copytree(small_dataset, data)
    loaded = []
    real = annotator.backends.make_backend
    monkeypatch.setattr(annotator.backends, "make_backend",
                        lambda kind, **kw: loaded.append(kind) or real(kind, **kw))  # fmt: skip
    rules = ["annotate", str(data), "annotator.backend=rules", "--no-progress"]
    assert main([*rules, "--pairs", "5"]) == 0 and loaded == ["rules"]
    capsys.readouterr()
    assert main([*rules, "--pairs", "5"]) == 0
    out = capsys.readouterr().out
    assert "all 5 pairs wanted are labelled already" in out and "no LLM loaded" in out
    assert loaded == ["rules"]  # not made a second time
    n = len(candidate_captions(load_dataset(data).captions))
    every = n * (n - 1) // 2
    assert main([*rules, "--pairs", str(every + 100)]) == 0 and loaded == ["rules", "rules"]
    capsys.readouterr()
    assert main([*rules, "--pairs", str(every + 100)]) == 0
    out = capsys.readouterr().out
    assert f"all {every:,d} pairs of the dataset's {n:,d} captions are labelled already" in out
    assert loaded == ["rules", "rules"]


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_annotate_with_vllm_missing_is_one_line_with_the_install_command(capsys, small_dataset):
    err = _error(capsys, ["annotate", str(small_dataset), "annotator.backend=vllm"])
    assert "annotator.backend=vllm but vLLM is not installed: pip install vllm==0.32.0" in err
    assert len(err.strip().splitlines()) == 1
