"""The push connector (FCM HTTP v1, Web Push) against the local emulators, and token retirement."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from campaign_lib.errors import ConfigError, PermanentDeliveryError
from campaign_lib.local_servers.provider_setup import local_providers
from campaign_lib.local_servers.providers import LocalProviderServer, make_service_account
from campaign_lib.local_servers.webpush_keys import emulator_webpush_subscription
from connectors.base import Outbound, Outcome
from connectors.push import FcmSettings, PushConnector, WebPushSettings, retire_push_tokens
from connectors.sms import SmsConnector


def outbound(n: int, address: str) -> Outbound:
    return Outbound(
        message_id=n,
        message_key=f"push-key-{n:04d}",
        contact_id=2000 + n,
        channel="push",
        address=address,
        subject="Wasserwelt",
        text=f"Ihr Hotelgast-Tagesticket wartet, Nr. {n}",
        html=None,
    )


def webpush_address(server: LocalProviderServer, subscription_id: str) -> str:
    subscription = emulator_webpush_subscription(server.base_url, subscription_id)
    return "webpush:" + json.dumps(subscription, separators=(",", ":"))


def by_id(outcomes: Iterator[Outcome]) -> dict[int, Outcome]:
    result: dict[int, Outcome] = {}
    for outcome in outcomes:
        assert outcome.message_id not in result, "an outcome was yielded twice"
        result[outcome.message_id] = outcome
    return result


@pytest.fixture
def push(fcm_conn: dict[str, Any], webpush_conn: dict[str, Any]) -> Iterator[PushConnector]:
    connector = PushConnector.from_connection(fcm_conn, webpush_conn)
    yield connector
    connector.close()


def test_fcm_batch_is_sent_with_one_access_token(push: PushConnector, providers: LocalProviderServer) -> None:
    batch = [outbound(n, f"fcm-token-{n}") for n in range(1, 31)]
    first = by_id(push.send(batch[:20]))
    second = by_id(push.send(batch[20:]))
    outcomes = {**first, **second}

    assert {o.status for o in outcomes.values()} == {"sent"}
    stored = {m["message"]["token"]: m for m in providers.messages("fcm")}
    assert len(stored) == 30
    for message in batch:
        kept = stored[message.address]
        assert kept["name"] == outcomes[message.message_id].provider_message_id
        assert kept["name"].startswith("projects/kms-test/messages/")
        assert kept["message"]["notification"] == {"title": "Wasserwelt", "body": message.text}
        assert kept["message"]["data"] == {"message_key": message.message_key}
    assert providers.emulator.requests["token"] == 1


# (fault, status, reason start, retry_after, requests for that token)
FCM_ERRORS = [
    pytest.param({"error": "UNREGISTERED"}, "failed_hard", "token_invalid", None, 1, id="404-unregistered"),
    pytest.param(
        {"error": "SENDER_ID_MISMATCH"}, "failed_hard", "token_invalid", None, 1, id="403-sender-mismatch"
    ),
    pytest.param(
        {"error": "INVALID_ARGUMENT"}, "failed_hard", "fcm INVALID_ARGUMENT", None, 1, id="400-invalid"
    ),
    pytest.param({"error": "UNAVAILABLE"}, "failed_soft", "fcm UNAVAILABLE", 60.0, 1, id="503-unavailable"),
    pytest.param(
        {"error": "UNAVAILABLE", "retry_after": 9},
        "failed_soft",
        "fcm UNAVAILABLE",
        9.0,
        1,
        id="503-retry-after",
    ),
    pytest.param({"error": "INTERNAL"}, "failed_soft", "fcm INTERNAL", 60.0, 1, id="500-internal"),
    pytest.param(
        {"error": "QUOTA_EXCEEDED", "retry_after": 0.2, "times": 1}, "sent", None, None, 2, id="429-waited"
    ),
    pytest.param(
        {"error": "QUOTA_EXCEEDED", "retry_after": 30},
        "failed_soft",
        "fcm QUOTA_EXCEEDED",
        30.0,
        1,
        id="429-too-long",
    ),
]


@pytest.mark.parametrize(("fault", "status", "reason", "retry_after", "requests"), FCM_ERRORS)
def test_fcm_error_answers_become_outcomes_for_that_token_only(
    push: PushConnector,
    providers: LocalProviderServer,
    fault: dict[str, Any],
    status: str,
    reason: str | None,
    retry_after: float | None,
    requests: int,
) -> None:
    batch = [outbound(n, f"fcm-token-{n}") for n in range(1, 6)]
    providers.add_fault(provider="fcm", address="fcm-token-3", **fault)

    outcomes = by_id(push.send(batch))

    assert outcomes[3].status == status
    assert (outcomes[3].reason or "").startswith(reason or "")
    assert outcomes[3].retry_after == retry_after
    assert {outcomes[n].status for n in (1, 2, 4, 5)} == {"sent"}
    assert providers.emulator.requests["fcm"] == 4 + requests


def test_stale_tokens_are_reported_invalid(push: PushConnector, providers: LocalProviderServer) -> None:
    (outcome,) = push.send([outbound(1, "stale-abc")])
    assert (outcome.status, outcome.reason) == ("failed_hard", "token_invalid")
    assert providers.messages("fcm") == []


def test_fcm_timeout_after_acceptance_is_ambiguous_and_not_resent(
    fcm_conn: dict[str, Any], providers: LocalProviderServer
) -> None:
    connector = PushConnector.from_connection({**fcm_conn, "extra": {**fcm_conn["extra"], "timeout": 1.0}})
    try:
        (warm_up,) = connector.send([outbound(1, "fcm-token-1")])  # the access token, before the fault
        providers.add_fault(provider="fcm", hang_after_accept=3.0, times=1)
        (outcome,) = connector.send([outbound(2, "fcm-token-2")])
    finally:
        connector.close()
    assert warm_up.status == "sent"
    assert outcome.status == "ambiguous" and "no answer" in (outcome.reason or "")
    assert providers.emulator.requests["fcm"] == 2
    assert [m["message"]["token"] for m in providers.messages("fcm")] == ["fcm-token-1", "fcm-token-2"]


def test_an_expired_access_token_is_fetched_again_once(
    push: PushConnector, providers: LocalProviderServer
) -> None:
    by_id(push.send([outbound(1, "fcm-token-1")]))
    providers.emulator._access_tokens.clear()  # the provider revokes every token it issued

    (outcome,) = push.send([outbound(2, "fcm-token-2")])

    assert outcome.status == "sent"
    assert providers.emulator.requests["token"] == 2


def test_a_service_account_signed_with_another_key_is_refused(
    fcm_conn: dict[str, Any], fcm_service_account: dict[str, Any], providers: LocalProviderServer
) -> None:
    impostor, _ = make_service_account("kms-test", fcm_service_account["account"]["token_uri"])
    impostor["client_email"] = fcm_service_account["account"]["client_email"]
    connector = PushConnector.from_connection({**fcm_conn, "extra": {"service_account": impostor}})
    try:
        with pytest.raises(PermanentDeliveryError, match="Invalid JWT Signature"):
            list(connector.send([outbound(1, "fcm-token-1")]))
    finally:
        connector.close()
    assert providers.messages("fcm") == []


@pytest.mark.parametrize(
    ("claims_change", "algorithm", "error"),
    [
        pytest.param({}, "HS256", "invalid_grant", id="hs256-not-rs256"),
        pytest.param(
            {"aud": "https://oauth2.googleapis.com/token"}, "RS256", "invalid_grant", id="wrong-audience"
        ),
        pytest.param({"exp_offset": 7200}, "RS256", "invalid_grant", id="lifetime-over-an-hour"),
        pytest.param(
            {"scope": "https://www.googleapis.com/auth/cloud-platform"}, "RS256", "invalid_scope", id="scope"
        ),
        pytest.param({"exp_offset": -10}, "RS256", "invalid_grant", id="expired"),
    ],
)
def test_token_endpoint_checks_the_assertion(
    providers: LocalProviderServer,
    fcm_service_account: dict[str, Any],
    claims_change: dict[str, Any],
    algorithm: str,
    error: str,
) -> None:
    account = fcm_service_account["account"]
    settings = FcmSettings(service_account=account, project_id="kms-test", base_url=providers.base_url)
    claims = jwt.decode(settings.assertion(1e9), options={"verify_signature": False})
    now = int(time.time())
    claims.update(iat=now, exp=now + claims_change.pop("exp_offset", 3600), **claims_change)
    key = account["private_key"] if algorithm == "RS256" else "shared-secret-of-sufficient-length-32b"
    assertion = jwt.encode(claims, key, algorithm=algorithm)
    answer = httpx.post(
        account["token_uri"],
        data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion},
    )
    assert answer.status_code == 400
    assert answer.json()["error"] == error


def test_wrong_project_is_a_permanent_error(fcm_conn: dict[str, Any], providers: LocalProviderServer) -> None:
    connector = PushConnector.from_connection(
        {**fcm_conn, "extra": {**fcm_conn["extra"], "project_id": "other"}}
    )
    try:
        with pytest.raises(PermanentDeliveryError, match="FCM"):
            list(connector.send([outbound(1, "fcm-token-1")]))
    finally:
        connector.close()


def test_webpush_payload_is_encrypted_and_readable_by_the_subscription(
    push: PushConnector, providers: LocalProviderServer
) -> None:
    batch = [outbound(n, webpush_address(providers, f"browser-{n}")) for n in range(1, 6)]
    outcomes = by_id(push.send(batch))

    assert {o.status for o in outcomes.values()} == {"sent"}
    stored = {m["subscription_id"]: m for m in providers.messages("webpush")}
    for message in batch:
        kept = stored[f"browser-{message.message_id}"]
        assert json.loads(kept["payload"]) == {
            "title": "Wasserwelt",
            "body": message.text,
            "message_key": message.message_key,
        }
        assert kept["vapid_sub"] == "mailto:ops@resort.example"
        assert outcomes[message.message_id].provider_message_id.endswith(kept["id"])


# (fault or gone, status, reason, retry_after)
WEBPUSH_ERRORS = [
    pytest.param({"gone": True}, "failed_hard", "token_invalid", None, id="410-gone"),
    pytest.param({"error": 404}, "failed_hard", "token_invalid", None, id="404-unknown"),
    pytest.param({"error": 413}, "failed_hard", "web push http 413", None, id="413-too-large"),
    pytest.param({"error": 500}, "failed_soft", "web push http 500", 60.0, id="500"),
    pytest.param({"error": 429, "retry_after": 0.1, "times": 1}, "sent", None, None, id="429-waited"),
    pytest.param(
        {"error": 429, "retry_after": 40}, "failed_soft", "web push http 429", 40.0, id="429-too-long"
    ),
]


@pytest.mark.parametrize(("fault", "status", "reason", "retry_after"), WEBPUSH_ERRORS)
def test_webpush_answers_become_outcomes(
    push: PushConnector,
    providers: LocalProviderServer,
    fault: dict[str, Any],
    status: str,
    reason: str | None,
    retry_after: float | None,
) -> None:
    if fault.pop("gone", False):
        providers.emulator.gone_subscriptions.add("browser-2")
    else:
        providers.add_fault(provider="webpush", address="browser-2", **fault)
    batch = [outbound(n, webpush_address(providers, f"browser-{n}")) for n in (1, 2)]

    outcomes = by_id(push.send(batch))

    assert outcomes[1].status == "sent"
    assert (outcomes[2].status, outcomes[2].reason, outcomes[2].retry_after) == (status, reason, retry_after)


def test_malformed_addresses_and_missing_connections(
    fcm_conn: dict[str, Any], providers: LocalProviderServer
) -> None:
    connector = PushConnector.from_connection(fcm_conn)
    try:
        outcomes = by_id(
            connector.send(
                [
                    outbound(1, webpush_address(providers, "browser-1")),
                    outbound(2, "   "),
                    outbound(3, "fcm-token-3"),
                ]
            )
        )
    finally:
        connector.close()
    assert (outcomes[1].status, outcomes[1].reason) == ("skipped", "no_webpush_connection")
    assert (outcomes[2].status, outcomes[2].reason) == ("failed_hard", "token_invalid")
    assert outcomes[3].status == "sent"


@pytest.mark.parametrize(
    "address",
    [
        'webpush:{"endpoint": "https://x"',
        'webpush:{"endpoint": "ftp://x", "keys": {"p256dh": "a", "auth": "b"}}',
        'webpush:{"endpoint": "https://x", "keys": {}}',
        "webpush:[]",
        'webpush:{"endpoint": "http://127.0.0.1:9/wp/x", "keys": {"p256dh": "BAAA", "auth": "AAAAAAAAAAAAAAAAAAAAAA"}}',
    ],
)
def test_unusable_subscriptions_are_token_invalid_without_a_request(
    push: PushConnector, providers: LocalProviderServer, address: str
) -> None:
    (outcome,) = push.send([outbound(1, address)])
    assert (outcome.status, outcome.reason) == ("failed_hard", "token_invalid")
    assert providers.emulator.requests["webpush"] == 0


@pytest.mark.parametrize(
    ("authorization", "status"),
    [pytest.param(None, 401, id="no-vapid"), pytest.param("vapid t=abc.def.ghi, k=BAAA", 403, id="bad-jwt")],
)
def test_the_push_service_refuses_pushes_without_a_valid_vapid_token(
    providers: LocalProviderServer, authorization: str | None, status: int
) -> None:
    headers = {"TTL": "60", "Content-Encoding": "aes128gcm"}
    if authorization:
        headers["Authorization"] = authorization
    answer = httpx.post(f"{providers.base_url}/wp/browser-1", content=b"x", headers=headers)
    assert answer.status_code == status
    assert providers.messages("webpush") == []


def test_mixed_batch_of_fcm_and_webpush(push: PushConnector, providers: LocalProviderServer) -> None:
    batch = [outbound(n, f"fcm-token-{n}") for n in range(1, 11)] + [
        outbound(n, webpush_address(providers, f"browser-{n}")) for n in range(11, 16)
    ]
    outcomes = by_id(push.send(batch))
    assert len(outcomes) == 15 and {o.status for o in outcomes.values()} == {"sent"}
    assert (len(providers.messages("fcm")), len(providers.messages("webpush"))) == (10, 5)


@pytest.mark.parametrize(
    ("conn", "message"),
    [
        pytest.param({"extra": {}}, "service_account", id="fcm-no-key"),
        pytest.param({"extra": {"service_account": "{not json"}}, "not JSON", id="fcm-bad-json"),
        pytest.param({"extra": {"service_account": {"client_email": "x"}}}, "lacks", id="fcm-incomplete-key"),
    ],
)
def test_fcm_connection_mistakes(conn: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        FcmSettings.from_connection(conn)


def test_webpush_connection_mistakes_and_repr(vapid_private_key: str) -> None:
    with pytest.raises(ConfigError, match="subject"):
        WebPushSettings.from_connection({"password": vapid_private_key, "extra": {"subject": "ops@x"}})
    with pytest.raises(ConfigError, match="VAPID private key"):
        WebPushSettings.from_connection({"password": "nonsense", "extra": {"subject": "mailto:ops@x"}})
    settings = WebPushSettings.from_connection(
        {"password": vapid_private_key, "extra": {"subject": "mailto:a@b"}}
    )
    assert vapid_private_key not in repr(settings)


def test_retired_tokens_are_suppressed_once(engine: Engine) -> None:
    tokens = [
        "stale-retire-1",
        'webpush:{"endpoint":"http://127.0.0.1:1/wp/gone","keys":{"p256dh":"a","auth":"b"}}',
    ]
    try:
        with engine.begin() as conn:
            assert retire_push_tokens(conn, tokens) == 2
        with engine.begin() as conn:
            assert retire_push_tokens(conn, [*tokens, tokens[0]]) == 0
            rows = conn.execute(
                text(
                    "select address_kind::text, address, channel::text, reason::text, source "
                    "from campaign.suppression where address = any(:tokens) order by address"
                ),
                {"tokens": tokens},
            ).all()
        assert [tuple(r) for r in rows] == [
            ("push_token", tokens[0], "push", "hard_bounce", "push:token_invalid"),
            ("push_token", tokens[1], "push", "hard_bounce", "push:token_invalid"),
        ]
    finally:
        with engine.begin() as conn:
            conn.execute(text("delete from campaign.suppression where address = any(:t)"), {"t": tokens})


def test_the_emulator_reports_pushes_delivered_to_the_push_webhook(
    push: PushConnector, providers: LocalProviderServer, receipt_sink
) -> None:
    secret = "push-webhook-secret"
    emulator = providers.emulator
    emulator.push_receipts_url, emulator.push_receipts_secret = receipt_sink.push_url, secret
    try:
        outcomes = by_id(
            push.send([outbound(1, "fcm-token-1"), outbound(2, webpush_address(providers, "b-2"))])
        )
        received = receipt_sink.wait_for(2)
    finally:
        emulator.push_receipts_url = emulator.push_receipts_secret = None

    assert len(received) == 2
    events = {}
    for receipt in received:
        digest = hmac.new(secret.encode(), receipt["body"], hashlib.sha256).hexdigest()
        assert receipt["headers"]["X-KMS-Signature"] == f"sha256={digest}"
        (event,) = json.loads(receipt["body"])["events"]
        events[event["message_key"]] = event
    fcm, web = events["push-key-0001"], events["push-key-0002"]
    assert (fcm["status"], fcm["message_id"], fcm["token"]) == (
        "delivered",
        outcomes[1].provider_message_id,
        "fcm-token-1",
    )
    assert web["status"] == "delivered" and outcomes[2].provider_message_id.endswith(web["message_id"])


def test_demo_setup_connections_reach_the_emulators(tmp_path: Path, receipt_sink) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        "KMS_TRACKING_SECRET": "s" * 40,
        "KMS_TRACKING_BASE_URL": receipt_sink.base_url,
        "KMS_PROVIDERS_PORT": str(port),
    }
    setup = local_providers(tmp_path, env)
    assert (
        local_providers(tmp_path, env).service_account_path.read_text()
        == setup.service_account_path.read_text()
    )
    assert oct(setup.service_account_path.stat().st_mode & 0o777) == "0o600"
    conns = setup.connections()
    with LocalProviderServer(setup.folder, port=port, **setup.emulator_options()) as server:
        sms = SmsConnector.from_connection(conns["kms_sms"])
        push = PushConnector.from_connection(conns["kms_push_fcm"], conns["kms_push_webpush"])
        try:
            (texted,) = sms.send([replace(outbound(1, "+491511234567"), channel="sms")])
            pushed = by_id(
                push.send([outbound(2, "fcm-token-2"), outbound(3, webpush_address(server, "w3"))])
            )
        finally:
            sms.close()
            push.close()
        receipts = receipt_sink.wait_for(4)
    assert texted.status == "sent" and {o.status for o in pushed.values()} == {"sent"}
    assert {r["kind"] for r in receipts} == {"sms", "push"}
    assert setup.sms_auth_token not in repr(setup)


def test_push_receipts_land_on_the_message_in_the_tracking_app(
    push: PushConnector, providers: LocalProviderServer, tracking_api, make_message, engine: Engine
) -> None:
    from servers_tracking import PUSH_WEBHOOK_SECRET, events_of

    tracked = make_message("push")
    emulator = providers.emulator
    emulator.push_receipts_url = f"{tracking_api.base_url}/t/webhooks/push"
    emulator.push_receipts_secret = PUSH_WEBHOOK_SECRET
    try:
        message = replace(outbound(tracked.message_id, tracked.address), message_key=tracked.message_key)
        (outcome,) = push.send([message])
        deadline = time.monotonic() + 10
        while not events_of(engine, tracked.message_id) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        emulator.push_receipts_url = emulator.push_receipts_secret = None
    assert outcome.status == "sent"
    assert [e["event_type"] for e in events_of(engine, tracked.message_id)] == ["delivered"]
    assert [c.get("status") for c in emulator.callbacks if c["url"].startswith(tracking_api.base_url)] == [
        200
    ]


def test_demo_setup_without_tracking_webhook_secrets_makes_its_own_sms_token(tmp_path: Path) -> None:
    env = {"KMS_DATABASE_URL": "postgresql://db.example/kms", "KMS_TRACKING_SECRET": "s" * 40}
    first, again = local_providers(tmp_path, env), local_providers(tmp_path, env)
    assert first.sms_auth_token and first.sms_auth_token == again.sms_auth_token
    assert oct((tmp_path / "providers" / "sms_auth_token").stat().st_mode & 0o777) == "0o600"
    assert first.push_receipts_secret is None
    assert first.connections()["kms_sms"]["password"] == first.sms_auth_token
