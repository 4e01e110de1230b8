"""Tracking: every response and provider receipt of a message, as one event each.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22

`campaign.message_event` keeps opens, clicks and unsubscribes from the tracking endpoints and
delivery receipts, bounces and complaints from the providers' webhooks, each with its message.
Nothing is ever updated but the bot flag: every open is a row (reports count unique people),
and scanner, bot and prefetch hits stay as rows with `is_bot` and the reason, so reports can
leave them out and an analyst can still see them.

The message's run, contact and channel are copied into each event: reports of a run with a
million people then read the events of that run from one index, without joining the outbox.
A provider's event id is unique per source, so a webhook posted again is a no-op; a receipt
for a message we cannot find keeps `message_id` null (nothing is dropped silently).

Also an index on `campaign.message.provider_message_id`, by which receipts find their message.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = r"""
create type campaign.message_event_type as enum (
    'delivered',    -- the provider handed it to the recipient's mailbox, phone or device
    'open',         -- the open pixel was fetched (email)
    'click',        -- a tracked link was followed; url says which
    'unsubscribe',  -- the person unsubscribed through the message's link (once per message)
    'bounce_soft',  -- temporary delivery failure reported later by the provider
    'bounce_hard',  -- permanent: the address does not exist; the address is suppressed
    'complaint',    -- marked as spam; the address is suppressed
    'failed');      -- the provider gave up for another reason (SMS undelivered, push error)

create table campaign.message_event (
    message_event_id  bigint generated always as identity primary key,
    message_id        bigint references campaign.message (message_id) on delete cascade,
    campaign_run_id   bigint,
    contact_id        bigint,
    channel           core.channel,
    event_type        campaign.message_event_type not null,
    occurred_at       timestamptz not null,
    recorded_at       timestamptz not null default now(),
    url               text,
    is_bot            boolean not null default false,
    bot_reason        text,
    user_agent        text,
    source            text not null check (source in ('tracking', 'sms', 'push', 'email')),
    provider_event_id text check (provider_event_id <> ''),
    detail            jsonb not null default '{}'::jsonb check (jsonb_typeof(detail) = 'object'),
    unique (source, provider_event_id),
    check ((message_id is null) = (campaign_run_id is null)),
    check ((message_id is null) = (contact_id is null)),
    check ((event_type = 'click') = (url is not null)),
    check (is_bot = (bot_reason is not null))
);
comment on table campaign.message_event is
    'Responses and receipts of messages; rows are never updated except is_bot/bot_reason';
comment on column campaign.message_event.campaign_run_id is 'copied from the message for reports';
comment on column campaign.message_event.contact_id is 'copied from the message for reports';
comment on column campaign.message_event.channel is 'copied from the message for reports';
comment on column campaign.message_event.provider_event_id is
    'the provider''s id of the event (a repeat is a no-op); tracking uses it for once-only events';

create index message_event_message_idx on campaign.message_event (message_id, event_type);
create index message_event_run_idx
    on campaign.message_event (campaign_run_id, event_type)
    include (message_id, contact_id, channel, is_bot, occurred_at)
    where campaign_run_id is not null;
create index message_provider_message_idx
    on campaign.message (provider_message_id) where provider_message_id is not null;
"""

DOWNGRADE = """
drop index campaign.message_provider_message_idx;
drop table campaign.message_event;
drop type campaign.message_event_type;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
