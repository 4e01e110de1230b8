"""Provider receipts over real HTTP: signed SMS status callbacks (Twilio's form and signature),
push and email webhooks, posted to the kms API app under uvicorn, stored in the test database."""

from __future__ import annotations

import json
import time
import uuid
from urllib.parse import urlencode

import httpx
import pytest
import uvicorn
from servers_tracking import EMAIL_WEBHOOK_SECRET, PUSH_WEBHOOK_SECRET, SMS_WEBHOOK_TOKEN, events_of
from sqlalchemy import text
from sqlalchemy.engine import Engine

from campaign_lib.api.app import create_app
from campaign_lib.api.server import free_port, run_in_thread
from campaign_lib.db import make_engine
from campaign_lib.tracking.events import receipts_for, record_receipts
from campaign_lib.tracking.settings import TrackingSettings
from campaign_lib.tracking.webhooks import Receipt, body_signature
from connectors.base import Outbound
from connectors.push import PushConnector
from connectors.sms import SmsConnector, twilio_signature

FORM = "application/x-www-form-urlencoded"


def sms_callback(
    message, status: str = "delivered", error: str | None = None, sid: str | None = None
) -> dict:
    """The fields Twilio posts to a StatusCallback."""
    fields = {
        "AccountSid": "AC" + "0" * 31 + "1",
        "ApiVersion": "2010-04-01",
        "From": "+4930901820",
        "MessageSid": sid or f"SM{uuid.uuid4().hex}",
        "MessageStatus": status,
        "SmsSid": sid or "",
        "SmsStatus": status,
        "To": message.address,
    }
    if error:
        fields["ErrorCode"] = error
    return fields


def post_sms(
    client: httpx.Client,
    base_url: str,
    fields: dict,
    *,
    query: str = "",
    token=SMS_WEBHOOK_TOKEN,
    sign_url=None,
):
    path = "/t/webhooks/sms" + (f"?{query}" if query else "")
    signature = twilio_signature(token, sign_url or base_url + path, fields)
    return client.post(
        path, content=urlencode(fields), headers={"Content-Type": FORM, "X-Twilio-Signature": signature}
    )


def post_json(client: httpx.Client, path: str, payload, secret: str, *, signature: str | None = None):
    body = json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "X-KMS-Signature": signature or body_signature(secret, body),
    }
    return client.post(path, content=body, headers=headers)


def suppressions(engine: Engine, address: str) -> list[tuple]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "select address_kind::text, channel::text, reason::text from campaign.suppression "
                "where address = :a order by suppression_id"
            ),
            {"a": address},
        )
        return [tuple(row) for row in rows]


# SMS


def test_a_delivered_callback_is_stored_once_with_its_message(
    tracking_client, tracking_api, make_message, engine
):
    sid = f"SM{uuid.uuid4().hex}"
    message = make_message("sms", provider_message_id=sid)
    fields = sms_callback(message, sid=sid)
    first = post_sms(tracking_client, tracking_api.base_url, fields)
    assert first.status_code == 200
    assert first.json() == {"received": 1, "stored": 1, "matched": 1, "suppressed": 0}
    again = post_sms(tracking_client, tracking_api.base_url, fields)
    assert again.json() == {"received": 1, "stored": 0, "matched": 0, "suppressed": 0}
    [event] = events_of(engine, message.message_id)
    assert (event["event_type"], event["source"], event["provider_event_id"]) == (
        "delivered",
        "sms",
        f"{sid}:delivered",
    )
    assert (event["campaign_run_id"], event["contact_id"]) == (message.campaign_run_id, message.contact_id)
    assert receipts_for(engine, [message.message_id, 0]) == {message.message_id: frozenset({"delivered"})}


