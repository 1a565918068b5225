"""Offline Motif end to end through the CLI on a small real dataset: `collect` (real NetHack,
random policy, resumed), `annotate` (the real embedded SmolLM2 behind a counting test double,
interrupted by SIGINT half-way and resumed: no pair is asked twice), `fit-reward`, whose
normalisation and quantiles are recomputed here with numpy, and the fitted file used as the
`motif` reward model of a run config."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cluster.cli import main
from tests.doubles.counting_backend import CountingBackendDouble
from tests.doubles.shared_models import smollm2_transformers_backend

ROOT = Path(__file__).resolve().parents[2]
ENV = "NetHackScoreExtendedActions-v1"
PAIRS, CHUNK = 40, 8


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("motif") / "data"
    common = ["--env", ENV, "--num-envs", "4", "--unroll-length", "128", "--no-progress"]
    assert main(["collect", str(path), "--steps", "1024", *common]) == 0
    assert main(["collect", str(path), "--steps", "2560", *common]) == 0  # resumed
    return path


def test_collect_is_compact_resumable_and_described(dataset):
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert manifest["env_id"] == ENV and manifest["policy"] == {"kind": "random"}
    assert manifest["starts"] == 2 and manifest["steps"] == 2560 and len(manifest["chunks"]) == 5
    captions = json.loads((dataset / "captions.json").read_text())
    assert len(captions) == len(set(captions)) > 10
    ids = np.concatenate([np.load(dataset / name).ravel() for name in manifest["chunks"]])
    counts = np.load(dataset / "counts.npy")
    assert ids.size == 2560 and np.array_equal(np.bincount(ids, minlength=len(captions)), counts)
    for name, entry in manifest["files"].items():
        assert (dataset / name).stat().st_size == entry["bytes"]
    assert main(["collect", str(dataset), "--env", "NetHackOracleExtendedActions-v1"]) == 2


def _annotate(dataset, monkeypatch, double) -> int:
    import annotator.backends

    monkeypatch.setattr(annotator.backends, "make_backend", lambda *a, **k: double)
    args = ["annotate", str(dataset), "annotator.batch_size=8", "--pairs", str(PAIRS)]
    return main([*args, "--chunk-size", str(CHUNK), "--no-progress"])


@pytest.fixture(scope="module")
def annotated(dataset):
    real = smollm2_transformers_backend()
    first = CountingBackendDouble(real, interrupt_after=12)
    second = CountingBackendDouble(real)
    with pytest.MonkeyPatch.context() as monkeypatch:
        codes = [_annotate(dataset, monkeypatch, first), _annotate(dataset, monkeypatch, second)]
    return codes, first, second


def test_annotation_interrupted_and_resumed_never_asks_a_pair_twice(dataset, annotated):
    from annotator.label_store import LabelStore
    from cluster.motif_annotate import UNKNOWN

    (code_first, code_second), first, second = annotated
    assert code_first == 130 and code_second == 0
    # the SIGINT came in the second chunk, which was finished and stored; then it stopped
    assert len(first.prompts) == 2 * CHUNK
    asked = first.pairs() + second.pairs()
    assert len(asked) == len(set(asked)) == PAIRS
    assert not set(first.pairs()) & set(second.pairs())
    store = LabelStore(dataset / "labels.sqlite", model_id="smollm2-135m",
                       prompt_version=_group(dataset)[1])  # fmt: skip
    labelled = {tuple(sorted((x.first, x.second))) for x in store.pair_labels()}
    store.close()
    unknown_file = dataset / UNKNOWN
    unknown = unknown_file.read_text().splitlines() if unknown_file.exists() else []
    assert len(labelled) + len(unknown) == PAIRS and labelled <= set(asked)
    assert "" not in {c for pair in asked for c in pair}  # Motif drops empty messages


def _group(dataset):
    from annotator.label_store import StoreInspector

    with StoreInspector(dataset / "labels.sqlite") as inspector:
        (group,) = [(m, p) for m, p, _, pairs in inspector.groups() if pairs]
    return group


def _training_pairs(dataset, seed=0, val_fraction=0.2):
    """The split fit-reward documents, redone: distinct pairs of the store in row order (the
    latest label of each), permuted by numpy with `seed`, the first round(f * N) held out."""
    import sqlite3

    model_id, version = _group(dataset)
    with sqlite3.connect(dataset / "labels.sqlite") as conn:
        rows = conn.execute(
            "SELECT first, second FROM pair_labels WHERE model_id = ? AND prompt_version = ? "
            "ORDER BY rowid", (model_id, version),
        ).fetchall()  # fmt: skip
    latest = {tuple(sorted(r)): r for r in rows if r[0] != r[1]}
    pairs = list(latest.values())
    order = np.random.default_rng(seed).permutation(len(pairs))
    n_val = int(round(val_fraction * len(pairs)))
    return [pairs[i] for i in order][n_val:]


@pytest.fixture(scope="module")
def fitted(dataset, annotated):
    args = ["fit-reward", str(dataset), "--epochs", "4", "--batch-size", "16", "--width", "small"]
    assert main([*args, "--lr", "1e-3", "--no-progress"]) == 0
    return dataset / "reward"


def test_fit_reward_statistics_match_a_numpy_recomputation(dataset, fitted):
    from reward_models.motif import QUANTILE_LEVELS, load_fitted
    from reward_models.text_encoder import encode_captions

    model = load_fitted(fitted / "motif_reward.pt")
    net = model.build_net()
    train = _training_pairs(dataset)
    assert model.info["train_pairs"] == len(train) > 10

    def raw(captions):
        with torch.no_grad():
            return net(torch.from_numpy(encode_captions(captions))).double().numpy()

    occurrences = raw([c for pair in train for c in pair])  # both sides of every pair
    assert model.mean == pytest.approx(occurrences.mean(), rel=1e-5, abs=1e-7)
    assert model.std == pytest.approx(occurrences.std(), rel=1e-4)
    distinct = sorted({c for pair in train for c in pair})
    z = (raw(distinct) - occurrences.mean()) / occurrences.std()
    expected = np.quantile(z, QUANTILE_LEVELS)
    readable = json.loads((fitted / "quantiles.json").read_text())
    assert list(readable) == [f"{q:.2f}" for q in QUANTILE_LEVELS]
    np.testing.assert_allclose(list(readable.values()), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose([model.quantiles[q] for q in QUANTILE_LEVELS], expected,
                               rtol=1e-4, atol=1e-5)  # fmt: skip
    assert list((fitted / "tensorboard").glob("events.out.tfevents.*"))
    assert [row["epoch"] for row in model.info["history"]] == [1, 2, 3, 4]


def test_the_fitted_file_is_a_run_configs_motif_reward(dataset, fitted, tmp_path):
    from cluster.annotation import build_reward_model, wants_annotator
    from cluster.config import load_config
    from cluster.run_files import check_run_files

    path = fitted / "motif_reward.pt"
    config = load_config(ROOT / "configs/oni/score-motif.yaml",
                         [f"run_dir={tmp_path}/run", f"reward_model.path={path}"])  # fmt: skip
    check_run_files(config)
    model = build_reward_model(config)
    assert type(model).__name__ == "MotifRewardModel" and not wants_annotator(config)
    captions = json.loads((dataset / "captions.json").read_text())
    rewards = model.rewards(captions)
    assert rewards.shape == (len(captions),) and (rewards == 0).any() and (rewards > 0).any()


def test_few_pairs_still_get_the_minimum_number_of_steps(dataset, fitted):
    """4 epochs of ceil(train pairs / 16) steps would be a handful; --min-steps (500 by default)
    spreads 500 steps over the epochs, so a small dataset's network moves off ln 2."""
    info = json.loads((fitted / "metrics.json").read_text())
    train_pairs = len(_training_pairs(dataset))
    assert info["steps_per_epoch"] == max(math.ceil(train_pairs / 16), math.ceil(500 / 4)) == 125
