"""Caption decoding (exactly ONI's string) and the optional normalisation."""

import numpy as np

from actors.captions import decode_message, normalize_caption


def _message(raw: bytes) -> np.ndarray:
    buf = np.zeros(256, np.uint8)
    buf[: len(raw)] = np.frombuffer(raw, np.uint8)
    return buf


def test_decode_drops_padding_and_keeps_the_rest_verbatim():
    text = "What do you want to eat? [fghi or ?*] "
    assert decode_message(_message(text.encode())) == text  # trailing space survives


def test_decode_drops_interior_zero_bytes():
    assert decode_message(_message(b"You see\0 here.")) == "You see here."


def test_decode_is_latin1():
    assert decode_message(_message(b"caf\xe9 \xff")) == "caf\xe9 \xff"


def test_decode_empty_message():
    assert decode_message(np.zeros(256, np.uint8)) == ""


def test_decode_full_length_message_without_terminator():
    raw = b"x" * 256
    assert decode_message(np.frombuffer(raw, np.uint8)) == "x" * 256


def test_normalize_folds_digit_runs_and_whitespace():
    assert normalize_caption("  You find 5 gold pieces.\t 17 left  ") == (
        "You find N gold pieces. N left"
    )
    assert normalize_caption("5 gold pieces.") == normalize_caption("17 gold pieces.")


def test_normalize_keeps_case_and_punctuation():
    assert normalize_caption("Hello, World!") == "Hello, World!"
