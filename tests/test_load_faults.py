"""The database restarting in the middle of a load: the load fails cleanly, the retry loads
every row exactly once. Runs on a PostgreSQL server of its own, so restarting it disturbs
no other test."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from campaign_lib.db import make_engine
from campaign_lib.db.migrate import upgrade
from campaign_lib.db.server import EmbeddedPostgres
from campaign_lib.ingest.load import load_rows
from campaign_lib.ingest.record import SourceRecord

BERLIN = dt.timezone(dt.timedelta(hours=2))


def ticket(number: int) -> SourceRecord:
    return SourceRecord(
        source_system="ticketing",
        record_kind="ticket",
        source_key=f"T{number:010d}",
        line_number=number + 1,
        order_ref=f"O{number:010d}",
        activity_type="water_park_ticket",
        occurred_at=dt.datetime(2026, 8, 1, tzinfo=BERLIN),
        amount_cents=3900,
        currency="EUR",
    )


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(tmp_path / "pgdata")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_a_database_restart_mid_load_fails_the_attempt_and_the_retry_loads_once(own_server) -> None:
    url = own_server.url("kms")
    engine = make_engine(url)
    upgrade(engine)

    def restarts_half_way() -> Iterator[SourceRecord]:
        for number in range(1, 2001):
            if number == 1000:
                own_server.stop()
                own_server.start()
            yield ticket(number)

    arguments = {
        "feed": "ticketing",
        "channel": "sftp",
        "name": "tickets_export_2026-09-01_0400.csv",
        "content_sha256": "e" * 64,
        "size_bytes": 1234,
        "today": dt.date(2026, 11, 22),
    }
    with pytest.raises(OperationalError):
        load_rows(engine, url, rows=restarts_half_way(), **arguments)

    retry = load_rows(engine, url, rows=(ticket(n) for n in range(1, 2001)), **arguments)

    assert (retry.status, retry.rows_received, retry.rows_loaded, retry.rows_quarantined) == (
        "merged",
        2000,
        2000,
        0,
    )
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from ingest.record")).scalar_one() == 2000
        assert conn.execute(text("select count(*) from ingest.file")).scalar_one() == 1
        assert conn.execute(text("select count(*) from ingest.stage_record")).scalar_one() == 0
    again = load_rows(engine, url, rows=iter(()), **arguments)
    assert again.duplicate and again.rows_loaded == 2000
    engine.dispose()
