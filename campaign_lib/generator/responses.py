"""How the resort's guests answer a campaign: a world with a known truth.

After a campaign run was delivered, ``simulate_responses`` makes its audience respond the
way the real systems would see it, with a conversion uplift planted by the caller:

- **opens, clicks, unsubscribes**: HTTP requests to the real tracking URLs of the sent
  messages (the open pixel, a click link that was in the message, the RFC 8058 one-click
  unsubscribe POST), so the tracking app records them as it records people's;
- **bookings**: a ticketing export in the ticketing system's own format (as the generator
  writes it), dropped into the SFTP folder, so the bookings go the real way through
  ingestion and identity resolution. Treated members (every audience cell but 'control')
  book at ``base_rate + uplift``, control members at ``base_rate``; buyers are written with
  the email, name and phone the single customer view knows them by, as online ticket buyers
  type them. Bookings of people outside the audience add noise;
- **the truth**: the planted rates and the counts to expect, as JSON beside the reports, so
  a report's estimate can be checked against what was planted.

The uplift is an intention-to-treat effect: it applies to every treated member, whether or
not their message went out, so a report's treated-minus-control difference estimates it
directly. The draws depend only on the seed and the audience, never on timing or order of
HTTP answers: the same seed on the same run gives the same requests, file and truth.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import time
from bisect import bisect
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from itertools import accumulate
from pathlib import Path
from random import Random

import httpx
from sqlalchemy.engine import Engine

from campaign_lib.errors import ConfigError
from campaign_lib.generator.feeds import TICKETING
from campaign_lib.generator.resort import TICKET_SKUS, amount
from campaign_lib.sqlfiles import queries
from campaign_lib.tracking.tokens import TrackingLinks

# Browsers and mail apps of people; the privacy proxy's bare agent is what Apple's Mail
# Privacy Protection sends when it prefetches every image of a mail nobody opened yet.
PERSON_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Mobile/15E148",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)",
    "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
)
PRIVACY_PROXY_AGENT = "Mozilla/5.0"
# Ticket and order numbers of simulated bookings start here: the generator's scrambled ids
# stay below 2**33 < 9,000,000,000, so the two never meet. One million ids per run, by run
# number modulo 1,000.
_ID_BASE = 9_000_000_000
_IDS_PER_RUN = 1_000_000
# Share of clickers who follow the message's first link (the offer); the others take another.
FIRST_LINK = 0.8


@dataclass(frozen=True)
class ChannelRates:
    """How recipients of one channel answer a sent message, as shares of the sent messages.

    A click opens the message too (the pixel loads before the link is followed), so
    ``click`` is at most ``open``. ``privacy_proxy_open``: the pixel is fetched by a mail
    privacy proxy, a hit the tracking app must flag as a bot's."""

    open: float = 0.0
    click: float = 0.0
    unsubscribe: float = 0.0
    privacy_proxy_open: float = 0.0


def _default_rates() -> dict[str, ChannelRates]:
    # SMS and push messages carry no tracked links or pixel (their renderers leave text as it is).
    return {"email": ChannelRates(open=0.32, click=0.06, unsubscribe=0.004, privacy_proxy_open=0.08)}


