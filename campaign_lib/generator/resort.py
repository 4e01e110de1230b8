"""One block of the guest base living through two years at the resort.

A block is a fixed run of persons (``BLOCK_PERSONS``) with its own random stream, seeded
from (seed, block number) only; any block can therefore be generated alone, in any
process, and yields the same records. Records come out as finished export lines, bucketed
by feed and month, so the writer only has to lay them into the monthly files.

Lines are joined by hand rather than with ``csv.writer``, which costs ten times as much
per row here; fields that can hold the delimiter go through ``quoted`` so the output is
exactly what ``csv.writer`` with ``QUOTE_MINIMAL`` would write.
"""

from __future__ import annotations

import datetime as dt
import json
from base64 import urlsafe_b64encode
from bisect import bisect
from collections.abc import Callable
from dataclasses import dataclass
from itertools import count
from random import Random

from campaign_lib.generator import people
from campaign_lib.generator import reference as ref
from campaign_lib.generator.feeds import (
    ACCOUNT,
    ADDRESS,
    CONTACT,
    FEEDS,
    PMS,
    PRODUCT,
    RESTAURANT,
    SHOP,
    TICKET,
    WEB,
)
from campaign_lib.generator.people import (
    Household,
    Person,
    render_email,
    render_name,
    render_phone,
    scrambler,
    street_line,
)
from campaign_lib.generator.timeline import clock, timeline
from campaign_lib.local_servers.webpush_keys import emulator_webpush_subscription

BLOCK_PERSONS = 1000
MAX_BLOCKS = 8000
# Running numbers per block and id kind; ids are scrambled from block * span + number,
# which must stay below 2**bits of the id's scrambler for ids to be unique.
_SPAN = 100_000
_ID_KINDS = {
    "reservation": (scrambler(29, 271_828_182), 10_000),
    "pms_profile": (scrambler(29, 161_803_398), 10_000),
    "receipt": (scrambler(33, 1_414_213_562), _SPAN),
    "shop_receipt": (scrambler(33, 2_236_067_977), _SPAN),
    "ticket": (scrambler(33, 1_732_050_807), _SPAN),
    "order": (scrambler(33, 3_162_277_660), _SPAN),
    "crm": (scrambler(33, 4_669_201_609), _SPAN),
}
_WEB_CUSTOMER = scrambler(29, 577_215_664)

# Share of bills, receipts and tickets carrying an identifier (others are anonymous).
CARD_PRESENTED = 0.8
ROOM_CHARGE = 0.35
E_RECEIPT = 0.05
SHOP_E_RECEIPT = 0.06
# Newsletter sign-ups by SMS (of persons with a mobile who browse the website) and push
# subscriptions (of registered website users), each likelier for email subscribers.
SMS_SIGNUP = 0.16
SMS_SIGNUP_WITH_EMAIL = 0.5
PUSH_SUBSCRIBER = 0.3
PUSH_SUBSCRIBER_WITH_EMAIL = 0.8
STALE_PUSH_TOKEN = 0.01
_PUSH_PLATFORMS, _PUSH_PLATFORM_CUM = ("android", "ios", "web"), (45.0, 80.0, 100.0)
# Web Push endpoints of the local push emulator, on its demo port.
WEBPUSH_BASE_URL = "http://127.0.0.1:8791"
BIRTH_PLACEHOLDER = 0.003


def quoted(text: str) -> str:
    """Return a comma-CSV field as ``csv.QUOTE_MINIMAL`` writes it: quoted only when it must be."""
    if "," in text or '"' in text:
        return '"' + text.replace('"', '""') + '"'
    return text


def german_amount(cents: int) -> str:
    """Format cents the German way with thousands dots and a decimal comma: ``1.234,50``."""
    return f"{cents // 100:,}".replace(",", ".") + f",{cents % 100:02d}"


