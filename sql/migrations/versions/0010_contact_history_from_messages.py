"""Contact history written by the database whenever a message becomes sent.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-23

Every message that reaches status `sent` is one row of `campaign.contact_history` (what
contact pressure counts and attribution reads), once per run, contact and channel. Four
statements used to insert that row next to their own update (a provider's answer, the
reconciliation of an ambiguous message, a call-centre export, the synthetic campaigns of
the reporting benchmark), each with its own copy of the insert. Statement-level triggers
on `campaign.message` now write it from the rows that became sent, in one set-based
insert per statement, so a new way of sending cannot forget it.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = """
create function campaign.record_sent_messages() returns trigger language plpgsql as $$
begin
    if tg_op = 'INSERT' then
        insert into campaign.contact_history (contact_id, channel, campaign_name, campaign_run_id, sent_at)
        select n.contact_id, n.channel, r.campaign_name, n.campaign_run_id, n.sent_at
        from sent_rows as n
        join campaign.campaign_run as r on r.campaign_run_id = n.campaign_run_id
        where n.status = 'sent'
        on conflict (campaign_run_id, contact_id, channel) do nothing;
    else
        insert into campaign.contact_history (contact_id, channel, campaign_name, campaign_run_id, sent_at)
        select n.contact_id, n.channel, r.campaign_name, n.campaign_run_id, n.sent_at
        from sent_rows as n
        join earlier_rows as o on o.message_id = n.message_id
        join campaign.campaign_run as r on r.campaign_run_id = n.campaign_run_id
        where n.status = 'sent' and o.status <> 'sent'
        on conflict (campaign_run_id, contact_id, channel) do nothing;
    end if;
    return null;
end
$$;
comment on function campaign.record_sent_messages() is
    'One campaign.contact_history row per message that became sent (run, contact, channel)';

create trigger message_sent_on_insert after insert on campaign.message
    referencing new table as sent_rows
    for each statement execute function campaign.record_sent_messages();
create trigger message_sent_on_update after update on campaign.message
    referencing old table as earlier_rows new table as sent_rows
    for each statement execute function campaign.record_sent_messages();
"""

DOWNGRADE = """
drop trigger message_sent_on_update on campaign.message;
drop trigger message_sent_on_insert on campaign.message;
drop function campaign.record_sent_messages();
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
