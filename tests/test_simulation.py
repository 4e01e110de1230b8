"""Tests of the response simulation: a campaign world with a known truth.

The drawing is checked on its own (deterministic, rates within binomial bounds); the whole
path on real parts: the tracking requests against the real tracking app, and the bookings
file through the ticketing feed's parser and loader and identity resolution on a small
generated resort, where each booking must land on the audience member it was drawn for.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest
from outbox_runs import build_frozen_run
from sqlalchemy import text
from sqlalchemy.engine import Engine
from test_selection_examples import load_generated, resort  # noqa: F401  (the small resort fixture)

from campaign_lib.campaign.runs import run_campaign
from campaign_lib.campaign.snapshot import RunKey
from campaign_lib.delivery.outbox import materialise_outbox
from campaign_lib.generator.feeds import TICKETING
from campaign_lib.generator.responses import (
    ChannelRates,
    Member,
    ResponseTruth,
    bookings_export,
    campaign_click_targets,
    plan_responses,
    simulate_responses,
)
from campaign_lib.identity import resolve
from campaign_lib.ingest.feeds import load_feeds
from campaign_lib.ingest.parse import parse_file
from campaign_lib.ingest.record import RejectedRow
from campaign_lib.reporting.metrics import compute_report
from campaign_lib.reporting.responses import load_responses
from campaign_lib.tracking.tokens import TrackingLinks

LINKS = TrackingLinks("http://127.0.0.1:9/kms", b"simulation-test-secret-0123456789abcdef")
WINDOW = (dt.date(2026, 12, 2), dt.date(2026, 12, 30))
TARGETS = {
    "email": ("https://www.resort-example.de/wasserpark/tickets", "https://www.resort-example.de/kontakt")
}
RATES = {"email": ChannelRates(open=0.3, click=0.08, unsubscribe=0.01, privacy_proxy_open=0.1)}
TRUTH = ResponseTruth(rates=RATES)
KMS = str(Path(sys.executable).parent / "kms")


def _members(treated: int, control: int, *, recognisable: bool = True) -> list[Member]:
    return [
        Member(
            contact_id=number,
            treated=number <= treated,
            channel="email",
            message_key=f"{number:032x}" if number <= treated else None,
            email=f"guest{number}@example.org" if recognisable else None,
            phone=None,
            first_name="Gast",
            last_name=f"Nr {number}",
        )
        for number in range(1, treated + control + 1)
    ]


def _plan(members, truth=TRUTH, seed=1, bystanders=()):
    return plan_responses(members, bystanders, truth, WINDOW, LINKS, TARGETS, seed)


def _within_binomial(observed: int, n: int, p: float) -> bool:
    """Within 4.5 standard deviations: a false alarm about once in 150,000 runs per check."""
    return abs(observed - n * p) <= 4.5 * math.sqrt(n * p * (1 - p)) + 1


@pytest.mark.parametrize(
    ("seed", "other", "same"), [(1, 1, True), (1, 2, False)], ids=["same-seed", "other-seed"]
)
def test_the_plan_is_a_function_of_the_seed(seed, other, same):
    members = _members(500, 100)
    assert (_plan(members, seed=seed) == _plan(members, seed=other)) is same
    shuffled = list(reversed(members))
    assert _plan(shuffled, seed=seed) == _plan(members, seed=seed)


@pytest.mark.parametrize(
    ("base_rate", "uplift"), [(0.05, 0.04), (0.06, 0.0), (0.2, -0.05)], ids=["uplift", "no-effect", "harm"]
)
def test_rates_lie_within_binomial_bounds(base_rate, uplift):
    treated, control = 4000, 3000
    truth = ResponseTruth(base_rate=base_rate, uplift=uplift, rates=RATES)
    plan = _plan(_members(treated, control), truth)
    converted = Counter(b.treated for b in plan.bookings)
    assert _within_binomial(converted[True], treated, base_rate + uplift)
    assert _within_binomial(converted[False], control, base_rate)
    hits = Counter((h.kind, h.bot) for h in plan.hits)
    rates = RATES["email"]
    for kind, bot, share in [
        ("open", False, rates.open),
        ("open", True, rates.privacy_proxy_open),
        ("click", False, rates.click),
        ("unsubscribe", False, rates.unsubscribe),
    ]:
        assert _within_binomial(hits[kind, bot], treated, share), (kind, bot)
    tickets = Counter(b.tickets for b in plan.bookings)
    assert set(tickets) == {1, 2, 3}
    assert all(WINDOW[0] <= b.visit_date <= WINDOW[1] and b.sku == "WP-DAY-HOTEL" for b in plan.bookings)


def test_responses_follow_their_message():
    plan = _plan(_members(3000, 500))
    opened = {h.message_key for h in plan.hits if h.kind == "open" and not h.bot}
    clicks = [h for h in plan.hits if h.kind == "click"]
    # One click per person, always after an open, only on a link of the message.
    assert len({h.message_key for h in clicks}) == len(clicks)
    assert {h.message_key for h in clicks} <= opened
    assert all(LINKS.verify("click", h.url.rsplit("/", 1)[1]).url in TARGETS["email"] for h in clicks)
    first = sum(LINKS.verify("click", h.url.rsplit("/", 1)[1]).url == TARGETS["email"][0] for h in clicks)
    assert _within_binomial(first, len(clicks), 0.8)
    # Control members get no message, so they make no request.
    assert all(int(h.message_key, 16) <= 3000 for h in plan.hits)


def test_members_nobody_can_recognise_are_counted_not_written():
    plan = _plan(_members(200, 0, recognisable=False), ResponseTruth(base_rate=0.5, uplift=0.5, rates=RATES))
    assert plan.bookings == ()
    assert plan.unrecognisable_conversions == 200


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"base_rate": 1.2}, "shares between 0 and 1"),
        ({"base_rate": 0.1, "uplift": -0.2}, "shares between 0 and 1"),
        ({"product_sku": "SPA-1301"}, "must be a ticket"),
        ({"tickets_per_conversion": (0.5, 0.4)}, "summing to 1"),
        ({"bystander_bookings": -1}, "must not be negative"),
        ({"rates": {"email": ChannelRates(open=0.1, click=0.2)}}, "click at most open"),
    ],
    ids=[
        "rate-above-one",
        "negative-treated-rate",
        "not-a-ticket",
        "ticket-shares",
        "bystanders",
        "click-rate",
    ],
)
def test_an_impossible_truth_is_refused(arguments, message):
    with pytest.raises(ValueError, match=message):
        ResponseTruth(**arguments)


def test_the_bookings_file_passes_the_ticketing_parser(tmp_path):
    bystanders = [
        Member(90_000 + n, None, None, None, f"walkin{n}@example.org", "+4915112345678", "Lea", "Kühn")
        for n in range(30)
    ]
    plan = _plan(
        _members(800, 200), ResponseTruth(base_rate=0.2, uplift=0.1, rates=RATES), bystanders=bystanders
    )
    data = bookings_export(plan, campaign_run_id=4711)
    path = tmp_path / TICKETING.file_name(dt.datetime(2027, 1, 1, 5, 31))
    path.write_bytes(data)
    parsed = list(parse_file(load_feeds()["ticketing"], path))
    assert not [row for row in parsed if isinstance(row, RejectedRow)]
    assert len(parsed) == sum(b.tickets for b in plan.bookings)
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"))))
    assert data.startswith(TICKETING.header())
    assert len({r["ticket_id"] for r in rows}) == len(rows)
    assert all(r["ticket_id"].startswith("T9711") for r in rows)
    assert {r["sales_channel"] for r in rows} == {"online"}
    assert sum(r["buyer_email"].startswith("walkin") for r in rows) >= 30


def _deliver(engine: Engine, campaign_run_id: int, days_ago: int = 0) -> int:
    """The run's messages as the outbox leaves them once sent, `days_ago` days and an hour ago."""
    materialise_outbox(engine, campaign_run_id)
    with engine.begin() as conn:
        return conn.execute(
            text(
                "update campaign.message set status = 'sent', attempts = 1, "
                "sent_at = now() - make_interval(days => :days, hours => 1) where campaign_run_id = :run"
            ),
            {"run": campaign_run_id, "days": days_ago},
        ).rowcount


