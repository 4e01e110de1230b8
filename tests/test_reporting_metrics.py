"""The report's figures on a small hand-made campaign run in the real PostgreSQL, each checked
against a value computed by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from campaign_lib.errors import ConfigError
from campaign_lib.reporting.metrics import compute_report
from campaign_lib.reporting.responses import load_responses
from campaign_lib.reporting.stats import newcombe_interval, wilson_interval

T0 = datetime(2026, 10, 1, 9, tzinfo=UTC)
DEFINITION = """{"costs": {"currency": "EUR", "per_message": {"email": "0.01", "sms": "0.10"}, "fixed": "5"},
                 "response_window_days": 10, "offer": {"sku": "OFFER-1", "name": "the offer"}}"""

# Contacts 1-4 get an email, 5-6 an SMS (6's fails), 7-10 are the control group. Contact 1
# got an SMS of another campaign two days before. After the freeze, identity merged contact
# 5 into 11 and 11 into 12, and moved 5's history and booking to 12.
SETUP = [
    "insert into core.account (account_type) select 'household' from generate_series(1, 12)",
    "insert into core.contact (account_id) select account_id from core.account order by account_id",
    "insert into core.product (sku, name, category, price_cents, currency) values "
    "('OFFER-1', 'Offer', 'water_park', 1000, 'EUR'), ('OTHER-1', 'Other', 'water_park', 500, 'EUR')",
    f"insert into campaign.campaign (campaign_name, origin, definition_version, definition) values "
    f"('hand_made', 'file', '0000000000000000', cast('{DEFINITION}' as jsonb)), "
    f"('earlier', 'file', '0000000000000000', cast('{DEFINITION}' as jsonb))",
    "insert into campaign.campaign_run (campaign_name, dag_id, run_id, status, definition_version, "
    "selection_name, selection_version, as_of, audience_count, control_count, frozen_at) values "
    "('hand_made', 'd', 'r1', 'frozen', 'v', 's', 'v', :t0 - interval '1 hour', 6, 4, :t0 - interval '1 hour'), "
    "('earlier', 'd', 'r0', 'frozen', 'v', 's', 'v', :t0 - interval '3 days', 1, 0, :t0 - interval '3 days'), "
    "('hand_made', 'd', 'dry', 'dry_run', 'v', 's', 'v', :t0, null, null, null)",
    "update campaign.campaign_run set dry_run = true where run_id = 'dry'",
    "insert into campaign.waterfall_step values (1, 1, 'universe', 100, 0, 100, 'every contact', '{}'), "
    "(1, 2, 'selection', 100, 90, 10, 'hotel guests', '{}')",
    "insert into campaign.audience (campaign_run_id, contact_id, account_id, channel, cell, selection_version) "
    "select 1, contact_id, account_id, case when contact_id in (5, 6, 9, 10) then 'sms' else 'email' end::core.channel, "
    "case when contact_id >= 7 then 'control' else 'main' end, 'v' from core.contact where contact_id <= 10",
    "insert into campaign.message (message_key, campaign_run_id, contact_id, channel, cell, batch_no, status, "
    "segments, reason, sent_at) select md5(contact_id::text), 1, contact_id, channel, 'main', 0, "
    "case when contact_id = 6 then 'failed_hard' else 'sent' end::campaign.message_status, "
    "case when contact_id = 5 then 2 end, case when contact_id = 6 then 'invalid number' end, "
    "case when contact_id <> 6 then :t0 + contact_id * interval '1 minute' end "
    "from campaign.audience where cell = 'main' order by contact_id",
    # The sent messages got their contact history from the trigger on campaign.message.
    "insert into campaign.contact_history (contact_id, channel, campaign_name, campaign_run_id, sent_at) "
    "values (1, 'sms', 'earlier', 2, :t0 - interval '2 days')",
    "update core.contact set status = 'merged', merged_into_contact_id = 12 where contact_id = 11",
    "update core.contact set status = 'merged', merged_into_contact_id = 11 where contact_id = 5",
    "update campaign.contact_history set contact_id = 12 where contact_id = 5",
    "insert into campaign.message_event (message_id, campaign_run_id, contact_id, channel, event_type, "
    "occurred_at, url, is_bot, bot_reason, source) "
    "select m.message_id, 1, m.contact_id, m.channel, e.kind::campaign.message_event_type, :t0 + interval '1 hour', "
    "case when e.kind = 'click' then 'https://resort.example/' end, e.bot, case when e.bot then 'scanner' end, 'tracking' "
    "from campaign.message m join (values (1, 'open', false), (1, 'click', false), (1, 'unsubscribe', false), "
    "(2, 'open', true), (3, 'open', false), (3, 'open', false), (4, 'bounce_hard', false), "
    "(5, 'delivered', false)) e(contact, kind, bot) on e.contact = m.contact_id",
    # Counted: 1 (treated), 5 (as 12; price x quantity), 6 (treated, message failed), 7 (control).
    # Not: 2 bought another product, 3 after the window, 8 before the send.
    "insert into core.activity (contact_id, activity_type, source_system, source_ref, occurred_at, "
    "amount_cents, currency, quantity, product_id) "
    "select a.contact, 'water_park_ticket', 'ticketing', 'r' || a.contact, :t0 + a.after, a.amount, "
    "case when a.amount is not null then 'EUR' end, a.quantity, p.product_id "
    "from (values (1, interval '2 days', 2000, 1, 'OFFER-1'), (2, interval '1 day', 500, 1, 'OTHER-1'), "
    "(3, interval '15 days', 1000, 1, 'OFFER-1'), (12, interval '3 days', null, 2, 'OFFER-1'), "
    "(6, interval '1 day', 1000, 1, 'OFFER-1'), (7, interval '3 days', 1000, 1, 'OFFER-1'), "
    "(8, interval '-1 day', 1000, 1, 'OFFER-1')) a(contact, after, amount, quantity, sku) "
    "join core.product p on p.sku = a.sku",
]


@pytest.fixture
def hand_made(clean_db: Engine) -> Engine:
    with clean_db.begin() as conn:
        for statement in SETUP:
            conn.execute(text(statement), {"t0": T0})
    return clean_db


def test_responses_count_unique_human_responses_per_message_and_conversions_in_the_window(
    hand_made: Engine,
) -> None:
    responses = load_responses(hand_made, 1)

    funnel = {f.channel: f for f in responses.funnel}
    email, sms = funnel["email"], funnel["sms"]
    assert (email.messages, email.sent, email.delivered, email.opened, email.clicked, email.converted) == (
        4,
        4,
        3,
        2,
        1,
        1,
    )
    assert (email.unsubscribed, email.bounced_hard, email.billed_units) == (1, 1, 4)
    assert (
        sms.messages,
        sms.sent,
        sms.delivered,
        sms.opened,
        sms.converted,
        sms.failed,
        sms.billed_units,
    ) == (
        2,
        1,
        1,
        0,
        2,
        1,
        2,
    )
    outcomes = {(o.is_control, o.channel): (o.people, o.converters, o.revenue) for o in responses.outcomes}
    assert outcomes == {
        (False, "email"): (4, 1, 20.0),
        (False, "sms"): (2, 2, 30.0),
        (True, "email"): (2, 1, 10.0),
        (True, "sms"): (2, 0, 0.0),
    }
    assert responses.window_opens_at == T0 + timedelta(minutes=1)
    assert sorted(responses.buyer_revenue_treated) == [10.0, 20.0, 20.0]
    assert list(responses.buyer_revenue_control) == [10.0]
    assert sorted((p.labels, p.conversions, p.non_conversions) for p in responses.paths) == [
        (("earlier/sms", "email"), 1, 0),
        (("email",), 0, 3),
        (("sms",), 1, 0),
    ]


def test_cost_roi_and_increment_match_the_hand_computation(hand_made: Engine) -> None:
    report = compute_report(load_responses(hand_made, 1), model="last_touch", now=T0 + timedelta(days=30))

    # 4 emails x 0.01 + 2 SMS segments x 0.10 + 5 fixed.
    assert report.cost == pytest.approx(5.24)
    # Last touch: contact 1's 20 to this run's email, contact 5's 20 to its SMS; contact 6's 10
    # had no touch (the message failed) and is credited to nobody.
    assert report.attributed_revenue == pytest.approx(40.0)
    assert report.roi == pytest.approx((40 - 5.24) / 5.24)
    inc = report.increment
    assert (inc.treated_people, inc.treated_converters, inc.control_people, inc.control_converters) == (
        6,
        3,
        4,
        1,
    )
    assert inc.treated_rate == wilson_interval(3, 6) and inc.uplift == newcombe_interval(3, 6, 1, 4)
    assert inc.uplift.estimate == pytest.approx(0.25) and not inc.significant
    assert report.treated_revenue_per_person == pytest.approx(50 / 6)
    assert report.control_revenue_per_person == pytest.approx(2.5)
    assert report.incremental_conversions.estimate == pytest.approx(1.5)
    assert report.incremental_revenue.estimate == pytest.approx(35.0)
    assert report.incremental_roi.estimate == pytest.approx((35 - 5.24) / 5.24)
    assert not report.window_is_open
    channels = {c.channel: c for c in report.channels}
    assert channels["sms"].cost == pytest.approx(0.2) and channels["sms"].attributed_revenue == pytest.approx(
        20
    )
    assert channels["email"].increment.uplift == newcombe_interval(1, 4, 1, 2)


@pytest.mark.parametrize(
    ("model", "credited"),
    [
        pytest.param("first_touch", {"earlier/sms": 20.0, "sms": 20.0}, id="first-touch"),
        pytest.param("linear", {"earlier/sms": 10.0, "email": 10.0, "sms": 20.0}, id="linear"),
        pytest.param("position_based", {"earlier/sms": 10.0, "email": 10.0, "sms": 20.0}, id="position"),
    ],
)
def test_other_campaigns_touches_share_the_credit(hand_made: Engine, model: str, credited: dict) -> None:
    report = compute_report(load_responses(hand_made, 1), model=model, now=T0 + timedelta(days=30))

    shown = {label: credit.value for label, credit in report.model_comparison[model].items() if credit.value}
    assert shown == pytest.approx(credited)
    assert report.attributed_revenue == pytest.approx(sum(v for k, v in credited.items() if "/" not in k))


def test_a_dry_run_or_unknown_run_has_no_report(hand_made: Engine) -> None:
    with pytest.raises(ConfigError, match="campaign run 3 has no audience to report on"):
        load_responses(hand_made, 3)
    with pytest.raises(ConfigError, match="no campaign run 99"):
        load_responses(hand_made, 99)


@pytest.mark.parametrize(
    ("rate", "revenue", "verdict", "reason"),
    [
        pytest.param(
            (0.02, 0.01, 0.03),
            (50.0, 10.0, 90.0),
            "yes",
            "Conversion rate and revenue per person significantly higher",
            id="both",
        ),
        pytest.param(
            (0.02, -0.01, 0.05),
            (50.0, 10.0, 90.0),
            "probably",
            "Revenue per person significantly higher than in the control group; conversion rate: difference not significant",
            id="revenue-only",
        ),
        pytest.param(
            (0.02, 0.01, 0.03),
            (50.0, -10.0, 90.0),
            "probably",
            "Conversion rate significantly higher",
            id="rate-only",
        ),
        pytest.param(
            (0.02, -0.01, 0.05),
            (50.0, -10.0, 90.0),
            "not shown (not significant)",
            "Conversion rate and revenue per person: difference not significant",
            id="neither",
        ),
        pytest.param(
            (-0.02, -0.03, -0.01), (-50.0, -90.0, -10.0), "no, less", "significantly lower", id="worse"
        ),
    ],
)
def test_the_verdict_names_which_difference_is_significant(
    hand_made: Engine, rate: tuple, revenue: tuple, verdict: str, reason: str
) -> None:
    from dataclasses import replace

    from campaign_lib.reporting.stats import Interval
    from campaign_lib.reporting.wording import earned_more_than_nothing, verdict_reason

    base = compute_report(load_responses(hand_made, 1), model="last_touch", now=T0 + timedelta(days=30))
    report = replace(
        base,
        increment=replace(base.increment, uplift=Interval(*rate)),
        revenue_per_person_uplift=Interval(*revenue),
        incremental_revenue=Interval(*revenue),
    )

    assert earned_more_than_nothing(report) == verdict
    assert reason in verdict_reason(report)
    assert verdict_reason(report).endswith(
        "Only 1 person of the control group bought: treat the intervals with care."
    )
