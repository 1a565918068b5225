"""NetHack ttyrecs: NLE's ttyrec3 written as a classic ttyrec (for ttyrec players), and every
frame of an NLE ttyrec read through NLE's own converter."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def classic_ttyrec(src: str | Path, dst: str | Path) -> int:
    """Write NLE's ttyrec3 (bz2, 13-byte headers with a channel: 0 output, 1 keys, 2 scores) as a
    classic ttyrec (12-byte headers, output only), which ttyrec players (ttyplay, ipbt,
    `python -m nle.scripts.ttyplay -1`) play; returns the frames written."""
    import bz2
    import struct

    frames = 0
    with bz2.open(src, "rb") as fin, open(dst, "wb") as fout:
        while header := fin.read(13):
            if len(header) < 13:
                raise ValueError(f"{src}: truncated ttyrec header")
            sec, usec, length, channel = struct.unpack("<iiiB", header)
            data = fin.read(length)
            if channel == 0:
                fout.write(struct.pack("<iii", sec, usec, len(data)) + data)
                frames += 1
    return frames


def read_ttyrec(path: str | Path, rows: int = 24, cols: int = 80, chunk: int = 256):
    """Every frame of an NLE ttyrec through NLE's own reader (nle._pyconverter.Converter, the
    one nle.dataset uses): {"chars": [N, rows, cols] uint8, "inputs": [N] uint8, ...}."""
    from nle import _pyconverter, nethack

    converter = _pyconverter.Converter(rows, cols, nethack.TTYREC_VERSION)
    converter.load_ttyrec(str(path))
    parts = {k: [] for k in ("chars", "colors", "cursors", "timestamps", "inputs", "scores")}
    while True:
        buf = {
            "chars": np.zeros((chunk, rows, cols), np.uint8),
            "colors": np.zeros((chunk, rows, cols), np.int8),
            "cursors": np.zeros((chunk, 2), np.int16),
            "timestamps": np.zeros(chunk, np.int64),
            "inputs": np.zeros(chunk, np.uint8),
            "scores": np.zeros(chunk, np.int32),
        }
        remaining = converter.convert(
            buf["chars"], buf["colors"], buf["cursors"], buf["timestamps"], buf["inputs"],
            buf["scores"],
        )  # fmt: skip
        filled = chunk - remaining
        for k, v in buf.items():
            parts[k].append(v[:filled])
        if remaining:
            break
    return {k: np.concatenate(v) for k, v in parts.items()}
