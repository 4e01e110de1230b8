"""The core schema: the single customer view and the ingest ledger.

Revision ID: 0001
Revises:
Create Date: 2026-11-22

Two schemas: `core` holds the single customer view (account, location, contact,
identifier, activity, inquiry, consent, product) and `ingest` the ledger of received
files and API batches with the quarantine of rejected rows. Enumerations that a new
source may extend (source systems, activity types) are lookup tables, so adding a
feed needs rows, not a migration; lifecycle states are PostgreSQL enums. The activity
table is one indexed table, not partitioned: docs/adr/0001-activity-table.md says why.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = r"""
create schema core;
create schema ingest;

-- Every system that sends data, with the trust used by survivorship (higher wins).
create table core.source_system (
    source_system text primary key check (source_system ~ '^[a-z][a-z0-9_]{1,62}$'),
    name          text not null,
    trust_rank    smallint not null default 50 check (trust_rank between 0 and 100)
);
insert into core.source_system (source_system, name, trust_rank) values
    ('crm',            'CRM (households, companies, contacts)', 90),
    ('hotel_pms',      'Hotel property management system',     80),
    ('restaurant_pos', 'Restaurant, bar and night club POS',   40),
    ('shop_pos',       'Shop point of sale',                   40),
    ('ticketing',      'Water park and dolphinarium tickets',  50),
    ('website',        'Website events and API',               60),
    ('kms',            'Campaign management system itself',    70);

create table core.activity_type (
    activity_type text primary key check (activity_type ~ '^[a-z][a-z0-9_]{1,62}$'),
    description   text not null
);
insert into core.activity_type (activity_type, description) values
    ('hotel_stay',        'A hotel reservation (arrival to departure)'),
    ('restaurant_bill',   'A bill in a restaurant'),
    ('bar_bill',          'A bill in a bar or the night club'),
    ('shop_purchase',     'A purchase in a shop'),
    ('water_park_ticket', 'A water park ticket'),
    ('dolphinarium_ticket', 'A dolphinarium ticket'),
    ('web_registration',  'A registration on the website'),
    ('web_login',         'A login on the website'),
    ('web_page_view',     'A page view on the website'),
    ('newsletter_signup', 'A newsletter subscription'),
    ('comment',           'A comment on the website'),
    ('rating',            'A rating on the website'),
    ('call',              'A call with the call centre');

create type core.account_type as enum ('household', 'company');
create type core.contact_status as enum ('active', 'anonymous', 'merged', 'erased');
create type core.identifier_kind as enum (
    'email', 'phone', 'loyalty_card', 'booking_ref', 'crm_id', 'cookie_id',
    'device_token', 'push_token', 'source_customer_id', 'order_ref');
create type core.channel as enum ('email', 'sms', 'push', 'phone', 'post');
create type core.consent_status as enum ('opt_in', 'opt_out');
create type core.inquiry_status as enum ('open', 'answered', 'closed');

-- A household or a company; every contact belongs to exactly one.
create table core.account (
    account_id            bigint generated always as identity primary key,
    account_type          core.account_type not null,
    name                  text,
    merged_into_account_id bigint references core.account (account_id),
    created_at            timestamptz not null default now(),
    updated_at            timestamptz not null default now(),
    check (merged_into_account_id is distinct from account_id)
);

-- An address of an account; a moved household keeps the old one with valid_to set.
create table core.location (
    location_id  bigint generated always as identity primary key,
    account_id   bigint not null references core.account (account_id) on delete cascade,
    street       text,
    postal_code  text,
    city         text,
    country_code char(2) not null check (country_code ~ '^[A-Z]{2}$'),
    valid_from   date,
    valid_to     date,
    created_at   timestamptz not null default now(),
    -- Target of contact's composite key: a contact's location is one of its account's.
    unique (location_id, account_id),
    check (valid_to is null or valid_from is null or valid_to >= valid_from)
);
create index location_account_idx on core.location (account_id);

