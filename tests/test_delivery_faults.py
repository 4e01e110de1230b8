"""Exactly once under faults: a worker killed mid-batch, two copies of a delivery task at
once, a rerun. Real servers throughout: the local SMTP server, the SMS emulator, the
tracking app's email webhook for delivery receipts, and a delivery in a child process that
is killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from email.parser import BytesHeaderParser

import httpx
import pytest
from outbox_runs import FrozenRun
from servers_smtp import smtp_connection
from servers_tracking import EMAIL_WEBHOOK_SECRET
from sqlalchemy import text
from sqlalchemy.engine import Engine
from test_outbox import LINKS, deliver_email, email_of, received

from campaign_lib.api.server import RunningServer
from campaign_lib.delivery import (
    SendOptions,
    deliver_run_batch,
    delivery_state,
    finish_delivery,
    materialise_outbox,
    reconcile,
)
from campaign_lib.local_servers.smtp import LocalSmtpServer
from campaign_lib.tracking.webhooks import body_signature
from connectors.email import EmailConnector
from connectors.sms import SmsConnector

CHILD = textwrap.dedent(
    """
    import json, os, sys
    from sqlalchemy.engine import make_url
    from campaign_lib.db import make_engine
    from campaign_lib.delivery import SendOptions, deliver_run_batch
    from campaign_lib.tracking.tokens import TrackingLinks
    from connectors.email import EmailConnector
    from connectors.sms import SmsConnector

    args = json.loads(sys.argv[1])
    engine = make_engine(make_url(os.environ["KMS_DATABASE_URL"]))
    build = {"email": EmailConnector, "sms": SmsConnector}[args["channel"]]
    deliver_run_batch(
        engine, args["run"], args["channel"], 0, lambda: build.from_connection(args["conn"]),
        SendOptions(workers=2, chunk=args["chunk"], lease_seconds=1.0),
        TrackingLinks(args["base_url"], args["secret"].encode()),
    )
    """
)


def start_child_delivery(run: FrozenRun, channel: str, conn: dict, chunk: int) -> subprocess.Popen:
    args = {
        "chunk": chunk,
        "run": run.campaign_run_id,
        "channel": channel,
        "conn": conn,
        "base_url": LINKS.base_url,
        "secret": LINKS.secret.decode(),
    }
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(args)], cwd=os.getcwd(), stderr=subprocess.PIPE
    )


def kill_when(child: subprocess.Popen, ready: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert child.poll() is None, child.stderr.read().decode()
        assert time.monotonic() < deadline, "the child delivery did not get going"
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stderr.close()


def post_delivery_receipts(tracking_api: RunningServer, server: LocalSmtpServer) -> int:
    """Post a Postmark-style Delivery event for every message the SMTP server stored, as an
    email service provider does; returns how many."""
    parser = BytesHeaderParser()
    events = []
    for stored in server.messages():
        headers = parser.parsebytes(stored.path.read_bytes())
        events.append(
            {
                "RecordType": "Delivery",
                "ID": f"delivery-{stored.path.stem}",
                "MessageID": headers["Message-ID"],
                "Recipient": stored.rcpt_tos[0],
                "DeliveredAt": datetime.now(UTC).isoformat(),
            }
        )
    body = json.dumps({"events": events}).encode()
    reply = httpx.post(
        f"{tracking_api.base_url}/t/webhooks/email",
        content=body,
        headers={
            "Content-Type": "application/json",
            "X-KMS-Signature": body_signature(EMAIL_WEBHOOK_SECRET, body),
        },
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    return len(events)


@pytest.mark.parametrize("chunk", [pytest.param(1, id="chunk-1"), pytest.param(16, id="chunk-16")])
def test_a_worker_killed_mid_batch_leaves_every_recipient_exactly_once_after_reconciliation(
    frozen_run: Callable[..., FrozenRun],
    engine: Engine,
    smtp_server: LocalSmtpServer,
    tracking_api: RunningServer,
    chunk: int,
) -> None:
    run = frozen_run(email=300)
    materialise_outbox(engine, run.campaign_run_id)
    child = start_child_delivery(run, "email", smtp_connection(smtp_server), chunk)
    kill_when(child, lambda: smtp_server.data_received >= 60)

    time.sleep(1.2)  # the killed worker's leases run out
    killed = delivery_state(engine, run.campaign_run_id).counts["email"]
    post_delivery_receipts(tracking_api, smtp_server)
    settled = reconcile(engine, run.campaign_run_id, {"email": "resend"})
    deliver_email(engine, run, smtp_server)
    state = finish_delivery(engine, run.campaign_run_id)

    # What the server got is sent or in doubt; at most a chunk per thread is in doubt.
    assert killed.get("sent", 0) + killed.get("sending", 0) >= 60 and killed.get("pending", 0) > 0
    assert 1 <= killed.get("sending", 0) <= 2 * chunk
    assert settled.expired == killed.get("sending", 0)
    assert settled.held == 0
    assert received(smtp_server) == {email_of(c): 1 for c in run.contacts["email"]}
    assert state.status == "completed" and state.counts == {"email": {"sent": 300}}


def test_a_killed_sms_worker_resends_with_the_same_idempotency_key(
    frozen_run: Callable[..., FrozenRun], engine: Engine, providers, sms_conn: dict
) -> None:
    run = frozen_run(sms=200)
    materialise_outbox(engine, run.campaign_run_id)
    child = start_child_delivery(run, "sms", sms_conn, 32)
    kill_when(child, lambda: len(providers.messages("sms")) >= 40)

    time.sleep(1.2)
    settled = reconcile(engine, run.campaign_run_id, {"sms": "resend"})  # the emulator honours the key
    deliver_run_batch(
        engine, run.campaign_run_id, "sms", 0, lambda: SmsConnector.from_connection(sms_conn), None, LINKS
    )

    numbers = Counter(message["to"] for message in providers.messages("sms"))
    assert settled.held == 0
    assert finish_delivery(engine, run.campaign_run_id).counts == {"sms": {"sent": 200}}
    assert len(numbers) == 200 and set(numbers.values()) == {1}


@pytest.mark.parametrize(
    "workers", [pytest.param(1, id="one-thread-each"), pytest.param(3, id="three-threads-each")]
)
def test_two_copies_of_a_delivery_task_at_once_send_nothing_twice(
    frozen_run: Callable[..., FrozenRun], engine: Engine, smtp_server: LocalSmtpServer, workers: int
) -> None:
    run = frozen_run(email=120)
    materialise_outbox(engine, run.campaign_run_id)
    results = []
    start = threading.Barrier(2)

    def copy() -> None:
        start.wait()
        results.append(deliver_email(engine, run, smtp_server, options=SendOptions(workers=workers)))

    copies = [threading.Thread(target=copy) for _ in range(2)]
    for thread in copies:
        thread.start()
    for thread in copies:
        thread.join()

    assert sum(result.outcomes.get("sent", 0) for result in results) == 120
    assert all(result.outcomes.get("sent", 0) > 0 for result in results)
    assert received(smtp_server) == {email_of(c): 1 for c in run.contacts["email"]}


def test_a_rerun_after_everything_was_sent_sends_nothing(
    frozen_run: Callable[..., FrozenRun], engine: Engine, smtp_server: LocalSmtpServer
) -> None:
    run = frozen_run(email=10)
    materialise_outbox(engine, run.campaign_run_id)
    deliver_email(engine, run, smtp_server)
    finish_delivery(engine, run.campaign_run_id)

    materialise_outbox(engine, run.campaign_run_id)
    rerun = deliver_email(engine, run, smtp_server)
    connector = EmailConnector.from_connection(smtp_connection(smtp_server))

    assert rerun.outcomes == {}
    assert connector.connections_opened == 0
    assert sum(received(smtp_server).values()) == 10


def phone_of(engine: Engine, contact_id: int) -> str:
    with engine.connect() as conn:
        return conn.execute(
            text("select phone_e164 from core.contact where contact_id = :c"), {"c": contact_id}
        ).scalar_one()


def test_an_sms_timeout_after_acceptance_is_resent_with_its_key_and_arrives_once(
    frozen_run: Callable[..., FrozenRun], engine: Engine, providers, sms_conn: dict
) -> None:
    run = frozen_run(sms=4)
    materialise_outbox(engine, run.campaign_run_id)
    slow = phone_of(engine, run.contacts["sms"][2])
    providers.add_fault(provider="sms", address=slow, hang_after_accept=12, times=1)

    def deliver():
        return deliver_run_batch(
            engine, run.campaign_run_id, "sms", 0, lambda: SmsConnector.from_connection(sms_conn), None, LINKS
        )

    first = deliver()
    held = reconcile(engine, run.campaign_run_id)
    settled = reconcile(engine, run.campaign_run_id, {"sms": "resend"})
    second = deliver()

    assert first.outcomes == {"ambiguous": 1, "sent": 3}
    assert (held.resent, held.held) == (0, 1)  # by default nobody guesses
    assert (settled.resent, settled.held) == (1, 0)
    assert second.outcomes == {"sent": 1}
    assert finish_delivery(engine, run.campaign_run_id).counts == {"sms": {"sent": 4}}
    assert Counter(message["to"] for message in providers.messages("sms"))[slow] == 1


def test_a_slow_send_keeps_its_lease_so_reconciliation_meanwhile_finds_nothing_expired(
    frozen_run: Callable[..., FrozenRun], engine: Engine, providers, sms_conn: dict
) -> None:
    run = frozen_run(sms=3)
    materialise_outbox(engine, run.campaign_run_id)
    slow = phone_of(engine, run.contacts["sms"][1])
    # The provider answers this message after 5 s: far longer than the 2 s lease.
    providers.add_fault(provider="sms", address=slow, delay=5, times=1)
    patient = {**sms_conn, "extra": {**sms_conn["extra"], "timeout": 30}}
    results = []

    def deliver() -> None:
        results.append(
            deliver_run_batch(
                engine,
                run.campaign_run_id,
                "sms",
                0,
                lambda: SmsConnector.from_connection(patient),
                SendOptions(workers=1, chunk=3, lease_seconds=2.0),
                LINKS,
            )
        )

    sender = threading.Thread(target=deliver)
    sender.start()
    expired, leases = 0, set()
    while sender.is_alive():
        # Meanwhile someone reconciles (finish_delivery, `kms delivery reconcile`): expired
        # leases would become ambiguous.
        expired += reconcile(engine, run.campaign_run_id).expired
        with engine.connect() as conn:
            leases |= set(
                conn.execute(
                    text(
                        "select lease_expires_at from campaign.message "
                        "where campaign_run_id = :run and status = 'sending'"
                    ),
                    {"run": run.campaign_run_id},
                ).scalars()
            )
        time.sleep(0.1)
    sender.join()

    assert expired == 0
    assert len(leases) >= 2  # the slow message's lease was renewed while it was being sent
    assert results[0].outcomes == {"sent": 3}
    assert finish_delivery(engine, run.campaign_run_id).counts == {"sms": {"sent": 3}}
    numbers = Counter(message["to"] for message in providers.messages("sms"))
    assert len(numbers) == 3 and set(numbers.values()) == {1}
