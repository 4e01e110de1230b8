"""Loading: a received file (or API batch) becomes source records, exactly once.

The path of one file, each step idempotent:

1. **ledger** — `ingest.file` gets one row per feed and content sha256. The same content
   again is a no-op; a corrected file has new content and updates by natural key.
2. **staging** — the parser's standardised records are COPYed into
   `ingest.stage_record`, rejected rows into `ingest.stage_rejected` (committed, so a
   quality gate in another connection can read them).
3. **gate** — file-level checks (the parser's, and the shrink check of snapshots), then
   the Great Expectations suite on the staged rows (campaign_lib.ingest.quality), then
   one set-based check that the core tables know the file's source systems and activity
   types (in place of per-row foreign keys, migration 0006).
4. **merge** — one transaction upserts the records into `ingest.record` (or, for a
   product feed, the catalogue `core.product` by SKU), moves rejected
   rows to the quarantine, closes the ledger row and empties staging. A crash before it
   leaves the ledger open, and the next attempt starts over; after it, the file is done.

A file that fails a file-level check is quarantined whole: nothing of it is merged, the
ledger says why, and the result has status `quarantined` with that reason, so that the
caller can archive it to failed/ and turn the run red.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from functools import cache, lru_cache
from pathlib import Path

import psycopg2
import psycopg2.errors
from sqlalchemy import TextClause, text
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import IntegrityError

from campaign_lib.errors import ConfigError, FileRejected
from campaign_lib.ingest.quality import check_file
from campaign_lib.ingest.record import RECORD_COLUMNS, RejectedRow, SourceRecord
from campaign_lib.sqlfiles import queries

COPY_BATCH_ROWS = 5_000
_COPY_REJECTED = (
    "copy ingest.stage_rejected (ingest_file_id, line_number, reasons, raw_line, record) from stdin"
)
# One encoder for all (json.dumps with options builds a new one per call: 3-5 µs more);
# its one-shot iterencode is what encode() runs, without encode()'s detours (~1 µs less).
_json_chunks = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).iterencode


def _json_text(value) -> str:
    """The value as compact JSON text, non-ASCII characters as they are."""
    return "".join(_json_chunks(value, True))


_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


@dataclass(frozen=True)
class LoadResult:
    """What loading one file did."""

    ingest_file_id: int
    status: str
    duplicate: bool
    rows_received: int
    rows_loaded: int
    rows_quarantined: int
    records_changed: int
    error: str | None = None
    # Seconds per stage (parse_and_stage, gate, merge), for the ops view and the benchmark.
    seconds: dict[str, float] = field(default_factory=dict)


def file_fingerprint(path: Path) -> tuple[str, int]:
    """sha256 (hex) and size of a local file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest(), path.stat().st_size


def _copy_value(value) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, str):
        return value.translate(_ESCAPES)
    if isinstance(value, dict):
        return _json_text(value).translate(_ESCAPES)
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def _copy_columns(filled: frozenset[str] | None) -> tuple[str, ...]:
    """The record columns a COPY writes: those of `filled` (all when None), in table order."""
    return tuple(name for name in RECORD_COLUMNS if filled is None or name in filled)


def _copy_records(columns: tuple[str, ...]) -> str:
    """The COPY command for staged records of `columns`; the others take their defaults (null)."""
    return f"copy ingest.stage_record ({', '.join(columns)}, feed, ingest_file_id) from stdin"


