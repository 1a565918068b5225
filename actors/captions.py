"""Captions: the text an environment step emits. For NetHack this is NLE's `message` field,
decoded exactly as ONI does, since rewards and LLM labels are keyed on that exact string."""

from __future__ import annotations

import re

import numpy as np

_DIGITS = re.compile(r"\d+")


def decode_message(message: np.ndarray) -> str:
    """NLE's `message` ([256] uint8, zero-padded) -> str.

    All zero bytes are dropped (not only the padding) and the rest is decoded as latin-1, which
    maps every byte to one character, so decoding never fails. Nothing else is touched: trailing
    spaces, digits and case survive, as in ONI.
    """
    raw = bytes(message).rstrip(b"\0")  # cheap: NLE pads with zeros at the end
    if b"\0" in raw:
        raw = raw.replace(b"\0", b"")
    return raw.decode("latin-1")


def normalize_caption(text: str) -> str:
    """Optional folding so that near-identical captions share a key.

    Each run of digits becomes "N" ("5 gold pieces." and "17 gold pieces." -> "N gold pieces."),
    runs of whitespace collapse to one space, and the ends are stripped. Off by default: ONI keys
    on the raw string.
    """
    return " ".join(_DIGITS.sub("N", text).split())
