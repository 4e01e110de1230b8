"""The outbox against the embedded PostgreSQL and real local servers: materialisation, one
message per person and channel, the eligibility re-check before each send, outcomes,
retries, the error budget, and SMS and push through the provider emulators."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
from outbox_runs import FrozenRun
from servers_smtp import smtp_connection
from sqlalchemy import text
from sqlalchemy.engine import Engine

from campaign_lib.config import PROJECT_ROOT
from campaign_lib.delivery import (
    DeliverySettings,
    SendOptions,
    deliver_run_batch,
    delivery_state,
    finish_delivery,
    materialise_outbox,
    plan_batches,
    reconcile,
    resume_delivery,
    send_options,
)
from campaign_lib.errors import ConfigError, DeliveryError, DeliveryPaused
from campaign_lib.local_servers.smtp import LocalSmtpServer
from campaign_lib.tracking.tokens import TrackingLinks
from connectors.email import EmailConnector
from connectors.push import PushConnector
from connectors.sms import SmsConnector

LINKS = TrackingLinks("http://127.0.0.1:8790/kms", b"outbox-tests-tracking-secret-0123456789")


def deliver_email(
    engine: Engine,
    run: FrozenRun,
    server: LocalSmtpServer,
    batch_no: int = 0,
    options: SendOptions | None = None,
    **send: object,
):
    """One batch of email through `server`; `send` goes to deliver_run_batch (send_now, clock)."""
    conn = smtp_connection(server, retry_after=1)
    return deliver_run_batch(
        engine,
        run.campaign_run_id,
        "email",
        batch_no,
        lambda: EmailConnector.from_connection(conn),
        options,
        LINKS,
        **send,
    )


def received(server: LocalSmtpServer) -> Counter[str]:
    """How many messages the SMTP server stored per recipient."""
    return Counter(rcpt for message in server.messages() for rcpt in message.rcpt_tos)


def messages(engine: Engine, run: FrozenRun) -> dict[int, dict]:
    """The run's messages by contact id."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "select contact_id, message_key, channel::text as channel, status::text as status, batch_no, "
                "address, provider_message_id, reason, cost, segments, attempts, next_attempt_at "
                "from campaign.message where campaign_run_id = :run"
            ),
            {"run": run.campaign_run_id},
        )
        return {row.contact_id: dict(row._mapping) for row in rows}


def email_of(contact_id: int) -> str:
    return f"guest{contact_id}@example.org"


def test_materialise_writes_one_message_per_member_outside_control_once(
    frozen_run: Callable[..., FrozenRun], engine: Engine
) -> None:
    run = frozen_run(email=5, sms=3, push=2, control=4)

    assert materialise_outbox(engine, run.campaign_run_id, DeliverySettings(batch_size=2)) == 10
    first = messages(engine, run)
    assert materialise_outbox(engine, run.campaign_run_id, DeliverySettings(batch_size=1000)) == 10

    assert messages(engine, run) == first
    assert not set(run.contacts["control"]) & set(first)
    assert Counter(m["channel"] for m in first.values()) == {"email": 5, "sms": 3, "push": 2}
    for contact_id, message in first.items():
        key = f"{run.campaign_run_id}:{contact_id}:{message['channel']}"
        assert message["message_key"] == hashlib.md5(key.encode()).hexdigest()
        assert message["status"] == "pending"
    assert [first[c]["batch_no"] for c in run.contacts["email"]] == [0, 0, 1, 1, 2]
    assert plan_batches(engine, run.campaign_run_id) == {"email": [0, 1, 2], "sms": [0, 1], "push": [0]}
    state = delivery_state(engine, run.campaign_run_id)
    assert (state.status, state.messages, state.max_failures) == ("delivering", 10, 20)


