"""Push tokens on source records, so that a push subscription becomes a core.identifier.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-22

A website `push_subscription` event carries the device's push token (FCM or APNs) or a
web push subscription (stored as `webpush:` + its JSON). The token is an identifying
value like an email or a cookie: it gets a column of its own on `ingest.record` (and on
its staging twin) and a row in the view `ingest.record_identifier`, from which identity
resolution writes `core.identifier` (kind `push_token`) for the record's contact. Adding a
nullable column without a default rewrites nothing.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_VIEW = """
create or replace view ingest.record_identifier as
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
        ('cookie_id', r.cookie_id){push_token}
) as k (kind, value)
where k.value is not null;
"""

UPGRADE = """
alter table ingest.record
    add column push_token text check (push_token <> '' and push_token = btrim(push_token));
alter table ingest.stage_record add column push_token text;
comment on column ingest.record.push_token is
    'A device push token (FCM, APNs) or webpush:<subscription JSON>; a core.identifier of kind push_token';
""" + _VIEW.format(push_token=",\n        ('push_token', r.push_token)")

DOWNGRADE = (
    "drop view ingest.record_identifier;\n"
    + _VIEW.format(push_token="").replace("create or replace view", "create view")
    + """
alter table ingest.stage_record drop column push_token;
alter table ingest.record drop column push_token;
"""
)


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
