"""The send window gates every send, not only the start: a batch claims nothing outside it,
stops at the next chunk when it closes mid-batch, and leaves the rest pending for the next
opening; `send_now` overrides it. Real servers (the local SMTP server) and a fixed clock; the
`kms delivery send` command is run as a process against the real clock."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta

from outbox_runs import FrozenRun
from servers_smtp import smtp_connection
from sqlalchemy.engine import Engine
from test_cli import kms
from test_outbox import LINKS, deliver_email, email_of, messages, received

from campaign_lib.campaign.definition import SendWindow
from campaign_lib.delivery import (
    DeliverySettings,
    SendOptions,
    deliver_run,
    delivery_state,
    materialise_outbox,
)
from campaign_lib.local_servers.smtp import LocalSmtpServer
from connectors.email import EmailConnector

# Monday 23 November 2026; the window is 09:00-20:00 UTC, every day.
WINDOW = SendWindow(start="09:00", end="20:00", timezone="UTC")
NIGHT = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
OPENS = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
LAST_SECOND = datetime(2026, 11, 23, 19, 59, 59, tzinfo=UTC)
CLOSES = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)
OPENS_NEXT_DAY = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def clock(*moments: datetime) -> Callable[[], datetime]:
    """A clock that tells `moments` one per call, then keeps telling the last one."""
    told = list(moments)

    def now() -> datetime:
        return told.pop(0) if len(told) > 1 else told[0]

    return now


def deliver(
    engine: Engine,
    run: FrozenRun,
    server: LocalSmtpServer,
    now: Callable[[], datetime],
    *,
    batch_no: int = 0,
    options: SendOptions | None = None,
    send_now: bool = False,
):
    chunks_of_two = options or SendOptions(workers=2, chunk=2)
    return deliver_email(engine, run, server, batch_no, chunks_of_two, send_now=send_now, clock=now)


def statuses(engine: Engine, run: FrozenRun) -> dict[str, int]:
    counts: dict[str, int] = {}
    for message in messages(engine, run).values():
        counts[message["status"]] = counts.get(message["status"], 0) + 1
    return counts


def test_a_batch_outside_its_window_sends_nothing_and_says_when_it_opens(
    frozen_run: Callable[..., FrozenRun], engine: Engine, smtp_server: LocalSmtpServer
) -> None:
    run = frozen_run(email=5, send_window=WINDOW)
    materialise_outbox(engine, run.campaign_run_id)

    night = deliver(engine, run, smtp_server, clock(NIGHT))
    night_messages = statuses(engine, run)
    morning = deliver(engine, run, smtp_server, clock(OPENS))

    assert night.outcomes == {}
    assert (night.window_opens_at, night.waiting_for_window) == (OPENS, 5)
    assert night.window_closed == (
        "the send window (09:00-20:00 UTC, mon,tue,wed,thu,fri,sat,sun) is closed until Mon 2026-11-23 09:00 UTC"
    )
    assert night_messages == {"pending": 5}
    assert morning.outcomes == {"sent": 5} and morning.window_closed is None
    assert statuses(engine, run) == {"sent": 5}
    assert received(smtp_server) == {email_of(c): 1 for c in run.contacts["email"]}


def test_send_now_sends_outside_the_window(
    frozen_run: Callable[..., FrozenRun], engine: Engine, smtp_server: LocalSmtpServer
) -> None:
    run = frozen_run(email=4, send_window=WINDOW)
    materialise_outbox(engine, run.campaign_run_id)

    result = deliver(engine, run, smtp_server, clock(NIGHT), send_now=True)

    assert result.outcomes == {"sent": 4} and result.window_opens_at is None
    assert received(smtp_server) == {email_of(c): 1 for c in run.contacts["email"]}


def test_a_window_that_closes_mid_batch_stops_it_at_the_next_chunk_and_a_retry_sends_the_rest_next_day(
    frozen_run: Callable[..., FrozenRun], engine: Engine, smtp_server: LocalSmtpServer
) -> None:
    run = frozen_run(email=10, send_window=WINDOW)
    materialise_outbox(engine, run.campaign_run_id)
    one_thread = SendOptions(workers=1, chunk=3)

    # One thread checks the clock before each claim: two chunks of 3 go out, then it is 20:00.
    evening = deliver(engine, run, smtp_server, clock(LAST_SECOND, LAST_SECOND, CLOSES), options=one_thread)
    after_close = statuses(engine, run)
    late_retry = deliver(engine, run, smtp_server, clock(CLOSES + timedelta(minutes=30)), options=one_thread)
    next_day = deliver(engine, run, smtp_server, clock(OPENS_NEXT_DAY), options=one_thread)

    assert evening.outcomes == {"sent": 6}
    assert (evening.window_opens_at, evening.waiting_for_window) == (OPENS_NEXT_DAY, 4)
    assert after_close == {"sent": 6, "pending": 4}
    assert late_retry.outcomes == {} and late_retry.waiting_for_window == 4
    assert next_day.outcomes == {"sent": 4}
    assert statuses(engine, run) == {"sent": 10}
    assert received(smtp_server) == {email_of(c): 1 for c in run.contacts["email"]}


def test_a_whole_run_stops_at_the_first_batch_the_closed_window_holds_back(
    frozen_run: Callable[..., FrozenRun], engine: Engine, smtp_server: LocalSmtpServer
) -> None:
    run = frozen_run(email=5, send_window=WINDOW)
    materialise_outbox(engine, run.campaign_run_id, DeliverySettings(batch_size=2))
    conn = smtp_connection(smtp_server)
    connector = (lambda: EmailConnector.from_connection(conn), SendOptions(workers=1, chunk=1))

    # Batch 0: two claims and the empty one that ends it, all before 20:00; batch 1 meets 20:00.
    results = deliver_run(
        engine,
        run.campaign_run_id,
        {"email": connector},
        LINKS,
        clock=clock(LAST_SECOND, LAST_SECOND, LAST_SECOND, CLOSES),
    )

    assert [(r.batch_no, r.outcomes, r.waiting_for_window) for r in results] == [
        (0, {"sent": 2}, 0),
        (1, {}, 2),
    ]
    assert results[-1].window_opens_at == OPENS_NEXT_DAY
    state = delivery_state(engine, run.campaign_run_id)
    assert (state.status, state.counts) == ("delivering", {"email": {"pending": 3, "sent": 2}})
    assert received(smtp_server) == {email_of(c): 1 for c in run.contacts["email"][:2]}


def test_kms_delivery_send_waits_for_the_window_unless_send_now(
    frozen_run: Callable[..., FrozenRun], engine: Engine, smtp_server: LocalSmtpServer
) -> None:
    # Open on every weekday but today and tomorrow (UTC): closed now, at any hour of the day.
    today = datetime.now(UTC)
    weekdays = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    days = [day for number, day in enumerate(weekdays) if (number - today.weekday()) % 7 > 1]
    window = SendWindow(start="09:00", end="20:00", timezone="UTC", days=days)
    run = frozen_run(email=3, send_window=window)  # frozen, its outbox not built yet
    opens = window.local_time(datetime.combine(today.date() + timedelta(days=2), time(9), UTC))
    env = {
        **os.environ,
        "AIRFLOW_CONN_KMS_SMTP": json.dumps(smtp_connection(smtp_server)),
        "KMS_TRACKING_SECRET": LINKS.secret.decode(),
    }

    waiting = kms("delivery", "send", str(run.campaign_run_id), env=env)
    after_waiting = statuses(engine, run)
    sent = kms("delivery", "send", str(run.campaign_run_id), "--send-now", env=env)

    assert waiting.returncode == 0, waiting.stderr
    assert (
        f"Stopped: the send window (09:00-20:00 UTC, {','.join(days)}) is closed until {opens}; "
        f"3 messages wait for it." in waiting.stdout
    )
    assert "--send-now" in waiting.stdout
    assert after_waiting == {"pending": 3}
    assert sent.returncode == 0, sent.stderr
    assert "Stopped" not in sent.stdout and "delivery completed" in sent.stdout
    assert received(smtp_server) == {email_of(c): 1 for c in run.contacts["email"]}
