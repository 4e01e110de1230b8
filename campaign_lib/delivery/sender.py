"""Send one batch of a run's outbox through a connector, exactly once per message.

Each sender thread repeats one short transaction: record the outcomes of the messages it
sent last (with their contact-history rows), then claim the next `chunk` due messages of the
batch with `FOR UPDATE SKIP LOCKED`, re-check each recipient's eligibility in the same
statement, and mark the eligible ones `sending` under the thread's lease (the others
`skipped`, with the reason). Only after that commit does the connector get the messages.
So the database knows, before any hand-over, which messages might be at the provider:

- a retried, cleared or rerun task finds sent messages final and claims only due ones;
- two copies of a task share a batch (SKIP LOCKED) and never claim the same message;
- a killed worker leaves at most `chunk` messages per thread in `sending`; once their lease
  expires they become `ambiguous` and are settled by receipts or a policy, never resent
  blindly (campaign_lib.delivery.outbox.reconcile, ADR 0010).

Outcomes are recorded set-based and go with the next claim: one commit per chunk, which is
what a message costs in the database (a commit is 1 to 7 ms on a busy machine; per-message
commits would cap a thread at a few hundred messages per second). Outcomes never wait longer
than `flush_seconds` for their commit, so a slow provider's answers are recorded promptly; if a
worker dies with outcomes not yet committed, those messages are `sending` and become
`ambiguous`, which costs a reconciliation but never a duplicate.

Failures spend the run's error budget; a spent budget or an outcome with `pause_run` pauses
the run, every thread stops at its next claim, and `deliver_batch` raises `DeliveryPaused`.

The campaign's send window is checked before every claim: outside it a thread claims nothing
more (a window that closes mid-batch stops the batch at the next chunk boundary), the rest of
the batch stays pending, and the result says how many messages wait and when the window opens.

While the threads send, the leases of the messages they hold are renewed every third of
`lease_seconds`, in one statement for the whole batch, so a slow provider never lets a live
worker's lease run out (which would make its messages `ambiguous`). A batch done sooner never
renews anything: the fast path has no extra statement.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from campaign_lib.campaign.definition import SendWindow
from campaign_lib.delivery.outbox import _state, reap_expired_leases, unit_costs
from campaign_lib.delivery.prepared import execute_prepared
from campaign_lib.delivery.ratelimit import TokenBucket
from campaign_lib.errors import DeliveryError, DeliveryPaused
from campaign_lib.sqlfiles import queries
from connectors.base import OUTCOME_STATUSES, Connector, Outbound, Outcome

log = logging.getLogger(__name__)

FAILURES = ("failed_soft", "failed_hard", "ambiguous")


class Rendered(Protocol):
    """A rendered message (campaign_lib.rendering's Rendered has these fields)."""

    subject: str | None
    text: str
    html: str | None
    headers: Mapping[str, str]


Renderer = Callable[[str, Mapping[str, object], str], Rendered]
"""(channel, recipient variables, message_key) -> Rendered."""


@dataclass(frozen=True)
class SendOptions:
    """How a batch is sent.

    workers: sender threads, each with its own connector and database connection.
    chunk: messages claimed (and marked `sending`) per commit; the most a killed worker can
        leave ambiguous per thread.
    lease_seconds: how long a claim holds; longer than the connector's slowest send.
    messages_per_second: the connector's rate limit across this batch's threads (None: none).
    max_attempts: a message that failed softly this many times fails hard.
    retry_base_seconds: the first soft-failure backoff when the provider gave no retry_after
        (doubled per attempt).
    wait_for_retries_seconds: wait in the task for soft failures due within this time.
    flush_seconds: outcomes wait at most this long for their commit (normally they go with
        the next claim, one commit per chunk).
    """

    workers: int = 1
    chunk: int = 1
    lease_seconds: float = 300.0
    messages_per_second: float | None = None
    max_attempts: int = 4
    retry_base_seconds: float = 60.0
    wait_for_retries_seconds: float = 0.0
    flush_seconds: float = 0.5


@dataclass
class BatchResult:
    """What one `deliver_batch` call did, by outcome; when the send window closed before the
    batch was done, when it opens (`window_opens_at`, UTC), how many of the batch's messages
    wait for it, and a sentence saying so (`window_closed`)."""

    campaign_run_id: int
    channel: str
    batch_no: int
    outcomes: dict[str, int] = field(default_factory=dict)
    window_opens_at: datetime | None = None
    waiting_for_window: int = 0
    window_closed: str | None = None

    def add(self, status: str, n: int = 1) -> None:
        if n:
            self.outcomes[status] = self.outcomes.get(status, 0) + n

    def as_dict(self) -> dict[str, Any]:
        return {
            "campaign_run_id": self.campaign_run_id,
            "channel": self.channel,
            "batch_no": self.batch_no,
            "outcomes": dict(sorted(self.outcomes.items())),
        }


def worker_id() -> str:
    """This process's name for leases: host, pid and a random part (a restarted pid differs)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def deliver_batch(
    engine: Engine,
    campaign_run_id: int,
    channel: str,
    batch_no: int,
    connector_factory: Callable[[], Connector],
    render: Renderer,
    options: SendOptions | None = None,
    window: SendWindow | None = None,
    clock: Callable[[], datetime] | None = None,
) -> BatchResult:
    """Send the due messages of one batch while `window` is open (None: at any time); returns
    the outcomes counted and, when the window closed first, what waits for it. `clock` (default:
    the system clock) gives the moment the window is checked against before each claim.

    Raises DeliveryPaused when the run is (or becomes) paused, and lets the connector's
    TransientDeliveryError / PermanentDeliveryError through after putting the messages it
    had not handed over back to pending.
    """
    options = options or SendOptions()
    sql = queries("delivery.sql")
    result = BatchResult(campaign_run_id, channel, batch_no)
    with engine.begin() as conn:
        definition = (
            conn.execute(sql["lock_run"], {"campaign_run_id": campaign_run_id}).mappings().one()["definition"]
        )
        reap_expired_leases(conn, campaign_run_id)
    batch = _Batch(
        campaign_run_id=campaign_run_id,
        channel=channel,
        batch_no=batch_no,
        unit_cost=unit_costs(definition)[channel],
        options=options,
        bucket=TokenBucket(options.messages_per_second) if options.messages_per_second else None,
        result=result,
        lock=threading.Lock(),
        window=window,
        clock=clock or _utc_now,
    )
    while True:
        with _renewing_leases(engine, batch):
            _run_workers(engine, batch, connector_factory, render)
        with engine.connect() as conn:
            state = _state(conn, campaign_run_id)
            if state.status == "paused":
                raise DeliveryPaused(
                    f"campaign run {campaign_run_id} paused: {state.paused_reason}; "
                    f"`kms delivery resume {campaign_run_id}` continues it"
                )
            due = conn.execute(
                sql["due_later"],
                {"campaign_run_id": campaign_run_id, "channel": channel, "batch_no": batch_no},
            ).one()
        if batch.window_opens_at is not None and due.unsent:
            result.window_opens_at = batch.window_opens_at
            result.waiting_for_window = due.unsent
            result.window_closed = (
                f"the send window ({window.describe()}) is closed until "
                f"{window.local_time(batch.window_opens_at)}"
            )
            log.info("%s: %d messages of the batch wait for it", result.window_closed, due.unsent)
            return result
        if due.next_attempt_at is None:
            return result
        wait = (due.next_attempt_at - _now(engine)).total_seconds()
        if wait > options.wait_for_retries_seconds:
            log.info("%d soft-failed messages wait until %s", due.waiting, due.next_attempt_at)
            return result
        time.sleep(max(wait, 0.0))


def _now(engine: Engine):
    with engine.connect() as conn:
        return conn.exec_driver_sql("select now()").scalar_one()


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Batch:
    campaign_run_id: int
    channel: str
    batch_no: int
    unit_cost: str
    options: SendOptions
    bucket: TokenBucket | None
    result: BatchResult
    lock: threading.Lock
    window: SendWindow | None
    clock: Callable[[], datetime]
    owners: set[str] = field(default_factory=set)
    window_opens_at: datetime | None = None

    def count(self, status: str, n: int = 1) -> None:
        with self.lock:
            self.result.add(status, n)

    def may_claim(self) -> bool:
        """False outside the send window (and remember when it opens): checked before each claim."""
        if self.window is None:
            return True
        opens = self.window.opens_at(self.clock())
        if opens is not None:
            with self.lock:
                self.window_opens_at = opens
        return opens is None


@contextmanager
def _renewing_leases(engine: Engine, batch: _Batch) -> Iterator[None]:
    """While the body runs, renew the leases of the messages the batch's workers hold, every
    third of lease_seconds, in one statement (which skips rows a worker is recording just then)."""
    stopped = threading.Event()
    params = {
        "campaign_run_id": batch.campaign_run_id,
        "channel": batch.channel,
        "batch_no": batch.batch_no,
        "lease_seconds": batch.options.lease_seconds,
    }

    def renew() -> None:
        while not stopped.wait(batch.options.lease_seconds / 3):
            with batch.lock:
                owners = sorted(batch.owners)
            try:
                with engine.begin() as conn:
                    renewed = conn.execute(
                        queries("delivery.sql")["renew_leases"], {**params, "owners": owners}
                    ).rowcount
            except SQLAlchemyError as exc:
                # The workers' own statements fail too if the database is gone; until then a
                # missed renewal only shortens the lease.
                log.warning(
                    "could not renew the leases of %s batch %d: %s", batch.channel, batch.batch_no, exc
                )
                continue
            log.info("renewed the leases of %d messages still being sent", renewed)

    renewer = threading.Thread(target=renew, name="kms-lease-renewal", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stopped.set()
        renewer.join()


def _run_workers(
    engine: Engine, batch: _Batch, connector_factory: Callable[[], Connector], render: Renderer
) -> None:
    if batch.options.workers == 1:
        _Worker(engine, batch, connector_factory(), render).run()
        return
    with ThreadPoolExecutor(batch.options.workers, thread_name_prefix="kms-send") as pool:
        futures = [
            pool.submit(lambda: _Worker(engine, batch, connector_factory(), render).run())
            for _ in range(batch.options.workers)
        ]
    for future in futures:
        future.result()


class _Worker:
    """One sender thread: its own connection to the database and to the provider."""

    def __init__(self, engine: Engine, batch: _Batch, connector: Connector, render: Renderer) -> None:
        self.engine = engine
        self.batch = batch
        self.connector = connector
        self.render = render
        self.owner = f"{worker_id()}:{threading.get_ident() % 100000}"
        self.sql = queries("delivery.sql")
        self.addresses: dict[int, str] = {}
        with batch.lock:
            batch.owners.add(self.owner)

    def run(self) -> None:
        unrecorded: list[Outcome] = []
        try:
            with self.engine.connect() as conn:
                while True:
                    with conn.begin():
                        paused = self._record(conn, unrecorded)
                        unrecorded = []
                        claimed = self._claim(conn) if not paused and self.batch.may_claim() else []
                    sending = [row for row in claimed if row["status"] == "sending"]
                    self.batch.count("skipped", len(claimed) - len(sending))
                    if not claimed:
                        return
                    if sending:
                        unrecorded = self._send(conn, sending)
        finally:
            try:
                if unrecorded:
                    with self.engine.begin() as conn:
                        self._record(conn, unrecorded)
            finally:
                self.connector.close()

    def _claim(self, conn: Connection) -> list[Mapping[str, Any]]:
        rows = execute_prepared(
            conn,
            "kms_claim_next",
            self.sql["claim_next"],
            {
                "campaign_run_id": self.batch.campaign_run_id,
                "channel": self.batch.channel,
                "batch_no": self.batch.batch_no,
                "owner": self.owner,
                "lease_seconds": self.batch.options.lease_seconds,
                "limit": self.batch.options.chunk,
            },
        )
        return [row._mapping for row in rows]

    def _send(self, conn: Connection, claimed: list[Mapping[str, Any]]) -> list[Outcome]:
        """Hand the claimed messages over; returns the outcomes not committed yet (they go with
        the next claim). A slow connector's outcomes are committed every flush_seconds."""
        attempts = {row["message_id"]: row["attempts"] for row in claimed}
        self.addresses = {row["message_id"]: row["address"] for row in claimed}
        outbound: list[Outbound] = []
        settled: list[Outcome] = []
        for row in claimed:
            try:
                rendered = self.render(self.batch.channel, self._recipient(row), row["message_key"])
            except Exception as exc:
                # Personal data reaches templates only as variables, so a message that cannot be
                # rendered means the campaign's templates are wrong: nothing was handed over, the
                # claimed messages go back to pending and the run pauses until someone fixes it.
                self._pause_unsent(conn, [r["message_id"] for r in claimed], f"cannot render: {exc}"[:1000])
                return []
            outbound.append(
                Outbound(
                    message_id=row["message_id"],
                    message_key=row["message_key"],
                    contact_id=row["contact_id"],
                    channel=self.batch.channel,
                    address=row["address"],
                    subject=rendered.subject,
                    text=rendered.text,
                    html=rendered.html,
                    headers=dict(rendered.headers),
                )
            )
        if self.batch.bucket is not None and outbound:
            self.batch.bucket.take(len(outbound))
        pending = {message.message_id for message in outbound}
        try:
            flushed = time.monotonic()
            for outcome in self._checked(self.connector.send(outbound) if outbound else iter(()), pending):
                settled.append(self._final(outcome, attempts[outcome.message_id]))
                if time.monotonic() - flushed >= self.batch.options.flush_seconds:
                    self._commit(conn, settled)
                    settled, flushed = [], time.monotonic()
        except DeliveryError:
            # The connector yields 'ambiguous' for anything it handed over before failing, so
            # what has no outcome was never handed over: back to pending for the retry.
            self._commit(conn, settled)
            with conn.begin():
                conn.execute(
                    self.sql["release_unsent"], {"message_ids": sorted(pending), "owner": self.owner}
                )
            raise
        settled.extend(
            Outcome(message_id, "ambiguous", reason="the connector gave no outcome for it")
            for message_id in sorted(pending)
        )
        return settled

    def _pause_unsent(self, conn: Connection, message_ids: list[int], reason: str) -> None:
        with conn.begin():
            conn.execute(self.sql["release_unsent"], {"message_ids": message_ids, "owner": self.owner})
            conn.execute(
                self.sql["spend_error_budget"],
                {
                    "campaign_run_id": self.batch.campaign_run_id,
                    "failures": 0,
                    "pause": True,
                    "pause_reason": reason,
                },
            )

    def _checked(self, outcomes: Iterator[Outcome], pending: set[int]) -> Iterator[Outcome]:
        for outcome in outcomes:
            if outcome.message_id not in pending:
                raise DeliveryError(
                    f"connector {type(self.connector).__name__} gave an outcome for message "
                    f"{outcome.message_id}, which it was not sent or already answered"
                )
            if outcome.status not in OUTCOME_STATUSES:
                raise DeliveryError(f"connector gave an unknown status {outcome.status!r}")
            pending.discard(outcome.message_id)
            yield outcome

    def _final(self, outcome: Outcome, attempts: int) -> Outcome:
        if outcome.status == "failed_soft" and attempts >= self.batch.options.max_attempts:
            return Outcome(
                outcome.message_id,
                "failed_hard",
                reason=f"gave up after {attempts} attempts: {outcome.reason or 'soft failure'}",
                pause_run=outcome.pause_run,
            )
        if outcome.status == "failed_soft" and outcome.retry_after is None:
            delay = self.batch.options.retry_base_seconds * 2 ** max(attempts - 1, 0)
            return Outcome(
                outcome.message_id,
                "failed_soft",
                reason=outcome.reason or "soft failure",
                retry_after=delay,
                pause_run=outcome.pause_run,
            )
        return outcome

    def _commit(self, conn: Connection, outcomes: list[Outcome]) -> None:
        if outcomes:
            with conn.begin():
                self._record(conn, outcomes)

    def _record(self, conn: Connection, outcomes: list[Outcome]) -> bool:
        """Record outcomes (inside the caller's transaction) and spend the error budget on the
        failures among them; True when the run is paused."""
        if not outcomes:
            return False
        reasons = [o.reason or (None if o.status == "sent" else o.status.replace("_", " ")) for o in outcomes]
        execute_prepared(
            conn,
            "kms_record_outcomes",
            self.sql["record_outcomes"],
            {
                "message_ids": [o.message_id for o in outcomes],
                "statuses": [o.status for o in outcomes],
                "provider_ids": [o.provider_message_id for o in outcomes],
                "reasons": reasons,
                "segments": [o.segments for o in outcomes],
                "retry_after": [o.retry_after or 0.0 for o in outcomes],
                "unit_cost": self.batch.unit_cost,
                "owner": self.owner,
            },
        )
        for outcome in outcomes:
            self.batch.count(outcome.status)
        invalid = [
            self.addresses[o.message_id]
            for o in outcomes
            if o.status == "failed_hard" and o.reason == "token_invalid"
        ]
        if invalid:
            from connectors.push import retire_push_tokens

            retire_push_tokens(conn, invalid)
        failures = [
            (o, r) for o, r in zip(outcomes, reasons, strict=True) if o.status in FAILURES or o.pause_run
        ]
        if not failures:
            return False
        pausing = [(o, r) for o, r in failures if o.pause_run]
        last, reason = (pausing or failures)[-1]
        state = conn.execute(
            self.sql["spend_error_budget"],
            {
                "campaign_run_id": self.batch.campaign_run_id,
                "failures": sum(o.status in FAILURES for o, _ in failures),
                "pause": bool(pausing),
                "pause_reason": f"{last.status}: {reason}",
            },
        ).first()
        return state is None or state.status == "paused"

    def _recipient(self, row: Mapping[str, Any]) -> dict[str, object]:
        return {
            "salutation": row["salutation"],
            "first_name": row["first_name"],
            "last_name": row["last_name"],
            "email": row["email"],
            "phone": row["phone_e164"],
            "preferred_language": row["preferred_language"],
            "cell": row["cell"],
        }