@lru_cache(maxsize=64)
def _line_function(filled: frozenset[str] | None = None):
    """Compile record -> COPY text line of the columns `_copy_columns(filled)` (without the
    feed and file columns), one expression per column specialised to its declared type,
    with `_copy_value` for anything else.

    `filled` names the only fields the records can hold a value in (a feed's mapping plus
    the fields the parser fills); the other columns are neither read nor written (COPY
    fills them with null). A feed fills 10-25 of the 43 fields. Calling `_copy_value` per
    field cost 17-30 µs per record, more than parsing it.
    """
    # str.translate with this table takes the slow path (~0.6 µs); most values need no
    # escape. isprintable() is False for tab, newline and carriage return (and for other
    # characters translate leaves alone): one scan instead of three.
    text = 'v if v.isprintable() and "\\\\" not in v else v.translate(E)'
    simple = {
        "str": text,
        "int": "str(v)",
        "dt.date": "v.isoformat()",
        "dt.datetime": "v.isoformat()",
    }
    types = {"str": str, "int": int, "dt.date": dt.date, "dt.datetime": dt.datetime, "dict": dict}
    names: dict = {"E": _ESCAPES, "C": _copy_value, "J": _json_text, "N": "\\N", "TAB": "\t"}
    items = []
    for column in fields(SourceRecord):  # the order of RECORD_COLUMNS
        kind = str(column.type).removesuffix(" | None")
        if kind not in types:
            raise TypeError(f"SourceRecord.{column.name}: no COPY text for {column.type}")
        names[f"T_{column.name}"] = types[kind]
        if filled is not None and column.name not in filled:
            continue
        if kind == "dict":
            # JSON text escapes control characters itself; only its backslashes need doubling.
            json_text = 'j if "\\\\" not in (j := J(v)) else j.translate(E)'
            value = f'("{{}}" if not v else {json_text}) if type(v) is T_{column.name} else C(v)'
        else:
            value = f"({simple[kind]}) if type(v) is T_{column.name} else C(v)"
        items.append(f"N if (v := record.{column.name}) is None else {value}")
    source = (
        "def line(record):\n    return TAB.join((\n"
        + "".join(f"        {item},\n" for item in items)
        + "    ))\n"
    )
    exec(compile(source, "<copy line>", "exec"), names)
    return names["line"]


def _array_literal(items: Iterable[str]) -> str:
    quoted = ('"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"' for item in items)
    return "{" + ",".join(quoted) + "}"


class _CopyStream(io.RawIOBase):
    """A readable stream of COPY text lines produced on demand from an iterator."""

    def __init__(self, lines: Iterator[str]):
        self._lines = lines
        self._buffer = b""
        # psycopg2 reports an exception raised while it reads as a generic COPY failure;
        # keep the original so the caller can raise it (FileRejected, a dropped source).
        self.error: BaseException | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, target) -> int:
        while len(self._buffer) < len(target):
            try:
                chunk = "".join(line for _, line in zip(range(COPY_BATCH_ROWS), self._lines, strict=False))
            except BaseException as exc:
                self.error = exc
                raise
            if not chunk:
                break
            self._buffer += chunk.encode("utf-8")
        size = min(len(target), len(self._buffer))
        target[:size] = self._buffer[:size]
        self._buffer = self._buffer[size:]
        return size


class _Stopwatch:
    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._last, 4)
        self._last = now


@dataclass
class _Counts:
    received: int = 0
    loaded: int = 0
    rejected: int = 0


def _stage(
    engine: Engine, rows: Iterable[SourceRecord | RejectedRow], file_id: int, feed: str, counts: _Counts
) -> None:
    """COPY records and rejected rows into staging, counting them in `counts` as they pass
    (so a file rejected half-way still reports how many rows it had)."""
    rejected: list[str] = []
    suffix = f"\t{_copy_value(feed)}\t{file_id}\n"
    # A parsed file knows which fields its records can fill (ParsedFile.record_fields).
    filled = getattr(rows, "record_fields", None)
    filled = frozenset(filled) if filled is not None else None
    record_line = _line_function(filled)

    def record_lines() -> Iterator[str]:
        for row in rows:
            counts.received += 1
            if isinstance(row, RejectedRow):
                counts.rejected += 1
                rejected.append(
                    "\t".join(
                        (
                            str(file_id),
                            str(row.line_number),
                            _copy_value(_array_literal(row.reasons)),
                            _copy_value(row.raw_line),
                            _copy_value(row.record),
                        )
                    )
                    + "\n"
                )
                continue
            counts.loaded += 1
            yield record_line(row) + suffix

    records = _CopyStream(record_lines())
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cursor:
            cursor.copy_expert(_copy_records(_copy_columns(filled)), records, size=1 << 20)
            cursor.copy_expert(_COPY_REJECTED, _CopyStream(iter(rejected)), size=1 << 20)
        raw.commit()
    except psycopg2.Error as exc:
        if records.error is not None:
            raise records.error from None
        if isinstance(exc, psycopg2.DataError | psycopg2.IntegrityError):
            detail = " ".join(str(exc).split())
            raise FileRejected(f"staging refused a standardised value: {detail}") from exc
        raise
    finally:
        raw.close()


