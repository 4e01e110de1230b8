"""Ingestion from the SFTP drop folders: list, download, load, archive — per feed, in order.

Files of one feed are loaded one after another, oldest first, so that a corrected file
always lands after the file it corrects; feeds run side by side. Every step may be
repeated: a file is archived only after its load committed, and loading the same
content again is a no-op (the ledger), so a retry after any crash ends in the same state.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sqlalchemy.engine import URL, Engine

from campaign_lib.ingest.feeds import FeedSpec
from campaign_lib.ingest.load import LoadResult, file_fingerprint, load_rows
from campaign_lib.ingest.parse import parse_file
from campaign_lib.sqlfiles import queries
from connectors.sftp import RemoteFile, SftpSettings, SftpSource, StableSizeState


@dataclass(frozen=True)
class FileOutcome:
    """What happened to one remote file; `status` is merged, duplicate or quarantined."""

    feed: str
    name: str
    remote_path: str
    archived_to: str
    status: str
    ingest_file_id: int
    rows_received: int
    rows_loaded: int
    rows_quarantined: int
    records_changed: int
    error: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def new_files(engine: Engine, source: SftpSource, spec: FeedSpec) -> list[RemoteFile]:
    """The complete files waiting in the feed's folder, oldest first."""
    sftp = spec.sftp
    if sftp.completeness != "stable_size":
        return source.list_complete(sftp.folder, sftp.pattern, sftp.completeness)
    sql = queries("ingest.sql")
    with engine.begin() as conn:
        saved = conn.execute(sql["listing_state"], {"feed": spec.name}).scalar()
        state = StableSizeState.from_dict(saved)
        files = source.list_complete(sftp.folder, sftp.pattern, "stable_size", state=state)
        conn.execute(sql["save_listing_state"], {"feed": spec.name, "state": json.dumps(state.to_dict())})
    return files


def ingest_remote_file(
    engine: Engine, url: URL, source: SftpSource, spec: FeedSpec, remote_file: RemoteFile, work_dir: Path
) -> FileOutcome:
    """Download one file, load it, and archive it to processed/ or (quarantined) failed/."""
    started = time.perf_counter()
    local = source.download(remote_file, work_dir)
    downloaded = round(time.perf_counter() - started, 4)
    try:
        result = load_rows(
            engine,
            url,
            feed=spec.name,
            channel="sftp",
            name=remote_file.name,
            content_sha256=local.sha256,
            size_bytes=local.size,
            rows=parse_file(spec, local.path),
            snapshot_max_shrink=spec.snapshot.max_shrink if spec.snapshot.enabled else None,
            remote_path=remote_file.path,
        )
    finally:
        local.path.unlink(missing_ok=True)
    archived = source.archive(remote_file, "failed" if result.status == "quarantined" else "processed")
    return FileOutcome(
        feed=spec.name,
        name=remote_file.name,
        remote_path=remote_file.path,
        archived_to=archived,
        status="duplicate" if result.duplicate and result.status == "merged" else result.status,
        ingest_file_id=result.ingest_file_id,
        rows_received=result.rows_received,
        rows_loaded=result.rows_loaded,
        rows_quarantined=result.rows_quarantined,
        records_changed=result.records_changed,
        error=result.error,
        seconds={"download": downloaded, **result.seconds},
    )


def register_feed(engine: Engine, spec: FeedSpec) -> None:
    """Make the feed's source system and the activity types it declares known to the core
    tables (a no-op for those that are)."""
    sql = queries("feeds.sql")
    with engine.begin() as conn:
        conn.execute(
            sql["register_source_system"],
            {
                "source_system": spec.source_system,
                "name": spec.source_name or spec.description,
                "trust_rank": spec.source_trust_rank,
            },
        )
        if spec.activity_types:
            conn.execute(
                sql["register_activity_type"],
                [
                    {"activity_type": name, "description": description.strip()}
                    for name, description in spec.activity_types.items()
                ],
            )