@dataclass(frozen=True)
class ResponseTruth:
    """What the simulation plants: conversion rates, the uplift, tracking rates per channel.

    base_rate: share of members who book in the response window without the campaign.
    uplift: added to the base rate for treated members (absolute, may be 0 or negative).
    tickets_per_conversion: probabilities of 1, 2, 3 ... tickets in a converting order.
    bystander_bookings: bookings of people outside the audience (noise).
    """

    base_rate: float = 0.04
    uplift: float = 0.03
    product_sku: str = "WP-DAY-HOTEL"
    tickets_per_conversion: tuple[float, ...] = (0.55, 0.3, 0.15)
    rates: Mapping[str, ChannelRates] = field(default_factory=_default_rates)
    bystander_bookings: int = 50

    def __post_init__(self) -> None:
        if not 0 <= self.base_rate <= 1 or not 0 <= self.base_rate + self.uplift <= 1:
            raise ValueError("base_rate and base_rate + uplift must be shares between 0 and 1")
        if self.product_sku not in TICKET_SKUS:
            raise ValueError(
                f"product_sku must be a ticket of the catalogue, one of {', '.join(TICKET_SKUS)}"
            )
        if not self.tickets_per_conversion or abs(sum(self.tickets_per_conversion) - 1) > 1e-9:
            raise ValueError("tickets_per_conversion must be probabilities of 1, 2, ... tickets summing to 1")
        if self.bystander_bookings < 0:
            raise ValueError("bystander_bookings must not be negative")
        for channel, rates in self.rates.items():
            shares = (rates.open, rates.click, rates.unsubscribe, rates.privacy_proxy_open)
            if not all(0 <= share <= 1 for share in shares) or rates.click > rates.open:
                raise ValueError(f"rates of {channel}: shares between 0 and 1, and click at most open")

    @property
    def price_cents(self) -> int:
        """Price of one ticket of the product."""
        return TICKET_SKUS[self.product_sku][2]

    @property
    def mean_tickets(self) -> float:
        """Expected tickets in a converting order."""
        return sum(n * p for n, p in enumerate(self.tickets_per_conversion, start=1))


@dataclass(frozen=True)
class Member:
    """An audience member as the simulation sees it: group, message, and how the ticketing
    system would know the person (email, phone, name)."""

    contact_id: int
    treated: bool | None  # None: not in the audience (a bystander)
    channel: str | None
    message_key: str | None
    email: str | None
    phone: str | None
    first_name: str | None
    last_name: str | None

    @property
    def recognisable(self) -> bool:
        """Whether a booking can carry something identity resolution links to the person."""
        return bool(self.email or self.phone)


@dataclass(frozen=True)
class Booking:
    """One order of tickets: who bought it (None: outside the audience), when, how many, which."""

    contact_id: int | None
    treated: bool | None
    visit_date: dt.date
    tickets: int
    sku: str
    buyer: Member


@dataclass(frozen=True)
class Hit:
    """One request to the tracking app: what it records, the URL, the client's user agent."""

    kind: str  # open, click, unsubscribe
    message_key: str
    url: str
    user_agent: str
    bot: bool = False

    @property
    def label(self) -> str:
        """What the hit counts as: its kind, or 'bot_open' for a privacy proxy's prefetch."""
        return f"bot_{self.kind}" if self.bot else self.kind


@dataclass(frozen=True)
class ResponsePlan:
    """Every response drawn for a run: tracking hits, bookings, and members nobody can recognise."""

    hits: tuple[Hit, ...]
    bookings: tuple[Booking, ...]
    unrecognisable_conversions: int


@dataclass(frozen=True)
class SimulationResult:
    """What one ``simulate_responses`` call did."""

    campaign_run_id: int
    bookings_file: str
    truth_file: str
    treated_members: int
    control_members: int
    treated_conversions: int
    control_conversions: int
    bystander_bookings: int
    tickets: int
    requests: dict[str, int]
    failed_requests: tuple[str, ...]

    def as_dict(self) -> dict:
        """The result as plain JSON-ready values."""
        return asdict(self)