# When bills are closed, per outlet kind: opening second of the day and seconds open.
_OPENING_HOURS = {"restaurant": (39600, 39600), "bar": (57600, 32400), "night_club": (79200, 21600)}
# Per outlet kind: ((code, name, lowest, highest bill per cover), ...), opening second, seconds open.
_OUTLETS = {
    kind: (
        tuple(
            (f"{kind[0].upper()}{i + 1:02d}", quoted(name), low, high)
            for i, (name, _, low, high) in enumerate(o for o in ref.OUTLETS if o[1] == kind)
        ),
        opens,
        span,
    )
    for kind, (opens, span) in _OPENING_HOURS.items()
}
_SHOPS = tuple(
    (f"S{i + 1:02d}", quoted(name), tuple((sku, quoted(product), price) for sku, product, price in items))
    for i, (name, items) in enumerate(ref.SHOPS)
)
# Per (attraction, ticket type): (sku, price) at the public rate and at the hotel-guest rate.
_TICKETS = {
    (attraction, ticket_type): (
        (sku, cents),
        (f"{sku}-HOTEL", cents * (100 - ref.HOTEL_GUEST_DISCOUNT_PERCENT) // 100),
    )
    for attraction, ticket_type, sku, _, cents, _ in ref.TICKETS
}
# Every ticket SKU with its attraction, ticket type and price in cents.
TICKET_SKUS = {
    sku: (attraction, ticket_type, cents)
    for (attraction, ticket_type), rates in _TICKETS.items()
    for sku, cents in rates
}
_CHANNELS_LEISURE = ("Direkt", "Telefon", "Website", "Website", "Booking.com", "Expedia", "Reisebüro")
_PAYMENTS = ("card", "card", "cash", "mobile")
_FAMILY_ROOMS = tuple(room for room in ref.ROOM_TYPES if room[2])
_DOUBLE_ROOMS = tuple(room for room in ref.ROOM_TYPES[1:] if not room[2])
_PAGE_URLS = tuple(f"https://www.resort-example.de{page}" for page in ref.WEB_PAGES)
# Amounts "0.00" to "9999.99" would cost a format per row; cents below 100,000 are looked up.
_AMOUNTS = tuple(f"{c // 100}.{c % 100:02d}" for c in range(100_000))


def amount(cents: int) -> str:
    """Format cents with a decimal point: ``1234.50``."""
    return _AMOUNTS[cents] if cents < 100_000 else f"{cents // 100}.{cents % 100:02d}"


def catalogue_lines() -> list[str]:
    """The product catalogue's lines: tickets at both rates, room categories, shop articles.

    A room category's name is the PMS's room type text, so a loader can map one to the other."""
    lines = []
    for attraction, ticket_type, _, name, _, hotel_name in ref.TICKETS:
        for (sku, cents), label in zip(_TICKETS[attraction, ticket_type], (name, hotel_name), strict=True):
            lines.append(f"{sku},{quoted(label)},{attraction},{amount(cents)},EUR\n")
    for room_type, cents, _ in ref.ROOM_TYPES:
        sku = "HOTEL-" + room_type.upper().replace(" ", "-")
        lines.append(f"{sku},{quoted(room_type)},hotel_room,{amount(cents)},EUR\n")
    for shop, products in ref.SHOPS:
        category = ref.SHOP_CATEGORIES[shop]
        lines.extend(
            f"{sku},{quoted(product)},{category},{amount(price)},EUR\n" for sku, product, price in products
        )
    return lines


@dataclass(frozen=True, slots=True)
class RunSpec:
    """What every block of one generator run shares."""

    seed: int
    guests: int
    as_of: dt.date

    @property
    def blocks(self) -> int:
        """Number of blocks the guests fill, the last one possibly partial."""
        return -(-self.guests // BLOCK_PERSONS)


@dataclass(slots=True)
class BlockRecords:
    """The records of one block: export lines per (feed, month) and ground-truth lines."""

    lines: dict[tuple[int, int], list[str]]
    ground_truth: list[str]


class _Ids:
    """Running numbers of one block: ``ids.receipt()`` returns the next scrambled receipt number."""

    def __init__(self, block: int) -> None:
        self.block = block
        self.counters: dict[str, count] = {}
        self.reservation = self._numbering("reservation")
        self.pms_profile = self._numbering("pms_profile")
        self.receipt = self._numbering("receipt")
        self.shop_receipt = self._numbering("shop_receipt")
        self.ticket = self._numbering("ticket")
        self.order = self._numbering("order")
        self.crm = self._numbering("crm")

    def _numbering(self, kind: str) -> Callable[[], int]:
        scramble, span = _ID_KINDS[kind]
        counter = self.counters[kind] = count(self.block * span)
        return lambda: scramble(next(counter))

    def check_spans(self) -> None:
        """Raise if the block used more numbers of a kind than its span, which would repeat ids."""
        for kind, counter in self.counters.items():
            if next(counter) > (self.block + 1) * _ID_KINDS[kind][1]:
                raise RuntimeError(f"a block ran out of {kind} numbers; lower BLOCK_PERSONS")


class _BlockLife:
    """Generates the records of one block; methods follow the guest journey."""

    def __init__(self, spec: RunSpec, block: int) -> None:
        self.spec = spec
        self.block = block
        self.rng = Random(f"kms-resort:{spec.seed}:{block}")
        # SMS sign-ups and push subscriptions draw from a stream of their own, so adding them
        # left every other record of a seed as it was.
        self.channel_rng = Random(f"kms-resort-channels:{spec.seed}:{block}")
        self.r = self.rng.random
        self.tl = timeline(spec.as_of)
        self.clock = clock()
        self.month_of_day = self.tl.month_of_day
        self.iso = self.tl.iso
        self.ids = _Ids(block)
        self.lines = [[[] for _ in self.tl.months] for _ in FEEDS]
        self.truth: list[str] = []

    def run(self) -> BlockRecords:
        """Create the block's households one after another and live through their two years."""
        if self.block == 0:
            self.lines[PRODUCT][0].extend(catalogue_lines())
        first = self.block * BLOCK_PERSONS
        end = min(first + BLOCK_PERSONS, self.spec.guests)
        person_index = first
        household_number = 0
        while person_index < end:
            household = people.new_household(
                self.rng,
                first + household_number,
                person_index,
                end - person_index,
                self.tl.days,
                self.spec.as_of,
            )
            household_number += 1
            person_index += len(household.persons)
            self.live(household)
        self.ids.check_spans()
        lines = {
            (feed, month): rows
            for feed, months in enumerate(self.lines)
            for month, rows in enumerate(months)
            if rows
        }
        return BlockRecords(lines, self.truth)

    def live(self, household: Household) -> None:
        """Everything one household does: browsing, stays, day visits, and its CRM record."""
        r = self.r
        adults = household.adults()
        business = household.kind == "company"
        web_registered = False
        for person in adults + [c for c in household.children() if c.email]:
            if r() < (people.ADULT_WEB_USER if person.adult else 0.3):
                web_registered |= self.browse(person)
        if business:
            for _ in range(int(r() * 4)):
                self.stay(household, [adults[int(r() * len(adults))]], business=True)
        else:
            stays = 0 if r() < 0.4 else 1 + (r() < 0.4) + (r() < 0.15)
            for _ in range(stays):
                self.stay(household, adults, business=False)
            day_visits = 0 if r() < 0.4 else 1 + int(r() * r() * 4)
            for _ in range(day_visits):
                self.day_visit(household, adults)
        known = web_registered or any(p.pms_profiles for p in adults)
        if business or r() < (0.85 if known else 0.25):
            self.crm(household)

    def pick_day(self) -> int:
        """Draw a day of the window weighted by seasonal demand."""
        cumulative = self.tl.demand_cumulative
        return bisect(cumulative, self.r() * cumulative[-1])

    def stay(self, household: Household, guests: list[Person], business: bool) -> None:
        """A hotel stay: the reservation in the PMS, then bills, purchases and tickets during it."""
        r, tl = self.r, self.tl
        if business:
            arrival = int(r() * tl.days)
            nights = 1 + int(r() * 3)
        else:
            arrival = self.pick_day()
            nights = 1 + int(r() * r() * 8)
        main = guests[int(r() * len(guests))]
        children = household.children() if not business else []
        reservation = f"{self.ids.reservation():09d}"
        departure = arrival + nights
        if len(guests) > 1 or children:
            rooms = _FAMILY_ROOMS if children else _DOUBLE_ROOMS
            room_type, rate, _ = rooms[int(r() * len(rooms))]
        else:
            room_type, rate, _ = ref.ROOM_TYPES[0]
        season = 1.25 if tl.months[tl.month_of_day[arrival]][1] in (6, 7, 8, 12) else 1.0
        cents = int(rate * season) * nights + int(r() * 40) * 500
        currency = "EUR"
        if household.country == "CH" and r() < 0.3:
            currency, cents = "CHF", int(cents * 0.95)
        channel = "Firmenkunde" if business else _CHANNELS_LEISURE[int(r() * len(_CHANNELS_LEISURE))]
        booking = (
            reservation,
            arrival,
            departure,
            room_type,
            str(len(guests)),
            str(len(children)),
            currency,
            channel,
            household.address_on(arrival),
        )
        for guest in [main] + [p for p in guests if p is not main and r() < 0.8]:
            self.pms_line(
                household, guest, guest is main, german_amount(cents) if guest is main else "0,00", booking
            )
        charge = (main, f"{1 + int(r() * 12)}{1 + int(r() * 125):03d}", reservation)
        party = len(guests) + len(children)
        for day in range(arrival, min(departure + 1, tl.days)):
            for _ in range(1 + (r() < 0.3) + (r() < 0.05)):
                self.restaurant_bill(
                    guests[int(r() * len(guests))],
                    day,
                    "restaurant",
                    party,
                    charge if r() < ROOM_CHARGE else None,
                )
            if r() < 0.2:
                self.restaurant_bill(
                    guests[int(r() * len(guests))],
                    day,
                    "bar",
                    len(guests),
                    charge if r() < ROOM_CHARGE else None,
                )
            if not children and r() < 0.12:
                self.restaurant_bill(guests[int(r() * len(guests))], day, "night_club", len(guests), None)
            if r() < 0.45:
                self.shop_receipt(guests[int(r() * len(guests))], day)
        if not business:
            visit_day = min(arrival + int(r() * (nights + 1)), tl.days - 1)
            if r() < (0.85 if children else 0.35):
                self.tickets(main, "water_park", visit_day, guests, children, in_hotel=True)
            if r() < (0.6 if children else 0.2):
                self.tickets(main, "dolphinarium", visit_day, guests, children, in_hotel=True)

    def pms_line(self, household: Household, guest: Person, is_main: bool, amount_text: str, booking) -> None:
        """One row of the reservation in the PMS export, for ``guest``."""
        r, tl = self.r, self.tl
        reservation, arrival, departure, room_type, adults, children, currency, channel, address = booking
        if not guest.pms_profiles or r() < 0.06:
            guest.pms_profiles.append(f"{self.ids.pms_profile():09d}")
        profile = guest.pms_profiles[-1]
        first, last = render_name(guest.first, guest.last, r)
        if r() < 0.02:
            last = last.upper()
        if r() < BIRTH_PLACEHOLDER:
            birth = "01.01.1900"
        else:
            birth = guest.birth_german if r() < (0.7 if is_main else 0.5) else ""
        email = render_email(guest.email, r) if guest.email and r() < (0.9 if is_main else 0.4) else ""
        phone = render_phone(guest.phone, r) if guest.phone and r() < (0.8 if is_main else 0.3) else ""
        departure_text = (
            tl.german[departure]
            if departure < tl.days
            else (tl.start + dt.timedelta(days=departure)).strftime("%d.%m.%Y")
        )
        line = (
            ";".join(
                (
                    reservation,
                    profile,
                    "H" if is_main else "M",
                    guest.salutation(),
                    guest.title,
                    first,
                    last,
                    birth,
                    email,
                    phone,
                    street_line(address, r),
                    address.postcode,
                    address.city,
                    people.COUNTRY_NAMES_DE[address.country],
                    household.company or "",
                    tl.german[arrival],
                    departure_text,
                    room_type,
                    adults,
                    children,
                    amount_text,
                    currency,
                    channel,
                )
            )
            + "\r\n"
        )
        self.lines[PMS][self.month_of_day[arrival]].append(line)
        self.truth.append(f"hotel_pms,reservation_guest,{reservation}:{profile}{guest.truth}")

    def restaurant_bill(self, payer: Person, day: int, kind: str, covers: int, charge) -> None:
        """A bill of a restaurant, bar or the night club; ``charge`` books it onto a hotel room."""
        r = self.r
        if charge is not None:
            # Only the guest the reservation is in can sign a bill onto the room.
            payer = charge[0]
        outlets, opens, open_seconds = _OUTLETS[kind]
        code, outlet, low, high = outlets[int(r() * len(outlets))]
        second = opens + int(r() * open_seconds)
        if second >= 86400:
            if day + 1 < self.tl.days:
                day, second = day + 1, second - 86400
            else:
                second = 86399
        covers = max(1, covers - int(r() * 2)) if kind == "restaurant" else 1 + int(r() * covers)
        cents = covers * (low + int(r() * (high - low)))
        receipt = f"{code}-{self.ids.receipt():010d}"
        card = payer.card if payer.card and r() < CARD_PRESENTED else ""
        email = render_email(payer.email, r) if payer.email and r() < E_RECEIPT else ""
        if charge is None:
            line = (
                f"{receipt},{outlet},{kind},{self.iso[day]}T{self.clock[second]},{card},,{email},,,"
                f"{covers},{amount(cents)},EUR,{_PAYMENTS[int(r() * 4)]}\n"
            )
        else:
            guest, room, reservation = charge
            line = (
                f"{receipt},{outlet},{kind},{self.iso[day]}T{self.clock[second]},{card},"
                f"{quoted(f'{guest.last}, {guest.first}')},{email},{room},{reservation},{covers},"
                f"{amount(cents)},EUR,room_charge\n"
            )
        self.lines[RESTAURANT][self.month_of_day[day]].append(line)
        self.truth.append(f"restaurant_pos,receipt,{receipt}{payer.truth}")

    def shop_receipt(self, buyer: Person, day: int) -> None:
        """A shop receipt with one to four lines."""
        r = self.r
        code, shop, products = _SHOPS[int(r() * len(_SHOPS))]
        receipt = f"{code}-{self.ids.shop_receipt():010d}"
        head = f"{shop},{self.iso[day]} {self.clock[32400 + int(r() * 39600)]}"
        card = buyer.card if buyer.card and r() < CARD_PRESENTED else ""
        email = render_email(buyer.email, r) if buyer.email and r() < SHOP_E_RECEIPT else ""
        lines = self.lines[SHOP][self.month_of_day[day]]
        truth = self.truth
        # Consecutive articles from a random start: distinct, and cheaper than Random.sample.
        start, size = int(r() * len(products)), min(len(products), 1 + int(r() * r() * 4))
        for line in range(1, size + 1):
            sku, product, price = products[(start + line) % len(products)]
            quantity = 1 + int(r() * r() * 3)
            lines.append(
                f"{receipt},{line},{head},{card},{sku},{product},{quantity},"
                f"{amount(price * quantity)},EUR,{email}\n"
            )
            truth.append(f"shop_pos,receipt_line,{receipt}:{line}{buyer.truth}")

    def tickets(
        self,
        buyer: Person,
        attraction: str,
        day: int,
        adults: list[Person],
        children: list[Person],
        in_hotel: bool,
    ) -> None:
        """Tickets of one order for ``adults`` and ``children``, bought by ``buyer``."""
        r = self.r
        roll = r()
        channel = "hotel" if in_hotel and roll < 0.25 else ("online" if roll < 0.65 else "counter")
        # Hotel guests pay the hotel-guest rate at the hotel desk and online with their booking.
        rate = 1 if in_hotel and channel != "counter" else 0
        order = f"O{self.ids.order():010d}"
        if channel == "online":
            first, last = render_name(buyer.first, buyer.last, r, ascii_source=True)
            email = render_email(buyer.email, r) if buyer.email else ""
            phone = render_phone(buyer.phone, r) if buyer.phone and r() < 0.3 else ""
        elif channel == "hotel":
            first, last = render_name(buyer.first, buyer.last, r, ascii_source=True)
            email = phone = ""
        else:
            first = last = email = phone = ""
        if children and len(adults) == 2 and len(children) <= 3 and r() < 0.6:
            types = ("family",)
        else:
            types = ("adult",) * len(adults) + ("child",) * len(children)
        # Every field quoted (QUOTE_ALL); the values themselves never hold a quote character.
        middle = f'","{order}","{attraction}","{self.iso[day]}","'
        tail = f'","EUR","{channel}","{email}","{first}","{last}","{phone}","'
        lines = self.lines[TICKET][self.month_of_day[day]]
        for ticket_type in types:
            ticket = f"T{self.ids.ticket():010d}"
            sku, cents = _TICKETS[attraction, ticket_type][rate]
            lines.append(f'"{ticket}{middle}{ticket_type}","{amount(cents)}{tail}{sku}"\n')
            self.truth.append(f"ticketing,ticket,{ticket}{buyer.truth}")

    def day_visit(self, household: Household, adults: list[Person]) -> None:
        """A day trip without a hotel stay: the water park or the dolphin show, a meal, maybe a shop."""
        r = self.r
        day = self.pick_day()
        payer = adults[int(r() * len(adults))]
        children = household.children()
        going = adults if r() < 0.7 else [payer]
        attraction = "water_park" if r() < 0.7 else "dolphinarium"
        self.tickets(payer, attraction, day, going, children, in_hotel=False)
        for _ in range(1 + (r() < 0.4)):
            self.restaurant_bill(payer, day, "restaurant", len(going) + len(children), None)
        if r() < 0.4:
            self.shop_receipt(payer, day)

    def stamp(self, day: int, second: int) -> str:
        """Return ISO-8601 local resort time with its Europe/Berlin offset."""
        before, switch, after = self.tl.utc_offset[day]
        return f"{self.iso[day]}T{self.clock[second]}{before if second < switch else after}"

    def event_id(self, rng: Random | None = None) -> str:
        """Return a random version-4 UUID from ``rng``, by default the block's random stream."""
        bits = f"{(rng or self.rng).getrandbits(128):032x}"
        variant = "89ab"[int(bits[16], 16) & 3]
        return f"{bits[:8]}-{bits[8:12]}-4{bits[13:16]}-{variant}{bits[17:20]}-{bits[20:]}"

    def web_event(
        self, person: Person, day: int, second: int, event: dict, rng: Random | None = None
    ) -> None:
        """Add a website event other than a page view, serialised with ``json``; ``rng`` draws its id."""
        event_id = self.event_id(rng)
        line = json.dumps(
            {
                "event_id": event_id,
                "event_type": event.pop("event_type"),
                "occurred_at": self.stamp(day, second),
                **event,
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )
        self.lines[WEB][self.month_of_day[day]].append(line + "\n")
        self.truth.append(f"website,event,{event_id}{person.truth}")

    def browse(self, person: Person) -> bool:
        """A person's visits to the website; returns whether the person registered an account."""
        r, tl = self.r, self.tl
        cookies = [f"{self.rng.getrandbits(64):016x}" for _ in range(1 + (r() < 0.5) + (r() < 0.2))]
        registered_on = int(r() * tl.days) if r() < 0.6 else None
        if registered_on is not None:
            person.web_customer = f"W{_WEB_CUSTOMER(person.index):09d}"
            first, last = render_name(person.first, person.last, r, ascii_source=True)
            self.web_event(
                person,
                registered_on,
                28800 + int(r() * 54000),
                {
                    "event_type": "registration",
                    "customer_id": person.web_customer,
                    "cookie_id": cookies[0],
                    "email": render_email(person.email, r) if person.email else "",
                    "first_name": first,
                    "last_name": last,
                    "birth_date": person.birth_iso if r() < 0.5 else None,
                    "phone": render_phone(person.phone, r) if person.phone and r() < 0.4 else None,
                    "language": person.language,
                },
            )
        self.page_views(person, cookies, registered_on)
        email_signup = bool(person.email) and r() < 0.3
        if email_signup:
            day, second = int(r() * tl.days), 28800 + int(r() * 50000)
            confirmed = second + 60 + int(r() * 7200) if r() < 0.85 else None
            self.web_event(
                person,
                day,
                second,
                {
                    "event_type": "newsletter_signup",
                    "email": render_email(person.email, r),
                    "cookie_id": cookies[0],
                    "customer_id": person.web_customer,
                    "consent": self.consent("email", day, second, confirmed, "website_form"),
                },
            )
        if registered_on is not None:
            for kind, share in (("comment", 0.06), ("rating", 0.10)):
                if r() < share:
                    day = registered_on + int(r() * (tl.days - registered_on))
                    event = {
                        "event_type": kind,
                        "customer_id": person.web_customer,
                        "cookie_id": cookies[0],
                        "subject": ref.WEB_COMMENT_SUBJECTS[int(r() * len(ref.WEB_COMMENT_SUBJECTS))],
                    }
                    if kind == "comment":
                        event["text"] = ref.WEB_COMMENTS[int(r() * len(ref.WEB_COMMENTS))]
                    else:
                        event["stars"] = 1 + min(4, int(r() * 5.6))
                    self.web_event(person, day, 25200 + int(r() * 61000), event)
        if r() < 0.05:
            topic, message = ref.SUPPORT_TOPICS[int(r() * len(ref.SUPPORT_TOPICS))]
            self.web_event(
                person,
                int(r() * tl.days),
                28800 + int(r() * 36000),
                {
                    "event_type": "support_inquiry",
                    "customer_id": person.web_customer,
                    "email": render_email(person.email, r) if person.email else "",
                    "name": f"{person.first} {person.last}",
                    "topic": topic,
                    "message": message,
                },
            )
        self.subscribe(person, cookies, registered_on, email_signup)
        return registered_on is not None

    def consent(self, channel: str, day: int, second: int, confirmed: int | None, source: str) -> dict:
        """The consent of a sign-up at ``second`` of ``day``, confirmed at second ``confirmed`` if at all."""
        return {
            "channel": channel,
            "purpose": "newsletter",
            "opt_in_at": self.stamp(day, second),
            "double_opt_in_at": None
            if confirmed is None or confirmed >= 86400
            else self.stamp(day, confirmed),
            "source": source,
        }

    def subscribe(
        self, person: Person, cookies: list[str], registered_on: int | None, email_signup: bool
    ) -> None:
        """SMS newsletter sign-ups and push subscriptions, likelier for email subscribers.

        Drawn from the block's channel stream. A push subscription is made while logged in
        (app or website), so it carries the customer id that links it to the person."""
        q, days = self.channel_rng.random, self.tl.days
        if person.phone and q() < (SMS_SIGNUP_WITH_EMAIL if email_signup else SMS_SIGNUP):
            day, second = int(q() * days), 28800 + int(q() * 50000)
            confirmed = second + 30 + int(q() * 3600) if q() < 0.85 else None
            self.web_event(
                person,
                day,
                second,
                {
                    "event_type": "newsletter_signup",
                    "email": None,
                    "phone": render_phone(person.phone, q),
                    "cookie_id": cookies[0],
                    "customer_id": person.web_customer,
                    "consent": self.consent("sms", day, second, confirmed, "website_form"),
                },
                self.channel_rng,
            )
        if registered_on is None or q() >= (PUSH_SUBSCRIBER_WITH_EMAIL if email_signup else PUSH_SUBSCRIBER):
            return
        day, second = registered_on + int(q() * (days - registered_on)), 25200 + int(q() * 61000)
        platform = people.pick(q, _PUSH_PLATFORMS, _PUSH_PLATFORM_CUM)
        self.web_event(
            person,
            day,
            second,
            {
                "event_type": "push_subscription",
                "customer_id": person.web_customer,
                "cookie_id": cookies[int(q() * len(cookies))],
                "platform": platform,
                "push_token": self.push_token(platform),
                "consent": self.consent(
                    "push", day, second, None, "website_push_prompt" if platform == "web" else "app"
                ),
            },
            self.channel_rng,
        )

    def push_token(self, platform: str) -> str | dict:
        """An FCM registration token (app), or a Web Push subscription of the local emulator (web).

        A few app tokens are stale: the provider emulator reports tokens starting with
        ``stale-`` as unregistered, which shows their retirement."""
        bits = self.channel_rng.getrandbits
        if platform == "web":
            subscription_id = urlsafe_b64encode(bits(128).to_bytes(16, "big")).rstrip(b"=").decode("ascii")
            return emulator_webpush_subscription(WEBPUSH_BASE_URL, subscription_id)
        instance = urlsafe_b64encode(bits(128).to_bytes(16, "big")).decode("ascii")[:22]
        registration = urlsafe_b64encode(bits(808).to_bytes(101, "big")).decode("ascii")[:134]
        token = f"{instance}:APA91b{registration}"
        return f"stale-{token}" if self.channel_rng.random() < STALE_PUSH_TOKEN else token

    def page_views(self, person: Person, cookies: list[str], registered_on: int | None) -> None:
        """Browsing sessions: anonymous page views under a cookie, some opened by a login."""
        r, days = self.r, self.tl.days
        urls, referrers = _PAGE_URLS, ref.WEB_REFERRERS
        month_of_day, web_lines, truth = self.month_of_day, self.lines[WEB], self.truth
        for _ in range(1 + int(r() * r() * 8)):
            day = int(r() * days)
            second = 25200 + int(r() * 61000)
            cookie = cookies[int(r() * len(cookies))]
            if registered_on is not None and day >= registered_on and r() < 0.4:
                self.web_event(
                    person,
                    day,
                    second,
                    {
                        "event_type": "login",
                        "customer_id": person.web_customer,
                        "cookie_id": cookie,
                        "method": "password" if r() < 0.85 else "google",
                    },
                )
            head = (
                f'","event_type":"page_view","occurred_at":"{self.stamp(day, second)}","cookie_id":"{cookie}'
            )
            lines = web_lines[month_of_day[day]]
            for _ in range(1 + int(r() * 4)):
                event_id = self.event_id()
                lines.append(
                    f'{{"event_id":"{event_id}{head}","url":"{urls[int(r() * len(urls))]}",'
                    f'"referrer":"{referrers[int(r() * len(referrers))]}"}}\n'
                )
                truth.append(f"website,event,{event_id}{person.truth}")

    def crm(self, household: Household) -> None:
        """The household's master data in the CRM: account, addresses, contacts, a few duplicates."""
        r, tl, ids = self.r, self.tl, self.ids
        account = f"ACC-{ids.crm():010d}"
        adults = household.adults()
        head = adults[0]
        if household.kind == "company":
            name, account_type = household.company, "company"
            vat = f"DE{100000000 + int(r() * 899999999)}" if household.country == "DE" else ""
        else:
            account_type, vat = "household", ""
            if household.kind == "family":
                name = f"Familie {head.last}"
            elif household.kind == "couple" and adults[1].last != head.last:
                name = f"{head.last} / {adults[1].last}"
            else:
                name = f"{head.last}, {head.first}"
        created = tl.start + dt.timedelta(days=int(r() * tl.days) - int(r() * 1500))
        self.lines[ACCOUNT][0].append(
            f"{account},{account_type},{quoted(name)},{vat},{created.isoformat()}\r\n"
        )
        self.truth.append(f"crm,account,{account},,{household.household_id}\n")
        for address in household.addresses:
            address_id = f"ADR-{ids.crm():010d}"
            valid_from = dt.date.fromordinal(address.valid_from).isoformat()
            self.lines[ADDRESS][0].append(
                ",".join(
                    (
                        address_id,
                        account,
                        quoted(address.street),
                        quoted(address.house_number),
                        address.postcode,
                        quoted(address.city),
                        address.country,
                        valid_from,
                    )
                )
                + "\r\n"
            )
            self.truth.append(f"crm,address,{address_id},,{household.household_id}\n")
        for person in household.persons:
            if not person.adult and r() < 0.6:
                continue
            # About 2 % of persons were keyed in twice: the duplicate identity resolution must merge.
            for copy in range(2 if r() < 0.02 else 1):
                contact = f"CON-{ids.crm():010d}"
                first, last = render_name(person.first, person.last, r)
                self.lines[CONTACT][0].append(
                    ",".join(
                        (
                            contact,
                            account,
                            person.salutation(),
                            person.title,
                            quoted(first),
                            quoted(last),
                            person.birth_iso if r() < 0.8 else "",
                            quoted(render_email(person.email, r)) if person.email else "",
                            render_phone(person.phone, r) if person.phone else "",
                            person.language,
                            person.card or "",
                            person.web_customer or "" if r() < 0.7 else "",
                            (created + dt.timedelta(days=int(r() * 400) * copy)).isoformat(),
                        )
                    )
                    + "\r\n"
                )
                self.truth.append(f"crm,contact,{contact}{person.truth}")


def generate_block(spec: RunSpec, block: int) -> BlockRecords:
    """Return every record of block ``block``: export lines per (feed, month) and their ground truth."""
    return _BlockLife(spec, block).run()
