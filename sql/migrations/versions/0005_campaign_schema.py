"""The campaign schema: definitions, runs, waterfalls, frozen audiences, suppressions, history.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22

A campaign definition (campaigns/*.yaml) is a row of `campaign.campaign` with the version
of its file. Each Airflow run of a campaign DAG is one `campaign.campaign_run`, keyed by
the DAG id and run id, so a retried or cleared task finds the run it already made. The
funnel writes one `campaign.waterfall_step` per step (count in, removed, count out, reason)
and the audience snapshot `campaign.audience`, one row per run and contact; once the run
is frozen the snapshot is never updated (a trigger refuses it) and a rerun reads it back.

`campaign.suppression` is global: unsubscribes, hard bounces, complaints, erasure
tombstones and a blocklist, by contact or by address (email, phone, push token or a whole
email domain), for one channel or all. `campaign.contact_history` is what was sent to whom
(written by delivery, step 4); contact pressure counts it across all campaigns.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = r"""
create schema campaign;

create type campaign.run_status as enum (
    'selecting',   -- the funnel runs; nothing of the run is final yet
    'dry_run',     -- the waterfall is recorded, no audience is kept
    'frozen',      -- the audience snapshot is written and never changes again
    'approved',    -- a person approved the frozen audience for delivery
    'failed');
create type campaign.suppression_reason as enum (
    'unsubscribe', 'hard_bounce', 'complaint', 'erasure', 'blocklist');
create type campaign.address_kind as enum ('email', 'phone', 'push_token', 'email_domain');

-- One row per campaign definition (file name), with the version of the definition last run.
-- A number in [0, 1) from a text, the same on every server and in Python
-- (the first 12 hex digits of md5(text) as a number over 2**48): control groups, A/B cells,
-- hold-out and random caps
-- hash "contact:campaign" with it, so a person stays in their group across reruns.
create function campaign.unit_hash(value text) returns double precision
    language sql immutable strict parallel safe
    return ('x' || substr(md5(value), 1, 12))::bit(48)::bigint / 281474976710656.0;

create table campaign.campaign (
    campaign_name      text primary key check (campaign_name ~ '^[a-z][a-z0-9_]{1,62}$'),
    origin             text not null check (origin in ('file', 'adhoc')),
    owner              text,
    description        text,
    definition_version text not null check (definition_version ~ '^[0-9a-f]{16}$'),
    definition         jsonb not null check (jsonb_typeof(definition) = 'object'),
    created_at         timestamptz not null default now(),
    updated_at         timestamptz not null default now()
);

create table campaign.campaign_run (
    campaign_run_id    bigint generated always as identity primary key,
    campaign_name      text not null references campaign.campaign (campaign_name),
    dag_id             text not null,
    run_id             text not null,
    status             campaign.run_status not null default 'selecting',
    dry_run            boolean not null default false,
    definition_version text not null,
    selection_name     text not null,
    selection_version  text not null,
    params             jsonb not null default '{}'::jsonb check (jsonb_typeof(params) = 'object'),
    as_of              timestamptz not null,
    audience_count     integer check (audience_count >= 0),
    control_count      integer check (control_count >= 0),
    created_at         timestamptz not null default now(),
    frozen_at          timestamptz,
    unique (dag_id, run_id),
    check ((status in ('frozen', 'approved')) <= (frozen_at is not null)),
    check (not dry_run or status in ('selecting', 'dry_run', 'failed'))
);
create index campaign_run_campaign_idx on campaign.campaign_run (campaign_name, created_at desc);

-- The funnel of a run, step by step: what came in, what was removed and why.
create table campaign.waterfall_step (
    campaign_run_id bigint not null references campaign.campaign_run (campaign_run_id) on delete cascade,
    position        smallint not null check (position >= 1),
    step            text not null check (step ~ '^[a-z][a-z_]*$'),
    count_in        integer not null check (count_in >= 0),
    removed         integer not null check (removed >= 0),
    count_out       integer not null check (count_out >= 0),
    reason          text not null,
    detail          jsonb not null default '{}'::jsonb check (jsonb_typeof(detail) = 'object'),
    primary key (campaign_run_id, position),
    unique (campaign_run_id, step),
    check (count_out = count_in - removed)
);

-- The frozen audience: one row per run and contact, control group included (cell 'control').
create table campaign.audience (
    campaign_run_id   bigint not null references campaign.campaign_run (campaign_run_id) on delete cascade,
    contact_id        bigint not null references core.contact (contact_id),
    account_id        bigint not null,
    channel           core.channel not null,
    cell              text not null check (cell ~ '^[a-z][a-z0-9_]*$'),
    offer_sku         text,
    selection_version text not null,
    score             numeric,
    primary key (campaign_run_id, contact_id)
);
create index audience_contact_idx on campaign.audience (contact_id);
comment on table campaign.audience is
    'Frozen snapshot of a campaign run: never updated; rows go only with their run or an erasure';

create function campaign.refuse_audience_update() returns trigger language plpgsql as $$
begin
    raise exception 'campaign.audience is a frozen snapshot: rows are never updated (run %)',
        old.campaign_run_id;
end
$$;
create trigger audience_never_updated before update on campaign.audience
    for each row execute function campaign.refuse_audience_update();

-- Global suppressions win over every selection: by contact or by address, one channel or all.
create table campaign.suppression (
    suppression_id bigint generated always as identity primary key,
    contact_id     bigint references core.contact (contact_id),
    address_kind   campaign.address_kind,
    address        text check (address = btrim(address) and address <> ''),
    channel        core.channel,
    reason         campaign.suppression_reason not null,
    source         text not null check (btrim(source) <> ''),
    created_at     timestamptz not null default now(),
    check ((contact_id is null) <> (address is null)),
    check ((address is null) = (address_kind is null)),
    -- Emails and domains are kept as core.contact keeps emails; push tokens are case-sensitive.
    check (address_kind not in ('email', 'email_domain') or address = lower(address))
);
create index suppression_contact_idx on campaign.suppression (contact_id) where contact_id is not null;
create index suppression_address_idx on campaign.suppression (address_kind, address)
    where address is not null;
comment on column campaign.suppression.channel is 'null: every channel';

-- What was sent to whom; delivery (step 4) writes it, contact pressure reads it.
create table campaign.contact_history (
    contact_history_id bigint generated always as identity primary key,
    contact_id         bigint not null references core.contact (contact_id),
    channel            core.channel not null,
    campaign_name      text not null references campaign.campaign (campaign_name),
    campaign_run_id    bigint references campaign.campaign_run (campaign_run_id),
    sent_at            timestamptz not null,
    unique (campaign_run_id, contact_id, channel)
);
create index contact_history_contact_time_idx
    on campaign.contact_history (contact_id, sent_at) include (channel);
"""

DOWNGRADE = """
drop schema campaign cascade;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