def load_rows(
    engine: Engine,
    url: URL,
    *,
    feed: str,
    channel: str,
    name: str,
    content_sha256: str,
    size_bytes: int,
    rows: Iterable[SourceRecord | RejectedRow],
    snapshot_max_shrink: float | None = None,
    remote_path: str | None = None,
    today: dt.date | None = None,
) -> LoadResult:
    """Load one file's or batch's parsed rows exactly once (see the module docstring).

    `rows` is consumed only when the content is new or an earlier attempt did not
    finish. When a file-level check or the quality gate fails (the parser raises
    FileRejected, the shrink check, the gate) the whole file is quarantined and the
    result's status is `quarantined` with the reason in `error`.
    """
    sql = queries("ingest.sql")
    with engine.begin() as conn:
        entry = conn.execute(
            sql["register_file"],
            {
                "feed": feed,
                "channel": channel,
                "name": name,
                "remote_path": remote_path,
                "size_bytes": size_bytes,
                "content_sha256": content_sha256,
            },
        ).one()
    file_id = entry.ingest_file_id
    if entry.status in ("merged", "quarantined"):
        return _existing(engine, file_id)

    # One loader per file: a second copy of the task waits here for the first and then
    # finds the file done. The lock is the session's, so a killed worker releases it.
    with engine.connect() as lock:
        lock.execute(sql["lock_file"], {"file_id": file_id})
        try:
            return _load_locked(engine, url, file_id, feed, rows, snapshot_max_shrink, today)
        finally:
            lock.execute(sql["unlock_file"], {"file_id": file_id})
            lock.commit()


def _load_locked(
    engine: Engine,
    url: URL,
    file_id: int,
    feed: str,
    rows: Iterable[SourceRecord | RejectedRow],
    snapshot_max_shrink: float | None,
    today: dt.date | None,
) -> LoadResult:
    sql = queries("ingest.sql")
    with engine.begin() as conn:
        status = conn.execute(sql["file_outcome"], {"file_id": file_id}).one().status
        if status in ("merged", "quarantined"):
            return _existing(engine, file_id)
        conn.execute(sql["clear_staging"], {"file_id": file_id})
        previous_rows = conn.execute(sql["previous_load"], {"feed": feed, "file_id": file_id}).scalar()

    # A parsed file names its target (FeedSpec.target); API batches are source records.
    target = getattr(rows, "target", "record")
    counts = _Counts()
    clock = _Stopwatch()
    try:
        _stage(engine, rows, file_id, feed, counts)
        clock.lap("parse_and_stage")
        if (
            snapshot_max_shrink is not None
            and previous_rows
            and counts.received < previous_rows * (1 - snapshot_max_shrink)
        ):
            raise FileRejected(
                f"snapshot shrank from {previous_rows:,} to {counts.received:,} rows "
                f"(more than {snapshot_max_shrink:.0%}); refusing to treat the missing rows as gone"
            )
        if counts.loaded == 0:
            raise FileRejected(f"no loadable rows: all {counts.received:,} rows were rejected")
        gate = check_file(engine, url, file_id, previous_rows, today or dt.date.today())
        if not gate.passed:
            raise FileRejected(gate.reason())
        with engine.connect() as conn:
            unknown = conn.execute(sql["unknown_references"], {"file_id": file_id}).scalars().all()
            fields_filled = getattr(rows, "record_fields", None)
            if target == "record" and (fields_filled is None or "product_sku" in fields_filled):
                skus = conn.execute(sql["unknown_product_skus"], {"file_id": file_id}).one()
                if skus.rows:
                    gate.report["unknown_product_skus"] = {"rows": skus.rows, "skus": list(skus.skus)}
        if unknown:
            raise FileRejected(f"unknown to the core tables: {', '.join(unknown)}")
        clock.lap("gate")
    except FileRejected as rejection:
        _quarantine_file(engine, file_id, str(rejection), counts.received)
        return LoadResult(
            file_id, "quarantined", False, counts.received, 0, counts.received, 0, error=str(rejection)
        )

    with engine.begin() as conn:
        if target == "product":
            products = conn.execute(sql["merge_products"], {"file_id": file_id}).one()
            if products.inserted:
                conn.execute(sql["link_new_products"], {"file_id": file_id})
            changed = products.inserted + products.changed
        else:
            erased = conn.execute(sql["quarantine_erased"], {"file_id": file_id}).scalar_one()
            counts.loaded -= erased
            counts.rejected += erased
            changed = _merge_records(conn, file_id)
        conn.execute(sql["quarantine_rejected"], {"file_id": file_id})
        conn.execute(
            sql["finish_file"],
            {
                "file_id": file_id,
                "status": "merged",
                "rows_received": counts.received,
                "rows_loaded": counts.loaded,
                "rows_quarantined": counts.rejected,
                "quality": json.dumps(gate.report),
                "error": None,
            },
        )
        conn.execute(sql["drop_staging"], {"file_id": file_id})
    clock.lap("merge")
    return LoadResult(
        file_id, "merged", False, counts.received, counts.loaded, counts.rejected, changed, seconds=clock.laps
    )


