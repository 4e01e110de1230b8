"""The ingest merge without per-row foreign key checks and without an index nobody reads.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22

Every row the ingest merge wrote into `ingest.record` fired three foreign key checks
(`source_system`, `activity_type`, `ingest_file_id`, ~4 µs each) and maintained
`record_file_idx`, which no statement reads. Together they cost more than the insert
itself (docs/adr/0007-ingest-throughput.md). The values those keys guarded are the same
for all rows of a file or come from a handful of names, so the loader now checks them
once per file, set-based, before the merge (`unknown_references` in sql/ingest.sql): a
file with an unknown source system or activity type is quarantined whole with that reason,
and the ledger row a record points to is the one the loader holds locked.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = """
alter table ingest.record
    drop constraint record_source_system_fkey,
    drop constraint record_activity_type_fkey,
    drop constraint record_ingest_file_id_fkey;
drop index ingest.record_file_idx;
comment on column ingest.record.activity_type is
    'A core.activity_type; checked once per file by the loader, not per row by a foreign key';
"""

DOWNGRADE = """
comment on column ingest.record.activity_type is null;
create index record_file_idx on ingest.record (ingest_file_id);
alter table ingest.record
    add constraint record_source_system_fkey
        foreign key (source_system) references core.source_system (source_system),
    add constraint record_activity_type_fkey
        foreign key (activity_type) references core.activity_type (activity_type),
    add constraint record_ingest_file_id_fkey
        foreign key (ingest_file_id) references ingest.file (ingest_file_id);
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
