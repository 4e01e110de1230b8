"""API keys: created once with their secret shown once, stored as a salted hash, checked in constant time.

A key reads `<key_id>.<secret>`, e.g. `kms_3fjq7ak2mzxe.Jv0...`. The key id is public (it
names the key in lists and logs); the secret is 32 random bytes, URL-safe base64. The
database keeps `sha256(salt || secret)` with a random 16-byte salt per key: a fast hash is
enough for a 256-bit random secret, which cannot be guessed (see migration 0003).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from campaign_lib.errors import ConfigError
from campaign_lib.sqlfiles import queries

EVENTS_WRITE = "events:write"
CONTACTS_WRITE = "contacts:write"
SCOPES = (EVENTS_WRITE, CONTACTS_WRITE)

_KEY_ID = re.compile(r"kms_[a-z2-7]{12}")
_SECRET = re.compile(r"[A-Za-z0-9_-]{43}")
# Compared against when the key id is unknown, so that an unknown id costs the same time as
# a wrong secret and response times do not tell which key ids exist.
_DUMMY_SALT = bytes(16)
_DUMMY_HASH = hashlib.sha256(b"no such key").digest()


@dataclass(frozen=True)
class ApiKey:
    """A key as listed: never its secret or hash."""

    key_id: str
    name: str
    owner: str | None
    scopes: tuple[str, ...]
    created_at: dt.datetime
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None


@dataclass(frozen=True)
class Caller:
    """The key a request authenticated with, and what it may do."""

    key_id: str
    scopes: frozenset[str]


def _secret_hash(salt: bytes, secret: str) -> bytes:
    return hashlib.sha256(salt + secret.encode("ascii")).digest()


def _new_key_id() -> str:
    return "kms_" + base64.b32encode(secrets.token_bytes(10)).decode("ascii").lower()[:12]


def create_key(
    engine: Engine, name: str, scopes: tuple[str, ...] | list[str], owner: str | None = None
) -> tuple[str, str]:
    """Create a key; returns (key_id, plaintext key). The plaintext is shown once and not stored.

    Raises ConfigError for an empty name or an unknown scope.
    """
    if not name or not name.strip():
        raise ConfigError("an API key needs a name (who or what uses it)")
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        problem = f"unknown API key scope {', '.join(unknown)}" if unknown else "an API key needs a scope"
        raise ConfigError(f"{problem}; choose from {', '.join(SCOPES)}")
    sql = queries("api.sql")
    for _ in range(3):
        key_id, secret, salt = _new_key_id(), secrets.token_urlsafe(32), secrets.token_bytes(16)
        try:
            with engine.begin() as conn:
                conn.execute(
                    sql["insert_key"],
                    {
                        "key_id": key_id,
                        "name": name.strip(),
                        "owner": owner,
                        "scopes": sorted(set(scopes)),
                        "salt": salt,
                        "secret_sha256": _secret_hash(salt, secret),
                    },
                )
        except IntegrityError:
            # 60 random bits: a clash of key ids is next to impossible, but costs nothing to retry.
            continue
        return key_id, f"{key_id}.{secret}"
    raise ConfigError("could not find a free API key id; try again")


def revoke_key(engine: Engine, key_id: str) -> dt.datetime:
    """Revoke a key at once (requests with it get 401); returns when it was revoked.

    Raises ConfigError when no key has this id. Revoking twice keeps the first time.
    """
    with engine.begin() as conn:
        row = conn.execute(queries("api.sql")["revoke_key"], {"key_id": key_id}).one_or_none()
    if row is None:
        raise ConfigError(f"no API key has the id {key_id!r} (see `kms api key list`)")
    return row.revoked_at


def list_keys(engine: Engine) -> list[ApiKey]:
    """Every key, newest first, with its scopes and state; never a secret or hash."""
    with engine.connect() as conn:
        rows = conn.execute(queries("api.sql")["list_keys"]).all()
    return [
        ApiKey(
            key_id=row.key_id,
            name=row.name,
            owner=row.owner,
            scopes=tuple(row.scopes),
            created_at=row.created_at,
            revoked_at=row.revoked_at,
            last_used_at=row.last_used_at,
        )
        for row in rows
    ]


def split_key(presented: str) -> tuple[str, str] | None:
    """(key_id, secret) of a presented key, or None when it is not shaped like one."""
    key_id, dot, secret = presented.strip().partition(".")
    if not dot or not _KEY_ID.fullmatch(key_id) or not _SECRET.fullmatch(secret):
        return None
    return key_id, secret


def authenticate(engine: Engine, presented: str | None) -> Caller | None:
    """The caller of a presented key, or None for a missing, malformed, unknown, wrong or revoked key.

    The secret's hash is compared with `hmac.compare_digest`, also for an unknown key id.
    """
    parts = split_key(presented) if presented else None
    if parts is None:
        return None
    key_id, secret = parts
    sql = queries("api.sql")
    with engine.connect() as conn:
        row = conn.execute(sql["find_key"], {"key_id": key_id}).one_or_none()
        salt, stored = (row.salt, row.secret_sha256) if row is not None else (_DUMMY_SALT, _DUMMY_HASH)
        matches = hmac.compare_digest(_secret_hash(bytes(salt), secret), bytes(stored))
        if row is None or not matches or row.revoked_at is not None:
            return None
        conn.execute(sql["touch_key"], {"key_id": key_id})
        conn.commit()
    return Caller(key_id=key_id, scopes=frozenset(row.scopes))
