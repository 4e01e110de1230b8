"""Daily housekeeping of the campaign database: quarantine retention and statistics."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import Engine

from campaign_lib.sqlfiles import queries

# Tables whose statistics drive the plans of selections and merges.
ANALYZED_TABLES = (
    "core.account",
    "core.location",
    "core.contact",
    "core.identifier",
    "core.activity",
    "core.inquiry",
    "core.consent",
    "core.product",
    "ingest.file",
    "ingest.quarantine",
)


@dataclass(frozen=True)
class TableSize:
    """Size of one table after its statistics were refreshed."""

    table_name: str
    estimated_rows: int
    total_bytes: int


def purge_expired_quarantine(engine: Engine, retention_days: int) -> int:
    """Delete quarantined rows older than `retention_days`; returns how many."""
    if retention_days < 1:
        raise ValueError(f"retention_days must be at least 1, not {retention_days}")
    with engine.begin() as conn:
        return conn.execute(
            queries("housekeeping.sql")["purge_expired_quarantine"], {"retention_days": retention_days}
        ).scalar_one()


def refresh_statistics(engine: Engine) -> list[TableSize]:
    """ANALYZE the core and ingest tables; returns their sizes, largest first."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in ANALYZED_TABLES:
            # Table names are the constants above, never user input.
            conn.execute(text(f"analyze {table}"))
        rows = conn.execute(queries("housekeeping.sql")["table_sizes"]).all()
    return [TableSize(*row) for row in rows]