@pytest.mark.parametrize(
    ("status", "problem"),
    [
        pytest.param("dry_run", "is a dry run", id="dry-run"),
        pytest.param("selecting", "is selecting: only a frozen audience", id="not-frozen"),
        pytest.param("failed", "is failed: only a frozen audience", id="failed"),
    ],
)
def test_materialise_refuses_a_run_that_is_not_frozen(
    frozen_run: Callable[..., FrozenRun], engine: Engine, status: str, problem: str
) -> None:
    run = frozen_run(email=1)
    with engine.begin() as conn:
        conn.execute(
            text(
                "update campaign.campaign_run set status = cast(:s as campaign.run_status), frozen_at = null, "
                "dry_run = (:s = 'dry_run') where campaign_run_id = :run"
            ),
            {"s": status, "run": run.campaign_run_id},
        )

    with pytest.raises(DeliveryError, match=problem):
        materialise_outbox(engine, run.campaign_run_id)


def test_email_batch_reaches_each_recipient_once_with_history_and_cost(
    frozen_run: Callable[..., FrozenRun], engine: Engine, smtp_server: LocalSmtpServer
) -> None:
    run = frozen_run(email=6, control=2)
    materialise_outbox(engine, run.campaign_run_id)

    result = deliver_email(engine, run, smtp_server, options=SendOptions(chunk=4))
    again = deliver_email(engine, run, smtp_server)

    assert result.outcomes == {"sent": 6}
    assert again.outcomes == {}
    assert received(smtp_server) == {email_of(c): 1 for c in run.contacts["email"]}
    stored = messages(engine, run)
    for contact_id in run.contacts["email"]:
        message = stored[contact_id]
        assert message["status"] == "sent" and message["address"] == email_of(contact_id)
        assert message["provider_message_id"].startswith(f"<{message['message_key']}@")
        assert str(message["cost"]) == "0.0020"
    with engine.connect() as conn:
        history = conn.execute(
            text("select contact_id from campaign.contact_history where campaign_run_id = :run"),
            {"run": run.campaign_run_id},
        ).scalars()
        assert sorted(history) == run.contacts["email"]
    state = finish_delivery(engine, run.campaign_run_id)
    assert state.status == "completed" and state.counts == {"email": {"sent": 6}}
    assert plan_batches(engine, run.campaign_run_id) == {"email": [], "sms": [], "push": []}


def _opt_out(conn, contact_id: int) -> None:
    conn.execute(
        text(
            "insert into core.consent (contact_id, channel, purpose, status, recorded_at, source_system) "
            "values (:c, 'email', 'newsletter', 'opt_out', now(), 'website')"
        ),
        {"c": contact_id},
    )


def _suppress(**values):
    def apply(conn, contact_id: int) -> None:
        row = {"contact_id": None, "address_kind": None, "address": None, "channel": None, **values}
        if row.pop("move", False):
            conn.execute(
                text("update core.contact set email = 'guest@' || :domain where contact_id = :c"),
                {"domain": row["address"], "c": contact_id},
            )
        if row.pop("by_contact", False):
            row["contact_id"] = contact_id
        if row["address"] == "own":
            row["address"] = email_of(contact_id)
        conn.execute(
            text(
                "insert into campaign.suppression (contact_id, address_kind, address, channel, reason, source) "
                "values (:contact_id, cast(:address_kind as campaign.address_kind), :address, "
                "cast(:channel as core.channel), cast(:reason as campaign.suppression_reason), 'test')"
            ),
            row,
        )

    return apply


def _contact_status(status: str):
    def apply(conn, contact_id: int) -> None:
        survivor = None
        if status == "merged":
            survivor = conn.execute(
                text(
                    "insert into core.contact (account_id) select account_id from core.contact "
                    "where contact_id = :c returning contact_id"
                ),
                {"c": contact_id},
            ).scalar_one()
        conn.execute(
            text(
                "update core.contact set status = cast(:s as core.contact_status), merged_into_contact_id = :m "
                "where contact_id = :c"
            ),
            {"s": status, "m": survivor, "c": contact_id},
        )

    return apply


