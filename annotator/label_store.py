"""Durable SQLite store of LLM labels keyed by model id + prompt version: nothing an LLM said is
lost or asked twice. Processes may share one file (WAL mode, busy timeout, IMMEDIATE writes)."""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from actors.messages import CaptionLabel, PairLabel

APPLICATION = "rogueray-label-store"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 60.0
_GROUP = "model_id TEXT NOT NULL, prompt_version TEXT NOT NULL"
_AUDIT = "raw_answer TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL"
_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    f"CREATE TABLE caption_labels ({_GROUP}, caption TEXT NOT NULL, "
    f"value REAL NOT NULL, {_AUDIT}, UNIQUE (model_id, prompt_version, caption))",
    f"CREATE TABLE pair_labels ({_GROUP}, first TEXT NOT NULL, second TEXT NOT NULL,"
    f" preference REAL NOT NULL, {_AUDIT}, UNIQUE (model_id, prompt_version, first, second))",
    f"CREATE TABLE sightings ({_GROUP}, caption TEXT NOT NULL, seen INTEGER NOT NULL,"
    " updated_at REAL NOT NULL, PRIMARY KEY (model_id, prompt_version, caption))",
    f"CREATE TABLE counters ({_GROUP}, name TEXT NOT NULL, value INTEGER NOT NULL,"
    " updated_at REAL NOT NULL, PRIMARY KEY (model_id, prompt_version, name))",
)
_KEY = "model_id = ? AND prompt_version = ?"
_UPSERT = (
    "INSERT INTO {table} (model_id, prompt_version, {keys}, {value}, raw_answer, created_at, "
    "updated_at) VALUES ({marks}) ON CONFLICT (model_id, prompt_version, {keys}) DO UPDATE SET "
    "{value} = excluded.{value}, raw_answer = excluded.raw_answer, updated_at = excluded.updated_at"
)
_ADD = "INSERT INTO {table} VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET {col} = {col} + "
_ADD += "excluded.{col}, updated_at = excluded.updated_at"
_EXPORTS = {
    "captions": "SELECT l.model_id, l.prompt_version, l.caption, l.value, COALESCE(s.seen, 0) AS "
    "seen, l.raw_answer, l.created_at, l.updated_at FROM caption_labels l LEFT JOIN sightings s "
    "USING (model_id, prompt_version, caption) WHERE l.model_id = ? AND l.prompt_version = ? "
    "ORDER BY l.rowid",
    "pairs": "SELECT model_id, prompt_version, first, second, preference, raw_answer, created_at, "
    f"updated_at FROM pair_labels WHERE {_KEY} ORDER BY rowid",
}


class LabelStoreError(RuntimeError):
    """The store file cannot be used; the message names the path and what to do about it."""


@dataclass(frozen=True)
class StoreSummary:
    """Counts for one (model_id, prompt_version) group and the captions agents saw most often."""

    model_id: str
    prompt_version: str
    caption_labels: int
    positive_fraction: float  # share of caption labels with value > 0.5; 0.0 when there are none
    pair_labels: int
    invalid_answers: int
    requests: int
    captions_seen: int  # distinct captions with a recorded sighting
    top_captions: tuple[tuple[str, int, float | None], ...]  # (caption, seen, label or None)


def _error(path: Path, exc: sqlite3.Error) -> LabelStoreError:
    if getattr(exc, "sqlite_errorname", "") in ("SQLITE_NOTADB", "SQLITE_CORRUPT"):
        return LabelStoreError(
            f"{path} is not a readable rogueray label store ({exc}). Move it aside with any "
            f"{path.name}-wal/-shm beside it (e.g. `mv {path} {path}.bad`) to start a new store "
            "there, or configure another label store path."
        )
    return LabelStoreError(f"label store {path}: {exc}")


