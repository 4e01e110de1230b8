"""Providers' delivery receipts: signatures, and their payloads as `Receipt`s.

    SMS    Twilio's status callback: a form post signed with X-Twilio-Signature =
           base64(HMAC-SHA1(auth token, callback URL + every field name and value, sorted by name)),
           computed by connectors.sms.twilio_signature (the emulator signs with it too)
    push   {"events": [{"event_id", "status", "message_id", "message_key", "token", "error",
           "occurred_at"}]}, FCM has no delivery callback, so the shape is ours; signed with
           X-KMS-Signature: sha256=<hex HMAC-SHA256(secret, body)>
    email  a Postmark-like event (Delivery, Bounce, SpamComplaint), one object or
           {"events": [...]}, signed like push

Parsing knows nothing of the database: each receipt says which message it is about (message
key and/or the provider's message id), what happened, and the provider's id of the event, so
that storing a webhook posted twice is a no-op (campaign_lib.tracking.events).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from campaign_lib.errors import KmsError

SIGNATURE_PREFIX = "sha256="
# Twilio ErrorCodes that mean the number can never receive an SMS (invalid, unknown, landline),
# and those that mean "not now" (handset off, carrier trouble).
SMS_HARD_ERRORS = frozenset({"21211", "21612", "21614", "30005", "30006"})
SMS_SOFT_ERRORS = frozenset({"30001", "30003", "30008", "30009"})
SMS_FINAL_STATUSES = {"delivered": "delivered", "undelivered": "failed", "failed": "failed"}
SMS_PENDING_STATUSES = frozenset(
    {"accepted", "scheduled", "queued", "sending", "sent", "receiving", "received"}
)
PUSH_STATUSES = {"delivered": "delivered", "failed": "failed", "unregistered": "bounce_hard"}
EMAIL_HARD_BOUNCES = frozenset({"HardBounce", "BadEmailAddress", "ManuallyDeactivated"})
EMAIL_COMPLAINTS = frozenset({"SpamComplaint", "SpamNotification"})
MAX_EVENTS_PER_POST = 1000
_OUR_MESSAGE_ID = re.compile(r"<?([0-9a-f]{32})@[^>]+>?")


class WebhookError(KmsError):
    """A webhook's payload cannot be read; the provider gets a 422 with this message."""


@dataclass(frozen=True)
class Receipt:
    """One provider event about one message."""

    source: str  # 'sms' | 'push' | 'email'
    provider_event_id: str
    event_type: str  # a campaign.message_event_type
    occurred_at: dt.datetime | None = None  # None: when it reached us
    provider_message_id: str | None = None
    message_key: str | None = None
    address: str | None = None  # what a hard bounce or complaint suppresses
    detail: dict[str, Any] = field(default_factory=dict)


def body_signature(secret: str, body: bytes) -> str:
    """The X-KMS-Signature header value of a JSON webhook body."""
    return SIGNATURE_PREFIX + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def signature_matches(expected: str, presented: str | None) -> bool:
    """Constant-time comparison of a signature header with the one we computed."""
    return presented is not None and hmac.compare_digest(expected.encode("ascii"), presented.encode("utf-8"))


def sms_receipts(fields: list[tuple[str, str]], message_key: str | None) -> list[Receipt]:
    """Receipts of a Twilio status callback; [] for statuses that are not final (queued, sent ...)."""
    form = dict(fields)
    sid, status = (
        form.get("MessageSid") or form.get("SmsSid"),
        form.get("MessageStatus") or form.get("SmsStatus"),
    )
    if not sid or not status:
        raise WebhookError("a status callback needs MessageSid and MessageStatus")
    if status in SMS_PENDING_STATUSES:
        return []
    if status not in SMS_FINAL_STATUSES:
        raise WebhookError(f"unknown MessageStatus {status!r}")
    error = form.get("ErrorCode") or None
    event_type = SMS_FINAL_STATUSES[status]
    if event_type == "failed" and error in SMS_HARD_ERRORS:
        event_type = "bounce_hard"
    elif event_type == "failed" and error in SMS_SOFT_ERRORS:
        event_type = "bounce_soft"
    detail = {"status": status, "error_code": error} if error else {"status": status}
    return [
        Receipt(
            source="sms",
            provider_event_id=f"{sid}:{status}",
            event_type=event_type,
            provider_message_id=sid,
            message_key=message_key,
            address=form.get("To") or None,
            detail=detail,
        )
    ]


