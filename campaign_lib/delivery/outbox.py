"""The outbox of a campaign run: materialise it, plan its batches, reconcile, resume, summarise.

`materialise_outbox` turns a frozen (or approved) audience into one `campaign.message` per
member outside the control group, in one set-based statement, and opens the run's
`campaign.delivery` row with its error budget. It is idempotent: a rerun inserts nothing and
keeps the batch size chosen the first time, so every message stays in its batch.
`plan_batches` names the batches that still have work, per channel, for Airflow's dynamic
task mapping; `campaign_lib.delivery.sender.deliver_batch` sends one of them.

Ambiguous messages (a worker died mid-send, or a connection dropped after the hand-over)
are settled by `reconcile`: a receipt in `campaign.message_event` makes them `sent`; what is
left follows the channel's policy (ADR 0010): `hold` (the default: a person decides),
`resend` (safe where the provider deduplicates by our idempotency key, or where its receipts
are complete) or `assume_sent`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from sqlalchemy.engine import Connection, Engine

from campaign_lib.errors import ConfigError, DeliveryError
from campaign_lib.sqlfiles import queries

AmbiguousPolicy = Literal["hold", "resend", "assume_sent"]
DEFAULT_POLICY: Mapping[str, AmbiguousPolicy] = {"email": "hold", "sms": "hold", "push": "hold"}
DELIVERABLE = ("frozen", "approved")


@dataclass(frozen=True)
class DeliverySettings:
    """How a run is cut and how much failure it tolerates.

    batch_size: messages per mapped delivery task (fixed at materialisation).
    failure_share, min_failures: the error budget is max(min_failures, share * messages)
    failed or ambiguous outcomes; one more pauses the run.
    """

    batch_size: int = 5000
    failure_share: float = 0.05
    min_failures: int = 20

    def __post_init__(self) -> None:
        if self.batch_size < 1 or not 0 <= self.failure_share <= 1 or self.min_failures < 0:
            raise ConfigError(f"invalid delivery settings: {self}")


@dataclass(frozen=True)
class DeliveryState:
    """The run's delivery row and its messages by channel and status."""

    campaign_run_id: int
    status: str
    paused_reason: str | None
    messages: int
    max_failures: int
    failures: int
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    cost: Decimal = Decimal(0)

    def as_text(self) -> str:
        """A few lines for the task log and `kms delivery status`."""
        lines = [
            f"campaign run {self.campaign_run_id}: delivery {self.status}"
            + (f" ({self.paused_reason})" if self.paused_reason else ""),
            f"messages {self.messages:,}, failures {self.failures} of at most {self.max_failures}, "
            f"cost {self.cost:.2f}",
        ]
        for channel, by_status in sorted(self.counts.items()):
            shown = ", ".join(f"{status} {n:,}" for status, n in sorted(by_status.items()))
            lines.append(f"  {channel}: {shown}")
        return "\n".join(lines)


def unit_costs(definition: Mapping[str, object]) -> dict[str, str]:
    """Price per message (SMS: per segment) by channel from a stored campaign definition."""
    per_message = (definition.get("costs") or {}).get("per_message") or {}  # type: ignore[union-attr]
    return {channel: str(Decimal(str(per_message.get(channel, 0)))) for channel in ("email", "sms", "push")}


def materialise_outbox(engine: Engine, campaign_run_id: int, settings: DeliverySettings | None = None) -> int:
    """Write the run's messages from its frozen audience (idempotent); returns how many it has.

    Raises DeliveryError for a dry run, a run that is not frozen, or a campaign that needs an
    approval it has not got.
    """
    settings = settings or DeliverySettings()
    sql = queries("delivery.sql")
    with engine.begin() as conn:
        run = conn.execute(sql["lock_run"], {"campaign_run_id": campaign_run_id}).mappings().first()
        if run is None:
            raise DeliveryError(f"no campaign run {campaign_run_id}")
        if run["dry_run"] or run["status"] not in DELIVERABLE:
            raise DeliveryError(
                f"campaign run {campaign_run_id} is {'a dry run' if run['dry_run'] else run['status']}: "
                "only a frozen audience is delivered"
            )
        if run["definition"].get("approval_required") and run["status"] != "approved":
            raise DeliveryError(f"campaign run {campaign_run_id} needs an approval before delivery")
        existing = conn.execute(sql["find_delivery"], {"campaign_run_id": campaign_run_id}).mappings().first()
        if existing is not None:
            return int(existing["messages"])
        params = {"campaign_run_id": campaign_run_id, "batch_size": settings.batch_size}
        conn.execute(sql["materialise_messages"], params)
        conn.execute(
            sql["open_delivery"],
            {
                **params,
                "purpose": run["definition"]["purpose"],
                "failure_share": settings.failure_share,
                "min_failures": settings.min_failures,
            },
        )
        return int(conn.execute(sql["find_delivery"], params).mappings().one()["messages"])