def _switch_to_wal(conn: sqlite3.Connection) -> None:
    """WAL mode (it persists in the file). The switch needs the file's exclusive lock, and SQLite
    fails it at once, without the busy timeout, while another connection holds the write lock
    (another process creating the same new store): so it is retried until BUSY_TIMEOUT_S."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL").fetchone()
            return
        except sqlite3.OperationalError as exc:
            busy = exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY  # extended codes too
            if not busy or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _checked(x: float, what: object, *, count: bool = False) -> float:
    """x as a probability in [0, 1] (NaN rejected) or, with count=True, as an integer >= 0."""
    if not (x == int(x) >= 0 if count else 0.0 <= float(x) <= 1.0):
        expected = "an integer >= 0" if count else "a value in [0, 1]"
        raise ValueError(f"{what!r}: expected {expected}, got {x!r}")
    return int(x) if count else float(x)


class StoreInspector:
    """Read-only view of a label store file across model ids and prompt versions; thread-safe."""

    def __init__(self, path: str | Path, *, readonly: bool = True) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        if self.path.is_dir() or (readonly and not self.path.is_file()):
            raise LabelStoreError(f"label store {self.path} is missing or not a file")
        if not readonly:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        target = f"{self.path.resolve().as_uri()}?mode=ro" if readonly else str(self.path)
        try:
            kwargs = dict(uri=readonly, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
            self._conn = sqlite3.connect(target, isolation_level=None, **kwargs)
            if not readonly:
                _switch_to_wal(self._conn)
                self._conn.execute("PRAGMA synchronous=FULL")  # commits survive power loss too
            with self._tx("DEFERRED" if readonly else "IMMEDIATE") as c:
                self._open(c)
        except BaseException as exc:
            if hasattr(self, "_conn"):
                self._conn.close()
            if isinstance(exc, sqlite3.Error):
                raise _error(self.path, exc) from exc
            raise

    @contextmanager
    def _tx(self, mode: str = "DEFERRED") -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock up front (waiting up to the busy timeout), so writers never
        # deadlock; DEFERRED gives readers one consistent snapshot.
        with self._lock:
            try:
                self._conn.execute(f"BEGIN {mode}")
                try:
                    yield self._conn
                    self._conn.execute("COMMIT")
                except BaseException:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise _error(self.path, exc) from exc

    def _open(self, c: sqlite3.Connection) -> None:
        has_meta = c.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone()
        meta = dict(c.execute("SELECT key, value FROM meta")) if has_meta else {}
        if meta.get("application") != APPLICATION or int(meta["schema_version"]) > SCHEMA_VERSION:
            what = f"a rogueray label store of schema <= {SCHEMA_VERSION}"
            raise LabelStoreError(f"{self.path} is not {what}; move it aside or use another path")

    def groups(self) -> list[tuple[str, str, int, int]]:
        """(model_id, prompt_version, caption labels, pair labels) for every group in the file."""
        parts = " UNION ALL ".join(
            f"SELECT model_id, prompt_version, {c} AS c, {p} AS p FROM {t} GROUP BY 1, 2"
            for t, c, p in [("caption_labels", "COUNT(*)", 0), ("pair_labels", 0, "COUNT(*)"),
                            ("sightings", 0, 0), ("counters", 0, 0)]
        )  # fmt: skip
        with self._tx() as c:
            sql = f"SELECT model_id, prompt_version, SUM(c), SUM(p) FROM ({parts}) GROUP BY 1, 2"
            return [tuple(row) for row in c.execute(sql + " ORDER BY 1, 2")]

    def summaries(self, top: int = 20) -> list[StoreSummary]:
        return [self.group_summary(model, prompt, top) for model, prompt, *_ in self.groups()]

    def group_summary(self, model_id: str, prompt_version: str, top: int = 20) -> StoreSummary:
        key = (model_id, prompt_version)
        with self._tx() as c:
            sql = "SELECT COUNT(*), COALESCE(SUM(value > 0.5), 0) FROM caption_labels WHERE "
            n, positive = c.execute(sql + _KEY, key).fetchone()
            (pairs,) = c.execute(f"SELECT COUNT(*) FROM pair_labels WHERE {_KEY}", key).fetchone()
            counters = dict(c.execute(f"SELECT name, value FROM counters WHERE {_KEY}", key))
            (seen,) = c.execute(f"SELECT COUNT(*) FROM sightings WHERE {_KEY}", key).fetchone()
            most = c.execute(
                "SELECT s.caption, s.seen, l.value FROM sightings s LEFT JOIN caption_labels l "
                "USING (model_id, prompt_version, caption) WHERE s.model_id = ? AND "
                "s.prompt_version = ? ORDER BY s.seen DESC, s.caption LIMIT ?",
                (*key, top),
            ).fetchall()
        return StoreSummary(
            model_id, prompt_version, n, positive / n if n else 0.0, pairs,
            counters.get("invalid_answers", 0), counters.get("requests", 0), seen, tuple(most),
        )  # fmt: skip

    def export_group(
        self, key: tuple[str, str], path: str | Path, fmt: str, what: str = "captions"
    ) -> int:
        """Write the caption (or pair) labels of group key=(model_id, prompt_version) to `path`
        as csv or jsonl, atomically; returns the number of rows written."""
        if fmt not in ("csv", "jsonl") or what not in _EXPORTS:
            raise ValueError(f"export: fmt csv|jsonl, what captions|pairs; got {fmt!r}, {what!r}")
        with self._tx() as c:
            cursor = c.execute(_EXPORTS[what], key)
            columns, rows = [d[0] for d in cursor.description], cursor.fetchall()
        out = Path(path)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            if fmt == "csv":
                csv.writer(f).writerows([columns, *rows])
            else:
                records = (dict(zip(columns, row, strict=True)) for row in rows)
                f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)  # a reader of `path` never sees a half-written export
        return len(rows)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self):  # noqa: ANN204 - the subclass instance
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class LabelStore(StoreInspector):
    """Read-write view of one (model_id, prompt_version) group of a label store file. Every write
    is one transaction committed (synchronous=FULL) before the method returns. Open one per
    process; never carry one across fork."""

    def __init__(self, path: str | Path, *, model_id: str, prompt_version: str) -> None:
        if not model_id or not prompt_version:
            raise ValueError("model_id and prompt_version must be non-empty strings")
        self.model_id, self.prompt_version = model_id, prompt_version
        self._key = (model_id, prompt_version)
        super().__init__(path, readonly=False)

    def _open(self, c: sqlite3.Connection) -> None:
        if c.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0:
            for statement in _SCHEMA:
                c.execute(statement)
            meta = [("application", APPLICATION), ("schema_version", str(SCHEMA_VERSION))]
            c.executemany("INSERT INTO meta VALUES (?, ?)", meta)
        super()._open(c)

    def put_captions(
        self, labels: Sequence[CaptionLabel], *, raw_answers: Sequence[str | None] | None = None
    ) -> None:
        """Insert or update caption labels, in one transaction committed before returning."""
        rows = [(lab.caption, _checked(lab.value, lab)) for lab in labels]
        self._upsert("caption_labels", "caption", "value", rows, raw_answers)

    def put_pairs(
        self, labels: Sequence[PairLabel], *, raw_answers: Sequence[str | None] | None = None
    ) -> None:
        """Insert or update pair labels; ordered, so (a, b) and (b, a) are distinct keys."""
        rows = [(lab.first, lab.second, _checked(lab.preference, lab)) for lab in labels]
        self._upsert("pair_labels", "first, second", "preference", rows, raw_answers)

    def _upsert(self, table: str, keys: str, value: str, rows: list, raws: Sequence | None) -> None:
        if raws is not None and len(raws) != len(rows):
            raise ValueError(f"{len(raws)} raw answers for {len(rows)} labels")
        raws, now = [None] * len(rows) if raws is None else raws, time.time()
        if rows:
            marks = ", ".join("?" * (len(rows[0]) + 5))
            sql = _UPSERT.format(table=table, keys=keys, value=value, marks=marks)
            with self._tx("IMMEDIATE") as c:
                params = [
                    (*self._key, *r, raw, now, now) for r, raw in zip(rows, raws, strict=True)
                ]
                c.executemany(sql, params)

    def caption_labels(self) -> dict[str, float]:
        with self._tx() as c:
            sql = f"SELECT caption, value FROM caption_labels WHERE {_KEY} ORDER BY rowid"
            return dict(c.execute(sql, self._key))

    def pair_labels(self) -> list[PairLabel]:
        with self._tx() as c:
            sql = f"SELECT first, second, preference FROM pair_labels WHERE {_KEY} ORDER BY rowid"
            return [PairLabel(*row) for row in c.execute(sql, self._key)]

    def record_sightings(self, counts: Mapping[str, int]) -> None:
        """Add to how often agents saw each caption, in one transaction."""
        now = time.time()
        rows = [(*self._key, k, _checked(n, k, count=True), now) for k, n in counts.items()]
        if rows := [row for row in rows if row[3]]:
            with self._tx("IMMEDIATE") as c:
                c.executemany(_ADD.format(table="sightings", col="seen"), rows)

    def record_invalid(self, n: int = 1) -> None:
        """Count answers that could not be parsed into a label (those are never stored)."""
        self._add_counter("invalid_answers", n)

    def record_requests(self, n: int = 1) -> None:
        """Count prompts the LLM answered (readable or not), as the annotator sends them."""
        self._add_counter("requests", n)

    def _add_counter(self, name: str, n: int) -> None:
        row = (*self._key, name, _checked(n, name, count=True), time.time())
        with self._tx("IMMEDIATE") as c:
            c.execute(_ADD.format(table="counters", col="value"), row)

    def summary(self, top: int = 20) -> StoreSummary:
        return self.group_summary(self.model_id, self.prompt_version, top)

    def export(self, path: str | Path, fmt: Literal["csv", "jsonl"], what: str = "captions") -> int:
        return self.export_group(self._key, path, fmt, what)


def verify_store(path: str | Path) -> None:
    """Check, writing nothing, that a run can open `path` as its label store: a file that is
    missing (it is created, so its folder must be creatable and writable) or a rogueray label
    store this user can read and write, that SQLite's quick_check finds intact. Raises
    LabelStoreError naming the file and what to do."""
    path = Path(path)
    other = "or configure another label store path (annotator.label_store)"
    if not path.exists():
        probe = path.parent
        while not probe.exists():
            probe = probe.parent
        if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
            raise LabelStoreError(
                f"label store {path} cannot be created: {probe} is not a writable folder; fix "
                f"its permissions, {other}"
            )
        return
    if path.is_dir():
        raise LabelStoreError(f"label store {path} is a folder, not a file; move it aside, {other}")
    if not os.access(path, os.R_OK | os.W_OK) or not os.access(path.parent, os.W_OK | os.X_OK):
        raise LabelStoreError(
            f"label store {path} cannot be read and written by this user (it and its folder "
            f"need read and write permission, for {path.name}-wal/-shm too); fix the "
            f"permissions (e.g. `chmod u+rw {path}`), {other}"
        )
    if path.stat().st_size == 0:
        return  # an empty file: the run writes the schema into it
    with StoreInspector(path) as store, store._tx() as c:
        try:
            verdict = [row[0] for row in c.execute("PRAGMA quick_check")]
        except sqlite3.DatabaseError as exc:
            raise _error(path, exc) from exc
    if verdict != ["ok"]:
        raise LabelStoreError(
            f"{path} is not a readable rogueray label store (SQLite quick_check: "
            f"{'; '.join(verdict[:3])}). Move it aside with any {path.name}-wal/-shm beside it "
            f"(e.g. `mv {path} {path}.bad`) to start a new store there, {other}."
        )


def open_readonly(path: str | Path) -> StoreInspector:
    """Inspect a label store (e.g. for `rogueray labels RUN_DIR`) without writing to it."""
    return StoreInspector(path)