def test_a_callback_finds_an_ambiguous_message_by_the_key_in_its_url(
    tracking_client, tracking_api, make_message, engine
):
    message = make_message("sms")  # the outbox never learnt the provider's id
    response = post_sms(
        tracking_client,
        tracking_api.base_url,
        sms_callback(message),
        query=f"message_key={message.message_key}",
    )
    assert response.json()["matched"] == 1
    assert [e["event_type"] for e in events_of(engine, message.message_id)] == ["delivered"]


@pytest.mark.parametrize(
    ("status", "error", "event_type", "suppressed"),
    [
        ("undelivered", "30005", "bounce_hard", True),
        ("failed", "21211", "bounce_hard", True),
        ("undelivered", "30003", "bounce_soft", False),
        ("failed", "30500", "failed", False),
    ],
    ids=["unknown-handset", "invalid-number", "handset-off", "other-error"],
)
def test_failed_callbacks_map_to_bounces_and_hard_ones_suppress_the_number(
    status, error, event_type, suppressed, tracking_client, tracking_api, make_message, engine
):
    sid = f"SM{uuid.uuid4().hex}"
    message = make_message("sms", provider_message_id=sid)
    fields = sms_callback(message, status, error, sid=sid)
    for _ in range(2):
        assert post_sms(tracking_client, tracking_api.base_url, fields).status_code == 200
    [event] = events_of(engine, message.message_id)
    assert (event["event_type"], event["detail"]["error_code"]) == (event_type, error)
    expected = [("phone", "sms", "hard_bounce")] if suppressed else []
    assert suppressions(engine, message.address) == expected


def test_callbacks_of_statuses_that_are_not_final_are_acknowledged_and_not_stored(
    tracking_client, tracking_api, make_message, engine
):
    message = make_message("sms")
    for status in ("queued", "sending", "sent"):
        response = post_sms(
            tracking_client,
            tracking_api.base_url,
            sms_callback(message, status),
            query=f"message_key={message.message_key}",
        )
        assert response.json() == {"received": 0, "stored": 0, "matched": 0, "suppressed": 0}
    assert events_of(engine, message.message_id) == []


@pytest.mark.parametrize(
    "case", ["no-signature", "wrong-token", "other-url", "changed-field", "other-message-key"]
)
def test_a_badly_signed_callback_is_refused_and_stores_nothing(
    case, tracking_client, tracking_api, make_message, engine
):
    message, other = make_message("sms"), make_message("sms")
    base, query = tracking_api.base_url, f"message_key={message.message_key}"
    fields = sms_callback(message, "undelivered", "30005")
    if case == "no-signature":
        response = tracking_client.post(
            f"/t/webhooks/sms?{query}", content=urlencode(fields), headers={"Content-Type": FORM}
        )
    elif case == "wrong-token":
        response = post_sms(tracking_client, base, fields, query=query, token="not-the-auth-token")
    elif case == "other-url":
        response = post_sms(
            tracking_client, base, fields, query=query, sign_url="https://elsewhere.example/t/webhooks/sms"
        )
    else:
        path = f"/t/webhooks/sms?{query}"
        signature = twilio_signature(SMS_WEBHOOK_TOKEN, base + path, fields)
        if case == "changed-field":
            fields["MessageStatus"] = "delivered"
        else:
            path = f"/t/webhooks/sms?message_key={other.message_key}"
        response = tracking_client.post(
            path, content=urlencode(fields), headers={"Content-Type": FORM, "X-Twilio-Signature": signature}
        )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "bad_signature"
    assert events_of(engine, message.message_id) == events_of(engine, other.message_id) == []
    assert suppressions(engine, message.address) == []


def test_an_sms_callback_that_is_not_a_form_or_lacks_fields_is_refused(tracking_client, tracking_api):
    assert tracking_client.post("/t/webhooks/sms", json={"MessageSid": "SM1"}).status_code == 415
    fields = {"To": "+491701234567"}
    response = post_sms(tracking_client, tracking_api.base_url, fields)
    assert response.status_code == 422 and "MessageSid" in response.json()["error"]["message"]


# Push