def plan_batches(engine: Engine, campaign_run_id: int) -> dict[str, list[int]]:
    """The batch numbers with work left, per channel (every channel of the run present, maybe empty)."""
    with engine.connect() as conn:
        rows = conn.execute(queries("delivery.sql")["plan_batches"], {"campaign_run_id": campaign_run_id})
        planned = {row.channel: list(row.batches) for row in rows}
    return {channel: planned.get(channel, []) for channel in ("email", "sms", "push")}


def delivery_state(engine: Engine, campaign_run_id: int) -> DeliveryState:
    """The run's delivery state; DeliveryError when its outbox was never materialised."""
    with engine.connect() as conn:
        return _state(conn, campaign_run_id)


def _state(conn: Connection, campaign_run_id: int) -> DeliveryState:
    sql = queries("delivery.sql")
    row = conn.execute(sql["find_delivery"], {"campaign_run_id": campaign_run_id}).mappings().first()
    if row is None:
        raise DeliveryError(f"campaign run {campaign_run_id} has no outbox (never materialised)")
    counts: dict[str, dict[str, int]] = {}
    cost = Decimal(0)
    for channel, status, messages, channel_cost in conn.execute(
        sql["message_counts"], {"campaign_run_id": campaign_run_id}
    ):
        counts.setdefault(channel, {})[status] = messages
        cost += channel_cost
    return DeliveryState(
        campaign_run_id=campaign_run_id,
        status=row["status"],
        paused_reason=row["paused_reason"],
        messages=row["messages"],
        max_failures=row["max_failures"],
        failures=row["failures"],
        counts=counts,
        cost=cost,
    )


def reap_expired_leases(conn: Connection, campaign_run_id: int) -> int:
    """Mark the run's `sending` messages whose lease ran out `ambiguous`; returns how many."""
    return len(
        conn.execute(
            queries("delivery.sql")["reap_expired_leases"], {"campaign_run_id": campaign_run_id}
        ).all()
    )


@dataclass(frozen=True)
class Reconciliation:
    """What `reconcile` did: expired leases, receipts found, and what each policy settled."""

    expired: int
    from_receipts: int
    resent: int
    assumed_sent: int
    held: int


def reconcile(
    engine: Engine, campaign_run_id: int, policy: Mapping[str, AmbiguousPolicy] | None = None
) -> Reconciliation:
    """Settle the run's ambiguous messages: expired leases first become ambiguous, receipts make
    them sent, the rest follows `policy` per channel (default DEFAULT_POLICY)."""
    chosen = {**DEFAULT_POLICY, **(policy or {})}
    unknown = {c: p for c, p in chosen.items() if p not in ("hold", "resend", "assume_sent")}
    if unknown:
        raise ConfigError(f"unknown ambiguous-message policy {unknown}: use hold, resend or assume_sent")
    sql = queries("delivery.sql")
    params = {"campaign_run_id": campaign_run_id}
    with engine.begin() as conn:
        definition = conn.execute(sql["lock_run"], params).mappings().one()["definition"]
        costs = json.dumps(unit_costs(definition))
        expired = reap_expired_leases(conn, campaign_run_id)
        resend = [c for c, p in chosen.items() if p == "resend"]
        assume = [c for c, p in chosen.items() if p == "assume_sent"]
        receipts, assumed = conn.execute(
            sql["settle_ambiguous"], {**params, "assume_channels": assume, "unit_costs": costs}
        ).one()
        resent = len(conn.execute(sql["resend_ambiguous"], {**params, "channels": resend}).all())
        held = _ambiguous(conn, campaign_run_id)
    return Reconciliation(expired, receipts, resent, assumed, held)


def _ambiguous(conn: Connection, campaign_run_id: int) -> int:
    counts = conn.execute(queries("delivery.sql")["message_counts"], {"campaign_run_id": campaign_run_id})
    return sum(row.messages for row in counts if row.status == "ambiguous")


def resume_delivery(engine: Engine, campaign_run_id: int) -> bool:
    """Resume a paused run with a fresh error budget; False when it was not paused."""
    with engine.begin() as conn:
        resumed = conn.execute(
            queries("delivery.sql")["resume_delivery"], {"campaign_run_id": campaign_run_id}
        )
        return resumed.first() is not None


def finish_delivery(engine: Engine, campaign_run_id: int) -> DeliveryState:
    """After the delivery tasks: reap expired leases, settle ambiguous messages by receipts and
    the default policy, mark the run completed when every message is final; returns the state."""
    reconcile(engine, campaign_run_id)
    with engine.begin() as conn:
        conn.execute(queries("delivery.sql")["complete_delivery"], {"campaign_run_id": campaign_run_id})
        return _state(conn, campaign_run_id)