def plan_responses(
    members: Sequence[Member],
    bystanders: Sequence[Member],
    truth: ResponseTruth,
    window: tuple[dt.date, dt.date],
    links: TrackingLinks,
    click_targets: Mapping[str, Sequence[str]],
    seed: int,
) -> ResponsePlan:
    """Draw every member's response and the bystanders' bookings; pure and deterministic.

    Each member takes the same eight draws whatever the outcome, in contact order, so one
    member's result never shifts another's. ``window`` is the first and last visit day."""
    rng = Random(f"kms-responses:{seed}")
    r = rng.random
    days = (window[1] - window[0]).days + 1
    # Upper bounds of the draws for 1, 2, ... tickets but the last (the sum may miss 1.0 by a hair).
    bounds = list(accumulate(truth.tickets_per_conversion))[:-1]
    hits: list[Hit] = []
    bookings: list[Booking] = []
    unrecognisable = 0
    for member in sorted(members, key=lambda m: m.contact_id):
        converts, tickets, day, respond, unsubscribe, proxy, agent, link = [r() for _ in range(8)]
        if converts < truth.base_rate + (truth.uplift if member.treated else 0.0):
            if member.recognisable:
                bookings.append(
                    Booking(
                        member.contact_id,
                        member.treated,
                        window[0] + dt.timedelta(days=int(day * days)),
                        1 + bisect(bounds, tickets),
                        truth.product_sku,
                        member,
                    )
                )
            else:
                unrecognisable += 1
        rates = truth.rates.get(member.channel)
        if member.message_key is None or rates is None:
            continue
        key = member.message_key
        user_agent = PERSON_AGENTS[int(agent * len(PERSON_AGENTS))]
        if proxy < rates.privacy_proxy_open:
            hits.append(Hit("open", key, links.open_url(key), PRIVACY_PROXY_AGENT, bot=True))
        if respond < rates.open:
            hits.append(Hit("open", key, links.open_url(key), user_agent))
        targets = click_targets.get(member.channel, ())
        if respond < rates.click and targets:
            # One link per person: clicks on two links within a second look like a scanner's.
            others = len(targets) - 1
            index = (
                0
                if link < FIRST_LINK or not others
                else 1 + int((link - FIRST_LINK) / (1 - FIRST_LINK) * others)
            )
            hits.append(Hit("click", key, links.click_url(key, targets[index]), user_agent))
        if unsubscribe < rates.unsubscribe:
            hits.append(Hit("unsubscribe", key, links.unsubscribe_url(key), user_agent))
    skus = sorted(TICKET_SKUS)
    for bystander in bystanders:
        day, sku, tickets = r(), r(), r()
        bookings.append(
            Booking(
                None,
                None,
                window[0] + dt.timedelta(days=int(day * days)),
                1 + int(tickets * 3),
                skus[int(sku * len(skus))],
                bystander,
            )
        )
    return ResponsePlan(tuple(hits), tuple(bookings), unrecognisable)


def bookings_export(plan: ResponsePlan, campaign_run_id: int) -> bytes:
    """The bookings as a ticketing export, byte for byte in the ticketing system's format.

    Sold online, so each order carries the buyer's email, name and phone. Orders are sorted
    by visit day; ticket and order numbers come from the run's own range."""
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n")
    writer.writerow(TICKETING.columns)
    first_id = _ID_BASE + (campaign_run_id % 1000) * _IDS_PER_RUN
    ticket_number = 0
    ordered = sorted(enumerate(plan.bookings), key=lambda item: (item[1].visit_date, item[0]))
    for order_number, (_, booking) in enumerate(ordered):
        attraction, ticket_type, cents = TICKET_SKUS[booking.sku]
        buyer = booking.buyer
        for _ in range(booking.tickets):
            writer.writerow(
                (
                    f"T{first_id + ticket_number}",
                    f"O{first_id + order_number}",
                    attraction,
                    booking.visit_date.isoformat(),
                    ticket_type,
                    amount(cents),
                    "EUR",
                    "online",
                    buyer.email or "",
                    buyer.first_name or "",
                    buyer.last_name or "",
                    buyer.phone or "",
                    booking.sku,
                )
            )
            ticket_number += 1
    if ticket_number > _IDS_PER_RUN:
        raise ValueError(f"{ticket_number:,} tickets exceed the {_IDS_PER_RUN:,} numbers of a run")
    return out.getvalue().encode(TICKETING.encoding)


def campaign_click_targets(engine: Engine, campaign_run_id: int) -> dict[str, tuple[str, ...]]:
    """Per channel of the run's campaign, the links its messages carry (its templates' links)."""
    from campaign_lib.delivery.runs import campaign_of_run
    from campaign_lib.rendering import load_campaign_templates

    templates = load_campaign_templates(campaign_of_run(engine, campaign_run_id))
    return {channel: templates.link_targets(channel) for channel in templates.channels}


