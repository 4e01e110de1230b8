"""Erasure on request (the right to be forgotten): the erasure log and the erased identifiers.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-23

`privacy.erasure` is the log of requests: who asked, why, when, which contacts were erased
and how many rows of each kind went; it holds no personal data. `privacy.erased_identifier`
holds the SHA-256 of every identifier an erased person was known by (email, phone, loyalty
card, cookie, ...), so that a later export of a source system that still holds the person
does not bring them back: the loader quarantines such rows without their content. A hash
of a value that is known (the request names it) is not an anonymisation; it is kept for
exactly this purpose and documented in docs/privacy.md.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = """
create schema privacy;

create table privacy.erasure (
    erasure_id    bigint generated always as identity primary key,
    requested_by  text not null check (btrim(requested_by) <> ''),
    reason        text,
    requested_at  timestamptz not null default now(),
    contact_ids   bigint[] not null,
    erased_rows   jsonb not null check (jsonb_typeof(erased_rows) = 'object')
);
comment on table privacy.erasure is
    'One row per erasure request carried out; no personal data (contact ids are erased stubs)';

create table privacy.erased_identifier (
    kind          core.identifier_kind not null,
    value_sha256  bytea not null check (length(value_sha256) = 32),
    erasure_id    bigint not null references privacy.erasure (erasure_id),
    primary key (kind, value_sha256)
);
comment on table privacy.erased_identifier is
    'SHA-256 of the identifiers of erased persons (value as core.identifier stores it); '
    'the loader quarantines source rows that carry one, without their content';
"""

DOWNGRADE = """
drop schema privacy cascade;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
