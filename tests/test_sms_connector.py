"""The SMS connector against the local Twilio emulator (campaign_lib/local_servers/providers.py)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers_providers import SMS_AUTH_TOKEN, SMS_FROM, stored_lines

from campaign_lib.errors import ConfigError, PermanentDeliveryError
from campaign_lib.local_servers.provider_setup import local_provider_connections
from campaign_lib.local_servers.providers import LocalProviderServer
from connectors.base import Outbound, Outcome
from connectors.http_batch import HttpBatchRunner
from connectors.sms import QuietHours, SmsConnector, SmsSettings, sms_length, twilio_signature


def outbound(
    n: int, address: str | None = None, text: str = "Hallo! Ihr Wasserwelt-Angebot wartet.", tz=None
):
    return Outbound(
        message_id=n,
        message_key=f"key-{n:04d}",
        contact_id=1000 + n,
        channel="sms",
        address=f"+4915100000{n:03d}" if address is None else address,
        subject=None,
        text=text,
        html=None,
        timezone=tz,
    )


@pytest.fixture
def connector(sms_conn: dict[str, Any]) -> Iterator[SmsConnector]:
    connector = SmsConnector.from_connection(sms_conn)
    yield connector
    connector.close()


def by_id(outcomes: Iterator[Outcome]) -> dict[int, Outcome]:
    result: dict[int, Outcome] = {}
    for outcome in outcomes:
        assert outcome.message_id not in result, "an outcome was yielded twice"
        result[outcome.message_id] = outcome
    return result


# (text, encoding, units, segments): the part boundaries 160/153 (GSM-7) and 70/67 (UCS-2),
# extension characters counting two septets, and characters that never straddle two parts.
SEGMENT_TABLE = [
    pytest.param("Hello", "GSM-7", 5, 1, id="gsm-short"),
    pytest.param("a" * 160, "GSM-7", 160, 1, id="gsm-160-one-part"),
    pytest.param("a" * 161, "GSM-7", 161, 2, id="gsm-161-two-parts"),
    pytest.param("a" * 306, "GSM-7", 306, 2, id="gsm-306-two-parts"),
    pytest.param("a" * 307, "GSM-7", 307, 3, id="gsm-307-three-parts"),
    pytest.param("€" * 80, "GSM-7", 160, 1, id="gsm-extension-counts-two"),
    pytest.param("a" * 159 + "€", "GSM-7", 161, 2, id="gsm-extension-tips-over"),
    pytest.param("a" * 152 + "€" + "a" * 152, "GSM-7", 306, 3, id="gsm-escape-pair-not-split"),
    pytest.param("Grüße aus der Wasserwelt! Ç@£$¥èéùìò", "GSM-7", 36, 1, id="gsm-national-letters"),
    pytest.param("ça va", "UCS-2", 5, 1, id="lowercase-c-cedilla-is-ucs2"),
    pytest.param("ł" * 70, "UCS-2", 70, 1, id="ucs2-70-one-part"),
    pytest.param("ł" * 71, "UCS-2", 71, 2, id="ucs2-71-two-parts"),
    pytest.param("ł" * 134, "UCS-2", 134, 2, id="ucs2-134-two-parts"),
    pytest.param("ł" * 135, "UCS-2", 135, 3, id="ucs2-135-three-parts"),
    pytest.param("😀" * 35, "UCS-2", 70, 1, id="emoji-two-units"),
    pytest.param("ł" * 66 + "😀" + "ł" * 66, "UCS-2", 134, 3, id="surrogate-pair-not-split"),
]


@pytest.mark.parametrize(("text", "encoding", "units", "segments"), SEGMENT_TABLE)
def test_sms_length_counts_encoding_units_and_parts(
    text: str, encoding: str, units: int, segments: int
) -> None:
    length = sms_length(text)
    assert (length.encoding, length.units, length.segments) == (encoding, units, segments)


def test_batch_is_sent_with_idempotency_tokens_and_basic_auth(
    connector: SmsConnector, providers: LocalProviderServer
) -> None:
    batch = [outbound(n) for n in range(1, 41)] + [outbound(41, text="Grüße 😀")]
    outcomes = by_id(connector.send(batch))

    assert set(outcomes) == {m.message_id for m in batch}
    assert {o.status for o in outcomes.values()} == {"sent"}
    stored = {m["to"]: m for m in providers.messages("sms")}
    assert len(stored) == 41
    for message in batch:
        kept = stored[message.address]
        assert kept["sid"] == outcomes[message.message_id].provider_message_id
        assert kept["idempotency_token"] == message.message_key
        assert kept["from"] == SMS_FROM and kept["body"] == message.text
    assert outcomes[41].segments == 1 and stored[batch[-1].address]["num_segments"] == "1"
    assert len(stored_lines(providers, "sms")) >= 41


@pytest.mark.parametrize(
    "address", ["015112345678", "+49 151 1234567", "+0151123456", "0049151123456", "", "+49151"]
)
def test_numbers_that_are_not_e164_fail_hard_without_a_request(
    connector: SmsConnector, providers: LocalProviderServer, address: str
) -> None:
    (outcome,) = connector.send([outbound(1, address=address)])
    assert (outcome.status, outcome.reason) == ("failed_hard", "not_e164")
    assert providers.emulator.requests["sms"] == 0


# (fault, expected status, expected reason start, expected retry_after, requests made)
ERROR_TABLE = [
    pytest.param({"error": 21211}, "failed_hard", "twilio 21211", None, 1, id="400-invalid-to"),
    pytest.param({"error": 21610}, "failed_hard", "twilio 21610", None, 1, id="400-unsubscribed"),
    pytest.param({"error": 21614}, "failed_hard", "twilio 21614", None, 1, id="400-not-mobile"),
    pytest.param({"error": 20500}, "failed_soft", "twilio 20500", 60.0, 1, id="500-soft"),
    pytest.param(
        {"error": 20500, "retry_after": 7}, "failed_soft", "twilio 20500", 7.0, 1, id="500-retry-after"
    ),
    pytest.param(
        {"error": 20429, "retry_after": 0.2, "times": 1}, "sent", None, None, 2, id="429-waited-then-sent"
    ),
    pytest.param(
        {"error": 20429, "retry_after": 30}, "failed_soft", "twilio 20429", 30.0, 1, id="429-wait-too-long"
    ),
    pytest.param(
        {"error": 20429, "retry_after": 0.05}, "failed_soft", "twilio 20429", 0.05, 3, id="429-attempts-used"
    ),
]


@pytest.mark.parametrize(("fault", "status", "reason", "retry_after", "requests"), ERROR_TABLE)
def test_provider_error_answers_become_outcomes_for_that_recipient_only(
    connector: SmsConnector,
    providers: LocalProviderServer,
    fault: dict[str, Any],
    status: str,
    reason: str | None,
    retry_after: float | None,
    requests: int,
) -> None:
    batch = [outbound(n) for n in range(1, 6)]
    providers.add_fault(provider="sms", address=batch[2].address, **fault)

    outcomes = by_id(connector.send(batch))

    hit = outcomes[3]
    assert hit.status == status
    assert (hit.reason or "").startswith(reason or "")
    assert hit.retry_after == retry_after
    assert {outcomes[n].status for n in (1, 2, 4, 5)} == {"sent"}
    assert providers.emulator.requests["sms"] == 4 + requests
    stored_to = [m["to"] for m in providers.messages("sms")]
    assert stored_to.count(batch[2].address) == (1 if status == "sent" else 0)


def test_429_wait_honours_retry_after(connector: SmsConnector, providers: LocalProviderServer) -> None:
    providers.add_fault(provider="sms", error=20429, retry_after=0.5, times=1)
    started = datetime.now(UTC)
    (outcome,) = connector.send([outbound(1)])
    assert outcome.status == "sent"
    assert (datetime.now(UTC) - started).total_seconds() >= 0.5


def test_refused_credentials_raise_after_the_outcomes_in_flight(
    sms_conn: dict[str, Any], providers: LocalProviderServer
) -> None:
    connector = SmsConnector.from_connection({**sms_conn, "password": "wrong"})
    try:
        with pytest.raises(PermanentDeliveryError, match="refused the credentials"):
            list(connector.send([outbound(n) for n in range(1, 4)]))
    finally:
        connector.close()
    assert providers.messages("sms") == []


@pytest.mark.parametrize(
    ("idempotent_resend", "status", "requests"),
    [
        pytest.param(False, "ambiguous", 1, id="not-resent"),
        pytest.param(True, "sent", 2, id="resent-same-key"),
    ],
)
def test_timeout_after_acceptance_is_ambiguous_or_resent_safely_with_the_same_key(
    sms_conn: dict[str, Any],
    providers: LocalProviderServer,
    idempotent_resend: bool,
    status: str,
    requests: int,
) -> None:
    extra = {**sms_conn["extra"], "timeout": 1.0, "idempotent_resend": idempotent_resend}
    connector = SmsConnector.from_connection({**sms_conn, "extra": extra})
    providers.add_fault(provider="sms", hang_after_accept=3.0, times=1)
    try:
        (outcome,) = connector.send([outbound(1)])
    finally:
        connector.close()

    assert outcome.status == status
    assert providers.emulator.requests["sms"] == requests
    (stored,) = providers.messages("sms")  # accepted once, never twice
    if status == "sent":
        assert outcome.provider_message_id == stored["sid"]
    else:
        assert outcome.provider_message_id is None and "no answer" in (outcome.reason or "")


def test_same_idempotency_token_twice_sends_once(
    connector: SmsConnector, providers: LocalProviderServer
) -> None:
    first = by_id(connector.send([outbound(1)]))[1]
    again = by_id(connector.send([outbound(1)]))[1]
    assert first.provider_message_id == again.provider_message_id
    assert len(providers.messages("sms")) == 1


def test_the_emulator_remembers_idempotency_tokens_across_a_restart(
    sms_conn: dict[str, Any], providers: LocalProviderServer, tmp_path: Path
) -> None:
    emulator = providers.emulator
    options = {"sms_accounts": emulator.sms_accounts}
    with LocalProviderServer(tmp_path, **options) as first:
        connector = SmsConnector.from_connection({**sms_conn, "host": first.base_url})
        try:
            (sent,) = connector.send([outbound(1)])
        finally:
            connector.close()
    with LocalProviderServer(tmp_path, **options) as restarted:
        connector = SmsConnector.from_connection({**sms_conn, "host": restarted.base_url})
        try:
            (again,) = connector.send([outbound(1)])
        finally:
            connector.close()
        assert restarted.messages("sms") == []
    assert again.provider_message_id == sent.provider_message_id
    assert len(stored_lines(restarted, "sms")) == 1


def test_provider_down_is_soft_per_message(sms_conn: dict[str, Any]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    connector = SmsConnector.from_connection({**sms_conn, "host": f"http://127.0.0.1:{port}"})
    try:
        outcomes = by_id(connector.send([outbound(1), outbound(2)]))
    finally:
        connector.close()
    assert {(o.status, o.reason) for o in outcomes.values()} == {("failed_soft", "provider_unreachable")}


# 2026-11-22 21:30 UTC with quiet hours 21:00-08:00 local.
QUIET_CASES = [
    pytest.param("Europe/Berlin", 9.5 * 3600, id="berlin-22-30-waits-until-08"),
    pytest.param("America/New_York", None, id="new-york-16-30-sends"),
    pytest.param("Asia/Tokyo", 1.5 * 3600, id="tokyo-06-30-waits-90-min"),
    pytest.param("Europe/London", 10.5 * 3600, id="london-21-30-waits"),
    pytest.param(None, 9.5 * 3600, id="unknown-zone-uses-default"),
    pytest.param("Mars/Olympus", 9.5 * 3600, id="bad-zone-uses-default"),
]


@pytest.mark.parametrize(("zone", "wait"), QUIET_CASES)
def test_quiet_hours_in_the_recipients_time_zone(
    sms_conn: dict[str, Any], providers: LocalProviderServer, zone: str | None, wait: float | None
) -> None:
    extra = {**sms_conn["extra"], "quiet_hours": "21:00-08:00", "default_timezone": "Europe/Berlin"}
    settings = SmsSettings.from_connection({**sms_conn, "extra": extra})
    connector = SmsConnector(settings, clock=lambda: datetime(2026, 11, 22, 21, 30, tzinfo=UTC))
    try:
        (outcome,) = connector.send([outbound(1, tz=zone)])
    finally:
        connector.close()
    if wait is None:
        assert outcome.status == "sent"
    else:
        assert (outcome.status, outcome.reason, outcome.retry_after) == ("failed_soft", "quiet_hours", wait)
        assert providers.messages("sms") == []


def test_quiet_hours_across_a_dst_change_count_real_seconds() -> None:
    from zoneinfo import ZoneInfo

    # 2026-03-29 02:00 Berlin jumps to 03:00: from 01:00 local to 08:00 local is 6 real hours.
    now = datetime(2026, 3, 29, 0, 0, tzinfo=UTC)  # 01:00 CET
    assert QuietHours.parse("21:00-08:00").seconds_until_open(now, ZoneInfo("Europe/Berlin")) == 6 * 3600
    assert QuietHours.parse("01:00-05:00").seconds_until_open(now, ZoneInfo("UTC")) is None


def test_status_callbacks_are_posted_and_signed_like_twilio(
    sms_conn: dict[str, Any], providers: LocalProviderServer, receipt_sink
) -> None:
    extra = {**sms_conn["extra"], "status_callback_url": receipt_sink.url}
    connector = SmsConnector.from_connection({**sms_conn, "extra": extra})
    providers.add_fault(provider="sms", address="+4915100000002", receipt="undelivered", receipt_error=30003)
    try:
        outcomes = by_id(connector.send([outbound(1), outbound(2)]))
    finally:
        connector.close()

    received = receipt_sink.wait_for(4)
    assert len(received) == 4
    final = {}
    for callback in received:
        params = callback["params"]
        url = f"{receipt_sink.url}?message_key={callback['message_key']}"
        assert callback["headers"]["X-Twilio-Signature"] == twilio_signature(SMS_AUTH_TOKEN, url, params)
        assert params["AccountSid"] == sms_conn["login"] and params["ApiVersion"] == "2010-04-01"
        if params["MessageStatus"] != "sent":
            final[params["MessageSid"]] = params
    assert {c["message_key"] for c in received} == {"key-0001", "key-0002"}
    assert final[outcomes[1].provider_message_id]["MessageStatus"] == "delivered"
    assert "ErrorCode" not in final[outcomes[1].provider_message_id]
    assert final[outcomes[2].provider_message_id]["MessageStatus"] == "undelivered"
    assert final[outcomes[2].provider_message_id]["ErrorCode"] == "30003"


def test_too_long_and_empty_bodies_fail_hard_locally(
    connector: SmsConnector, providers: LocalProviderServer
) -> None:
    outcomes = by_id(connector.send([outbound(1, text="ł" * 700), outbound(2, text="  ")]))
    assert outcomes[1].status == "failed_hard" and outcomes[1].reason.startswith("too_long: 11 segments")
    assert (outcomes[2].status, outcomes[2].reason) == ("failed_hard", "empty_body")
    assert providers.emulator.requests["sms"] == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param({"login": ""}, "account SID", id="no-sid"),
        pytest.param({"extra": {}}, "'from'", id="no-sender"),
        pytest.param(
            {"extra": {"from": SMS_FROM, "quiet_hours": "late"}}, "quiet_hours", id="bad-quiet-hours"
        ),
        pytest.param(
            {"extra": {"from": SMS_FROM, "default_timezone": "Nowhere/X"}}, "default_timezone", id="bad-zone"
        ),
        pytest.param({"host": "", "extra": {"from": SMS_FROM}}, "host", id="no-host"),
    ],
)
def test_connection_mistakes_are_config_errors(sms_conn: dict[str, Any], change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SmsSettings.from_connection({**sms_conn, **change})


def test_settings_from_connection_fields_and_secret_not_in_repr() -> None:
    settings = SmsSettings.from_connection(
        {
            "host": "api.twilio.com",
            "schema": "https",
            "login": "AC123",
            "password": "very-secret",
            "extra": '{"from": "+4930901820", "quiet_hours": "21:00-08:00", "concurrency": 8}',
        }
    )
    assert settings.messages_url == "https://api.twilio.com/2010-04-01/Accounts/AC123/Messages.json"
    assert settings.concurrency == 8 and settings.quiet_hours == QuietHours.parse("21:00-08:00")
    assert "very-secret" not in repr(settings)
    assert settings.idempotent_resend is False


def test_rate_per_second_spaces_the_requests(
    sms_conn: dict[str, Any], providers: LocalProviderServer
) -> None:
    connector = SmsConnector.from_connection(
        {**sms_conn, "extra": {**sms_conn["extra"], "rate_per_second": 40}}
    )
    started = time.monotonic()
    try:
        outcomes = by_id(connector.send([outbound(n) for n in range(1, 11)]))
    finally:
        connector.close()
    assert {o.status for o in outcomes.values()} == {"sent"}
    assert time.monotonic() - started >= 9 / 40


def test_kms_providers_serve_runs_the_emulators_for_the_demo_connections(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "KMS_HOME": str(tmp_path),
        "KMS_PROVIDERS_PORT": str(port),
        "KMS_TRACKING_SECRET": "t" * 40,
    }
    env.pop("KMS_DATABASE_URL", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "campaign_lib.cli", "providers", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/_emulator/messages", timeout=1)
                break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, "the emulator did not start"
                time.sleep(0.2)
        conn = local_provider_connections(tmp_path, env)["kms_sms"]
        conn["extra"].pop("status_callback_url")
        connector = SmsConnector.from_connection(conn)
        try:
            (outcome,) = connector.send([outbound(1)])
        finally:
            connector.close()
        listed = httpx.get(f"http://127.0.0.1:{port}/_emulator/messages", params={"provider": "sms"}).json()
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=20)
    assert outcome.status == "sent"
    assert [m["sid"] for m in listed["messages"]] == [outcome.provider_message_id]
    assert f"http://127.0.0.1:{port}" in output and server.returncode == 0
    assert (tmp_path / "providers" / "sms.jsonl").read_text().count("\n") == 1


def test_a_bug_in_an_attempt_gives_ambiguous_then_raises() -> None:
    runner = HttpBatchRunner(concurrency=2)

    async def attempt(_session, n: int) -> Outcome:
        if n == 3:
            raise ValueError("a bug")
        return Outcome(n, "sent")

    outcomes: list[Outcome] = []
    try:
        with pytest.raises(ValueError, match="a bug"):
            outcomes.extend(
                runner.run([1, 2, 3], attempt, lambda n, exc: Outcome(n, "ambiguous", reason=str(exc)))
            )
    finally:
        runner.close()
    assert sorted((o.message_id, o.status) for o in outcomes) == [(1, "sent"), (2, "sent"), (3, "ambiguous")]