create table core.contact (
    contact_id             bigint generated always as identity primary key,
    account_id             bigint not null references core.account (account_id),
    location_id            bigint,
    status                 core.contact_status not null default 'active',
    merged_into_contact_id bigint references core.contact (contact_id),
    salutation             text,
    first_name             text,
    last_name              text,
    birth_date             date check (birth_date >= date '1900-01-01'),
    email                  text check (email = lower(btrim(email)) and email like '%_@_%'),
    phone_e164             text check (phone_e164 ~ '^\+[1-9][0-9]{6,14}$'),
    preferred_language     text check (preferred_language ~ '^[a-z]{2}$'),
    created_at             timestamptz not null default now(),
    updated_at             timestamptz not null default now(),
    foreign key (location_id, account_id) references core.location (location_id, account_id),
    -- A merged contact points to its survivor, and only a merged one does.
    check ((status = 'merged') = (merged_into_contact_id is not null)),
    check (merged_into_contact_id is distinct from contact_id)
);
create index contact_account_idx on core.contact (account_id);
create index contact_merged_into_idx on core.contact (merged_into_contact_id)
    where merged_into_contact_id is not null;
create index contact_email_idx on core.contact (email) where email is not null;

-- Every key a source knows a person by. `value` is normalised (lower-cased email,
-- E.164 phone, source_customer_id as '<source_system>:<id>'), so it is unique per kind.
create table core.identifier (
    identifier_id bigint generated always as identity primary key,
    contact_id    bigint not null references core.contact (contact_id),
    kind          core.identifier_kind not null,
    value         text not null check (value <> '' and value = btrim(value)),
    source_system text not null references core.source_system (source_system),
    first_seen_at timestamptz not null default now(),
    last_seen_at  timestamptz not null default now(),
    unique (kind, value),
    check (last_seen_at >= first_seen_at),
    check (kind <> 'email' or value = lower(value)),
    check (kind <> 'phone' or value ~ '^\+[1-9][0-9]{6,14}$')
);
create index identifier_contact_idx on core.identifier (contact_id);

create table core.product (
    product_id  bigint generated always as identity primary key,
    sku         text not null unique check (sku <> ''),
    name        text not null,
    category    text not null check (category ~ '^[a-z][a-z0-9_]*$'),
    price_cents bigint check (price_cents >= 0),
    currency    char(3) check (currency ~ '^[A-Z]{3}$'),
    check ((price_cents is null) = (currency is null))
);

create type ingest.file_status as enum (
    'received', 'staged', 'validated', 'merged', 'quarantined', 'failed');
create type ingest.channel as enum ('sftp', 'api', 'local');

-- The ledger: one row per received file or API batch. The same content of the same
-- feed is recorded once (a redelivery is a no-op); a corrected file has new content.
create table ingest.file (
    ingest_file_id   bigint generated always as identity primary key,
    feed             text not null check (feed ~ '^[a-z][a-z0-9_]{1,62}$'),
    channel          ingest.channel not null,
    name             text not null,
    remote_path      text,
    size_bytes       bigint not null check (size_bytes >= 0),
    content_sha256   char(64) not null check (content_sha256 ~ '^[0-9a-f]{64}$'),
    status           ingest.file_status not null default 'received',
    rows_received    integer check (rows_received >= 0),
    rows_loaded      integer check (rows_loaded >= 0),
    rows_quarantined integer check (rows_quarantined >= 0),
    error            text,
    received_at      timestamptz not null default now(),
    finished_at      timestamptz,
    unique (feed, content_sha256),
    check (rows_loaded + rows_quarantined <= rows_received),
    check (status not in ('quarantined', 'failed') or error is not null),
    check (finished_at is null or finished_at >= received_at)
);
create index file_feed_received_idx on ingest.file (feed, received_at desc);

