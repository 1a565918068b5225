"""Argument types shared by the CLI's commands, checked when the command line is read, before any
model loads or Ray starts: argparse turns their ArgumentTypeError into one line naming the
option ("argument --limit: ...") and exit 2."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path


def _whole_number(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be {least} or more, got {value}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1."""
    return _whole_number(text, 1)


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    return _whole_number(text, 0)


def output_file(text: str) -> Path:
    """A file the command will write at its end: not a folder, in a folder that exists and can be
    written, so that a long run never fails at its last step."""
    path = Path(text).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file name inside it")
    folder = path.parent
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"folder {folder} does not exist; create it first")
    _check_writable(folder, f"folder {folder}")
    return path


def output_folder(text: str) -> Path:
    """A folder a command writes into (made when missing): not a file, and in a place that can
    be written, so that a long command never fails at its end."""
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file; give a folder")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise argparse.ArgumentTypeError(f"{existing} is a file, so {text} cannot be made")
    where = f"folder {text}" if existing == path else f"{existing}, where {text} would be made,"
    _check_writable(existing, where)
    return path


def _check_writable(folder: Path, where: str) -> None:
    """ArgumentTypeError unless a file can be made in `folder` (`where` names it in the error)."""
    if not os.access(folder, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{where} is not writable")
    try:  # a file made and removed at once: what os.access misses (root, a read-only mount)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"{where} cannot be written ({exc.strerror})") from None
