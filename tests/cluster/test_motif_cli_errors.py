"""Offline Motif's bad input: each is exit 2 with one line naming what is wrong (no LLM, no
training), and a motif run config is refused before Ray when its fitted file is unusable. Also
what the commands say: fit-reward's plan, epochs and tie-aware summary, a signal during a fit,
annotate's opening line on a resumed run, key=value settings anywhere on annotate's line."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from cluster.cli import main
from cluster.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rogueray: error: ") and "Traceback" not in err
    return err


def _parse_error(capsys, argv) -> str:
    """An error argparse reports when it reads the line: exit 2, before any work."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return err.splitlines()[-1]


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
    err = _parse_error(capsys, ["annotate", str(small_dataset), "--pairs", "0"])
    assert "argument --pairs: must be 1 or more" in err
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
    assert "fit-reward done" in out and "no validation accuracy (no decided pair)" in out
    assert "validation loss 0.6931 on 4 pairs incl. 4 ties (at best 0.6931" in out
    assert "[rogueray] warning: no validation accuracy: the judge called all 4" in out
    assert "--both-orders" in out
    # A run with that reward is told so before it starts, and doctor fails it: normalised by
    # its tiny std, its float noise would show as intrinsic reward.
    from cluster.doctor import Failed, check_motif_reward
    from cluster.fit_reward import REWARD_FILE
    from cluster.run_files import check_run_files

    config = load_config(ROOT / "configs/oni/score-motif.yaml",
                         [f"run_dir={tmp_path}/run", f"reward_model.path={data}/reward/{REWARD_FILE}"])  # fmt: skip
    (notice,) = check_run_files(config)
    assert "16 of its 16 training pairs ties" in notice and "mostly noise" in notice
    with pytest.raises(Failed, match="mostly noise"):
        check_motif_reward(config)


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


