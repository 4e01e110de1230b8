"""Resolution state beside the source records, not inside them.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22

`ingest.record` carried its contact and a `resolved_at` mark. Identity resolution then
rewrote every wide record row it resolved (a new row version of ~40 columns per record),
and the merge of ingestion maintained two more indexes and a foreign key on each insert.
Now:

- `ingest.record_pending` is the work queue: the ids of records inserted or changed since
  identity resolution last took them. Ingestion's merge adds to it in the same statement
  that writes the record; resolution deletes what it took in the transaction that writes
  the result, so a killed run loses nothing.
- `ingest.record_contact` is the result: the contact of every record that belongs to a
  person. A record neither pending nor in it is resolved to nobody (an order reference only,
  a cash bill).
- `ingest.record_identifier` lists the identifying values of every record (email, phone,
  loyalty card, booking and order reference, CRM and customer id, cookie), defined once for
  the statements of sql/identity.sql that look them up or write them.

Existing data is kept: resolved records keep their contact, unresolved ones become pending.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = r"""
-- No foreign key to ingest.record: ingestion inserts here once per new or changed record in
-- its merge, and a per-row key check there would cost as much as the insert itself. A record
-- is never deleted while pending (records are only ever upserted); resolution skips an id
-- without a record.
create table ingest.record_pending (
    record_id bigint primary key
);
comment on table ingest.record_pending is
    'Work queue of identity resolution: records inserted or changed since it last took them. '
    'Written by the ingest merge, deleted by resolution in the transaction that writes the result';

-- No foreign keys either: identity resolution is its only writer (under its advisory lock)
-- and writes a row in the same transaction as the contact; an initial build writes one row
-- per record, where a key check per row would cost more than the row.
create table ingest.record_contact (
    record_id   bigint primary key,
    contact_id  bigint not null,
    resolved_at timestamptz not null default now()
);
comment on table ingest.record_contact is
    'The contact (never a merged one) of every resolved record that belongs to a person; '
    'written only by identity resolution';
create index record_contact_contact_idx on ingest.record_contact (contact_id);

insert into ingest.record_contact (record_id, contact_id, resolved_at)
select record_id, contact_id, coalesce(resolved_at, changed_at)
from ingest.record
where contact_id is not null;

insert into ingest.record_pending (record_id)
select record_id from ingest.record where resolved_at is null;

-- Dropping the columns also drops the check on resolved_at and changed_at.
drop index ingest.record_unresolved_idx;
drop index ingest.record_contact_idx;
alter table ingest.record drop column contact_id, drop column resolved_at;
comment on table ingest.record is
    'One standardised row per source record, keyed by (source_system, source_key); '
    'identity resolution takes it from ingest.record_pending and writes ingest.record_contact';

-- Every identifying value a record carries, one row each (value as the record has it), with
-- where and when it was seen (the record's time, else when it was received).
create view ingest.record_identifier as
select r.record_id, k.kind, k.value, r.source_system, coalesce(r.occurred_at, r.received_at) as seen_at
from ingest.record as r
cross join lateral (
    values
        ('email'::core.identifier_kind, r.email),
        ('phone', r.phone_e164),
        ('loyalty_card', r.loyalty_card),
        ('booking_ref', r.booking_ref),
        ('crm_id', r.crm_contact_id),
        ('source_customer_id', r.source_customer_id),
        ('order_ref', r.order_ref),
        ('cookie_id', r.cookie_id)
) as k (kind, value)
where k.value is not null;
"""

DOWNGRADE = """
drop view ingest.record_identifier;
alter table ingest.record
    add column contact_id bigint references core.contact (contact_id),
    add column resolved_at timestamptz;
update ingest.record as r
set contact_id = c.contact_id
from ingest.record_contact as c
where c.record_id = r.record_id;
update ingest.record as r
set resolved_at = greatest(r.changed_at, now())
where not exists (select 1 from ingest.record_pending as p where p.record_id = r.record_id);
alter table ingest.record add check (resolved_at is null or resolved_at >= changed_at);
create index record_unresolved_idx on ingest.record (record_id) where resolved_at is null;
create index record_contact_idx on ingest.record (contact_id);
drop table ingest.record_contact;
drop table ingest.record_pending;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
