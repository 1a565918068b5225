"""The NetHack encoder's glyph crop against a slow reference: a k x k window of the map centred
on the hero (blstats x, y), MAX_GLYPH outside the map, positions off the map clamped onto it;
and the trivial UniformPolicy's outputs."""

import numpy as np
import pytest
import torch

from learner.models import BLSTATS_X, BLSTATS_Y, MAX_GLYPH, NetHackEncoder, UniformPolicy


def _reference_crop(glyphs: np.ndarray, x: int, y: int, k: int) -> np.ndarray:
    height, width = glyphs.shape
    x, y, r = min(max(x, 0), width - 1), min(max(y, 0), height - 1), k // 2
    out = np.full((k, k), MAX_GLYPH, np.int64)
    for i in range(k):
        for j in range(k):
            row, col = y - r + i, x - r + j
            if 0 <= row < height and 0 <= col < width:
                out[i, j] = glyphs[row, col]
    return out


@pytest.mark.parametrize("dtype", [torch.int16, torch.int64])
def test_the_crop_matches_the_reference_at_the_edges_and_off_the_map(dtype):
    rng = np.random.default_rng(0)
    encoder = NetHackEncoder(hidden_size=16, crop_size=9)
    maps = rng.integers(0, MAX_GLYPH, (12, 21, 79)).astype(np.int16)
    # corners, edges, the middle, and positions NLE can report off the map
    xs = np.array([0, 78, 0, 78, 40, 3, 75, 40, -2, 85, 40, 10])
    ys = np.array([0, 0, 20, 20, 10, 10, 10, 1, 5, 5, 30, -1])
    crop = encoder._crop(torch.from_numpy(maps).to(dtype), torch.from_numpy(xs),
                         torch.from_numpy(ys))  # fmt: skip
    expected = [_reference_crop(m, x, y, 9) for m, x, y in zip(maps, xs, ys, strict=True)]
    assert crop.shape == (12, 9, 9) and crop.dtype == dtype
    np.testing.assert_array_equal(crop.long().numpy(), np.stack(expected))


def test_the_encoder_reads_int16_maps_as_nle_gives_them():
    rng = np.random.default_rng(1)
    blstats = np.zeros((4, 27), np.int64)
    blstats[:, BLSTATS_X], blstats[:, BLSTATS_Y] = [0, 78, 40, 5], [0, 20, 10, 3]
    obs = {
        "glyphs": torch.from_numpy(rng.integers(0, MAX_GLYPH, (4, 21, 79)).astype(np.int16)),
        "blstats": torch.from_numpy(blstats),
        "message": torch.from_numpy(rng.integers(0, 256, (4, 256)).astype(np.uint8)),
    }
    encoder = NetHackEncoder(hidden_size=16)
    as_int64 = {**obs, "glyphs": obs["glyphs"].long()}
    with torch.no_grad():
        out = encoder(obs)
        assert out.shape == (4, 16)
        torch.testing.assert_close(out, encoder(as_int64), rtol=0, atol=0)


def test_uniform_policy_gives_zeros_that_cannot_be_written():
    """The trivial policy returns the same zeros for a repeated [T, B]; writing into them
    raises rather than changing every later call's output."""
    policy = UniformPolicy(5)
    state, starts = policy.initial_state(3), torch.zeros(2, 3, dtype=torch.bool)
    logits, values, same_state = policy({}, state, starts)
    assert logits.shape == (2, 3, 5) and values.shape == (2, 3) and same_state is state
    assert not logits.any() and not values.any()
    assert policy({}, state, starts)[0] is logits
    with pytest.raises(RuntimeError):
        logits.add_(1.0)
    assert policy({}, state, torch.zeros(1, 4, dtype=torch.bool))[0].shape == (1, 4, 5)