def test_annotate_says_at_once_that_the_server_does_not_answer(capsys, small_dataset):
    url = "http://127.0.0.1:9/v1"
    args = ["annotate", str(small_dataset), "annotator.backend=openai", f"annotator.base_url={url}"]
    assert main([*args, "annotator.request_timeout_s=3", "--pairs", "5"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert (
        f"annotate: no answer from {url} (cannot connect); retrying for up to 3 s, "
        "annotator.request_timeout_s=SECONDS shortens this"
    ) in lines
    assert lines[-1].startswith("rogueray: error: no OpenAI-compatible server")


# -- what fit-reward says, and a signal while it fits ------------------------------------------


def _labelled(small_dataset, tmp_path, *, decided: int, ties: int) -> Path:
    """A copy of the dataset with `decided` pairs (the first caption preferred) and `ties`."""
    import shutil

    from actors.messages import PairLabel
    from annotator.label_store import LabelStore
    from cluster.motif_annotate import LABEL_STORE

    data = tmp_path / "labelled"
    shutil.copytree(small_dataset, data)
    captions = [f"You see here {n} gold pieces." for n in range(2 * (decided + ties))]
    pairs = list(zip(captions[::2], captions[1::2], strict=True))
    labels = [PairLabel(a, b, 1.0) for a, b in pairs[:decided]]
    labels += [PairLabel(a, b, 0.5) for a, b in pairs[decided:]]
    with LabelStore(data / LABEL_STORE, model_id="judge", prompt_version="v1") as store:
        store.put_pairs(labels)
    return data


def test_fit_reward_says_what_it_fits_then_each_epoch_then_what_each_figure_is_on(
    capsys, small_dataset, tmp_path, monkeypatch
):
    import cluster.progress

    notes = []
    real_note = cluster.progress.Progress.note
    monkeypatch.setattr(cluster.progress.Progress, "note",
                        lambda self, text: notes.append(text) or real_note(self, text))  # fmt: skip
    data = _labelled(small_dataset, tmp_path, decided=30, ties=20)
    args = ["--width", "small", "--epochs", "2", "--min-steps", "8", "--batch-size", "16"]
    assert main(["fit-reward", str(data), *args]) == 0
    captured = capsys.readouterr()
    start, epoch1, epoch2, summary, *_warning = captured.out.splitlines()
    assert start.startswith("[rogueray] fit-reward: 40 train / 10 validation pairs (")
    assert "2 epochs of 4 steps (--min-steps 8 over 2 epochs) = 8 Adam steps of 16 pairs" in start
    assert "width small (" in start and "parameters), lr 0.0001, on cpu (" in start
    assert epoch1.startswith("[rogueray] fit-reward epoch 1/2 (step 4/8): train loss ")
    assert epoch2.startswith("[rogueray] fit-reward epoch 2/2 (step 8/8): train loss ")
    assert "validation loss" in epoch2 and "accuracy" in epoch2
    info = json.loads((data / "reward" / "metrics.json").read_text())
    ties, decided = info["val_ties"], 10 - info["val_ties"]
    assert f"validation accuracy {info['history'][-1]['val_accuracy']:.3f} on the " in summary
    assert f"{decided:,d} decided pair" in summary
    assert f"on 10 pairs incl. {ties} tie" in summary
    assert info["val_loss_floor"] == pytest.approx(ties / 10 * np.log(2))
    # within an epoch: a progress line per step, with the epoch and the latest train loss
    assert len(notes) == 8 and notes[0].startswith("epoch 1/2, train loss 0.69")
    assert captured.err.splitlines()[-1].startswith("[rogueray] fit-reward: 8/8 steps (100%)")


def test_loss_floor_is_the_targets_entropy():
    from actors.messages import PairLabel
    from cluster.fit_reward import bt_metrics, loss_floor

    labels = [PairLabel("a", "b", 1.0), PairLabel("c", "d", 0.5), PairLabel("e", "f", 0.5)]
    assert loss_floor(labels) == pytest.approx(2 / 3 * np.log(2))
    # equal rewards: every pair costs ln 2; the decided pair alone is counted in the accuracy
    loss, accuracy = bt_metrics(np.array([0.0, 0.0, 0.0]), np.array([0.0, 0.0, 0.0]),
                                np.array([1.0, 0.5, 0.5]))  # fmt: skip
    assert loss == pytest.approx(np.log(2)) and accuracy == 0.0
    loss, accuracy = bt_metrics(np.array([9.0, 0.0, 0.0]), np.array([0.0, 0.0, 0.0]),
                                np.array([1.0, 0.5, 0.5]))  # fmt: skip
    assert loss == pytest.approx(2 / 3 * np.log(2), abs=1e-4) and accuracy == 1.0


def _sigterm_self(*_args, **_kwargs):
    os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_during_a_fit_keeps_the_last_finished_epoch(
    capsys, small_dataset, tmp_path, monkeypatch
):
    import cluster.fit_reward

    real = cluster.fit_reward._evaluate
    monkeypatch.setattr(cluster.fit_reward, "_evaluate",
                        lambda *a: (_sigterm_self(), real(*a))[1])  # fmt: skip
    data = _labelled(small_dataset, tmp_path, decided=20, ties=0)
    args = ["--width", "small", "--epochs", "3", "--min-steps", "6", "--no-progress"]
    assert main(["fit-reward", str(data), *args]) == 128 + signal.SIGTERM
    captured = capsys.readouterr()
    assert "during start-up" not in captured.out + captured.err
    out = captured.out.splitlines()[-1]
    assert out.startswith("[rogueray] fit-reward stopped by SIGTERM at epoch 2/3 (step 2/6); "
                          "saved the model as of epoch 1/3")  # fmt: skip
    assert "run the same command to fit again from the start" in out
    info = json.loads((data / "reward" / "metrics.json").read_text())
    assert info["stopped_after_epoch"] == 1 and len(info["history"]) == 1
    from reward_models.motif import load_fitted

    load_fitted(data / "reward" / "motif_reward.pt")


def test_sigterm_before_the_first_epoch_ends_saves_nothing_and_says_so(
    capsys, small_dataset, tmp_path, monkeypatch
):
    import cluster.fit_reward

    real = cluster.fit_reward._model
    monkeypatch.setattr(cluster.fit_reward, "_model",
                        lambda *a, **k: (_sigterm_self(), real(*a, **k))[1])  # fmt: skip
    data = _labelled(small_dataset, tmp_path, decided=20, ties=0)
    args = ["--width", "small", "--epochs", "3", "--min-steps", "6", "--no-progress"]
    assert main(["fit-reward", str(data), *args]) == 128 + signal.SIGTERM
    out = capsys.readouterr().out.splitlines()[-1]
    assert out == ("[rogueray] fit-reward stopped by SIGTERM at epoch 1/3 (step 0/6); nothing "
                   "saved (a model is written once an epoch has ended); run the same command to "
                   "fit again from the start")  # fmt: skip
    assert not (data / "reward" / "motif_reward.pt").exists()


# -- annotate: settings anywhere, the opening line; output folders; plurals --------------------


def test_annotate_takes_settings_anywhere_and_says_up_front_what_it_resumes(
    capsys, small_dataset, tmp_path
):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(small_dataset, data)
    assert main(["annotate", str(data), "--pairs", "1", "--no-progress",
                 "annotator.backend=rules"]) == 0  # fmt: skip
    first, last = capsys.readouterr().out.splitlines()
    assert first.startswith("[rogueray] annotate: asking the rules judge about 1 pair of the ")
    assert "1 of 1 pair answered (1 labelled now" in last and " 1 pairs" not in last
    assert main(["annotate", "--pairs", "3", str(data), "--chunk-size", "2",
                 "annotator.backend=rules", "--no-progress"]) == 0  # fmt: skip
    first = capsys.readouterr().out.splitlines()[0]
    assert first == (f"[rogueray] annotate: 1 of 3 pairs answered already in {data}; asking "
                     "the rules judge the other 2")  # fmt: skip


def test_collect_and_fit_reward_refuse_a_setting_naming_it(capsys, small_dataset):
    err = _parse_error(capsys, ["fit-reward", str(small_dataset), "--epochs", "1", "x.y=1"])
    assert "'x.y=1': rogueray fit-reward takes no key=value settings" in err
    err = _parse_error(capsys, ["collect", str(small_dataset), "env.id=Foo"])
    assert "'env.id=Foo': rogueray collect takes no key=value settings" in err


def test_an_output_folder_that_cannot_be_made_is_refused_before_any_work(
    capsys, small_dataset, tmp_path
):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    err = _parse_error(capsys, ["collect", str(a_file), "--steps", "64"])
    assert err.endswith(f"argument dataset: {a_file} is a file; give a folder")
    err = _parse_error(capsys, ["fit-reward", str(small_dataset), "--out", str(a_file)])
    assert err.endswith(f"argument --out: {a_file} is a file; give a folder")
    err = _parse_error(capsys, ["fit-reward", str(small_dataset), "--out", str(a_file / "r")])
    assert f"argument --out: {a_file} is a file, so {a_file / 'r'} cannot be made" in err
    if Path("/proc/self").is_dir():  # unwritable even for root
        err = _parse_error(capsys, ["fit-reward", str(small_dataset), "--out", "/proc/r"])
        assert "argument --out: /proc, where /proc/r would be made, cannot be written" in err
    import shutil

    data = tmp_path / "data"
    shutil.copytree(small_dataset, data)
    (data / "reward").write_text("in the way")  # the default output, DATASET/reward
    err = _error(capsys, ["fit-reward", str(data)])
    assert f"fit-reward's output: {data / 'reward'} is a file; give a folder" in err


def test_plurals():
    from cluster.console import counted

    got = [counted(1, "caption"), counted(2, "episode"), counted(0, "tie"), counted(1024, "step")]
    assert got == ["1 caption", "2 episodes", "0 ties", "1,024 steps"]


def test_datasets_folder_is_ignored_by_git():
    """README's commands write datasets/<task>; it is not source."""
    assert "datasets/" in (ROOT / ".gitignore").read_text().splitlines()