def _no_email(conn, contact_id: int) -> None:
    conn.execute(text("update core.contact set email = null where contact_id = :c"), {"c": contact_id})


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        pytest.param(_opt_out, "no consent: opt_out for the purpose", id="opt-out"),
        pytest.param(
            _suppress(by_contact=True, reason="unsubscribe"), "suppressed: unsubscribe", id="contact"
        ),
        pytest.param(
            _suppress(by_contact=True, reason="unsubscribe", channel="sms"), None, id="other-channel-only"
        ),
        pytest.param(
            _suppress(address_kind="email", address="own", reason="hard_bounce"),
            "suppressed: hard_bounce",
            id="hard-bounce",
        ),
        pytest.param(
            _suppress(address_kind="email_domain", address="blocked.example", reason="blocklist", move=True),
            "suppressed: blocklist",
            id="domain",
        ),
        pytest.param(_contact_status("erased"), "contact is erased", id="erased"),
        pytest.param(_contact_status("merged"), "contact is merged", id="merged"),
        pytest.param(_no_email, "no email address", id="no-address"),
    ],
)
def test_a_change_between_selection_and_send_wins(
    frozen_run: Callable[..., FrozenRun],
    engine: Engine,
    smtp_server: LocalSmtpServer,
    change: Callable,
    reason: str | None,
) -> None:
    run = frozen_run(email=3)
    materialise_outbox(engine, run.campaign_run_id)
    changed = run.contacts["email"][1]
    with engine.begin() as conn:
        change(conn, changed)

    deliver_email(engine, run, smtp_server)

    stored = messages(engine, run)
    others = [c for c in run.contacts["email"] if c != changed]
    if reason is None:
        assert {m["status"] for m in stored.values()} == {"sent"}
        return
    assert (stored[changed]["status"], stored[changed]["reason"]) == ("skipped", reason)
    assert received(smtp_server) == {email_of(c): 1 for c in others}
    assert finish_delivery(engine, run.campaign_run_id).status == "completed"


def test_a_refused_recipient_fails_hard_and_the_batch_goes_on(
    frozen_run: Callable[..., FrozenRun], engine: Engine, smtp_server: LocalSmtpServer
) -> None:
    run = frozen_run(email=4)
    materialise_outbox(engine, run.campaign_run_id)
    refused = run.contacts["email"][1]
    smtp_server.refuse_recipient(email_of(refused), "550 5.1.1 no such user")

    result = deliver_email(engine, run, smtp_server)

    assert result.outcomes == {"failed_hard": 1, "sent": 3}
    stored = messages(engine, run)
    assert stored[refused]["status"] == "failed_hard" and "550 5.1.1" in stored[refused]["reason"]
    assert delivery_state(engine, run.campaign_run_id).failures == 1


def test_a_soft_failure_is_retried_at_its_next_attempt_time(
    frozen_run: Callable[..., FrozenRun], engine: Engine, smtp_server: LocalSmtpServer
) -> None:
    run = frozen_run(email=3)
    materialise_outbox(engine, run.campaign_run_id)
    smtp_server.fail_message(2, "450 4.2.1 mailbox busy, try later")

    first = deliver_email(engine, run, smtp_server)
    soft = next(m for m in messages(engine, run).values() if m["status"] == "failed_soft")
    early = deliver_email(engine, run, smtp_server)
    waited = deliver_email(engine, run, smtp_server, options=SendOptions(wait_for_retries_seconds=5))

    assert first.outcomes == {"failed_soft": 1, "sent": 2}
    assert soft["next_attempt_at"] is not None and "450 4.2.1" in soft["reason"]
    assert early.outcomes == {}
    assert waited.outcomes == {"sent": 1}
    assert received(smtp_server) == {email_of(c): 1 for c in run.contacts["email"]}
    assert {m["attempts"] for m in messages(engine, run).values()} == {1, 2}


def test_soft_failures_give_up_after_max_attempts(
    frozen_run: Callable[..., FrozenRun], engine: Engine, smtp_server: LocalSmtpServer
) -> None:
    run = frozen_run(email=1)
    materialise_outbox(engine, run.campaign_run_id)
    smtp_server.refuse_recipient(email_of(run.contacts["email"][0]), "451 4.7.1 greylisted")

    result = deliver_email(
        engine, run, smtp_server, options=SendOptions(max_attempts=2, wait_for_retries_seconds=5)
    )

    assert result.outcomes == {"failed_soft": 1, "failed_hard": 1}
    message = messages(engine, run)[run.contacts["email"][0]]
    assert message["status"] == "failed_hard" and message["reason"].startswith("gave up after 2 attempts")


