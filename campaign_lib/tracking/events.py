"""Storing tracking hits, unsubscribes and provider receipts as `campaign.message_event` rows.

Each function is one short transaction over the statements of sql/tracking.sql. Events are
keyed so that what must happen once happens once: an unsubscribe per message, a provider's
event per (source, provider_event_id); opens and clicks are every hit (reports count unique
people and leave out `is_bot` rows).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from campaign_lib.sqlfiles import queries
from campaign_lib.tracking.tokens import TokenClaims
from campaign_lib.tracking.webhooks import Receipt

DEFAULT_PURPOSE = "newsletter"


@dataclass(frozen=True)
class UnsubscribePage:
    """What the unsubscribe page of a message shows."""

    channel: str
    preferred_language: str | None
    unsubscribed: bool


@dataclass(frozen=True)
class Unsubscribed:
    """The outcome of an unsubscribe POST: whether the message exists, and whether this call
    recorded the unsubscribe (False for a repeat)."""

    found: bool
    recorded: bool


@dataclass(frozen=True)
class StoredReceipts:
    """What a webhook's receipts did: received, newly stored, of those matched to a message,
    and addresses newly suppressed."""

    received: int
    stored: int
    matched: int
    suppressed: int


def record_hit(
    engine: Engine,
    claims: TokenClaims,
    *,
    user_agent: str | None,
    bot_reason: str | None,
    after_send_s: float,
    burst_s: float,
) -> int | None:
    """Store an open or click of a valid token; returns the event id, or None when no message
    has the token's key. A click also flags the message's click burst, if it makes one."""
    sql = queries("tracking.sql")
    event_type = "open" if claims.purpose == "open" else "click"
    with engine.begin() as conn:
        conn.execute(sql["relaxed_commit"])
        row = conn.execute(
            sql["record_hit"],
            {
                "event_type": event_type,
                "url": claims.url,
                "bot_reason": bot_reason,
                "user_agent": (user_agent or None) and user_agent[:512],
                "after_send_s": after_send_s,
                "message_key": claims.message_key,
            },
        ).first()
        if row is None:
            return None
        if event_type == "click" and burst_s > 0:
            conn.execute(sql["lock_message_clicks"], {"message_id": row.message_id})
            conn.execute(sql["flag_click_burst"], {"message_id": row.message_id, "burst_s": burst_s})
        return row.message_event_id


def unsubscribe_page(engine: Engine, message_key: str) -> UnsubscribePage | None:
    """The unsubscribe page's facts for a message, or None when no message has the key."""
    with engine.connect() as conn:
        row = conn.execute(queries("tracking.sql")["unsubscribe_page"], {"message_key": message_key}).first()
    return None if row is None else UnsubscribePage(row.channel, row.preferred_language, row.unsubscribed)


def unsubscribe(
    engine: Engine,
    message_key: str,
    *,
    user_agent: str | None,
    one_click: bool,
    default_purpose: str = DEFAULT_PURPOSE,
) -> Unsubscribed:
    """Unsubscribe the person of a message from its channel (event, consent opt_out,
    suppression), once: a repeat changes nothing."""
    with engine.begin() as conn:
        row = conn.execute(
            queries("tracking.sql")["unsubscribe"],
            {
                "message_key": message_key,
                "user_agent": (user_agent or None) and user_agent[:512],
                "one_click": one_click,
                "default_purpose": default_purpose,
            },
        ).one()
    return Unsubscribed(found=row.found, recorded=row.recorded)


def record_receipts(engine: Engine, receipts: Sequence[Receipt]) -> StoredReceipts:
    """Store provider receipts (one webhook's) in one transaction; see sql/tracking.sql."""
    if not receipts:
        return StoredReceipts(0, 0, 0, 0)
    payload = json.dumps(
        [
            {
                "source": receipt.source,
                "provider_event_id": receipt.provider_event_id,
                "event_type": receipt.event_type,
                "occurred_at": receipt.occurred_at.isoformat() if receipt.occurred_at else None,
                "provider_message_id": receipt.provider_message_id,
                "message_key": receipt.message_key,
                "address": receipt.address,
                "detail": receipt.detail,
            }
            for receipt in receipts
        ]
    )
    with engine.begin() as conn:
        row = conn.execute(queries("tracking.sql")["record_receipts"], {"receipts": payload}).one()
    return StoredReceipts(row.received, row.stored, row.matched, row.suppressed)


def receipts_for(engine: Engine, message_ids: Iterable[int]) -> dict[int, frozenset[str]]:
    """The event types stored for each of these messages (those without any are absent).

    For the outbox's reconciliation of 'ambiguous' messages: any event means the provider had
    the message; 'bounce_hard' or 'failed' mean it had it and could not deliver it."""
    ids = list(message_ids)
    if not ids:
        return {}
    with engine.connect() as conn:
        rows = conn.execute(queries("tracking.sql")["receipts_for"], {"message_ids": ids})
        return {row.message_id: frozenset(row.event_types) for row in rows}
