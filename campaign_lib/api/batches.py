"""An API batch becomes source records exactly once: check each item, parse, load, publish.

The path of one batch:

1. **check** each item against the API's schema (campaign_lib.api.models); an item that
   fails is refused with its reasons and goes to the quarantine like a rejected file row.
2. **parse** the good items with the feed's own mapping: they are written as JSON Lines
   into a temporary file and read by `parse_file` with the feed spec, exactly as a file of
   that feed from SFTP (feeds/website.yaml for events), so the API and the files cannot
   map the same event differently. Parser rejections are reported per item too.
3. **load** with `load_rows`: the batch is one ledger entry, fingerprinted by the sha256 of
   its canonical JSON, so the same batch posted again is a no-op; every record is keyed by
   its natural key (event_id, customer_id), so an item posted again in another batch
   changes nothing (the guarded upsert).
4. **publish** what changed to the core tables: identity resolution runs after the
   response, coalesced across concurrent batches (`CorePublisher`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy.engine import Engine

from campaign_lib.api.models import WEBSITE_CONTACT, WEBSITE_EVENT, BatchResult, ItemError
from campaign_lib.errors import FileRejected
from campaign_lib.ingest.record import RejectedRow, SourceRecord
from campaign_lib.lookups import FEEDS_DIR

log = logging.getLogger(__name__)

# A refused item keeps this much of its JSON text in the quarantine.
MAX_RAW_ITEM = 1 << 20

Line = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class BatchKind:
    """One endpoint's batches: the envelope key, the ledger feed, the item schema and how an
    item becomes lines of the feed specs that map it."""

    items_key: str
    ledger_feed: str
    id_field: str
    item: TypeAdapter
    lines: Callable[[dict[str, Any]], list[Line]]
    spec_paths: dict[str, Path]


def _event_lines(event: dict[str, Any]) -> list[Line]:
    return [("website", event)]


def _contact_lines(contact: dict[str, Any]) -> list[Line]:
    # A profile is one record; each of its consents another, in the consent ledger's feed.
    profile = {name: value for name, value in contact.items() if name != "consents"}
    consents = [
        ("website_consents_api", {"customer_id": contact["customer_id"], **consent})
        for consent in contact.get("consents") or ()
    ]
    return [("website_contacts_api", profile), *consents]


EVENTS = BatchKind(
    items_key="events",
    ledger_feed="website_api",
    id_field="event_id",
    item=WEBSITE_EVENT,
    lines=_event_lines,
    spec_paths={"website": FEEDS_DIR / "website.yaml"},
)
CONTACTS = BatchKind(
    items_key="contacts",
    ledger_feed="website_contacts_api",
    id_field="customer_id",
    item=WEBSITE_CONTACT,
    lines=_contact_lines,
    spec_paths={
        "website_contacts_api": FEEDS_DIR / "api" / "website_contacts_api.yaml",
        "website_consents_api": FEEDS_DIR / "api" / "website_consents_api.yaml",
    },
)


@cache
def _spec(path: Path):
    from campaign_lib.ingest.feeds import load_feed

    return load_feed(path)


@dataclass(frozen=True)
class BatchOutcome:
    """The result of one batch and whether it was refused as a whole (then `refusal` says why)."""

    result: BatchResult
    refusal: str | None


def canonical_sha256(payload: Any) -> tuple[str, int]:
    """sha256 (hex) and size of the payload's canonical JSON: key order and spacing do not
    make the same batch a new one."""
    canonical = json.dumps(payload, ensure_ascii=True, sort_keys=True, separators=(",", ":")).encode("ascii")
    return hashlib.sha256(canonical).hexdigest(), len(canonical)


def _item_json(item: Any) -> str:
    return json.dumps(item, ensure_ascii=True, separators=(",", ":"))


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _screen(item: Any) -> list[str]:
    """Problems that no feed mapping should meet: text PostgreSQL cannot store."""
    if not isinstance(item, dict):
        return [f"not a JSON object but {type(item).__name__}"]
    problems = []
    strings = list(_strings(item))
    if any("\x00" in value for value in strings):
        problems.append("contains a NUL character (\\u0000), which cannot be stored")
    try:
        "".join(strings).encode("utf-8")
    except UnicodeEncodeError:
        problems.append("contains an unpaired UTF-16 surrogate (\\ud800-\\udfff), which is not Unicode text")
    return problems


def _schema_errors(kind: BatchKind, item: dict[str, Any]) -> list[str]:
    try:
        kind.item.validate_python(item)
    except ValidationError as exc:
        tag = item.get("event_type")
        problems = []
        for error in exc.errors(include_url=False):
            loc = list(error["loc"])
            if loc and loc[0] == tag:
                loc = loc[1:]  # the discriminated union's branch name, not a field
            where = ".".join(str(part) for part in loc)
            problems.append(f"{where}: {error['msg']}" if where else error["msg"])
        return problems
    return []


def _parse(kind: BatchKind, good: dict[int, dict[str, Any]]) -> dict[int, list[SourceRecord | RejectedRow]]:
    """Map the good items with the feed specs' parser; returns each item's rows by batch index."""
    from campaign_lib.ingest.parse import parse_file

    by_spec: dict[str, list[tuple[int, dict]]] = {}
    for index, item in good.items():
        for spec_name, line in kind.lines(item):
            by_spec.setdefault(spec_name, []).append((index, line))
    rows: dict[int, list[SourceRecord | RejectedRow]] = {index: [] for index in good}
    with tempfile.TemporaryDirectory(prefix="kms-api-") as folder:
        for spec_name, lines in by_spec.items():
            path = Path(folder) / f"{spec_name}.jsonl"
            with path.open("w", encoding="utf-8", newline="\n") as out:
                for _, line in lines:
                    out.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
            for row in parse_file(_spec(kind.spec_paths[spec_name]), path):
                index = lines[row.line_number - 1][0]
                rows[index].append(dataclasses.replace(row, line_number=index + 1))
    return rows


def _item_id(kind: BatchKind, item: Any) -> str | None:
    value = item.get(kind.id_field) if isinstance(item, dict) else None
    return value if isinstance(value, str) else None


def _refused(kind: BatchKind, index: int, item: Any, reasons: list[str]) -> tuple[RejectedRow, ItemError]:
    row = RejectedRow(index + 1, tuple(reasons), _item_json(item)[:MAX_RAW_ITEM])
    error = ItemError(index=index, errors=reasons, **{kind.id_field: _item_id(kind, item)})
    return row, error


def check_and_parse(
    kind: BatchKind, items: list[Any]
) -> tuple[list[SourceRecord | RejectedRow], list[ItemError]]:
    """Every item's records, or one rejected row with its reasons; and the errors by index."""
    refused: dict[int, list[str]] = {}
    good: dict[int, dict[str, Any]] = {}
    for index, item in enumerate(items):
        problems = _screen(item) or _schema_errors(kind, item)
        if problems:
            refused[index] = problems
        else:
            good[index] = item
    parsed = _parse(kind, good) if good else {}
    rows: list[SourceRecord | RejectedRow] = []
    for index, item_rows in parsed.items():
        reasons = [reason for row in item_rows if isinstance(row, RejectedRow) for reason in row.reasons]
        if reasons:
            # A contact with one bad consent is refused whole: half a profile would mislead.
            refused[index] = reasons
        else:
            rows.extend(item_rows)
    errors = []
    for index in sorted(refused):
        row, error = _refused(kind, index, items[index], refused[index])
        rows.append(row)
        errors.append(error)
    rows.sort(key=lambda row: row.line_number)
    return rows, errors


