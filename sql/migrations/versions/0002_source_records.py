"""Source records: every received row, standardised, waiting for identity resolution.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

Ingestion does not write people into `core` directly. It standardises each row of a
file or API batch into one `ingest.record` (keyed by source system and natural key,
so a corrected file updates instead of duplicating), and identity resolution then
assigns every record to a contact and writes the single customer view: contacts,
accounts, locations, identifiers, activities, consents and inquiries. This avoids
creating a provisional contact per unknown record and moving its activities on every
later merge.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = r"""
alter table ingest.file
    add column quality jsonb check (quality is null or jsonb_typeof(quality) = 'object');
comment on column ingest.file.quality is
    'The data-quality gate''s result: one entry per expectation with its outcome and counts';

create table ingest.record (
    record_id          bigint generated always as identity primary key,
    source_system      text not null references core.source_system (source_system),
    record_kind        text not null check (record_kind ~ '^[a-z][a-z_]*$'),
    source_key         text not null check (source_key <> ''),
    feed               text not null,
    ingest_file_id     bigint not null references ingest.file (ingest_file_id),
    line_number        integer not null check (line_number >= 1),

    -- Who: standardised attributes of the person (null when the source has none).
    salutation         text,
    first_name         text,
    last_name          text,
    birth_date         date check (birth_date >= date '1900-01-02'),
    email              text check (email = lower(btrim(email)) and email like '%_@_%'),
    phone_e164         text check (phone_e164 ~ '^\+[1-9][0-9]{6,14}$'),
    language           text check (language ~ '^[a-z]{2}$'),
    company_name       text,
    account_type       core.account_type,
    street             text,
    postal_code        text,
    city               text,
    country_code       char(2) check (country_code ~ '^[A-Z]{2}$'),
    address_valid_from date,

    -- How the source knows the person; each non-null value becomes a core.identifier.
    crm_contact_id     text,
    crm_account_id     text,
    source_customer_id text,
    booking_ref        text,
    order_ref          text,
    loyalty_card       text,
    cookie_id          text,

    -- What happened (activity records).
    activity_type      text references core.activity_type (activity_type),
    occurred_at        timestamptz,
    ended_at           timestamptz,
    amount_cents       bigint check (amount_cents >= 0),
    currency           char(3) check (currency ~ '^[A-Z]{3}$'),
    quantity           integer check (quantity > 0),
    product_sku        text,
    product_name       text,
    outlet             text,
    attributes         jsonb not null default '{}'::jsonb check (jsonb_typeof(attributes) = 'object'),

    -- Consent given with the record (newsletter sign-ups).
    consent_channel    core.channel,
    consent_purpose    text check (consent_purpose ~ '^[a-z][a-z0-9_]*$'),
    consent_status     core.consent_status,
    double_opt_in_at   timestamptz,

    -- Support requests.
    inquiry_topic      text,
    inquiry_body       text,

    -- Resolution: which contact the record belongs to, and whether that is current.
    contact_id         bigint references core.contact (contact_id),
    received_at        timestamptz not null default now(),
    changed_at         timestamptz not null default now(),
    resolved_at        timestamptz,

    unique (source_system, source_key),
    check ((amount_cents is null) = (currency is null)),
    check (activity_type is null or occurred_at is not null),
    check (ended_at is null or occurred_at is null or ended_at >= occurred_at),
    check ((consent_channel is null) = (consent_status is null)),
    check (resolved_at is null or resolved_at >= changed_at)
);
comment on table ingest.record is
    'One standardised row per source record, keyed by (source_system, source_key); '
    'identity resolution assigns contact_id and writes the core tables';
-- Identity resolution works on what changed since it last ran.
create index record_unresolved_idx on ingest.record (record_id) where resolved_at is null;
create index record_contact_idx on ingest.record (contact_id);
create index record_file_idx on ingest.record (ingest_file_id);

-- Staging: a file's standardised rows and rejected rows wait here, keyed by the file,
-- until the quality gate has passed and one transaction merges them. Unlogged: after a
-- crash PostgreSQL empties them, and the ledger (not merged) makes the file load again.
create unlogged table ingest.stage_record (like ingest.record including defaults);
alter table ingest.stage_record
    drop column record_id, drop column contact_id, drop column received_at,
    drop column changed_at, drop column resolved_at;
create index stage_record_file_idx on ingest.stage_record (ingest_file_id);
create unlogged table ingest.stage_rejected (
    ingest_file_id bigint not null,
    line_number    integer,
    reasons        text[] not null,
    raw_line       text,
    record         jsonb
);
create index stage_rejected_file_idx on ingest.stage_rejected (ingest_file_id);

-- What the last listing of a `stable_size` feed saw: a file counts as complete only
-- when its size and time are unchanged between two listings, i.e. two DAG runs.
create table ingest.sftp_listing (
    feed       text primary key,
    state      jsonb not null check (jsonb_typeof(state) = 'object'),
    updated_at timestamptz not null default now()
);
"""

DOWNGRADE = """
drop table ingest.sftp_listing;
drop table ingest.stage_rejected;
drop table ingest.stage_record;
drop table ingest.record;
alter table ingest.file drop column quality;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
