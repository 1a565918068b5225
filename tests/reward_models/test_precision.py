"""The learned reward models in bfloat16 autocast (`compute_dtype`, set from model.precision):
they learn what float32 learns, score as float32 does to bfloat16's precision, keep float32
weights and Adam state, and refuse a dtype they do not support."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actors.messages import CaptionLabel, PairLabel
from reward_models import ClassificationRewardModel, RankingRewardModel
from tests.reward_models.synthetic import keyword_captions

SMALL = dict(embed_dim=16, channels=32, text_dim=64, mlp_sizes=(64,))
KEYWORDS = ["door", "wall", "gold", "kill"]  # helpful (label 1) for index >= 2


def _train_classifier(compute_dtype, train):
    torch.manual_seed(0)  # dropout draws from the global generator
    model = ClassificationRewardModel(
        lr=2e-3,
        batch_size=32,
        steps_per_label_batch=20,
        seed=0,
        compute_dtype=compute_dtype,
        **SMALL,
    )
    labels = [CaptionLabel(c, float(k >= 2)) for c, k in train.items()]
    for start in range(0, len(labels), 100):
        metrics = model.add_labels(labels[start : start + 100])
    return model, metrics


@pytest.fixture(scope="module")
def classifiers():
    """The same classifier trained in float32 and in bfloat16 on 1,000 keyword captions."""
    rng = np.random.default_rng(0)
    train = keyword_captions(rng, KEYWORDS, 1000)
    held_out = keyword_captions(rng, KEYWORDS, 300, exclude=train)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        models = {dtype: _train_classifier(dtype, train) for dtype in (None, torch.bfloat16)}
    finally:
        torch.set_num_threads(threads)
    return models, held_out


def test_bfloat16_classifier_learns_what_float32_learns(classifiers):
    models, held_out = classifiers
    truth = np.array([float(k >= 2) for k in held_out.values()])
    accuracy = {
        dtype: float((model.rewards(list(held_out)) == truth).mean())
        for dtype, (model, _) in models.items()
    }
    assert accuracy[torch.bfloat16] >= 0.9, accuracy
    assert accuracy[torch.bfloat16] >= accuracy[None] - 0.05, accuracy
    assert models[torch.bfloat16][1]["reward_model/gradient_steps"] == 200


def test_bfloat16_keeps_float32_weights_and_adam_state(classifiers):
    model, _ = classifiers[0][torch.bfloat16]
    assert {p.dtype for p in model.net.parameters()} == {torch.float32}
    moments = [s["exp_avg"] for s in model.optimizer.state.values()]
    assert moments and {m.dtype for m in moments} == {torch.float32}


def test_bfloat16_scores_agree_with_float32_for_the_same_weights(classifiers):
    """The float32-trained weights scored both ways: P(helpful) within bfloat16's precision."""
    models, held_out = classifiers
    model, _ = models[None]
    captions = list(held_out)
    exact = model.probabilities(captions)
    model.compute_dtype = torch.bfloat16
    try:
        approx = model.probabilities(captions)
    finally:
        model.compute_dtype = None
    assert approx.dtype == torch.float32
    assert torch.allclose(approx, exact, atol=0.03), (approx - exact).abs().max()
    assert not torch.equal(approx, exact)  # the autocast really ran


def test_bfloat16_ranking_model_learns_the_order():
    rng = np.random.default_rng(1)
    captions = keyword_captions(rng, KEYWORDS, 400)
    items = list(captions.items())
    pairs = [
        PairLabel(a, b, 1.0 if ka > kb else 0.0 if ka < kb else 0.5)
        for (a, ka), (b, kb) in zip(items[::2], items[1::2], strict=True)
    ]
    torch.manual_seed(0)
    model = RankingRewardModel(
        lr=2e-3,
        batch_size=32,
        steps_per_label_batch=40,
        seed=0,
        compute_dtype=torch.bfloat16,
        normalize=False,
        embed_dim=16,
        channels=32,
        text_dim=64,
        head_sizes=(64,),
    )
    for start in range(0, len(pairs), 100):
        model.add_labels(pairs[start : start + 100])
    scores = model.rewards([c for c, _ in items])
    keys = np.array([k for _, k in items])
    assert scores[keys == 3].mean() > scores[keys == 0].mean()


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, "bfloat16"])
def test_unsupported_compute_dtype_is_refused(dtype):
    with pytest.raises(ValueError, match="compute_dtype"):
        ClassificationRewardModel(compute_dtype=dtype, **SMALL)