def load_batch(engine: Engine, kind: BatchKind, items: list[Any], payload: Any, caller: str) -> BatchOutcome:
    """Check, map and load one batch exactly once; returns its counts and per-item errors.

    A batch whose every item was refused, or that fails a whole-file check of the loader
    (the quality gate), is quarantined whole and comes back with `refusal` set.
    """
    from campaign_lib.ingest.load import load_rows

    sha, size = canonical_sha256(payload)
    rows, errors = check_and_parse(kind, items)
    refusal = None
    try:
        loaded = load_rows(
            engine,
            engine.url,
            feed=kind.ledger_feed,
            channel="api",
            name=f"POST /api/v1/{kind.items_key} by {caller}",
            content_sha256=sha,
            size_bytes=size,
            rows=rows,
        )
    except FileRejected as rejection:
        refusal = str(rejection)
        batch_id = _batch_id(engine, kind.ledger_feed, sha)
        records_loaded = changed = 0
        duplicate = False
    else:
        batch_id, duplicate = loaded.ingest_file_id, loaded.duplicate
        if loaded.status == "quarantined":
            refusal = loaded.error or "the batch was quarantined"
        elif loaded.rows_loaded + len(errors) < len(rows):
            errors = _with_loader_refusals(engine, kind, items, batch_id, errors)
        records_loaded, changed = loaded.rows_loaded, loaded.records_changed
    rejected = len(errors)
    result = BatchResult(
        batch_id=batch_id,
        duplicate_batch=duplicate,
        received=len(items),
        accepted=0 if refusal else len(items) - rejected,
        rejected=len(items) if refusal else rejected,
        records_changed=changed,
        records_unchanged=0 if refusal else records_loaded - changed,
        errors=errors,
    )
    return BatchOutcome(result, refusal)


