"""API keys of the real-time ingest API.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22

A key is `<key_id>.<secret>`. Only the key id (shown to humans, e.g. in `kms api key list`)
and a salted SHA-256 of the secret are stored, never the key. The secret is 32 random bytes
(256 bits): nobody can guess it, so a slow password hash (scrypt, bcrypt) would buy no
safety and would cost every request tens of milliseconds, and make wrong keys a cheap way
to load the server. The per-key salt only keeps two equal secrets from having equal hashes.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = r"""
create table ingest.api_key (
    key_id        text primary key check (key_id ~ '^kms_[a-z2-7]{12}$'),
    name          text not null check (btrim(name) <> ''),
    owner         text,
    scopes        text[] not null check (
                      cardinality(scopes) >= 1
                      and array_to_string(scopes, ' ') ~ '^[a-z_]+:[a-z_]+( [a-z_]+:[a-z_]+)*$'),
    salt          bytea not null check (octet_length(salt) = 16),
    secret_sha256 bytea not null check (octet_length(secret_sha256) = 32),
    created_at    timestamptz not null default now(),
    revoked_at    timestamptz,
    last_used_at  timestamptz,
    check (revoked_at is null or revoked_at >= created_at)
);
comment on table ingest.api_key is
    'Keys of the ingest API: the id shown to humans and sha256(salt || secret), never the key itself';
comment on column ingest.api_key.last_used_at is
    'Updated at most once a minute per key, so a busy client does not write a row per request';
"""

DOWNGRADE = """
drop table ingest.api_key;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