def test_push_receipts_store_events_and_an_unregistered_token_is_suppressed(
    tracking_client, make_message, engine
):
    delivered, stale = make_message("push"), make_message("push")
    payload = {
        "events": [
            {
                "event_id": f"ev-{uuid.uuid4().hex}",
                "status": "delivered",
                "message_id": "projects/kms-test/messages/1",
                "message_key": delivered.message_key,
                "occurred_at": "2026-11-22T20:00:00+00:00",
            },
            {
                "event_id": f"ev-{uuid.uuid4().hex}",
                "status": "unregistered",
                "message_key": stale.message_key,
                "token": stale.address,
                "error": "UNREGISTERED",
            },
        ]
    }
    first = post_json(tracking_client, "/t/webhooks/push", payload, PUSH_WEBHOOK_SECRET)
    assert first.json() == {"received": 2, "stored": 2, "matched": 2, "suppressed": 1}
    again = post_json(tracking_client, "/t/webhooks/push", payload, PUSH_WEBHOOK_SECRET)
    assert again.json() == {"received": 2, "stored": 0, "matched": 0, "suppressed": 0}
    assert [e["event_type"] for e in events_of(engine, delivered.message_id)] == ["delivered"]
    [bounce] = events_of(engine, stale.message_id)
    assert (bounce["event_type"], bounce["detail"]["error"]) == ("bounce_hard", "UNREGISTERED")
    assert suppressions(engine, stale.address) == [("push_token", "push", "hard_bounce")]


@pytest.mark.parametrize("path", ["/t/webhooks/push", "/t/webhooks/email"])
@pytest.mark.parametrize("case", ["missing", "wrong-secret", "other-body"])
def test_a_json_webhook_with_a_bad_signature_is_refused(path, case, tracking_client, make_message, engine):
    message = make_message("email")
    payload = (
        {"events": [{"event_id": "x1", "status": "unregistered", "message_key": message.message_key}]}
        if path.endswith("push")
        else {
            "RecordType": "Bounce",
            "Type": "HardBounce",
            "ID": 7,
            "MessageID": f"<{message.message_key}@resort.example>",
        }
    )
    if case == "missing":
        response = tracking_client.post(path, json=payload)
    else:
        signed = json.dumps({"events": []}).encode() if case == "other-body" else json.dumps(payload).encode()
        secret = (
            "wrong"
            if case == "wrong-secret"
            else (PUSH_WEBHOOK_SECRET if path.endswith("push") else EMAIL_WEBHOOK_SECRET)
        )
        response = post_json(tracking_client, path, payload, secret, signature=body_signature(secret, signed))
    assert response.status_code == 403
    assert events_of(engine, message.message_id) == []
    assert suppressions(engine, message.address) == []


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ({"events": []}, "1 to 1000 events"),
        ({"events": [{"event_id": "a", "status": "exploded"}]}, "status"),
        ({"events": [{"status": "delivered"}]}, "event_id"),
        ({"events": [{"event_id": "a", "status": "delivered", "occurred_at": "yesterday"}]}, "ISO 8601"),
        (
            {"events": [{"event_id": "a", "status": "delivered", "occurred_at": "2026-11-22T20:00:00"}]},
            "time zone",
        ),
        ({"events": ["not an object"]}, "not an object"),
    ],
    ids=["empty", "unknown-status", "no-id", "bad-time", "naive-time", "not-object"],
)
def test_an_unreadable_push_webhook_is_refused_with_its_reason(payload, problem, tracking_client):
    response = post_json(tracking_client, "/t/webhooks/push", payload, PUSH_WEBHOOK_SECRET)
    assert response.status_code == 422
    assert problem in response.json()["error"]["message"]


def test_a_signed_body_that_is_not_json_is_refused(tracking_client):
    body = b"{not json"
    response = tracking_client.post(
        "/t/webhooks/push",
        content=body,
        headers={"X-KMS-Signature": body_signature(PUSH_WEBHOOK_SECRET, body)},
    )
    assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid_json")