def test_a_spent_error_budget_pauses_the_run_and_resume_continues_it(
    frozen_run: Callable[..., FrozenRun], engine: Engine, smtp_server: LocalSmtpServer
) -> None:
    run = frozen_run(email=6)
    materialise_outbox(engine, run.campaign_run_id, DeliverySettings(failure_share=0, min_failures=1))
    for contact_id in run.contacts["email"][:2]:
        smtp_server.refuse_recipient(email_of(contact_id), "550 5.1.1 no such user")

    with pytest.raises(DeliveryPaused, match="error budget spent: 2 failures, at most 1 allowed"):
        deliver_email(engine, run, smtp_server)
    paused = delivery_state(engine, run.campaign_run_id)
    with pytest.raises(DeliveryPaused):
        deliver_email(engine, run, smtp_server)

    assert paused.status == "paused" and paused.counts["email"] == {"failed_hard": 2, "pending": 4}
    assert resume_delivery(engine, run.campaign_run_id) is True
    assert resume_delivery(engine, run.campaign_run_id) is False
    assert deliver_email(engine, run, smtp_server).outcomes == {"sent": 4}
    assert finish_delivery(engine, run.campaign_run_id).status == "completed"
    assert sum(received(smtp_server).values()) == 4


def test_a_policy_rejection_pauses_the_run_at_once(
    frozen_run: Callable[..., FrozenRun], engine: Engine, smtp_server: LocalSmtpServer
) -> None:
    run = frozen_run(email=3)
    materialise_outbox(engine, run.campaign_run_id)
    smtp_server.fail_message(1, "554 5.7.1 sender blocked by policy")

    with pytest.raises(DeliveryPaused, match=r"5\.7\.1 sender blocked by policy"):
        deliver_email(engine, run, smtp_server)

    state = delivery_state(engine, run.campaign_run_id)
    assert state.counts["email"] == {"failed_soft": 1, "pending": 2}
    assert not received(smtp_server)


def test_templates_that_cannot_load_fail_the_task_and_consume_no_message(
    frozen_run: Callable[..., FrozenRun], engine: Engine, smtp_server: LocalSmtpServer
) -> None:
    run = frozen_run(email=2)
    materialise_outbox(engine, run.campaign_run_id)
    with engine.begin() as conn:
        conn.execute(text("update campaign.campaign set definition = definition - 'offer'"))

    with pytest.raises(ConfigError, match="'offer' cannot be used"):
        deliver_email(engine, run, smtp_server)

    assert delivery_state(engine, run.campaign_run_id).counts == {"email": {"pending": 2}}


