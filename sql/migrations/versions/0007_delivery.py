"""The outbox: one message per run, contact and channel, and the delivery state of each run.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22

`campaign.message` is materialised from a frozen audience (control group excluded) and is
the only record of what was sent: unique per (run, contact, channel), with a deterministic
`message_key` (md5 hex of `run:contact:channel`) that connectors pass on as the provider's
idempotency key and in the email Message-ID. A message moves

    pending ──▶ sending ──▶ sent | failed_soft | failed_hard | skipped | ambiguous
                   ▲             │
                   └─────────────┘ (failed_soft, once next_attempt_at has come)

`sending` is committed before the message is handed to the provider, under a lease
(lease_owner, lease_expires_at); a `sending` row whose lease expired belonged to a worker
that died mid-send and becomes `ambiguous`, which is never sent again without evidence
(a receipt in campaign.message_event) or an explicit per-channel policy (ADR 0010).

`campaign.delivery` is one row per run being delivered: the consent purpose its eligibility
re-check uses, the error budget and its use, and whether the run is delivering, paused (with
the reason) or completed. Proof sends are kept apart in `campaign.proof_send` so that no report
counts them.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = r"""
create type campaign.message_status as enum (
    'pending',      -- materialised, not yet handed to a provider
    'sending',      -- committed right before the hand-over, under a lease
    'sent',         -- the provider accepted it (provider_message_id when it gave one)
    'failed_soft',  -- refused for now (4xx, 429, timeout before hand-over); retried at next_attempt_at
    'failed_hard',  -- refused for good (5xx for the address, invalid token, gave up retrying)
    'skipped',      -- not sent on purpose: opt-out, suppression, no address, erased or merged contact
    'ambiguous');   -- the provider may have it; never resent blindly (ADR 0010)
create type campaign.delivery_status as enum ('delivering', 'paused', 'completed');

create table campaign.delivery (
    campaign_run_id  bigint primary key references campaign.campaign_run (campaign_run_id) on delete cascade,
    status           campaign.delivery_status not null default 'delivering',
    paused_reason    text,
    purpose          text not null check (purpose ~ '^[a-z][a-z0-9_]*$'),
    batch_size       integer not null check (batch_size >= 1),
    messages         integer not null check (messages >= 0),
    -- The error budget: failed_hard, failed_soft and ambiguous outcomes counted since the
    -- last resume; more than max_failures pauses the run.
    max_failures     integer not null check (max_failures >= 0),
    failures         integer not null default 0 check (failures >= 0),
    started_at       timestamptz not null default now(),
    paused_at        timestamptz,
    finished_at      timestamptz,
    check ((status = 'paused') = (paused_reason is not null and paused_at is not null)),
    check ((status = 'completed') = (finished_at is not null))
);
comment on table campaign.delivery is
    'One row per campaign run being delivered: state, consent purpose, error budget';

create table campaign.message (
    message_id          bigint generated always as identity primary key,
    message_key         text not null unique check (message_key ~ '^[0-9a-f]{32}$'),
    campaign_run_id     bigint not null references campaign.campaign_run (campaign_run_id) on delete cascade,
    contact_id          bigint not null references core.contact (contact_id),
    channel             core.channel not null,
    cell                text not null check (cell ~ '^[a-z][a-z0-9_]*$' and cell <> 'control'),
    batch_no            integer not null check (batch_no >= 0),
    status              campaign.message_status not null default 'pending',
    attempts            smallint not null default 0 check (attempts >= 0),
    lease_owner         text,
    lease_expires_at    timestamptz,
    next_attempt_at     timestamptz,
    address             text,
    provider_message_id text,
    segments            smallint check (segments >= 1),
    cost                numeric(14, 4) check (cost >= 0),
    reason              text,
    created_at          timestamptz not null default now(),
    sent_at             timestamptz,
    updated_at          timestamptz not null default now(),
    unique (campaign_run_id, contact_id, channel),
    -- A lease exists exactly while a worker hands the message over.
    check ((status = 'sending') = (lease_owner is not null and lease_expires_at is not null)),
    check ((status = 'sent') = (sent_at is not null)),
    check (status <> 'failed_soft' or next_attempt_at is not null),
    check (status not in ('failed_soft', 'failed_hard', 'skipped', 'ambiguous') or reason is not null)
);
-- What a delivery task claims: the open messages of its batch, in key order.
create index message_open_idx on campaign.message (campaign_run_id, channel, batch_no, message_id)
    where status in ('pending', 'failed_soft', 'sending', 'ambiguous');
create index message_run_status_idx on campaign.message (campaign_run_id, status);
create index message_contact_idx on campaign.message (contact_id);
comment on table campaign.message is
    'The outbox: one message per run, contact and channel; control-group members have none';
comment on column campaign.message.message_key is
    'md5 hex of "run:contact:channel": idempotency key at the provider, email Message-ID';
comment on column campaign.message.cost is
    'In the campaign''s currency: per message, or per segment times segments for SMS';

-- Proof sends to seed addresses: never in campaign.message, so no report counts them. The
-- campaign may not be registered yet when its proofs go out (no foreign key on its name).
create table campaign.proof_send (
    proof_send_id       bigint generated always as identity primary key,
    campaign_name       text not null check (campaign_name ~ '^[a-z][a-z0-9_]{1,62}$'),
    definition_version  text,
    channel             core.channel not null default 'email',
    contact_id          bigint references core.contact (contact_id) on delete set null,
    address             text not null check (btrim(address) <> ''),
    message_key         text not null unique,
    status              text not null
                        check (status in ('sent', 'failed_soft', 'failed_hard', 'skipped', 'ambiguous')),
    provider_message_id text,
    reason              text,
    sent_at             timestamptz not null default now()
);
comment on column campaign.proof_send.contact_id is 'the sample person whose data filled the proof';
"""

DOWNGRADE = """
drop table campaign.proof_send;
drop table campaign.message;
drop table campaign.delivery;
drop type campaign.delivery_status;
drop type campaign.message_status;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