# Email


def test_email_events_find_their_message_by_message_id_and_suppress_bounces_and_complaints(
    tracking_client, make_message, engine
):
    delivered, bounced, complained = make_message(), make_message(), make_message()
    events = [
        {
            "RecordType": "Delivery",
            "MessageID": f"<{delivered.message_key}@resort.example>",
            "Recipient": delivered.address,
            "DeliveredAt": "2026-11-22T20:01:00Z",
        },
        {
            "RecordType": "Bounce",
            "ID": 4323372036854775807,
            "Type": "HardBounce",
            "MessageID": f"{bounced.message_key}@resort.example",
            "Email": bounced.address.upper(),
            "BouncedAt": "2026-11-22T20:02:00Z",
            "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
        },
        {
            "RecordType": "SpamComplaint",
            "ID": 4323372036854775808,
            "MessageID": "<provider-id-1@esp.example>",
            "Metadata": {"message_key": complained.message_key},
            "Email": complained.address,
        },
    ]
    first = post_json(tracking_client, "/t/webhooks/email", {"events": events}, EMAIL_WEBHOOK_SECRET)
    assert first.json() == {"received": 3, "stored": 3, "matched": 3, "suppressed": 2}
    again = post_json(tracking_client, "/t/webhooks/email", events[1], EMAIL_WEBHOOK_SECRET)
    assert again.json() == {"received": 1, "stored": 0, "matched": 0, "suppressed": 0}
    assert [e["event_type"] for e in events_of(engine, delivered.message_id)] == ["delivered"]
    assert [e["event_type"] for e in events_of(engine, bounced.message_id)] == ["bounce_hard"]
    assert [e["event_type"] for e in events_of(engine, complained.message_id)] == ["complaint"]
    assert suppressions(engine, bounced.address) == [("email", "email", "hard_bounce")]
    assert suppressions(engine, complained.address) == [("email", "email", "complaint")]
    assert suppressions(engine, delivered.address) == []


def test_a_soft_bounce_suppresses_nothing(tracking_client, make_message, engine):
    message = make_message()
    event = {
        "RecordType": "Bounce",
        "ID": uuid.uuid4().int % 10**15,
        "Type": "SoftBounce",
        "MessageID": f"<{message.message_key}@resort.example>",
        "Email": message.address,
    }
    assert post_json(tracking_client, "/t/webhooks/email", event, EMAIL_WEBHOOK_SECRET).json()["stored"] == 1
    assert [e["event_type"] for e in events_of(engine, message.message_id)] == ["bounce_soft"]
    assert suppressions(engine, message.address) == []


def test_a_receipt_for_no_known_message_is_kept_unmatched_and_still_suppresses_its_address(
    tracking_client, engine
):
    address = f"gone-{uuid.uuid4().hex[:8]}@example.org"
    event = {
        "RecordType": "Bounce",
        "ID": uuid.uuid4().int % 10**15,
        "Type": "HardBounce",
        "MessageID": "<not-ours@esp.example>",
        "Email": address,
    }
    assert post_json(tracking_client, "/t/webhooks/email", event, EMAIL_WEBHOOK_SECRET).json() == {
        "received": 1,
        "stored": 1,
        "matched": 0,
        "suppressed": 1,
    }
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "select message_id, detail ->> 'provider_message_id' as provider_message_id "
                "from campaign.message_event where source = 'email' and provider_event_id = :id"
            ),
            {"id": str(event["ID"])},
        ).one()
    assert tuple(row) == (None, "<not-ours@esp.example>")
    assert suppressions(engine, address) == [("email", "email", "hard_bounce")]