-- Anything the system did: a booking, a bill, a ticket, a web event. Natural key is
-- (source_system, source_ref), so a corrected file updates instead of double-counting.
create table core.activity (
    activity_id    bigint generated always as identity primary key,
    contact_id     bigint not null references core.contact (contact_id),
    activity_type  text not null references core.activity_type (activity_type),
    source_system  text not null references core.source_system (source_system),
    source_ref     text not null check (source_ref <> ''),
    occurred_at    timestamptz not null,
    ended_at       timestamptz,
    amount_cents   bigint check (amount_cents >= 0),
    currency       char(3) check (currency ~ '^[A-Z]{3}$'),
    quantity       integer not null default 1 check (quantity > 0),
    product_id     bigint references core.product (product_id),
    outlet         text,
    attributes     jsonb not null default '{}'::jsonb check (jsonb_typeof(attributes) = 'object'),
    ingest_file_id bigint references ingest.file (ingest_file_id),
    loaded_at      timestamptz not null default now(),
    unique (source_system, source_ref),
    check ((amount_cents is null) = (currency is null)),
    check (ended_at is null or ended_at >= occurred_at)
);
-- Selections ask "which contacts did X how often, how recently, for how much": this
-- covering index answers them with index-only scans (ADR 0001).
create index activity_contact_type_time_idx
    on core.activity (contact_id, activity_type, occurred_at) include (amount_cents, product_id);
-- "Who did X in this window" across all contacts, and the response windows of reports.
create index activity_type_time_idx on core.activity (activity_type, occurred_at) include (contact_id);
create index activity_product_idx on core.activity (product_id, contact_id) where product_id is not null;
create index activity_ingest_file_idx on core.activity (ingest_file_id);

create table core.inquiry (
    inquiry_id    bigint generated always as identity primary key,
    contact_id    bigint not null references core.contact (contact_id),
    source_system text not null references core.source_system (source_system),
    source_ref    text not null check (source_ref <> ''),
    opened_at     timestamptz not null,
    closed_at     timestamptz,
    channel       core.channel,
    topic         text,
    status        core.inquiry_status not null default 'open',
    body          text,
    unique (source_system, source_ref),
    check (closed_at is null or closed_at >= opened_at),
    check ((status = 'closed') = (closed_at is not null))
);
create index inquiry_contact_idx on core.inquiry (contact_id);

-- A ledger, never updated: the latest entry per contact, channel and purpose wins.
create table core.consent (
    consent_id       bigint generated always as identity primary key,
    contact_id       bigint not null references core.contact (contact_id),
    channel          core.channel not null,
    purpose          text not null check (purpose ~ '^[a-z][a-z0-9_]*$'),
    status           core.consent_status not null,
    recorded_at      timestamptz not null,
    source_system    text not null references core.source_system (source_system),
    source_ref       text,
    double_opt_in_at timestamptz,
    evidence         jsonb not null default '{}'::jsonb check (jsonb_typeof(evidence) = 'object'),
    unique (source_system, source_ref),
    check (double_opt_in_at is null or (status = 'opt_in' and double_opt_in_at >= recorded_at))
);
create index consent_latest_idx
    on core.consent (contact_id, channel, purpose, recorded_at desc, consent_id desc);

-- The consent in force: the latest entry per contact, channel and purpose.
create view core.current_consent as
select distinct on (contact_id, channel, purpose)
    contact_id, channel, purpose, status, recorded_at, double_opt_in_at, consent_id
from core.consent
order by contact_id, channel, purpose, recorded_at desc, consent_id desc;

-- Rows (or whole files, line_number null) that were not loaded, with every reason.
create table ingest.quarantine (
    quarantine_id  bigint generated always as identity primary key,
    ingest_file_id bigint not null references ingest.file (ingest_file_id),
    line_number    integer check (line_number >= 1),
    record         jsonb,
    raw_line       text,
    reasons        text[] not null check (cardinality(reasons) > 0),
    quarantined_at timestamptz not null default now(),
    unique nulls not distinct (ingest_file_id, line_number)
);
"""

DOWNGRADE = """
drop schema ingest cascade;
drop schema core cascade;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