def load_folder(engine: Engine, url: URL, root: Path, feeds: dict[str, FeedSpec]) -> list[LoadResult]:
    """Every file of every feed in `root`/<the feed's SFTP folder> (as the generator writes
    them) through the feeds' parser and loader, file after file in name order, as SFTP
    ingestion loads them but without the server: for tests, benchmarks and local backfills."""
    results = []
    for spec in feeds.values():
        register_feed(engine, spec)
        for path in sorted((root / spec.sftp.folder).glob("*")):
            if not spec.matches(path.name):
                continue
            sha256, size = file_fingerprint(path)
            results.append(
                load_rows(
                    engine,
                    url,
                    feed=spec.name,
                    channel="local",
                    name=path.name,
                    content_sha256=sha256,
                    size_bytes=size,
                    rows=parse_file(spec, path),
                    snapshot_max_shrink=spec.snapshot.max_shrink if spec.snapshot.enabled else None,
                )
            )
    return results


def ingest_feed(engine: Engine, url: URL, settings: SftpSettings, spec: FeedSpec) -> list[FileOutcome]:
    """Load every new file of one feed over one SFTP connection, oldest first."""
    register_feed(engine, spec)
    outcomes = []
    with SftpSource(settings) as source, tempfile.TemporaryDirectory(prefix=f"kms-{spec.name}-") as work:
        for remote_file in new_files(engine, source, spec):
            outcomes.append(ingest_remote_file(engine, url, source, spec, remote_file, Path(work)))
    return outcomes


def ingest_feed_in_process(url: URL, settings: SftpSettings, spec: FeedSpec) -> list[FileOutcome]:
    """`ingest_feed` with an engine of its own, for a process of its own (an Airflow task,
    a worker of the demo); returns the outcomes."""
    from campaign_lib.db import make_engine

    engine = make_engine(url)
    try:
        return ingest_feed(engine, url, settings, spec)
    finally:
        engine.dispose()


def waiting_bytes(settings: SftpSettings, feeds: dict[str, FeedSpec]) -> dict[str, int]:
    """Bytes of the files waiting in each feed's folder (any completeness), by feed name:
    a cheap listing that lets a caller start the largest feeds first."""
    with SftpSource(settings) as source:
        return {
            name: sum(
                f.size for f in source.list_complete(spec.sftp.folder, spec.sftp.pattern, "part_rename")
            )
            for name, spec in feeds.items()
        }


def ingest_sftp_feed(url: URL, settings: SftpSettings, feed_name: str) -> list[dict]:
    """What one DAG task does: load every new file of the named feed; outcomes as dicts."""
    from campaign_lib.ingest.feeds import load_feeds

    spec = load_feeds()[feed_name]
    return [outcome.as_dict() for outcome in ingest_feed_in_process(url, settings, spec)]


@dataclass(frozen=True)
class RunSummary:
    """What ingestion did since a moment (a DAG run's start), read from the ledger, so that
    it holds even when a feed's task failed and returned nothing."""

    files: int
    merged: int
    quarantined: tuple[str, ...]
    rows_loaded: int
    rows_quarantined: int
    records_changed: int

    def as_dict(self) -> dict:
        return asdict(self)


def summarise_since(url: URL, since: dt.datetime) -> RunSummary:
    """Totals of the files finished since `since`; quarantined files with their reason."""
    from campaign_lib.db import make_engine

    sql = queries("ingest.sql")
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            files = conn.execute(sql["files_finished_since"], {"since": since}).all()
            changed = conn.execute(sql["records_changed_since"], {"since": since}).scalar_one()
    finally:
        engine.dispose()
    return RunSummary(
        files=len(files),
        merged=sum(f.status == "merged" for f in files),
        quarantined=tuple(f"{f.feed}/{f.name}: {f.error}" for f in files if f.status == "quarantined"),
        rows_loaded=sum(f.rows_loaded or 0 for f in files),
        rows_quarantined=sum(f.rows_quarantined or 0 for f in files),
        records_changed=changed,
    )