def _simulate(
    engine: Engine, campaign_run_id: int, truth: ResponseTruth, links: TrackingLinks, out: Path, **options
):
    """simulate_responses with the drop folder `out`/sftp and the truth in `out`/truth."""
    with httpx.Client(timeout=30) as client:
        return simulate_responses(
            engine,
            campaign_run_id,
            truth=truth,
            links=links,
            drop_dir=out / "sftp",
            truth_dir=out / "truth",
            client=client,
            **options,
        )


def _events(engine: Engine, campaign_run_id: int) -> Counter:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "select event_type::text, is_bot, count(*) from campaign.message_event "
                "where campaign_run_id = :run group by 1, 2"
            ),
            {"run": campaign_run_id},
        )
        return Counter({(kind, bot): n for kind, bot, n in rows})


def _landed(engine: Engine) -> dict[str, int]:
    """The contact (after merges) each simulated ticket landed on, by ticket number."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "select t.source_ref, coalesce(c.merged_into_contact_id, c.contact_id) "
                "from core.activity t join core.contact c on c.contact_id = t.contact_id "
                "where t.source_system = 'ticketing' and t.source_ref like 'T9%'"
            )
        )
        return dict(rows.all())


def test_bookings_reach_the_members_they_were_drawn_for(
    resort,  # noqa: F811  (the fixture imported above)
    tracking_api,
    tracking_links,
    tmp_path,
    monkeypatch,
):
    run = run_campaign(resort, "water_park_for_hotel_guests", RunKey("kms_simulation_tests", "identity"))
    sent = _deliver(resort, run.campaign_run_id)
    # Every member converts: treated at 0.9 + 0.1, control at 0.9.
    truth = ResponseTruth(base_rate=0.9, uplift=0.1, bystander_bookings=10)
    result = _simulate(resort, run.campaign_run_id, truth, tracking_links, tmp_path, seed=5)
    assert result.failed_requests == ()
    assert sent > 0 and result.treated_members == sent
    document = json.loads(Path(result.truth_file).read_text(encoding="utf-8"))
    assert document["uplift"] == 0.1 and document["expected_treated_conversions"] == sent
    unrecognisable = document["members_without_email_or_phone"]
    assert sent - unrecognisable <= result.treated_conversions <= sent
    bookings = Path(result.bookings_file)
    assert bookings.parent == tmp_path / "sftp" / "ticketing"
    assert not list(bookings.parent.glob("*.part"))

    monkeypatch.setenv("KMS_QUALITY_GATE", "sql")
    load_generated(resort, resort.url, tmp_path / "sftp")
    resolve(resort)
    with resort.connect() as conn:
        members = conn.execute(
            text(
                "select c.email, c.phone_e164, a.contact_id from campaign.audience a "
                "join core.contact c on c.contact_id = a.contact_id where a.campaign_run_id = :run"
            ),
            {"run": run.campaign_run_id},
        ).all()
    member_of = {m.email or m.phone_e164: m.contact_id for m in members}
    tickets = list(csv.DictReader(io.StringIO(bookings.read_text(encoding="utf-8"))))
    drawn_for = {t["ticket_id"]: member_of.get(t["buyer_email"] or t["buyer_phone"]) for t in tickets}
    landed = _landed(resort)
    assert set(landed) == set(drawn_for)
    member_tickets = {ticket: contact for ticket, contact in drawn_for.items() if contact is not None}
    assert len({*member_tickets.values()}) == result.treated_conversions + result.control_conversions
    assert {ticket: landed[ticket] for ticket in member_tickets} == member_tickets
    assert not {landed[ticket] for ticket in drawn_for if ticket not in member_tickets} & {
        *member_of.values()
    }


@pytest.mark.parametrize(
    ("base_rate", "uplift", "days_ago", "significant"),
    [(0.1, 0.4, 800, True), (0.3, 0.0, 900, False)],
    ids=["planted-uplift", "no-effect"],
)
def test_the_report_recovers_the_planted_truth(
    resort,  # noqa: F811  (the fixture imported above)
    tracking_api,
    tracking_links,
    tmp_path,
    monkeypatch,
    base_rate,
    uplift,
    days_ago,
    significant,
):
    # Every resort contact with an email, half of them the control group; sent before the
    # generated two years begin, so the response window holds no other bookings.
    run = build_frozen_run(resort)
    with resort.begin() as conn:
        conn.execute(
            text(
                "insert into campaign.audience (campaign_run_id, contact_id, account_id, channel, cell, "
                "offer_sku, selection_version) "
                "select :run, contact_id, account_id, 'email', case when campaign.unit_hash('simulation:' "
                "|| contact_id) < 0.5 then 'control' else 'main' end, 'WP-DAY-HOTEL', 'test' "
                "from core.contact where status = 'active' and email is not null"
            ),
            {"run": run.campaign_run_id},
        )
    _deliver(resort, run.campaign_run_id, days_ago)
    truth = ResponseTruth(base_rate=base_rate, uplift=uplift, bystander_bookings=5)
    result = _simulate(resort, run.campaign_run_id, truth, tracking_links, tmp_path, seed=11)
    monkeypatch.setenv("KMS_QUALITY_GATE", "sql")
    load_generated(resort, resort.url, tmp_path / "sftp")
    resolve(resort)
    increment = compute_report(load_responses(resort, run.campaign_run_id), model="last_touch").increment
    assert (increment.treated_people, increment.control_people) == (
        result.treated_members,
        result.control_members,
    )
    assert min(result.treated_members, result.control_members) > 80
    assert (increment.treated_converters, increment.control_converters) == (
        result.treated_conversions,
        result.control_conversions,
    )
    assert increment.uplift.low <= uplift <= increment.uplift.high
    assert increment.significant is significant


def test_tracking_requests_become_the_events_of_their_messages(
    clean_db, frozen_run, tracking_api, tracking_links, tmp_path
):
    run = frozen_run(email=2000, control=300)
    sent = _deliver(clean_db, run.campaign_run_id)
    truth = ResponseTruth(rates=RATES, bystander_bookings=0)
    result = _simulate(clean_db, run.campaign_run_id, truth, tracking_links, tmp_path, seed=9)
    assert result.failed_requests == ()
    requests = result.requests
    assert _events(clean_db, run.campaign_run_id) == Counter(
        {
            ("open", False): requests["open"],
            ("open", True): requests["bot_open"],
            ("click", False): requests["click"],
            ("unsubscribe", False): requests["unsubscribe"],
        }
    )
    rates = RATES["email"]
    for kind, share in [("open", rates.open), ("bot_open", rates.privacy_proxy_open), ("click", rates.click)]:
        assert _within_binomial(requests[kind], sent, share), kind
    with clean_db.connect() as conn:
        unsubscribed = conn.execute(
            text("select count(*) from campaign.suppression where reason = 'unsubscribe'")
        ).scalar_one()
    assert unsubscribed == requests["unsubscribe"] > 0
    targets = campaign_click_targets(clean_db, run.campaign_run_id)
    assert targets["email"] and targets["sms"] == ()
    with clean_db.connect() as conn:
        clicked = conn.execute(
            text("select distinct url from campaign.message_event where event_type = 'click'")
        ).scalars()
        assert set(clicked) <= set(targets["email"])
    document = json.loads(Path(result.truth_file).read_text(encoding="utf-8"))
    assert document["realised_tracking"] == {
        "click": requests["click"],
        "open": requests["open"],
        "bot_open": requests["bot_open"],
        "unsubscribe": requests["unsubscribe"],
    }


def test_kms_simulate_responses_runs_a_delivered_run(
    clean_db, frozen_run, tracking_api, tracking_links, tmp_path
):
    run = frozen_run(email=60, control=20)
    _deliver(clean_db, run.campaign_run_id)
    env = {
        **os.environ,
        "KMS_TRACKING_BASE_URL": tracking_links.base_url,
        "KMS_TRACKING_SECRET": tracking_links.secret.decode(),
        "KMS_REPORTS_DIR": str(tmp_path / "reports"),
    }
    command = [
        KMS,
        "simulate",
        "responses",
        str(run.campaign_run_id),
        "--seed",
        "3",
        "--drop-dir",
        str(tmp_path),
    ]
    done = subprocess.run([*command, "--uplift", "0.2"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["treated_members"], result["control_members"], result["failed_requests"]) == (60, 20, [])
    assert Path(result["truth_file"]) == tmp_path / "reports" / "truth" / f"{run.campaign_run_id}.json"
    assert json.loads(Path(result["truth_file"]).read_text(encoding="utf-8"))["uplift"] == 0.2
    assert Path(result["bookings_file"]).parent == tmp_path / "ticketing"
    refused = subprocess.run(
        [*command, "--uplift", "0.99"], env=env, capture_output=True, text=True, timeout=120
    )
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        "kms: error: base_rate and base_rate + uplift must be shares between 0 and 1"
    ]


def test_hits_wait_until_a_person_could_have_read_the_message(clean_db, frozen_run, tracking_links, tmp_path):
    run = frozen_run(email=40)
    materialise_outbox(clean_db, run.campaign_run_id)
    with clean_db.begin() as conn:
        conn.execute(
            text(
                "update campaign.message set status = 'sent', attempts = 1, sent_at = now() - interval '4 seconds'"
            )
        )
    waits: list[float] = []
    # No server behind the links: the requests fail, which the result reports instead of raising.
    unreachable = TrackingLinks("http://127.0.0.1:9/kms", tracking_links.secret)
    result = _simulate(
        clean_db,
        run.campaign_run_id,
        TRUTH,
        unreachable,
        tmp_path,
        seed=1,
        quiet_seconds=11,
        sleep=waits.append,
    )
    assert len(waits) == 1 and 5 < waits[0] <= 7
    assert result.requests == {} and len(result.failed_requests) == sum(
        json.loads(Path(result.truth_file).read_text())["realised_tracking"].values()
    )
    assert all("ConnectError" in failure for failure in result.failed_requests)