_UPSERT_CLAUSE = re.compile(
    r"^[ \t]*-- upsert clause: begin$.*?^[ \t]*-- upsert clause: end$\n", re.MULTILINE | re.DOTALL
)


@cache
def _insert_new_records() -> TextClause:
    """`merge_records` without its upsert clause: a plain INSERT of the staged records."""
    statement, cut = _UPSERT_CLAUSE.subn("", queries("ingest.sql")["merge_records"].text)
    if cut != 1:
        raise ConfigError("sql/ingest.sql: merge_records must mark its upsert clause once")
    return text(statement)


def _merge_records(conn: Connection, file_id: int) -> int:
    """Merge a staged file into ingest.record; returns the records inserted or changed.

    A new export's keys are all new, and a plain INSERT costs about a quarter less than
    the upsert (no speculative insertion; bench figures in ADR 0007). So the plain insert
    runs first, in a savepoint; when a key exists already (a corrected or re-delivered
    file, a snapshot) the unique key refuses it, and the guarded upsert runs instead. A
    snapshot's first key in the statement's order exists, so little is undone.
    """
    params = {"file_id": file_id}
    savepoint = conn.begin_nested()
    try:
        changed = conn.execute(_insert_new_records(), params).scalar_one()
    except IntegrityError as exc:
        savepoint.rollback()
        if not isinstance(exc.orig, psycopg2.errors.UniqueViolation):
            raise
        return conn.execute(queries("ingest.sql")["merge_records"], params).scalar_one()
    savepoint.commit()
    return changed


def _quarantine_file(engine: Engine, file_id: int, reason: str, rows_received: int) -> None:
    sql = queries("ingest.sql")
    with engine.begin() as conn:
        conn.execute(sql["forget_quarantine"], {"file_id": file_id})
        # The rows' own reasons stay beside the file's: whoever fixes the file (or the API
        # client whose batch was refused whole) sees what was wrong with each row too.
        conn.execute(sql["quarantine_rejected"], {"file_id": file_id})
        conn.execute(sql["quarantine_file"], {"file_id": file_id, "reason": reason})
        conn.execute(sql["drop_staging"], {"file_id": file_id})
        conn.execute(
            sql["finish_file"],
            {
                "file_id": file_id,
                "status": "quarantined",
                "rows_received": rows_received,
                "rows_loaded": 0,
                "rows_quarantined": rows_received,
                "quality": None,
                "error": reason,
            },
        )


def _existing(engine: Engine, file_id: int) -> LoadResult:
    with engine.connect() as conn:
        row = conn.execute(queries("ingest.sql")["file_outcome"], {"file_id": file_id}).one()
    return LoadResult(
        file_id,
        row.status,
        True,
        row.rows_received or 0,
        row.rows_loaded or 0,
        row.rows_quarantined or 0,
        0,
        row.error,
    )