def test_receipts_for_lists_tracking_events_too(make_message, engine, tracking_client, tracking_links):
    message = make_message()
    tracking_client.get(httpx.URL(tracking_links.open_url(message.message_key)).path)
    record_receipts(
        engine, [Receipt("email", f"d-{message.message_key}", "delivered", message_key=message.message_key)]
    )
    assert receipts_for(engine, [message.message_id]) == {
        message.message_id: frozenset({"open", "delivered"})
    }
    assert receipts_for(engine, []) == {}


def test_a_webhook_without_a_configured_secret_is_closed(kms_url, tracking_links):
    app = create_app(lambda: make_engine(kms_url), tracking=lambda: TrackingSettings(links=tracking_links))
    server = run_in_thread(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    try:
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            statuses = [
                client.post(path, content=b"{}", headers={"Content-Type": FORM}).status_code
                for path in ("/t/webhooks/sms", "/t/webhooks/push", "/t/webhooks/email")
            ]
    finally:
        server.stop()
    assert statuses == [503, 503, 503]


def send_and_wait_for_receipt(connector, message, engine: Engine) -> tuple:
    """Send `message` through a connector to the emulator; its Outcome and the one event its
    receipt made (the emulator posts receipts in the background)."""
    outbound = Outbound(
        message_id=message.message_id,
        message_key=message.message_key,
        contact_id=message.contact_id,
        channel=message.channel,
        address=message.address,
        subject="Wasserwelt" if message.channel == "push" else None,
        text="Ihre Tageskarte wartet",
        html=None,
    )
    try:
        [outcome] = connector.send([outbound])
    finally:
        connector.close()
    assert outcome.status == "sent"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not events_of(engine, message.message_id):
        time.sleep(0.05)
    [event] = events_of(engine, message.message_id)
    return outcome, event


@pytest.mark.parametrize(
    ("receipt", "error", "final"),
    [(None, None, "delivered"), ("undelivered", 30005, "bounce_hard")],
    ids=["delivered", "unknown-handset"],
)
def test_the_sms_emulators_signed_callbacks_land_on_the_message(
    receipt, error, final, providers, sms_conn, tracking_api, make_message, engine
):
    message = make_message("sms")
    if receipt:
        providers.add_fault(provider="sms", address=message.address, receipt=receipt, receipt_error=error)
    connector = SmsConnector.from_connection(
        {
            **sms_conn,
            "extra": {**sms_conn["extra"], "status_callback_url": f"{tracking_api.base_url}/t/webhooks/sms"},
        }
    )
    outcome, event = send_and_wait_for_receipt(connector, message, engine)
    assert (event["event_type"], event["provider_event_id"]) == (
        final,
        f"{outcome.provider_message_id}:{receipt or 'delivered'}",
    )
    # The emulator notes an answer after our commit: wait for both notes.
    deadline = time.monotonic() + 10
    answered: list = []
    while time.monotonic() < deadline and len(answered) < 2:
        time.sleep(0.02)
        answered = [
            c.get("status")
            for c in providers.emulator.callbacks
            if c.get("params", {}).get("To") == message.address
        ]
    assert answered == [200, 200]  # 'sent' acknowledged and not stored, then the final status
    assert suppressions(engine, message.address) == ([("phone", "sms", "hard_bounce")] if receipt else [])


def test_the_push_emulators_signed_receipts_land_on_the_message(
    providers, fcm_conn, tracking_api, make_message, engine
):
    message = make_message("push")
    emulator = providers.emulator
    saved = emulator.push_receipts_url, emulator.push_receipts_secret
    emulator.push_receipts_url = f"{tracking_api.base_url}/t/webhooks/push"
    emulator.push_receipts_secret = PUSH_WEBHOOK_SECRET
    try:
        outcome, event = send_and_wait_for_receipt(PushConnector.from_connection(fcm_conn), message, engine)
    finally:
        emulator.push_receipts_url, emulator.push_receipts_secret = saved
    assert (event["event_type"], event["source"]) == ("delivered", "push")
    assert event["detail"]["provider_message_id"] == outcome.provider_message_id
