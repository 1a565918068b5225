"""Captions as fixed-length byte arrays, the input of the char-CNN reward models: latin-1 bytes,
truncated or zero-padded to 256 (NLE's message buffer; ONI's utils/decode.py)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CAPTION_LENGTH = 256
"""Bytes per encoded caption; byte 0 is padding."""


def encode_captions(captions: Sequence[str], length: int = CAPTION_LENGTH) -> np.ndarray:
    """Encode captions as latin-1 bytes, truncated or zero-padded to `length`.

    Characters outside latin-1 become "?" (NLE messages are ASCII; other environments may not be).

    Returns:
        int64 [N, length]; row i holds the bytes of captions[i], then zeros.
    """
    out = np.zeros((len(captions), length), dtype=np.uint8)
    for row, caption in enumerate(captions):
        data = caption.encode("latin-1", errors="replace")[:length]
        out[row, : len(data)] = np.frombuffer(data, dtype=np.uint8)
    return out.astype(np.int64)


def decode_caption(encoded: np.ndarray) -> str:
    """Inverse of `encode_captions` for one row [length]: drop the zero bytes, decode latin-1."""
    data = np.asarray(encoded, dtype=np.uint8)
    return data[data != 0].tobytes().decode("latin-1")