def _with_loader_refusals(
    engine: Engine, kind: BatchKind, items: list[Any], batch_id: int, errors: list[ItemError]
) -> list[ItemError]:
    """`errors` and the items the loader quarantined after parsing (a person erased on
    request), with the loader's reasons, in item order."""
    from campaign_lib.sqlfiles import queries

    known = {error.index for error in errors}
    with engine.connect() as conn:
        lines = conn.execute(queries("api.sql")["quarantined_lines"], {"batch_id": batch_id}).all()
    more = [
        ItemError(index=line - 1, errors=list(reasons), **{kind.id_field: _item_id(kind, items[line - 1])})
        for line, reasons in lines
        if line - 1 not in known
    ]
    return sorted([*errors, *more], key=lambda error: error.index)


def _batch_id(engine: Engine, feed: str, sha: str) -> int:
    from campaign_lib.sqlfiles import queries

    with engine.connect() as conn:
        found = conn.execute(queries("api.sql")["batch_id"], {"feed": feed, "content_sha256": sha})
        return found.scalar_one()


def _publish_to_core(engine: Engine) -> None:
    """Bring new and changed source records into the core tables (incremental identity resolution)."""
    from campaign_lib.identity import resolve

    summary = resolve(engine)
    log.info("published to core: %s", summary.as_dict())


class CorePublisher:
    """Runs `_publish_to_core` after batches, at most once at a time per process.

    A batch that arrives while a run is going only marks more work; the running thread
    runs again when it is done, so concurrent batches share runs instead of queueing one
    each (identity resolution also locks itself across processes).
    """

    def __init__(self, engine: Callable[[], Engine]) -> None:
        self._engine = engine
        self._running = threading.Lock()
        self._pending = False

    def expect(self) -> None:
        """Note that a batch changed records, before its response goes out (see `wait_idle`)."""
        self._pending = True

    def request(self) -> None:
        """Publish what is unresolved now; returns at once when another thread is publishing."""
        self._pending = True
        while self._pending:
            if not self._running.acquire(blocking=False):
                return
            try:
                while self._pending:
                    self._pending = False
                    try:
                        _publish_to_core(self._engine())
                    except Exception:
                        # The records are safe in ingest.record; the next batch or the
                        # kms_identity DAG resolves them. Never lose the API for this.
                        log.exception("identity resolution after an API batch failed")
            finally:
                self._running.release()

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Wait until no run is going or expected; returns False on timeout (for tests and shutdown)."""
        deadline = time.monotonic() + timeout
        while self._pending or self._running.locked():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True
