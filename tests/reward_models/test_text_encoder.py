"""Caption byte encoding: latin-1, zero padding, truncation, round trip."""

from __future__ import annotations

import numpy as np

from reward_models import CAPTION_LENGTH, decode_caption, encode_captions


def test_bytes_then_zero_padding():
    encoded = encode_captions(["ab", ""])
    assert encoded.shape == (2, CAPTION_LENGTH) and encoded.dtype == np.int64
    assert encoded[0, :3].tolist() == [97, 98, 0]
    assert not encoded[0, 2:].any() and not encoded[1].any()


def test_truncation_latin1_and_replacement():
    encoded = encode_captions(["x" * 300, "caf\u00e9 \u20ac"])
    assert (encoded[0] == ord("x")).all()
    assert encoded[1, :6].tolist() == [99, 97, 102, 0xE9, 32, ord("?")]


def test_round_trip():
    caption = "You see here 5 gold pieces."
    assert decode_caption(encode_captions([caption])[0]) == caption