def send_hits(hits: Sequence[Hit], client: httpx.Client, workers: int = 4) -> tuple[Counter, tuple[str, ...]]:
    """Make the tracking requests, ``workers`` at a time; return the count of answered
    requests per kind and a line for each request that failed."""

    def send(hit: Hit) -> str | None:
        headers = {"User-Agent": hit.user_agent}
        try:
            if hit.kind == "unsubscribe":
                # RFC 8058 one-click: what a mail client posts from the List-Unsubscribe-Post header.
                response = client.post(hit.url, data={"List-Unsubscribe": "One-Click"}, headers=headers)
            else:
                response = client.get(hit.url, headers=headers)
        except httpx.HTTPError as exc:
            return f"{hit.kind} {hit.message_key}: {type(exc).__name__}: {exc}"
        if response.status_code >= 400:
            return f"{hit.kind} {hit.message_key}: HTTP {response.status_code}"
        return None

    answered: Counter = Counter()
    failures = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for hit, failure in zip(hits, pool.map(send, hits), strict=True):
            if failure is None:
                answered[hit.label] += 1
            else:
                failures.append(failure)
    return answered, tuple(failures)


def _members(rows) -> list[Member]:
    return [
        Member(
            contact_id=row.contact_id,
            treated=None if row.cell is None else row.cell != "control",
            channel=row.channel,
            message_key=row.message_key,
            email=row.email,
            phone=row.phone_e164,
            first_name=row.first_name,
            last_name=row.last_name,
        )
        for row in rows
    ]


def _drop(drop_dir: Path, name: str, data: bytes) -> Path:
    """Put a file into the SFTP drop folder as the ticketing system does: written under a
    `.part` name, then renamed, so the ingestion never takes a half-written file."""
    folder = drop_dir / TICKETING.folder
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / f"{name}.part"
    part.write_bytes(data)
    return part.replace(folder / name)


def truth_document(
    run,
    truth: ResponseTruth,
    seed: int,
    window: tuple[dt.date, dt.date],
    members: Sequence[Member],
    plan: ResponsePlan,
) -> dict:
    """The planted truth and what to expect of it, with what was realised, as JSON values."""
    treated = [m for m in members if m.treated]
    control = len(members) - len(treated)
    treated_rate = truth.base_rate + truth.uplift
    converted = Counter(b.treated for b in plan.bookings if b.contact_id is not None)
    revenue = Counter()
    for booking in plan.bookings:
        if booking.contact_id is not None:
            revenue[booking.treated] += booking.tickets * truth.price_cents
    sent = Counter(m.channel for m in members if m.message_key is not None)
    expected_tracking = {
        channel: {
            "sent": sent[channel],
            "opens": round(sent[channel] * rates.open, 1),
            "clicks": round(sent[channel] * rates.click, 1),
            "unsubscribes": round(sent[channel] * rates.unsubscribe, 1),
            "privacy_proxy_opens": round(sent[channel] * rates.privacy_proxy_open, 1),
        }
        for channel, rates in truth.rates.items()
    }
    realised_tracking = Counter(hit.label for hit in plan.hits)
    revenue_per_conversion = truth.price_cents * truth.mean_tickets
    return {
        "campaign_run_id": run.campaign_run_id,
        "campaign_name": run.campaign_name,
        "seed": seed,
        "base_rate": truth.base_rate,
        "uplift": truth.uplift,
        "treated_rate": round(treated_rate, 10),
        "uplift_applies_to": "every treated member (intention to treat), sent or not",
        "product_sku": truth.product_sku,
        "price_cents_per_ticket": truth.price_cents,
        "tickets_per_conversion": list(truth.tickets_per_conversion),
        "mean_tickets_per_conversion": round(truth.mean_tickets, 10),
        "response_window_days": run.response_window_days,
        "window_start": window[0].isoformat(),
        "window_end": window[1].isoformat(),
        "treated_members": len(treated),
        "control_members": control,
        "members_without_email_or_phone": sum(not m.recognisable for m in members),
        "expected_treated_conversions": round(len(treated) * treated_rate, 2),
        "expected_control_conversions": round(control * truth.base_rate, 2),
        "expected_revenue_per_treated_member_cents": round(treated_rate * revenue_per_conversion, 2),
        "expected_revenue_per_control_member_cents": round(truth.base_rate * revenue_per_conversion, 2),
        "expected_incremental_revenue_cents": round(len(treated) * truth.uplift * revenue_per_conversion, 2),
        "realised_treated_conversions": converted[True],
        "realised_control_conversions": converted[False],
        "realised_treated_revenue_cents": revenue[True],
        "realised_control_revenue_cents": revenue[False],
        "unrecognisable_conversions": plan.unrecognisable_conversions,
        "bystander_bookings": sum(b.contact_id is None for b in plan.bookings),
        "tracking_rates": {channel: asdict(rates) for channel, rates in truth.rates.items()},
        "expected_tracking": expected_tracking,
        "realised_tracking": dict(sorted(realised_tracking.items())),
    }