def push_receipts(payload: Any) -> list[Receipt]:
    """Receipts of a push webhook body (already parsed JSON)."""
    receipts = []
    for index, event in enumerate(_events(payload)):
        status = _text(event, "status", index)
        if status not in PUSH_STATUSES:
            raise WebhookError(f"events[{index}].status must be one of {', '.join(PUSH_STATUSES)}")
        detail = {"status": status}
        if event.get("error"):
            detail["error"] = str(event["error"])
        receipts.append(
            Receipt(
                source="push",
                provider_event_id=_text(event, "event_id", index),
                event_type=PUSH_STATUSES[status],
                occurred_at=_time(event.get("occurred_at"), index),
                provider_message_id=_optional_text(event, "message_id", index),
                message_key=_optional_text(event, "message_key", index),
                address=_optional_text(event, "token", index),
                detail=detail,
            )
        )
    return receipts


def email_receipts(payload: Any) -> list[Receipt]:
    """Receipts of an email webhook body (already parsed JSON): Delivery, Bounce, SpamComplaint."""
    receipts = []
    for index, event in enumerate(_events(payload)):
        record = _text(event, "RecordType", index)
        message_id = _text(event, "MessageID", index)
        recipient = _optional_text(event, "Recipient", index) or _optional_text(event, "Email", index)
        detail: dict[str, Any] = {"record_type": record}
        if record == "Delivery":
            event_type, when = "delivered", event.get("DeliveredAt")
        elif record == "Bounce":
            kind = _text(event, "Type", index)
            detail["type"] = kind
            if kind in EMAIL_COMPLAINTS:
                event_type = "complaint"
            else:
                event_type = "bounce_hard" if kind in EMAIL_HARD_BOUNCES else "bounce_soft"
            when = event.get("BouncedAt")
        elif record == "SpamComplaint":
            event_type, when = "complaint", event.get("BouncedAt") or event.get("ReceivedAt")
        else:
            raise WebhookError(f"events[{index}].RecordType must be Delivery, Bounce or SpamComplaint")
        if event.get("Description"):
            detail["description"] = str(event["Description"])[:1000]
        metadata = event.get("Metadata")
        key = metadata.get("message_key") if isinstance(metadata, Mapping) else None
        ours = _OUR_MESSAGE_ID.fullmatch(message_id)
        event_id = event.get("ID")
        receipts.append(
            Receipt(
                source="email",
                provider_event_id=str(event_id) if event_id else f"{record}:{message_id}:{recipient or ''}",
                event_type=event_type,
                occurred_at=_time(when, index),
                provider_message_id=message_id,
                message_key=str(key) if key else (ours.group(1) if ours else None),
                address=recipient.lower() if recipient else None,
                detail=detail,
            )
        )
    return receipts


def _events(payload: Any) -> list[Mapping[str, Any]]:
    if isinstance(payload, Mapping) and set(payload) == {"events"}:
        payload = payload["events"]
    elif isinstance(payload, Mapping):
        payload = [payload]
    if not isinstance(payload, list) or not payload or len(payload) > MAX_EVENTS_PER_POST:
        raise WebhookError(f"the body must be an event or {{'events': [1 to {MAX_EVENTS_PER_POST} events]}}")
    for index, event in enumerate(payload):
        if not isinstance(event, Mapping):
            raise WebhookError(f"events[{index}] is not an object")
    return payload


def _text(event: Mapping[str, Any], name: str, index: int) -> str:
    value = _optional_text(event, name, index)
    if value is None:
        raise WebhookError(f"events[{index}].{name} is missing")
    return value


def _optional_text(event: Mapping[str, Any], name: str, index: int) -> str | None:
    value = event.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str | int) or isinstance(value, bool) or len(str(value)) > 4096:
        raise WebhookError(f"events[{index}].{name} must be a string of at most 4096 characters")
    return str(value)


def _time(raw: Any, index: int) -> dt.datetime | None:
    if raw is None or raw == "":
        return None
    try:
        when = dt.datetime.fromisoformat(str(raw))
    except ValueError:
        raise WebhookError(f"events[{index}] has a time that is not ISO 8601: {str(raw)[:40]!r}") from None
    if when.tzinfo is None:
        raise WebhookError(f"events[{index}] has a time without a time zone: {str(raw)[:40]!r}")
    return when
