"""Tests for the durable label store: round trips, isolation, crash durability, concurrency,
summaries, exports and clear errors on unusable files."""

from __future__ import annotations

import csv
import json
import multiprocessing as mp
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from actors.messages import CaptionLabel, PairLabel
from annotator.label_store import LabelStore, LabelStoreError, StoreSummary, open_readonly

MODEL, PROMPT = "llama-3-70b", "v1"


def _store(path: Path, model: str = MODEL, prompt: str = PROMPT) -> LabelStore:
    return LabelStore(path, model_id=model, prompt_version=prompt)


def _rows(path: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


def test_round_trip_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "labels.sqlite"
    with _store(path) as store:
        store.put_captions(
            [CaptionLabel("You find a hidden door.", 1.0), CaptionLabel("It's a wall.", 0.0)],
            raw_answers=["The door helps. Answer: yes", None],
        )
        store.put_pairs([PairLabel("You kill the newt!", "It's a wall.", 1.0)])
    with _store(path) as store:
        assert store.caption_labels() == {"You find a hidden door.": 1.0, "It's a wall.": 0.0}
        assert store.pair_labels() == [PairLabel("You kill the newt!", "It's a wall.", 1.0)]
    raws = _rows(path, "SELECT caption, raw_answer FROM caption_labels ORDER BY caption")
    assert raws == [
        ("It's a wall.", None),
        ("You find a hidden door.", "The door helps. Answer: yes"),
    ]


def test_reput_updates_value_and_raw_answer_keeps_created_at(tmp_path: Path) -> None:
    path = tmp_path / "labels.sqlite"
    with _store(path) as store:
        store.put_captions([CaptionLabel("a", 0.0)], raw_answers=["no"])
        store.put_pairs([PairLabel("a", "b", 0.0)])
        time.sleep(0.01)
        store.put_captions([CaptionLabel("a", 0.75)], raw_answers=["mostly yes"])
        store.put_pairs([PairLabel("a", "b", 0.5), PairLabel("b", "a", 0.5)])
        assert store.caption_labels() == {"a": 0.75}
        assert store.pair_labels() == [PairLabel("a", "b", 0.5), PairLabel("b", "a", 0.5)]
    [(raw, created, updated)] = _rows(
        path, "SELECT raw_answer, created_at, updated_at FROM caption_labels"
    )
    assert raw == "mostly yes" and updated > created


def test_invalid_values_are_rejected_and_nothing_of_the_batch_is_stored(tmp_path: Path) -> None:
    with _store(tmp_path / "labels.sqlite") as store:
        for bad in (1.5, -0.1, float("nan")):
            with pytest.raises(ValueError, match="expected a value in"):
                store.put_captions([CaptionLabel("good", 1.0), CaptionLabel("bad", bad)])
        with pytest.raises(ValueError, match="2 raw answers for 1 labels"):
            store.put_captions([CaptionLabel("good", 1.0)], raw_answers=["a", "b"])
        with pytest.raises(ValueError, match="expected a value in"):
            store.put_pairs([PairLabel("a", "b", 2.0)])
        with pytest.raises(ValueError, match="integer >= 0"):
            store.record_sightings({"good": -1})
        with pytest.raises(ValueError, match="integer >= 0"):
            store.record_invalid(-2)
        assert store.caption_labels() == {} and store.pair_labels() == []
        assert store.summary().captions_seen == 0 and store.summary().invalid_answers == 0


def test_groups_are_isolated_by_model_id_and_prompt_version_across_runs(tmp_path: Path) -> None:
    path = tmp_path / "shared" / "labels.sqlite"  # parent directory created on demand
    with _store(path) as run1:
        run1.put_captions([CaptionLabel("You see here a scroll.", 1.0)])
        run1.put_pairs([PairLabel("x", "y", 1.0)])
        run1.record_sightings({"You see here a scroll.": 3})
        run1.record_invalid(2)
    with _store(path) as run2:
        assert run2.caption_labels() == {"You see here a scroll.": 1.0}
        assert run2.summary().invalid_answers == 2
    for model, prompt in [(MODEL, "v2"), ("qwen-2.5-7b", PROMPT)]:
        with _store(path, model, prompt) as other:
            assert other.caption_labels() == {} and other.pair_labels() == []
            summary = other.summary()
            assert (summary.captions_seen, summary.invalid_answers) == (0, 0)
            other.put_captions([CaptionLabel("You see here a scroll.", 0.0)])
    with _store(path) as run3:
        assert run3.caption_labels() == {"You see here a scroll.": 1.0}


def _put_then_sigkill(path: str) -> None:
    store = _store(Path(path))
    store.put_captions([CaptionLabel(f"caption {i}", i % 2) for i in range(50)])
    store.put_pairs([PairLabel("caption 1", "caption 2", 1.0)])
    store.record_sightings({"caption 1": 7})
    os.kill(os.getpid(), signal.SIGKILL)  # no close, no atexit, no checkpoint


def test_labels_survive_sigkill_right_after_put_returns(tmp_path: Path) -> None:
    path = tmp_path / "labels.sqlite"
    child = mp.get_context("spawn").Process(target=_put_then_sigkill, args=(str(path),))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == -signal.SIGKILL
    assert Path(f"{path}-wal").exists()  # the process died holding the store open
    with _store(path) as store:
        assert store.caption_labels() == {f"caption {i}": float(i % 2) for i in range(50)}
        assert store.pair_labels() == [PairLabel("caption 1", "caption 2", 1.0)]
        assert store.summary().top_captions == (("caption 1", 7, 1.0),)


BATCHES = 15  # per writer; each batch is five write transactions


def _concurrent_writer(path: str, worker: int, start: mp.synchronize.Event) -> None:
    start.wait(timeout=60)
    store = _store(Path(path))  # both processes may create the fresh file at the same moment
    for batch in range(BATCHES):
        captions = [f"w{worker} b{batch} #{i}" for i in range(5)]
        store.put_captions([CaptionLabel(c, 1.0) for c in captions], raw_answers=["yes"] * 5)
        store.put_captions([CaptionLabel("shared caption", worker / 2)])
        store.record_sightings({"shared caption": 1, captions[0]: 2})
        store.record_invalid(1)
        store.record_requests(6)
    store.close()


def test_two_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "labels.sqlite"
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    workers = [ctx.Process(target=_concurrent_writer, args=(str(path), w, start)) for w in (0, 1)]
    for w in workers:
        w.start()
    start.set()
    for w in workers:
        w.join(timeout=300)
    assert [w.exitcode for w in workers] == [0, 0]
    with _store(path) as store:
        labels = store.caption_labels()
        summary = store.summary(top=1)
    assert len(labels) == 2 * BATCHES * 5 + 1
    assert all(
        labels[f"w{w} b{b} #{i}"] == 1.0 for w in (0, 1) for b in range(BATCHES) for i in range(5)
    )
    assert labels["shared caption"] in (0.0, 0.5)
    assert summary.top_captions == (("shared caption", 2 * BATCHES, labels["shared caption"]),)
    assert (summary.invalid_answers, summary.requests) == (2 * BATCHES, 12 * BATCHES)
    assert summary.captions_seen == 2 * BATCHES + 1


def test_opening_a_new_file_another_process_is_creating_waits_for_it(tmp_path: Path) -> None:
    # Switching a file to WAL needs its exclusive lock, and SQLite gives up at once, without the
    # busy timeout, where another connection holds the write lock: so two processes creating
    # one store at once failed 1 open in 360 with "database is locked".
    path = tmp_path / "labels.sqlite"
    creator = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    creator.execute("BEGIN IMMEDIATE")  # the new file's write lock, as a creating process holds
    timer = threading.Timer(1.5, creator.execute, args=("COMMIT",))
    start = time.monotonic()
    timer.start()
    try:
        with _store(path) as store:  # waits for the creator, within the busy timeout
            assert time.monotonic() - start >= 1.5  # it opened only once the lock was free
            store.put_captions([CaptionLabel("opened", 1.0)])
            assert store.caption_labels() == {"opened": 1.0}
    finally:
        timer.join()
        creator.close()


def test_sightings_accumulate_across_calls_and_reopens(tmp_path: Path) -> None:
    path = tmp_path / "labels.sqlite"
    with _store(path) as store:
        store.record_sightings({"a": 2, "b": 1})
        store.record_sightings({"a": 3, "c": 0})  # zero counts record nothing
    with _store(path) as store:
        store.record_sightings({"b": 4})
        assert store.summary().top_captions == (("a", 5, None), ("b", 5, None))  # ties: by caption
        assert store.summary().captions_seen == 2


def test_summary_numbers(tmp_path: Path) -> None:
    with _store(tmp_path / "labels.sqlite") as store:
        # 0.5 is not positive (value > 0.5): 2 positives of 4
        store.put_captions([CaptionLabel(c, v) for c, v in [("a", 1), ("b", 0), ("c", 0.7)]])
        store.put_captions([CaptionLabel("d", 0.5)])
        store.put_pairs([PairLabel("a", "b", 1.0), PairLabel("c", "d", 0.5)])
        store.record_invalid(1)
        store.record_invalid(2)
        store.record_requests(10)
        store.record_sightings({"a": 5, "x": 7, "b": 5})
        summary = store.summary(top=2)
        assert store.summary().top_captions == (("x", 7, None), ("a", 5, 1.0), ("b", 5, 0.0))
    assert summary == StoreSummary(
        model_id=MODEL,
        prompt_version=PROMPT,
        caption_labels=4,
        positive_fraction=0.5,
        pair_labels=2,
        invalid_answers=3,
        requests=10,
        captions_seen=3,
        top_captions=(("x", 7, None), ("a", 5, 1.0)),
    )


def test_summary_of_an_empty_group(tmp_path: Path) -> None:
    with _store(tmp_path / "labels.sqlite") as store:
        summary = store.summary()
    assert (summary.caption_labels, summary.positive_fraction, summary.top_captions) == (0, 0.0, ())


AWKWARD = ["plain", "a, comma", 'say "hello"', "two\nlines", "semi;colon 'q' \r\n end", "üñí €"]


def test_export_csv_round_trips_awkward_captions(tmp_path: Path) -> None:
    with _store(tmp_path / "labels.sqlite") as store:
        store.put_captions(
            [CaptionLabel(c, i / 10) for i, c in enumerate(AWKWARD)],
            raw_answers=[f"answer, {c!r}\n" for c in AWKWARD],
        )
        store.record_sightings({"a, comma": 4})
        _store(tmp_path / "labels.sqlite", prompt="v2").put_captions([CaptionLabel("other", 1.0)])
        assert store.export(tmp_path / "labels.csv", "csv") == len(AWKWARD)
    with open(tmp_path / "labels.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(AWKWARD)
    assert [r["caption"] for r in rows] == AWKWARD
    assert [float(r["value"]) for r in rows] == [i / 10 for i in range(len(AWKWARD))]
    assert [r["raw_answer"] for r in rows] == [f"answer, {c!r}\n" for c in AWKWARD]
    assert {r["model_id"] for r in rows} == {MODEL} and {r["prompt_version"] for r in rows} == {
        PROMPT
    }
    assert [int(r["seen"]) for r in rows] == [0, 4, 0, 0, 0, 0]


def test_export_jsonl_captions_and_pairs(tmp_path: Path) -> None:
    with _store(tmp_path / "labels.sqlite") as store:
        store.put_captions([CaptionLabel(c, 1.0) for c in AWKWARD])
        store.put_pairs([PairLabel(AWKWARD[1], AWKWARD[3], 0.5)], raw_answers=["tie"])
        assert store.export(tmp_path / "captions.jsonl", "jsonl") == len(AWKWARD)
        assert store.export(tmp_path / "pairs.jsonl", "jsonl", what="pairs") == 1
        with pytest.raises(ValueError, match="fmt csv|jsonl"):
            store.export(tmp_path / "labels.xml", "xml")  # type: ignore[arg-type]
    lines = (tmp_path / "captions.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["caption"] for line in lines] == AWKWARD
    [pair] = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert (pair["first"], pair["second"], pair["preference"], pair["raw_answer"]) == (
        AWKWARD[1],
        AWKWARD[3],
        0.5,
        "tie",
    )
    assert not (tmp_path / "labels.xml").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []


def test_corrupt_file_raises_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "labels.sqlite"
    path.write_bytes(b"this is not an sqlite database, just some text\n" * 100)
    for opener in (lambda: _store(path), lambda: open_readonly(path)):
        with pytest.raises(LabelStoreError) as info:
            opener()
        message = str(info.value)
        assert str(path) in message and "Move it aside" in message and "mv " in message
    assert path.read_bytes().startswith(b"this is not an sqlite")  # left untouched


def test_foreign_sqlite_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE caption_labels (x)")
    with pytest.raises(LabelStoreError, match="not a rogueray label store.*move it aside"):
        _store(path)


def test_open_readonly_lists_groups_and_summaries(tmp_path: Path) -> None:
    path = tmp_path / "labels.sqlite"
    with pytest.raises(LabelStoreError, match="missing"):
        open_readonly(path)
    assert not path.exists()
    writer = _store(path)
    writer.put_captions([CaptionLabel("a", 1.0), CaptionLabel("b", 0.0)])
    writer.record_sightings({"a": 3})
    with _store(path, "m2", "v9") as other:
        other.put_pairs([PairLabel("a", "b", 1.0)])
        other.record_invalid(4)
    with open_readonly(path) as inspector:  # while a writer still holds the file open
        assert inspector.groups() == [(MODEL, PROMPT, 2, 0), ("m2", "v9", 0, 1)]
        first, second = inspector.summaries(top=5)
        assert (first.caption_labels, first.positive_fraction, first.top_captions) == (
            2,
            0.5,
            (("a", 3, 1.0),),
        )
        assert (second.pair_labels, second.invalid_answers) == (1, 4)
        assert inspector.group_summary("nobody", "v0").caption_labels == 0
        assert inspector.export_group(("m2", "v9"), tmp_path / "p.csv", "csv", "pairs") == 1
    writer.close()
    with open_readonly(path) as inspector:  # after every writer is gone
        assert [g[:2] for g in inspector.groups()] == [(MODEL, PROMPT), ("m2", "v9")]
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            inspector._conn.execute("DELETE FROM caption_labels")


def test_verify_store_names_what_is_wrong(tmp_path: Path) -> None:
    from annotator.label_store import verify_store

    path = tmp_path / "deep" / "labels.sqlite"
    verify_store(path)  # missing: it will be created
    store = LabelStore(path, model_id="m", prompt_version="v1")
    store.put_captions([CaptionLabel("You see here a dagger.", 1.0)])
    store.close()
    verify_store(path)  # a good store
    before = path.read_bytes()
    verify_store(path)
    assert path.read_bytes() == before  # verifying writes nothing

    empty = tmp_path / "empty.sqlite"
    empty.write_bytes(b"")
    verify_store(empty)  # an empty file gets the schema when opened

    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(os.urandom(32 * 1024))
    with pytest.raises(LabelStoreError) as info:
        verify_store(garbage)
    assert str(garbage) in str(info.value) and "Move it aside" in str(info.value)

    # A real store whose pages were overwritten after its header: quick_check finds it.
    damaged = tmp_path / "damaged.sqlite"
    store = LabelStore(damaged, model_id="m", prompt_version="v1")
    store.put_captions([CaptionLabel(f"caption {i} " + "x" * 200, 0.5) for i in range(2000)])
    store.close()
    data = bytearray(damaged.read_bytes())
    data[8192 : 8192 + 4096 * 20] = os.urandom(4096 * 20)
    damaged.write_bytes(bytes(data))
    for side in ("-wal", "-shm"):
        Path(f"{damaged}{side}").unlink(missing_ok=True)
    with pytest.raises(LabelStoreError, match="not a readable rogueray label store"):
        verify_store(damaged)

    folder = tmp_path / "folder.sqlite"
    folder.mkdir()
    with pytest.raises(LabelStoreError, match="is a folder"):
        verify_store(folder)

    foreign = tmp_path / "foreign.sqlite"
    sqlite3.connect(foreign).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(LabelStoreError, match="not a rogueray label store"):
        verify_store(foreign)