def simulate_responses(
    engine: Engine,
    campaign_run_id: int,
    *,
    truth: ResponseTruth,
    links: TrackingLinks,
    drop_dir: Path,
    truth_dir: Path,
    seed: int,
    click_targets: Mapping[str, Sequence[str]] | None = None,
    client: httpx.Client | None = None,
    quiet_seconds: float = 11.0,
    sleep: Callable[[float], None] = time.sleep,
) -> SimulationResult:
    """Simulate the responses to delivered campaign run ``campaign_run_id``.

    Calls the tracking URLs of its sent messages (through ``client``, default a new one),
    drops a ticketing export with the bookings into ``drop_dir``/ticketing and writes the
    truth to ``truth_dir``/<campaign_run_id>.json. Waits first until the last message was
    sent ``quiet_seconds`` ago: the tracking app takes hits sooner after a send for a mail
    server's scanner. ``click_targets``: per channel, the links a message of it carries
    (default: the campaign's templates'). Raises ConfigError when the run does not exist
    or has no audience."""
    sql = queries("simulation.sql")
    with engine.connect() as conn:
        run = conn.execute(sql["run"], {"campaign_run_id": campaign_run_id}).one_or_none()
        if run is None:
            raise ConfigError(f"campaign run {campaign_run_id} does not exist")
        members = _members(conn.execute(sql["members"], {"campaign_run_id": campaign_run_id}))
        if not members:
            raise ConfigError(f"campaign run {campaign_run_id} has no frozen audience to respond")
        bystanders = _members(
            conn.execute(
                sql["bystanders"],
                {
                    "campaign_run_id": campaign_run_id,
                    "salt": f"kms-bystanders:{seed}:",
                    "limit": truth.bystander_bookings,
                },
            )
        )
    first_day = run.first_sent_on or run.frozen_on
    # Visits from the day after the send to the last whole day of the response window.
    window = (
        first_day + dt.timedelta(days=1),
        first_day + dt.timedelta(days=max(1, run.response_window_days - 1)),
    )
    if click_targets is None:
        click_targets = campaign_click_targets(engine, campaign_run_id)
    plan = plan_responses(members, bystanders, truth, window, links, click_targets, seed)
    if run.seconds_since_last_send is not None and plan.hits:
        sleep(max(0.0, quiet_seconds - float(run.seconds_since_last_send)))
    own_client = client is None
    http = client or httpx.Client(timeout=30.0, follow_redirects=False)
    try:
        answered, failures = send_hits(plan.hits, http)
    finally:
        if own_client:
            http.close()
    drop_at = dt.datetime.combine(window[1] + dt.timedelta(days=1), dt.time(5, campaign_run_id % 60))
    bookings_path = _drop(drop_dir, TICKETING.file_name(drop_at), bookings_export(plan, campaign_run_id))
    document = truth_document(run, truth, seed, window, members, plan)
    document["bookings_file"] = f"{TICKETING.folder}/{bookings_path.name}"
    truth_dir.mkdir(parents=True, exist_ok=True)
    truth_path = truth_dir / f"{campaign_run_id}.json"
    truth_path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return SimulationResult(
        campaign_run_id=campaign_run_id,
        bookings_file=str(bookings_path),
        truth_file=str(truth_path),
        treated_members=document["treated_members"],
        control_members=document["control_members"],
        treated_conversions=document["realised_treated_conversions"],
        control_conversions=document["realised_control_conversions"],
        bystander_bookings=document["bystander_bookings"],
        tickets=sum(b.tickets for b in plan.bookings),
        requests=dict(sorted(answered.items())),
        failed_requests=failures,
    )