def test_a_message_that_cannot_render_pauses_the_run_and_consumes_no_message(
    frozen_run: Callable[..., FrozenRun],
    engine: Engine,
    smtp_server: LocalSmtpServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(PROJECT_ROOT / "templates", templates)
    text_template = templates / "messages" / "water_park_for_hotel_guests" / "email.txt.j2"
    working = text_template.read_text(encoding="utf-8")
    text_template.write_text(working + "{{ (first_name | length) // 0 }}\n", encoding="utf-8")
    monkeypatch.setenv("KMS_TEMPLATES_DIR", str(templates))
    run = frozen_run(email=3)
    materialise_outbox(engine, run.campaign_run_id)

    with pytest.raises(DeliveryPaused, match=r"cannot render: .*division"):
        deliver_email(engine, run, smtp_server)
    paused = delivery_state(engine, run.campaign_run_id)
    text_template.write_text(working, encoding="utf-8")
    resume_delivery(engine, run.campaign_run_id)

    assert paused.counts == {"email": {"pending": 3}} and paused.failures == 0
    assert {m["attempts"] for m in messages(engine, run).values()} == {0}
    assert deliver_email(engine, run, smtp_server).outcomes == {"sent": 3}


def test_a_connection_dropped_after_data_is_ambiguous_and_not_resent(
    frozen_run: Callable[..., FrozenRun], engine: Engine, smtp_server: LocalSmtpServer
) -> None:
    run = frozen_run(email=3)
    materialise_outbox(engine, run.campaign_run_id)
    smtp_server.fail_message(2, drop=True)

    deliver_email(engine, run, smtp_server, options=SendOptions(lease_seconds=5))
    deliver_email(engine, run, smtp_server)
    state = finish_delivery(engine, run.campaign_run_id)

    assert state.status == "delivering" and state.counts["email"] == {"ambiguous": 1, "sent": 2}
    assert sum(received(smtp_server).values()) == 3  # the server has it: resending would double it
    ambiguous = next(m for m in messages(engine, run).values() if m["status"] == "ambiguous")
    assert "connection lost after the message was sent" in ambiguous["reason"]
    assert plan_batches(engine, run.campaign_run_id)["email"] == []


def test_a_receipt_settles_an_ambiguous_message_as_sent(
    frozen_run: Callable[..., FrozenRun], engine: Engine, smtp_server: LocalSmtpServer
) -> None:
    run = frozen_run(email=2)
    materialise_outbox(engine, run.campaign_run_id)
    smtp_server.fail_message(1, drop=True)
    deliver_email(engine, run, smtp_server)
    with engine.begin() as conn:
        conn.execute(
            text(
                "insert into campaign.message_event (message_id, campaign_run_id, contact_id, channel, event_type, "
                "occurred_at, source, provider_event_id) "
                "select message_id, campaign_run_id, contact_id, channel, 'delivered', now(), 'email', 'receipt-1' "
                "from campaign.message where campaign_run_id = :run and status = 'ambiguous'"
            ),
            {"run": run.campaign_run_id},
        )

    settled = reconcile(engine, run.campaign_run_id)

    assert (settled.from_receipts, settled.held) == (1, 0)
    assert finish_delivery(engine, run.campaign_run_id).counts == {"email": {"sent": 2}}
    assert {m["reason"] for m in messages(engine, run).values()} == {
        None,
        "reconciled: the provider reported delivered",
    }


@pytest.mark.parametrize(
    ("policy", "expected", "resent"),
    [
        pytest.param("hold", {"ambiguous": 1, "sent": 1}, 0, id="hold"),
        pytest.param("assume_sent", {"sent": 2}, 0, id="assume-sent"),
        pytest.param("resend", {"sent": 2}, 1, id="resend"),
    ],
)
def test_ambiguous_messages_follow_the_channel_policy(
    frozen_run: Callable[..., FrozenRun],
    engine: Engine,
    smtp_server: LocalSmtpServer,
    policy: str,
    expected: dict[str, int],
    resent: int,
) -> None:
    run = frozen_run(email=2)
    materialise_outbox(engine, run.campaign_run_id)
    smtp_server.fail_message(1, drop=True)
    deliver_email(engine, run, smtp_server)

    settled = reconcile(engine, run.campaign_run_id, {"email": policy})
    deliver_email(engine, run, smtp_server)

    assert settled.resent == resent
    assert delivery_state(engine, run.campaign_run_id).counts["email"] == expected
    assert sum(received(smtp_server).values()) == 2 + resent


def test_an_unknown_policy_is_refused(frozen_run: Callable[..., FrozenRun], engine: Engine) -> None:
    run = frozen_run(email=1)
    materialise_outbox(engine, run.campaign_run_id)
    with pytest.raises(ConfigError, match="unknown ambiguous-message policy"):
        reconcile(engine, run.campaign_run_id, {"email": "guess"})


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        pytest.param({"workers": 0}, "'workers' must be a positive number", id="workers"),
        pytest.param(
            {"messages_per_second": "fast"}, "'messages_per_second' must be a positive number", id="rate"
        ),
    ],
)
def test_send_options_from_a_connection_are_checked(extra: dict, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        send_options(extra)


def test_send_options_from_a_connection_over_the_channel_defaults() -> None:
    assert send_options({"workers": "4", "chunk": 8, "messages_per_second": 50, "other": 1}) == SendOptions(
        workers=4, chunk=8, messages_per_second=50.0
    )
    assert send_options(None, "sms") == SendOptions(workers=2, chunk=100)
    assert send_options({"workers": 1}, "email") == SendOptions(workers=1, chunk=8)


def test_the_rate_limit_spaces_the_sends(
    frozen_run: Callable[..., FrozenRun], engine: Engine, smtp_server: LocalSmtpServer
) -> None:
    run = frozen_run(email=12)
    materialise_outbox(engine, run.campaign_run_id)

    started = time.monotonic()
    result = deliver_email(engine, run, smtp_server, options=SendOptions(workers=2, messages_per_second=8))
    elapsed = time.monotonic() - started

    assert result.outcomes == {"sent": 12}
    assert elapsed >= 0.45  # 8 at once (one second's burst), then 4 more at 8 per second


def test_sms_through_the_provider_emulator_with_segments_and_cost(
    frozen_run: Callable[..., FrozenRun], engine: Engine, providers, sms_conn: dict
) -> None:
    run = frozen_run(sms=3)
    materialise_outbox(engine, run.campaign_run_id)

    result = deliver_run_batch(
        engine, run.campaign_run_id, "sms", 0, lambda: SmsConnector.from_connection(sms_conn), None, LINKS
    )

    assert result.outcomes == {"sent": 3}
    stored = messages(engine, run)
    for message in stored.values():
        assert message["segments"] >= 1 and message["provider_message_id"].startswith("SM")
        assert message["cost"] == message["segments"] * Decimal("0.075")
    assert len(providers.messages("sms")) == 3


def test_push_retires_a_token_the_provider_reports_invalid(
    frozen_run: Callable[..., FrozenRun], engine: Engine, providers, fcm_conn: dict
) -> None:
    run = frozen_run(push=3)
    materialise_outbox(engine, run.campaign_run_id)
    stale = run.contacts["push"][0]
    with engine.begin() as conn:
        conn.execute(
            text("update core.identifier set value = 'stale-' || value where contact_id = :c"), {"c": stale}
        )

    result = deliver_run_batch(
        engine, run.campaign_run_id, "push", 0, lambda: PushConnector.from_connection(fcm_conn), None, LINKS
    )

    assert result.outcomes == {"failed_hard": 1, "sent": 2}
    with engine.connect() as conn:
        suppressed = conn.execute(
            text("select address from campaign.suppression where address_kind = 'push_token'")
        ).scalars()
        assert list(suppressed) == [f"stale-fcm-token-{stale}"]


def kms(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).parent / "kms"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_the_delivery_commands_show_send_reconcile_and_resume(
    frozen_run: Callable[..., FrozenRun], engine: Engine, smtp_server: LocalSmtpServer
) -> None:
    run = frozen_run(email=4)
    materialise_outbox(engine, run.campaign_run_id)
    smtp_server.fail_message(1, drop=True)
    connections = {
        "AIRFLOW_CONN_KMS_SMTP": json.dumps(smtp_connection(smtp_server)),
        "AIRFLOW_CONN_KMS_TRACKING": json.dumps({"conn_type": "http", "password": "c" * 40}),
    }
    run_id = str(run.campaign_run_id)

    sent = kms("delivery", "send", run_id, env=connections)
    not_paused = kms("delivery", "resume", run_id)
    settled = kms("delivery", "reconcile", run_id, "--email", "assume_sent")
    status = kms("delivery", "status", run_id)

    assert sent.returncode == 0, sent.stderr
    assert "email: ambiguous 1, sent 3" in sent.stdout
    assert not_paused.returncode == 1
    assert not_paused.stderr.strip() == f"kms: error: campaign run {run_id} is not paused"
    assert "assumed sent 1, still ambiguous 0" in settled.stdout
    assert status.stdout.splitlines()[-1].strip() == "email: sent 4"
    assert sum(received(smtp_server).values()) == 4
