"""`rogueray labels RUN_DIR`: what the LLM said, read from a run's label store (counts, positive
fraction, most frequent captions with their labels) and exported to CSV or JSONL."""

from __future__ import annotations

import argparse
from pathlib import Path

from annotator.label_store import LabelStoreError, open_readonly
from cluster.console import counted

SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite 3 database file


def add_parser(sub) -> None:
    labels = sub.add_parser("labels", help="inspect or export the LLM labels of a run")
    labels.add_argument("target", help="a run directory or a labels.sqlite file")
    labels.add_argument("--top", type=int, default=20, help="most frequent captions to show")
    labels.add_argument("--export", metavar="FILE", help="write labels to FILE (.csv or .jsonl)")


def store_path(target: str) -> Path:
    path = Path(target)
    given_file = not path.is_dir()
    if not given_file:
        path = path / "labels.sqlite"
    if not path.is_file():
        raise FileNotFoundError(
            f"no label store at {str(path)!r}: give a run directory of a run with a reward model "
            "(it holds labels.sqlite) or the path of a label store"
        )
    if given_file and not _sqlite_or_unreadable(path):  # a mistyped path: leave the file be
        raise ValueError(
            f"{str(path)!r} is not a label store (not an SQLite file): give a run directory (it "
            "holds labels.sqlite) or the path of a label store"
        )
    return path


def _sqlite_or_unreadable(path: Path) -> bool:
    """False for a readable file that is not SQLite (empty: a store not written yet); a file that
    cannot be read is left to the store's own error."""
    try:
        with path.open("rb") as f:
            head = f.read(len(SQLITE_HEADER))
    except OSError:
        return True
    return not head or head == SQLITE_HEADER


def run(args: argparse.Namespace) -> int:
    path = store_path(args.target)
    if args.export and Path(args.export).suffix not in (".csv", ".jsonl"):
        raise ValueError(f"--export {args.export!r}: the file name must end in .csv or .jsonl")
    with open_readonly(path) as store:
        summaries = store.summaries(args.top)
        if not summaries:
            print(f"{path}: no labels yet")
        for s in summaries:
            print(f"model {s.model_id} | prompt {s.prompt_version}")
            print(
                f"  caption labels {s.caption_labels:,d} (positive {100 * s.positive_fraction:.1f}%) | "
                f"pair labels {s.pair_labels:,d} | invalid answers {s.invalid_answers:,d} | "
                f"distinct captions seen {s.captions_seen:,d}"
            )
            if s.top_captions:
                print(f"  {'seen':>9}  {'label':>7}  caption (most seen first; label 1: helpful)")
            for caption, seen, label in s.top_captions:
                shown = "pending" if label is None else f"{label:.2f}"
                print(f"  {seen:>9,d}  {shown:>7}  {caption or '(no message)'}")
        if args.export:
            fmt = Path(args.export).suffix[1:]
            total = 0
            for s in summaries:
                what = "pairs" if s.pair_labels and not s.caption_labels else "captions"
                target = Path(args.export)
                if len(summaries) > 1:  # one file per group
                    stem = f"{target.stem}-{s.prompt_version}"
                    target = target.with_name(stem + target.suffix)
                total += store.export_group((s.model_id, s.prompt_version), target, fmt, what)
            print(f"exported {counted(total, 'label')} to {args.export}")
    return 0


__all__ = ["LabelStoreError", "add_parser", "run"]
