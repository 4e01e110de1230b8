"""What a campaign run got back: deliveries, responses and conversions, read from the database.

`load_responses` runs sql/reporting.sql in one transaction and returns plain values (no
statistics here; campaign_lib.reporting.metrics turns them into the report's figures):

- the run and its definition (costs, response window, offer) and the selection waterfall;
- per channel: messages by delivery outcome, unique opens, clicks, unsubscribes, bounces
  and complaints per message from campaign.message_event (bot hits excluded), people who
  converted, and the billed units (SMS segments);
- per group (treated = every audience member not in the control group, whether the
  message reached them or not; control = cell 'control') and channel: people, converters,
  revenue; the revenue of every converting person; revenue per day of the window;
- the treated conversions with the touches before them, and every treated member's path
  counted per distinct path (for the attribution models).

A conversion is an activity inside the person's response window: from their message's
send (control members and unsent messages: from the run's first send) for
`response_window_days` days; the offered product when the campaign names one, else any
purchase-type activity. A member merged into another contact after the freeze is followed
to the final survivor of the merge chain, where their bookings now are.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy.engine import Connection, Engine

from campaign_lib.campaign.funnel import WaterfallStep
from campaign_lib.errors import ConfigError
from campaign_lib.reporting.attribution import Conversion, PathCount, Touch
from campaign_lib.sqlfiles import queries

# Activity types that are a purchase (core.activity_type): what counts as a conversion of
# a campaign that names no offer.
PURCHASE_TYPES = (
    "hotel_stay",
    "restaurant_bill",
    "bar_bill",
    "shop_purchase",
    "water_park_ticket",
    "dolphinarium_ticket",
)
REPORTABLE = ("frozen", "approved")
_SEND_TIMES = ("first_sent_at", "last_sent_at")
_RESPONSES = ("opened", "clicked", "unsubscribed", "bounced_hard", "bounced_soft", "complained")


@dataclass(frozen=True)
class ChannelFunnel:
    """Messages of one channel by outcome, and the responses to them (unique per message)."""

    channel: str
    messages: int
    sent: int
    delivered: int
    opened: int
    clicked: int
    converted: int
    unsubscribed: int
    bounced_hard: int
    bounced_soft: int
    complained: int
    failed: int
    skipped: int
    pending: int
    ambiguous: int
    billed_units: int


@dataclass(frozen=True)
class GroupOutcome:
    """People of one group (treated or control) and channel, how many converted, their revenue."""

    is_control: bool
    channel: str
    people: int
    converters: int
    revenue: float


@dataclass(frozen=True)
class RunResponses:
    """Everything a report of one campaign run is computed from."""

    campaign_run_id: int
    campaign_name: str
    description: str
    owner: str
    status: str
    created_at: datetime
    definition: dict[str, Any]
    selection_name: str
    first_sent_at: datetime | None
    last_sent_at: datetime | None
    window_opens_at: datetime
    window_closes_at: datetime
    response_window_days: int
    offer_sku: str | None
    offer_in_catalogue: bool
    waterfall: tuple[WaterfallStep, ...]
    funnel: tuple[ChannelFunnel, ...]
    outcomes: tuple[GroupOutcome, ...]
    buyer_revenue_treated: np.ndarray
    buyer_revenue_control: np.ndarray
    revenue_by_day: dict[bool, dict[int, float]]
    conversions: tuple[Conversion, ...]
    paths: tuple[PathCount, ...]

    @property
    def currency(self) -> str:
        return str(self.definition.get("costs", {}).get("currency", "EUR"))


def load_responses(
    engine: Engine, campaign_run_id: int, *, lookback_days: int | None = None, paths: bool = True
) -> RunResponses:
    """The deliveries, responses and conversions of a campaign run (see the module doc).

    `lookback_days` bounds how far before a conversion a touch still counts for attribution
    (default: the campaign's response window). `paths=False` skips every person's path
    (only the Markov model needs them; a second pass over the contact history). ConfigError
    for an unknown run, a dry run or one whose audience was never frozen.
    """
    sql = queries("reporting.sql")
    with engine.begin() as conn:
        run = conn.execute(sql["run_facts"], {"campaign_run_id": campaign_run_id}).mappings().one_or_none()
        if run is None:
            raise ConfigError(f"no campaign run {campaign_run_id}")
        if run["dry_run"] or run["status"] not in REPORTABLE:
            raise ConfigError(
                f"campaign run {campaign_run_id} has no audience to report on (status {run['status']}"
                f"{', dry run' if run['dry_run'] else ''})"
            )
        definition = dict(run["definition"])
        window_days = int(definition.get("response_window_days", 14))
        rows = conn.execute(sql["message_outcomes"], {"campaign_run_id": campaign_run_id}).mappings().all()
        first_sent = min((r["first_sent_at"] for r in rows if r["first_sent_at"]), default=None)
        last_sent = max((r["last_sent_at"] for r in rows if r["last_sent_at"]), default=None)
        messages = [{k: v for k, v in r.items() if k not in _SEND_TIMES} for r in rows]
        opens_at = first_sent or run["frozen_at"] or run["as_of"]
        closes_at = (last_sent or opens_at) + timedelta(days=window_days)
        offer_sku = (definition.get("offer") or {}).get("sku")
        product_id = (
            conn.execute(sql["offered_product"], {"sku": offer_sku}).scalar_one_or_none()
            if offer_sku
            else None
        )
        window = {
            "campaign_run_id": campaign_run_id,
            "window_opens_at": opens_at,
            "window_closes_at": closes_at,
            "window_days": window_days,
            "lookback_days": lookback_days or window_days,
        }
        conn.execute(sql["report_settings"])
        conn.execute(sql["collect_survivors"], window)
        conn.execute(
            sql["collect_conversions"],
            {
                **window,
                "offer_product_id": product_id,
                "purchase_types": [] if offer_sku else list(PURCHASE_TYPES),
            },
        )
        conn.execute(sql["analyze_conversions"])
        outcomes = _group_outcomes(conn, window)
        return RunResponses(
            campaign_run_id=campaign_run_id,
            campaign_name=run["campaign_name"],
            description=run["description"] or "",
            owner=run["owner"] or "",
            status=run["status"],
            created_at=run["created_at"],
            definition=definition,
            selection_name=run["selection_name"],
            first_sent_at=first_sent,
            last_sent_at=last_sent,
            window_opens_at=opens_at,
            window_closes_at=closes_at,
            response_window_days=window_days,
            offer_sku=offer_sku,
            offer_in_catalogue=product_id is not None,
            waterfall=tuple(
                WaterfallStep(**row)
                for row in conn.execute(queries("campaign.sql")["run_waterfall"], window).mappings()
            ),
            funnel=_channel_funnel(conn, window, messages, outcomes),
            outcomes=outcomes,
            **_buyer_revenue(conn),
            revenue_by_day=_revenue_by_day(conn, window),
            conversions=tuple(
                Conversion(
                    touches=tuple(
                        Touch(label, float(days))
                        for label, days in zip(row.labels, row.days_before, strict=True)
                    ),
                    value=int(row.revenue_cents) / 100,
                )
                for row in conn.execute(sql["conversion_journeys"], window)
            ),
            paths=tuple(
                PathCount(tuple(row.labels), row.conversions, row.non_conversions)
                for row in (conn.execute(sql["journey_paths"], window) if paths else ())
            ),
        )


def _group_outcomes(conn: Connection, window: dict[str, Any]) -> tuple[GroupOutcome, ...]:
    sql = queries("reporting.sql")
    converted = {(r.is_control, r.channel): r for r in conn.execute(sql["conversion_groups"])}
    outcomes = []
    for group in conn.execute(sql["audience_groups"], window):
        bought = converted.get((group.is_control, group.channel))
        outcomes.append(
            GroupOutcome(
                is_control=group.is_control,
                channel=group.channel,
                people=group.people,
                converters=bought.converters if bought else 0,
                revenue=int(bought.revenue_cents) / 100 if bought else 0.0,
            )
        )
    return tuple(sorted(outcomes, key=lambda o: (o.is_control, o.channel)))


def _channel_funnel(
    conn: Connection,
    window: dict[str, Any],
    messages: list[dict[str, Any]],
    outcomes: tuple[GroupOutcome, ...],
) -> tuple[ChannelFunnel, ...]:
    """Messages by outcome (`message_outcomes` rows) joined in Python to their responses and
    the treated converters."""
    sql = queries("reporting.sql")
    responses = {row["channel"]: row for row in conn.execute(sql["message_responses"], window).mappings()}
    converted = {o.channel: o.converters for o in outcomes if not o.is_control}
    funnel = []
    for row in messages:
        answered = responses.get(row["channel"], {})
        undelivered = answered.get("undelivered", 0)
        funnel.append(
            ChannelFunnel(
                **row,
                delivered=row["sent"] - undelivered,
                converted=converted.get(row["channel"], 0),
                **{key: answered.get(key, 0) for key in _RESPONSES},
            )
        )
    return tuple(funnel)


def _buyer_revenue(conn: Connection) -> dict[str, np.ndarray]:
    rows = conn.execute(queries("reporting.sql")["buyer_revenue"]).all()
    control = np.array([r.revenue_cents for r in rows if r.is_control], dtype=float) / 100
    treated = np.array([r.revenue_cents for r in rows if not r.is_control], dtype=float) / 100
    return {"buyer_revenue_treated": treated, "buyer_revenue_control": control}


def _revenue_by_day(conn: Connection, window: dict[str, Any]) -> dict[bool, dict[int, float]]:
    by_day: dict[bool, dict[int, float]] = {False: {}, True: {}}
    for row in conn.execute(queries("reporting.sql")["revenue_by_day"], window):
        by_day[row.is_control][row.day] = int(row.revenue_cents) / 100
    return by_day
