"""Collating fragments: arrays side by side, caption tables merged without changing meaning."""

import numpy as np
import pytest

from actors.messages import Fragment
from learner.batch import collate


def _fragment(captions, caption_ids, version, envs=2, steps=3):
    return Fragment(
        obs={"vector": np.random.rand(steps + 1, envs, 4).astype(np.float32)},
        actions=np.zeros((steps, envs), np.int64),
        logp=np.zeros((steps, envs), np.float32),
        values=np.zeros((steps, envs), np.float32),
        rewards=np.random.rand(steps, envs).astype(np.float32),
        terminated=np.zeros((steps, envs), bool),
        truncated=np.zeros((steps, envs), bool),
        final_values=np.zeros((steps, envs), np.float32),
        caption_ids=np.asarray(caption_ids, np.int32),
        caption_counts=np.ones((steps, envs), np.int32),
        captions=tuple(captions),
        initial_state=np.zeros((envs, 0), np.float32),
        policy_version=version,
    )


def test_collate_merges_caption_tables_and_keeps_meaning():
    a = _fragment(["door", "gold"], [[0, 1], [1, -1], [0, 0]], version=3)
    b = _fragment(["gold", "kill"], [[1, 1], [0, -1], [-1, 0]], version=5)
    batch = collate([a, b])
    assert batch.actions.shape == (3, 4)
    assert batch.obs["vector"].shape == (4, 4, 4)
    np.testing.assert_array_equal(batch.rewards[:, 2:], b.rewards)
    for fragment, cols in ((a, slice(0, 2)), (b, slice(2, 4))):
        original = [
            [fragment.captions[i] if i >= 0 else None for i in row] for row in fragment.caption_ids
        ]
        merged = [
            [batch.captions[i] if i >= 0 else None for i in row]
            for row in batch.caption_ids[:, cols]
        ]
        assert merged == original
    assert sorted(batch.captions) == ["door", "gold", "kill"]
    np.testing.assert_array_equal(batch.policy_versions, [3, 3, 5, 5])


def test_collate_refuses_fragments_of_different_lengths():
    a = _fragment(["door"], [[0, 0]] * 3, version=0)
    b = _fragment(["door"], [[0, 0]] * 4, version=0, steps=4)
    with pytest.raises(ValueError, match=r"different unroll lengths \[3, 4\]"):
        collate([a, b])
