"""Identity resolution on hand-built source records in the real test database."""

from __future__ import annotations

import datetime as dt
import gc
import gzip
import itertools
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from campaign_lib.identity import IdentitySettings, evaluate, reset_resolution, resolve
from campaign_lib.identity.cli import evaluate_command, resolve_command
from campaign_lib.identity.linking import ScopeRecords, address_key, link, name_key
from campaign_lib.ingest.record import RECORD_COLUMNS
from campaign_lib.sqlfiles import queries

BERLIN = dt.timezone(dt.timedelta(hours=2))
_files = itertools.count(1)


def at(year: int, month: int, day: int = 1) -> dt.datetime:
    return dt.datetime(year, month, day, 12, 0, tzinfo=BERLIN)


def rec(source_system: str, key: str, **fields) -> dict:
    """A source record: the natural key plus the standardised fields given."""
    fields.setdefault("record_kind", "event")
    if "attributes" in fields:
        fields["attributes"] = json.dumps(fields["attributes"])
    return {"source_system": source_system, "source_key": key, **fields}


def web_registration(key: str, month: int = 1, **person) -> dict:
    """A website registration in `month` of 2026."""
    return rec("website", key, activity_type="web_registration", occurred_at=at(2026, month), **person)


def ticket(key: str, attraction_ticket: str, month: int, **person) -> dict:
    """A water park or dolphinarium ticket in `month` of 2026."""
    return rec(
        "ticketing",
        key,
        record_kind="ticket",
        activity_type=attraction_ticket,
        occurred_at=at(2026, month),
        **person,
    )


def add(engine: Engine, *records: dict) -> None:
    """Load `records` as one ingest file, unresolved, the way ingestion leaves them."""
    number = next(_files)
    with engine.begin() as conn:
        file_id = conn.execute(
            text(
                "insert into ingest.file (feed, channel, name, size_bytes, content_sha256) "
                "values ('test', 'local', :name, 0, :sha) returning ingest_file_id"
            ),
            {"name": f"batch_{number}.csv", "sha": f"{number:064x}"},
        ).scalar_one()
        for line, record in enumerate(records, start=1):
            assert set(record) - {"record_kind", "source_key"} <= set(RECORD_COLUMNS)
            values = {
                "ingest_file_id": file_id,
                "line_number": line,
                "feed": record["source_system"],
                **record,
            }
            columns = ", ".join(values)
            params = ", ".join(f":{name}" for name in values)
            record_id = conn.execute(
                text(
                    f"insert into ingest.record ({columns}) values ({params}) "
                    "on conflict (source_system, source_key) do update set changed_at = now() "
                    "returning record_id"
                ),
                values,
            ).scalar_one()
            conn.execute(
                text("insert into ingest.record_pending (record_id) values (:r) on conflict do nothing"),
                {"r": record_id},
            )


def scalar(engine: Engine, sql: str, **params):
    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar()


def contact_of(engine: Engine, source_system: str, key: str) -> int | None:
    return scalar(
        engine,
        "select c.contact_id from ingest.record as r join ingest.record_contact as c using (record_id) "
        "where r.source_system = :s and r.source_key = :k",
        s=source_system,
        k=key,
    )


def live_contacts(engine: Engine) -> int:
    return scalar(engine, "select count(*) from core.contact where status <> 'merged'")


ANNA = {"first_name": "Anna", "last_name": "Muster"}


# Each case: records that one deterministic rule must join into one person.
LINK_CASES = {
    "email": [
        web_registration("reg-1", email="anna@example.org", **ANNA),
        ticket("T1", "water_park_ticket", month=2, email="anna@example.org", **ANNA),
    ],
    "phone": [
        ticket("T1", "water_park_ticket", month=2, phone_e164="+491701234567", **ANNA),
        rec(
            "crm", "CON-1", record_kind="contact", crm_contact_id="CON-1", phone_e164="+491701234567", **ANNA
        ),
    ],
    "loyalty card": [
        rec(
            "restaurant_pos",
            "R1",
            record_kind="receipt",
            loyalty_card="RC0000000001",
            activity_type="restaurant_bill",
            occurred_at=at(2026, 3),
            amount_cents=4200,
            currency="EUR",
        ),
        rec(
            "crm", "CON-1", record_kind="contact", crm_contact_id="CON-1", loyalty_card="RC0000000001", **ANNA
        ),
    ],
    "booking reference to the PMS main guest": [
        rec(
            "hotel_pms",
            "440012055:111",
            record_kind="reservation_guest",
            booking_ref="440012055",
            source_customer_id="hotel_pms:111",
            **ANNA,
            activity_type="hotel_stay",
            occurred_at=at(2026, 7),
            amount_cents=83800,
            currency="EUR",
            attributes={"guest_role": "main"},
        ),
        rec(
            "hotel_pms",
            "440012055:222",
            record_kind="reservation_guest",
            booking_ref="440012055",
            source_customer_id="hotel_pms:222",
            first_name="Max",
            last_name="Muster",
            activity_type="hotel_stay",
            occurred_at=at(2026, 7),
            attributes={"guest_role": "accompanying"},
        ),
        rec(
            "restaurant_pos",
            "R1",
            record_kind="receipt",
            booking_ref="440012055",
            **ANNA,
            activity_type="restaurant_bill",
            occurred_at=at(2026, 7, 2),
            amount_cents=7576,
            currency="EUR",
        ),
    ],
    "CRM contact id": [
        rec("crm", "CON-1", record_kind="contact", crm_contact_id="CON-1", **ANNA),
        rec("kms", "call-1", crm_contact_id="CON-1", activity_type="call", occurred_at=at(2026, 4)),
    ],
    "source customer id": [
        web_registration("reg-1", source_customer_id="website:W000000001", email="anna@example.org", **ANNA),
        rec(
            "website",
            "rating-1",
            source_customer_id="website:W000000001",
            activity_type="rating",
            occurred_at=at(2026, 5),
        ),
    ],
    "order reference": [
        ticket("T1", "water_park_ticket", month=2, order_ref="O1", email="anna@example.org", **ANNA),
        ticket("T2", "water_park_ticket", month=2, order_ref="O1"),
    ],
    "cookie joined at login": [
        rec(
            "website",
            "login-1",
            source_customer_id="website:W000000001",
            cookie_id="d2082bff1e6885c9",
            activity_type="web_login",
            occurred_at=at(2026, 1),
        ),
        rec(
            "website",
            "view-1",
            cookie_id="d2082bff1e6885c9",
            activity_type="web_page_view",
            occurred_at=at(2026, 1),
        ),
    ],
}


@pytest.mark.parametrize("records", LINK_CASES.values(), ids=LINK_CASES.keys())
def test_a_deterministic_rule_links_one_person(clean_db: Engine, records: list[dict]) -> None:
    add(clean_db, *records)
    summary = resolve(clean_db)

    main = [r for r in records if r.get("first_name") != "Max"]
    contacts = {contact_of(clean_db, r["source_system"], r["source_key"]) for r in main}
    assert len(contacts) == 1 and None not in contacts
    assert summary.records_resolved == len(records)
    assert scalar(clean_db, "select count(*) from ingest.record_pending") == 0
    with_activity = sum(1 for r in records if r.get("activity_type"))
    assert scalar(clean_db, "select count(*) from core.activity") == with_activity


def test_identifiers_with_copy_escapes_are_read_back_exactly(clean_db: Engine) -> None:
    """Identifier values with a backslash, a tab, line breaks and control characters come
    back from resolution's COPY out as they were: the two equal cards link, the one that
    differs only after its backslash does not."""
    card = "C\\1\x1f\t2\n3\r\\"
    add(
        clean_db,
        rec(
            "restaurant_pos",
            "E1",
            loyalty_card=card,
            activity_type="restaurant_bill",
            occurred_at=at(2026, 3),
        ),
        rec("shop_pos", "E2", loyalty_card=card, activity_type="shop_purchase", occurred_at=at(2026, 3)),
        rec("shop_pos", "E3", loyalty_card="C\\1", activity_type="shop_purchase", occurred_at=at(2026, 3)),
    )
    resolve(clean_db)
    first, second, third = (
        contact_of(clean_db, s, k)
        for s, k in (("restaurant_pos", "E1"), ("shop_pos", "E2"), ("shop_pos", "E3"))
    )
    assert first == second is not None
    assert third not in (None, first)
    stored = scalar(
        clean_db,
        "select value from core.identifier where kind = 'loyalty_card' and value like 'C%' order by length(value) desc limit 1",
    )
    assert stored == card


def test_records_with_only_a_strong_identifier_are_linked_as_groups_and_each_counted(
    clean_db: Engine,
) -> None:
    """Receipts with nothing but a loyalty card, page views with nothing but a cookie and
    tickets with nothing but an order reference are read once per group (scope_groups):
    each record still gets its person, its activity and its place in the counts."""
    receipts = [
        rec(
            "restaurant_pos",
            f"G{n}",
            loyalty_card="LC-7",
            activity_type="restaurant_bill",
            occurred_at=at(2026, 1 + n % 12),
        )
        for n in range(40)
    ]
    views = [
        rec("website", f"V{n}", cookie_id="c00kie", activity_type="web_page_view", occurred_at=at(2026, 2))
        for n in range(25)
    ]
    orphans = [
        rec("ticketing", f"T{n}", order_ref="O-9", activity_type="water_park_ticket", occurred_at=at(2026, 3))
        for n in range(5)
    ]
    card_holder = rec(
        "crm", "CON-7", record_kind="contact", crm_contact_id="CON-7", loyalty_card="LC-7", **ANNA
    )
    login = rec(
        "website",
        "L1",
        source_customer_id="website:W7",
        cookie_id="c00kie",
        loyalty_card="LC-7",
        activity_type="web_login",
        occurred_at=at(2026, 2),
    )
    add(clean_db, *receipts, *views, *orphans, card_holder, login)
    summary = resolve(clean_db)

    contacts = {
        contact_of(clean_db, r["source_system"], r["source_key"])
        for r in [*receipts, *views, card_holder, login]
    }
    assert len(contacts) == 1 and None not in contacts
    assert {contact_of(clean_db, "ticketing", r["source_key"]) for r in orphans} == {None}
    assert summary.records_resolved == 72
    assert summary.records_without_contact == 5
    assert scalar(clean_db, "select count(*) from core.activity") == 40 + 25 + 1
    assert scalar(clean_db, "select count(*) from ingest.record_contact") == 67


def test_the_pms_companion_is_not_the_main_guest(clean_db: Engine) -> None:
    add(clean_db, *LINK_CASES["booking reference to the PMS main guest"])
    resolve(clean_db)

    anna, max_ = (
        contact_of(clean_db, "hotel_pms", "440012055:111"),
        contact_of(clean_db, "hotel_pms", "440012055:222"),
    )
    assert anna != max_
    assert contact_of(clean_db, "restaurant_pos", "R1") == anna
    assert (
        scalar(
            clean_db,
            "select value from core.identifier where kind = 'booking_ref' and contact_id = :c",
            c=anna,
        )
        == "440012055"
    )
    # Same reservation, same (here: no) address is not enough for a household; the last name
    # and address rule needs an address. They stay two accounts.
    assert scalar(clean_db, "select count(distinct account_id) from core.contact") == 2


SHARED = {"street": "Ringstraße 4", "postal_code": "85056", "city": "Ingolstadt", "country_code": "DE"}


def test_a_shared_family_mailbox_keeps_two_people_and_makes_one_household(clean_db: Engine) -> None:
    add(
        clean_db,
        rec(
            "hotel_pms",
            "1:101",
            record_kind="reservation_guest",
            source_customer_id="hotel_pms:101",
            first_name="Peter",
            last_name="Ziegler",
            birth_date=dt.date(1979, 6, 21),
            email="familie.ziegler@web.de",
            **SHARED,
        ),
        rec(
            "hotel_pms",
            "2:102",
            record_kind="reservation_guest",
            source_customer_id="hotel_pms:102",
            first_name="Marie",
            last_name="Ziegler",
            birth_date=dt.date(1981, 1, 16),
            email="familie.ziegler@web.de",
            **SHARED,
        ),
        ticket(
            "T1",
            "water_park_ticket",
            month=2,
            first_name="Marie",
            last_name="Ziegler",
            email="familie.ziegler@web.de",
        ),
        rec(
            "shop_pos",
            "S1:1",
            record_kind="receipt_line",
            email="familie.ziegler@web.de",
            activity_type="shop_purchase",
            occurred_at=at(2026, 2),
            amount_cents=350,
            currency="EUR",
        ),
    )
    summary = resolve(clean_db)

    peter, marie = contact_of(clean_db, "hotel_pms", "1:101"), contact_of(clean_db, "hotel_pms", "2:102")
    assert peter != marie
    assert contact_of(clean_db, "ticketing", "T1") == marie
    # The nameless e-receipt could be either's: it stays a contact of its own, in the household.
    assert contact_of(clean_db, "shop_pos", "S1:1") not in {peter, marie, None}
    assert summary.guarded_links_refused == 1
    assert scalar(clean_db, "select count(distinct account_id) from core.contact") == 1
    assert scalar(clean_db, "select count(*) from core.identifier where kind = 'email'") == 1


FUZZY_CASES = {
    "typo in the last name": (("Anna", "Schmidt"), ("Anna", "Schmdit"), dt.date(1980, 5, 1), True),
    "first and last name transposed": (("Anna", "Schmidt"), ("Schmidt", "Anna"), dt.date(1980, 5, 1), True),
    "umlaut transliterated": (("Jürgen", "Müller"), ("Juergen", "Mueller"), dt.date(1980, 5, 1), True),
    "similar name, other birth date": (("Anna", "Schmidt"), ("Anna", "Schmidt"), dt.date(1981, 5, 1), False),
    "sibling with the same birth date": (
        ("Anna", "Mueller"),
        ("Lena", "Mueller"),
        dt.date(1980, 5, 1),
        False,
    ),
}


@pytest.mark.parametrize(
    ("first", "second", "other_birth_date", "same"), FUZZY_CASES.values(), ids=FUZZY_CASES.keys()
)
def test_fuzzy_matching_needs_a_similar_name_and_the_same_birth_date_and_postcode(
    clean_db: Engine, first: tuple[str, str], second: tuple[str, str], other_birth_date: dt.date, same: bool
) -> None:
    add(
        clean_db,
        rec(
            "hotel_pms",
            "1:101",
            record_kind="reservation_guest",
            source_customer_id="hotel_pms:101",
            first_name=first[0],
            last_name=first[1],
            birth_date=dt.date(1980, 5, 1),
            **SHARED,
        ),
        rec(
            "hotel_pms",
            "2:102",
            record_kind="reservation_guest",
            source_customer_id="hotel_pms:102",
            first_name=second[0],
            last_name=second[1],
            birth_date=other_birth_date,
            **SHARED,
        ),
    )
    resolve(clean_db)

    assert (contact_of(clean_db, "hotel_pms", "1:101") == contact_of(clean_db, "hotel_pms", "2:102")) is same


def test_fuzzy_matching_can_be_switched_off(clean_db: Engine) -> None:
    add(
        clean_db,
        rec(
            "hotel_pms",
            "1:101",
            record_kind="reservation_guest",
            source_customer_id="hotel_pms:101",
            first_name="Anna",
            last_name="Schmidt",
            birth_date=dt.date(1980, 5, 1),
            **SHARED,
        ),
        rec(
            "hotel_pms",
            "2:102",
            record_kind="reservation_guest",
            source_customer_id="hotel_pms:102",
            first_name="Anna",
            last_name="Schmdit",
            birth_date=dt.date(1980, 5, 1),
            **SHARED,
        ),
    )
    resolve(clean_db, settings=IdentitySettings(fuzzy_enabled=False))

    assert live_contacts(clean_db) == 2


def test_a_second_batch_re_resolves_only_the_person_it_touches(clean_db: Engine) -> None:
    add(
        clean_db,
        web_registration("reg-a", email="anna@example.org", **ANNA),
        ticket("T1", "water_park_ticket", month=2, email="anna@example.org", **ANNA),
        web_registration("reg-b", email="bernd@example.org", first_name="Bernd", last_name="Beispiel"),
    )
    resolve(clean_db)
    bernd_before = scalar(clean_db, "select updated_at from core.contact where email = 'bernd@example.org'")

    add(
        clean_db,
        ticket("T2", "dolphinarium_ticket", month=3, email="anna@example.org", **ANNA),
    )
    summary = resolve(clean_db)

    assert (summary.batch_records, summary.scope_records, summary.contacts_touched) == (1, 3, 1)
    assert (summary.contacts_created, summary.activities_written) == (0, 1)
    assert contact_of(clean_db, "ticketing", "T2") == contact_of(clean_db, "website", "reg-a")
    assert (
        scalar(clean_db, "select updated_at from core.contact where email = 'bernd@example.org'")
        == bernd_before
    )


def anna_in_the_crm() -> dict:
    """The CRM contact that names both Anna's email and her loyalty card: it joins the two."""
    return rec(
        "crm",
        "CON-1",
        record_kind="contact",
        crm_contact_id="CON-1",
        email="anna@example.org",
        loyalty_card="RC0000000001",
        **ANNA,
    )


def test_a_late_record_merges_two_contacts_and_no_activity_is_lost(clean_db: Engine) -> None:
    add(
        clean_db,
        ticket(
            "T1",
            "water_park_ticket",
            month=2,
            email="anna@example.org",
            **ANNA,
            amount_cents=3900,
            currency="EUR",
        ),
        rec(
            "restaurant_pos",
            "R1",
            record_kind="receipt",
            loyalty_card="RC0000000001",
            activity_type="restaurant_bill",
            occurred_at=at(2026, 3),
            amount_cents=4200,
            currency="EUR",
        ),
        rec(
            "restaurant_pos",
            "R2",
            record_kind="receipt",
            loyalty_card="RC0000000001",
            activity_type="bar_bill",
            occurred_at=at(2026, 3),
            amount_cents=1200,
            currency="EUR",
        ),
    )
    resolve(clean_db)
    ticket_contact, card_contact = (
        contact_of(clean_db, "ticketing", "T1"),
        contact_of(clean_db, "restaurant_pos", "R1"),
    )
    assert ticket_contact != card_contact
    activities_before = scalar(clean_db, "select count(*) from core.activity")

    add(clean_db, anna_in_the_crm())
    summary = resolve(clean_db)

    survivor = min(ticket_contact, card_contact)
    loser = max(ticket_contact, card_contact)
    assert summary.contacts_merged == 1
    assert scalar(clean_db, "select count(*) from core.activity") == activities_before == 3
    assert scalar(clean_db, "select count(distinct contact_id) from core.activity") == 1
    assert scalar(clean_db, "select contact_id from core.activity where source_ref = 'R2'") == survivor
    assert scalar(clean_db, "select count(*) from core.identifier where contact_id <> :c", c=survivor) == 0
    assert (
        scalar(
            clean_db,
            "select status::text || ':' || merged_into_contact_id from core.contact where contact_id = :c",
            c=loser,
        )
        == f"merged:{survivor}"
    )
    assert scalar(clean_db, "select count(*) from ingest.record_contact where contact_id = :c", c=loser) == 0


def test_suppressions_and_contact_history_follow_the_survivor_of_a_merge(clean_db: Engine) -> None:
    add(
        clean_db,
        ticket("T1", "water_park_ticket", month=2, email="anna@example.org", **ANNA),
        rec(
            "restaurant_pos",
            "R1",
            record_kind="receipt",
            loyalty_card="RC0000000001",
            activity_type="restaurant_bill",
            occurred_at=at(2026, 3),
        ),
    )
    resolve(clean_db)
    first, second = contact_of(clean_db, "ticketing", "T1"), contact_of(clean_db, "restaurant_pos", "R1")
    with clean_db.begin() as conn:
        conn.execute(
            text(
                "insert into campaign.campaign (campaign_name, origin, definition_version, definition) "
                "values ('spring', 'file', '0123456789abcdef', '{}')"
            )
        )
        conn.execute(
            text(
                "insert into campaign.campaign_run (campaign_name, dag_id, run_id, definition_version, "
                "selection_name, selection_version, as_of) "
                "values ('spring', 'd', 'r', '0123456789abcdef', 's', 'v', now())"
            )
        )
        conn.execute(
            text(
                "insert into campaign.suppression (contact_id, channel, reason, source) "
                "values (:c, 'email', 'unsubscribe', 'test')"
            ),
            {"c": max(first, second)},
        )
        # Both were sent the same run's email before anyone knew they are one person.
        for contact in (first, second):
            conn.execute(
                text(
                    "insert into campaign.contact_history (contact_id, channel, campaign_name, campaign_run_id, sent_at) "
                    "values (:c, 'email', 'spring', 1, now())"
                ),
                {"c": contact},
            )
    add(clean_db, anna_in_the_crm())
    resolve(clean_db)

    survivor = min(first, second)
    assert scalar(clean_db, "select contact_id from campaign.suppression") == survivor
    assert (
        scalar(clean_db, "select count(*) || ':' || min(contact_id) from campaign.contact_history")
        == f"1:{survivor}"
    )


def test_an_anonymous_cookie_s_page_views_move_to_the_person_on_login(clean_db: Engine) -> None:
    add(
        clean_db,
        web_registration(
            "reg-1",
            source_customer_id="website:W000000001",
            cookie_id="aaaaaaaaaaaaaaaa",
            email="anna@example.org",
            **ANNA,
        ),
        rec(
            "website",
            "view-1",
            cookie_id="bbbbbbbbbbbbbbbb",
            activity_type="web_page_view",
            occurred_at=at(2026, 2),
        ),
        rec(
            "website",
            "view-2",
            cookie_id="bbbbbbbbbbbbbbbb",
            activity_type="web_page_view",
            occurred_at=at(2026, 2),
        ),
    )
    first = resolve(clean_db)
    person = contact_of(clean_db, "website", "reg-1")
    visitor = contact_of(clean_db, "website", "view-1")
    assert first.anonymous_contacts == 1
    assert (
        scalar(clean_db, "select status::text from core.contact where contact_id = :c", c=visitor)
        == "anonymous"
    )

    add(
        clean_db,
        rec(
            "website",
            "login-1",
            source_customer_id="website:W000000001",
            cookie_id="bbbbbbbbbbbbbbbb",
            activity_type="web_login",
            occurred_at=at(2026, 3),
        ),
    )
    resolve(clean_db)

    assert scalar(clean_db, "select count(*) from core.activity where contact_id = :c", c=person) == 4
    assert (
        scalar(clean_db, "select merged_into_contact_id from core.contact where contact_id = :c", c=visitor)
        == person
    )
    assert (
        scalar(clean_db, "select status::text from core.contact where contact_id = :c", c=person) == "active"
    )
    assert scalar(clean_db, "select count(*) from core.account where merged_into_account_id is null") == 1


def test_survivorship_takes_the_most_trusted_then_the_most_recent_value(clean_db: Engine) -> None:
    add(
        clean_db,
        web_registration(
            "reg-1",
            month=5,
            email="anna@example.org",
            phone_e164="+491701111111",
            language="en",
            first_name="Anne",
            last_name="Muster",
        ),
        rec(
            "hotel_pms",
            "1:101",
            record_kind="reservation_guest",
            source_customer_id="hotel_pms:101",
            email="anna@example.org",
            phone_e164="+491702222222",
            **ANNA,
            activity_type="hotel_stay",
            occurred_at=at(2025, 1),
        ),
        rec(
            "hotel_pms",
            "2:101",
            record_kind="reservation_guest",
            source_customer_id="hotel_pms:101",
            email="anna@example.org",
            phone_e164="+491703333333",
            **ANNA,
            activity_type="hotel_stay",
            occurred_at=at(2026, 1),
        ),
    )
    resolve(clean_db)

    row = scalar(
        clean_db,
        "select first_name || ' ' || last_name || ' ' || phone_e164 || ' ' || preferred_language from core.contact",
    )
    assert row == "Anna Muster +491703333333 en"


def test_a_moved_household_keeps_its_old_address_with_valid_to(clean_db: Engine) -> None:
    crm = {"record_kind": "address", "crm_account_id": "ACC-1", "city": "Berlin", "country_code": "DE"}
    add(
        clean_db,
        rec(
            "crm",
            "ACC-1",
            record_kind="account",
            crm_account_id="ACC-1",
            account_type="household",
            company_name="Familie Muster",
        ),
        rec(
            "crm",
            "ADR-1",
            street="Rosenweg 7a",
            postal_code="10784",
            address_valid_from=dt.date(2015, 4, 21),
            **crm,
        ),
        rec(
            "crm",
            "ADR-2",
            street="Lindenstraße 21",
            postal_code="10115",
            address_valid_from=dt.date(2026, 1, 25),
            **crm,
        ),
        rec("crm", "CON-1", record_kind="contact", crm_contact_id="CON-1", crm_account_id="ACC-1", **ANNA),
        rec(
            "crm",
            "CON-2",
            record_kind="contact",
            crm_contact_id="CON-2",
            crm_account_id="ACC-1",
            first_name="Max",
            last_name="Muster",
        ),
    )
    resolve(clean_db)

    with clean_db.connect() as conn:
        locations = conn.execute(
            text("select street, valid_from, valid_to from core.location order by valid_from")
        ).all()
        accounts = conn.execute(text("select name, account_type::text from core.account")).all()
        current = (
            conn.execute(
                text(
                    "select distinct l.street from core.contact as c join core.location as l using (location_id)"
                )
            )
            .scalars()
            .all()
        )
    assert [tuple(row) for row in locations] == [
        ("Rosenweg 7a", dt.date(2015, 4, 21), dt.date(2026, 1, 25)),
        ("Lindenstraße 21", dt.date(2026, 1, 25), None),
    ]
    assert [tuple(row) for row in accounts] == [("Familie Muster", "household")]
    assert current == ["Lindenstraße 21"]
    assert live_contacts(clean_db) == 2


def test_a_record_without_any_identifier_is_resolved_to_nobody(clean_db: Engine) -> None:
    add(
        clean_db,
        rec(
            "restaurant_pos",
            "R1",
            record_kind="receipt",
            activity_type="restaurant_bill",
            occurred_at=at(2026, 3),
            amount_cents=4200,
            currency="EUR",
        ),
    )
    summary = resolve(clean_db)

    assert summary.records_without_contact == 1
    assert scalar(clean_db, "select count(*) from ingest.record_pending") == 0
    assert scalar(clean_db, "select count(*) from ingest.record_contact") == 0
    assert scalar(clean_db, "select count(*) from core.activity") == 0


def test_consents_and_inquiries_follow_their_person(clean_db: Engine) -> None:
    add(
        clean_db,
        rec(
            "website",
            "nl-1",
            email="anna@example.org",
            cookie_id="aaaaaaaaaaaaaaaa",
            activity_type="newsletter_signup",
            occurred_at=at(2026, 1),
            consent_channel="email",
            consent_purpose="newsletter",
            consent_status="opt_in",
            double_opt_in_at=at(2026, 1, 2),
        ),
        rec(
            "website",
            "inq-1",
            email="anna@example.org",
            **ANNA,
            inquiry_topic="booking",
            inquiry_body="Is the sauna open?",
            occurred_at=at(2026, 2),
        ),
    )
    resolve(clean_db)

    person = contact_of(clean_db, "website", "inq-1")
    assert scalar(clean_db, "select contact_id from core.consent where source_ref = 'nl-1'") == person
    assert (
        scalar(clean_db, "select status::text from core.current_consent where channel = 'email'") == "opt_in"
    )
    assert scalar(clean_db, "select topic from core.inquiry where contact_id = :c", c=person) == "booking"


def test_linking_runs_without_the_cyclic_collector_and_gives_it_back_even_on_failure(
    clean_db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Linking's millions of objects hold no reference cycle; the collector is off while
    they are built and on again afterwards, also when linking fails."""
    seen: list[bool] = []
    # The package exports the function `resolve` under its module's name.
    resolve_module = sys.modules["campaign_lib.identity.resolve"]
    real_link = resolve_module.link

    def watched_link(*args, **kwargs):
        seen.append(gc.isenabled())
        if len(seen) == 2:
            raise RuntimeError("linking failed")
        return real_link(*args, **kwargs)

    monkeypatch.setattr(resolve_module, "link", watched_link)
    records = LINK_CASES["booking reference to the PMS main guest"]
    add(clean_db, *records)
    resolve(clean_db)
    assert gc.isenabled()
    add(clean_db, {**records[0], "source_key": "late-1"})
    with pytest.raises(RuntimeError, match="linking failed"):
        resolve(clean_db)

    assert seen == [False, False]
    assert gc.isenabled()
    assert scalar(clean_db, "select count(*) from ingest.record_pending") == 1


def test_resolving_again_with_nothing_new_changes_nothing(clean_db: Engine) -> None:
    for records in LINK_CASES.values():
        add(clean_db, *records)
    resolve(clean_db)
    state = """
        select md5(string_agg(t, ',' order by t)) from (
            select c::text as t from core.contact as c
            union all select a::text from core.account as a
            union all select l::text from core.location as l
            union all select i::text from core.identifier as i
            union all select a::text from core.activity as a
            union all select c::text from ingest.record_contact as c
            union all select p::text from ingest.record_pending as p
        ) as everything
    """
    before = scalar(clean_db, state)

    summary = resolve(clean_db)

    assert summary.batch_records == 0
    assert scalar(clean_db, state) == before


def test_evaluate_counts_pairs_and_excludes_unidentifiable_records(clean_db: Engine, tmp_path: Path) -> None:
    add(
        clean_db,
        web_registration("reg-a", email="anna@example.org", **ANNA),
        ticket("T1", "water_park_ticket", month=2, email="anna@example.org", **ANNA),
        ticket("T2", "water_park_ticket", month=2, phone_e164="+491709999999", **ANNA),
        rec(
            "restaurant_pos",
            "R1",
            record_kind="receipt",
            activity_type="restaurant_bill",
            occurred_at=at(2026, 3),
            amount_cents=4200,
            currency="EUR",
        ),
        # A page view under a cookie that never logged in: excluded. One under a cookie a
        # login carries: evaluated.
        rec(
            "website",
            "view-anon",
            cookie_id="c0ffee0000000001",
            activity_type="web_page_view",
            occurred_at=at(2026, 4),
        ),
        rec(
            "website",
            "view-known",
            cookie_id="c0ffee0000000002",
            activity_type="web_page_view",
            occurred_at=at(2026, 4),
        ),
        rec(
            "website",
            "login-a",
            source_customer_id="website:W1",
            cookie_id="c0ffee0000000002",
            activity_type="web_login",
            occurred_at=at(2026, 4),
        ),
    )
    resolve(clean_db)
    truth = tmp_path / "ground_truth.csv.gz"
    with gzip.open(truth, "wt", encoding="utf-8", newline="") as stream:
        stream.write("source_system,record_kind,source_key,person_id,household_id\n")
        for system, key in [
            ("website", "reg-a"),
            ("ticketing", "T1"),
            ("ticketing", "T2"),
            ("restaurant_pos", "R1"),
            ("website", "view-anon"),
        ]:
            stream.write(f"{system},x,{key},P00000001,H00000001\n")
        stream.write("website,event,view-known,P00000002,H00000002\n")
        stream.write("website,event,login-a,P00000002,H00000002\n")
        stream.write("crm,account,ACC-9,,H00000001\n")

    result = evaluate(clean_db, truth)

    assert (result.records_evaluated, result.records_unidentifiable, result.records_missing) == (5, 1, 0)
    assert result.records_anonymous_cookie == 1
    assert (result.true_pairs, result.predicted_pairs, result.correct_pairs) == (4, 2, 2)
    assert (result.precision, result.recall) == (1.0, 0.5)
    assert "precision" in evaluate_command(clean_db, truth)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("Müller", "mueller"),
        ("  GROSSMANN ", "grossmann"),
        ("José-María", "jose maria"),
        ("Łukasz", "lukasz"),
        (None, ""),
    ],
    ids=["umlaut", "upper case", "accents and hyphen", "polish l", "none"],
)
def test_names_are_normalised_for_comparison(raw: str | None, key: str) -> None:
    assert name_key(raw) == key


def test_abbreviated_streets_share_an_address_key() -> None:
    assert address_key("85056", "Hauptstr. 12") == address_key("85056", "Hauptstraße 12") != ""


def test_reset_resolution_forgets_every_result_and_resolve_rebuilds_it(clean_db: Engine) -> None:
    add(clean_db, *LINK_CASES["booking reference to the PMS main guest"])
    resolve(clean_db)
    before = scalar(clean_db, "select count(*) from core.activity")
    assert scalar(clean_db, "select count(*) from core.contact") == 2

    reset_resolution(clean_db)

    for table in ("core.contact", "core.account", "core.identifier", "core.activity", "core.location"):
        assert scalar(clean_db, f"select count(*) from {table}") == 0, table
    assert scalar(clean_db, "select count(*) from ingest.record_contact") == 0
    assert scalar(clean_db, "select count(*) from ingest.record_pending") == scalar(
        clean_db, "select count(*) from ingest.record"
    )
    summary = resolve(clean_db)
    assert summary.batch_records == 3
    assert scalar(clean_db, "select count(*) from core.contact") == 2
    assert scalar(clean_db, "select count(*) from core.activity") == before


BULK = IdentitySettings(bulk_min_records=0)

# Each record as the first (source_system:source_key) of its contact's records, so that two
# builds with different contact ids compare; identifiers and activities the same way.
VIEW = """
    with member as (
        select c.contact_id, r.source_system || ':' || r.source_key as record
        from ingest.record_contact as c
        join ingest.record as r using (record_id)
    ),

    canonical as (
        select contact_id, min(record) as person from member group by contact_id
    )

    select 'record ' || m.record || ' ' || k.person from member as m join canonical as k using (contact_id)
    union all
    select 'identifier ' || i.kind || ' ' || i.value || ' ' || k.person
    from core.identifier as i join canonical as k using (contact_id)
    union all
    select 'activity ' || a.source_system || ':' || a.source_ref || ' ' || k.person
    from core.activity as a join canonical as k using (contact_id)
    order by 1
"""

# The secondary indexes and foreign keys that bulk mode drops and must restore as they were.
SECONDARY = """
    select indexrelid::regclass::text || ' ' || pg_get_indexdef(indexrelid)
    from pg_index
    where indrelid in ('core.activity'::regclass, 'core.identifier'::regclass, 'ingest.record_contact'::regclass)
    union all
    select conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid) || ' ' || convalidated
    from pg_constraint
    where conrelid in ('core.activity'::regclass, 'core.identifier'::regclass) and contype = 'f'
    order by 1
"""


def rows(engine: Engine, sql: str) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(text(sql)).scalars())


def test_bulk_mode_builds_the_same_view_and_restores_every_index_and_key(clean_db: Engine) -> None:
    secondary = rows(clean_db, SECONDARY)
    add(clean_db, *LINK_CASES["email"])
    assert resolve(clean_db, settings=BULK).bulk
    for records in LINK_CASES.values():
        add(clean_db, *records)
    # A changed record of the first build: bulk mode updates its activity in place.
    with clean_db.begin() as conn:
        conn.execute(
            text("update ingest.record set outlet = 'Pool', changed_at = now() where source_key = 'T1'")
        )

    bulk = resolve(clean_db, settings=BULK)
    bulk_view = rows(clean_db, VIEW)
    assert rows(clean_db, "select outlet from core.activity where source_ref = 'T1'") == ["Pool"]
    reset_resolution(clean_db)
    row_by_row = resolve(clean_db)

    assert (bulk.bulk, row_by_row.bulk) == (True, False)
    assert bulk_view == rows(clean_db, VIEW) != []
    assert (
        bulk.records_resolved
        == row_by_row.records_resolved
        == scalar(clean_db, "select count(*) from ingest.record")
    )
    assert rows(clean_db, SECONDARY) == secondary
    assert scalar(clean_db, "select count(*) from ingest.record_pending") == 0


def test_bulk_mode_is_only_for_a_batch_as_large_as_the_view(clean_db: Engine) -> None:
    for records in LINK_CASES.values():
        add(clean_db, *records)
    assert resolve(clean_db, settings=BULK).bulk

    add(clean_db, ticket("T9", "dolphinarium_ticket", month=3, email="anna@example.org", **ANNA))
    summary = resolve(clean_db, settings=BULK)

    assert (summary.bulk, summary.batch_records, summary.activities_written) == (False, 1, 1)


def test_the_resolve_command_prints_counts_mode_and_stages(clean_db: Engine) -> None:
    add(clean_db, *LINK_CASES["email"])

    lines = {
        label.strip(): value
        for label, value in (line.rsplit(None, 1) for line in resolve_command(clean_db).splitlines())
    }

    assert (lines["records resolved"], lines["bulk"]) == ("2", "False")
    assert {"scope seconds", "link seconds", "history seconds"} <= set(lines)


def test_the_set_based_key_check_of_bulk_mode_refuses_a_missing_contact(clean_db: Engine) -> None:
    q = queries("identity.sql")
    with clean_db.connect() as conn:
        assert conn.execute(q["bulk_skip_key_checks"]).scalar_one()
        conn.execute(
            text(
                "insert into core.activity (contact_id, activity_type, source_system, source_ref, occurred_at) "
                "values (424242, 'call', 'kms', 'call-1', now())"
            )
        )
        with pytest.raises(IntegrityError, match="activity_contact_id_fkey"):
            conn.execute(q["bulk_check_keys"], {"tables": ["core.activity"]})
        conn.rollback()
    assert scalar(clean_db, "select count(*) from core.activity") == 0


def test_a_record_changed_while_resolution_runs_stays_queued(clean_db: Engine) -> None:
    add(clean_db, *LINK_CASES["email"])
    ticket_id = scalar(clean_db, "select record_id from ingest.record where source_key = 'T1'")
    with clean_db.connect() as ingest, ThreadPoolExecutor(max_workers=1) as pool:
        # An ingest merge changes a queued record and finds it queued already (on conflict
        # do nothing), and has not committed when resolution wants to take it off the queue.
        ingest.execute(
            text("update ingest.record set first_name = 'Anne', changed_at = now() where record_id = :r"),
            {"r": ticket_id},
        )
        ingest.execute(
            text("insert into ingest.record_pending (record_id) values (:r) on conflict do nothing"),
            {"r": ticket_id},
        )
        running = pool.submit(resolve, clean_db)
        deadline = time.monotonic() + 30
        while not scalar(
            clean_db,
            "select count(*) from pg_stat_activity where wait_event_type = 'Lock' and datname = current_database()",
        ):
            assert time.monotonic() < deadline and not running.done(), "resolution never waited for the merge"
            time.sleep(0.05)
        ingest.commit()
        summary = running.result()

    assert summary.records_resolved == 1
    assert rows(clean_db, "select record_id::text from ingest.record_pending") == [str(ticket_id)]
    assert resolve(clean_db).records_resolved == 1
    assert scalar(clean_db, "select count(*) from ingest.record_pending") == 0


# In-memory rule tests: `link` over hand-built columns, no database.

_COLUMNS = [name for name in ScopeRecords.__slots__ if name not in ("first_name", "last_name")]


def scope(*rows: dict) -> ScopeRecords:
    """ScopeRecords of `rows` (field -> raw value; names are normalised as resolve does)."""
    records = ScopeRecords()
    for n, row in enumerate(rows):
        records.record_id.append(n + 1)
        records.source_system.append(row.get("source_system", "website"))
        records.first_name.append(name_key(row.get("first_name")))
        records.last_name.append(name_key(row.get("last_name")))
        records.address.append(address_key(row.get("postal_code"), row.get("street")))
        records.main_guest.append(bool(row.get("main_guest")))
        records.company_account.append(False)
        for name in _COLUMNS:
            if name not in ("record_id", "source_system", "address", "main_guest", "company_account"):
                getattr(records, name).append(row.get(name))
    return records


def same_person(rows: list[dict], settings: IdentitySettings | None = None) -> list[bool]:
    """For every record after the first: is it the first record's person?"""
    linkage = link(scope(*rows), settings or IdentitySettings())
    person = linkage.record_person
    return [person[i] == person[0] >= 0 for i in range(1, len(rows))]


MAX = {"first_name": "Max", "last_name": "Müller"}
LENA = {"first_name": "Lena", "last_name": "Müller"}
PMS_STAY = {"source_system": "hotel_pms", "occurred_on": "2026-07-01", "ended_on": "2026-07-05"}

# Each case: records, and for every record after the first whether it must be the first's person.
RULE_CASES = {
    "nameless e-receipt keeps its card's person out of the partner's mailbox": (
        [
            {
                "source_system": "crm",
                "crm_contact_id": "C1",
                "email": "max@x.de",
                "loyalty_card": "RC1",
                **MAX,
            },
            {"source_system": "crm", "crm_contact_id": "C2", "loyalty_card": "RC2", **LENA},
            {"source_system": "restaurant_pos", "email": "max@x.de", "loyalty_card": "RC2"},
        ],
        [False, False],
    ),
    "nameless record joins the only person of a mailbox": (
        [
            {"source_system": "crm", "crm_contact_id": "C1", "email": "mm@x.de", **MAX},
            {"source_system": "shop_pos", "email": "mm@x.de", "loyalty_card": "RC9"},
        ],
        [True],
    ),
    "local part naming another first name keeps a nameless sign-up apart": (
        [
            {"source_system": "ticketing", "email": "lena.mueller@x.de", "order_ref": "O1", **MAX},
            {"source_system": "crm", "crm_contact_id": "C2", **LENA},
            {"email": "lena.mueller@x.de", "cookie_id": "c1"},
        ],
        [False, False],
    ),
    "another initial before the last name keeps a nameless receipt apart": (
        [
            {"source_system": "crm", "crm_contact_id": "C1", "email": "l.mueller@x.de", **MAX},
            {"source_system": "restaurant_pos", "email": "l.mueller@x.de", "loyalty_card": "RC2"},
        ],
        [False],
    ),
    "family mailbox word keeps a nameless receipt apart": (
        [
            {"source_system": "crm", "crm_contact_id": "C1", "email": "familie.mueller@x.de", **MAX},
            {"source_system": "restaurant_pos", "email": "familie.mueller@x.de"},
        ],
        [False],
    ),
    "shared mailbox: a nameless receipt joins the person its local part names": (
        [
            {"source_system": "crm", "crm_contact_id": "C2", "email": "lena.m@x.de", **LENA},
            {"source_system": "crm", "crm_contact_id": "C1", "email": "lena.m@x.de", **MAX},
            {"source_system": "ticketing", "email": "lena.m@x.de", "order_ref": "O1", **MAX},
            {"source_system": "restaurant_pos", "email": "lena.m@x.de"},
        ],
        [False, False, True],
    ),
    "shared mailbox: a nameless receipt the local part does not name stays apart": (
        [
            {"source_system": "restaurant_pos", "email": "mueller@x.de"},
            {"source_system": "crm", "crm_contact_id": "C2", "email": "mueller@x.de", **LENA},
            {"source_system": "crm", "crm_contact_id": "C1", "email": "mueller@x.de", **MAX},
        ],
        [False, False],
    ),
    "same name at the CRM account's postcode links a companion's duplicate profile": (
        [
            {
                "source_system": "crm",
                "crm_contact_id": "C1",
                "crm_account_id": "A1",
                "birth_date": "1980-01-02",
                **MAX,
            },
            {"source_system": "crm", "crm_account_id": "A1", "postal_code": "85056", "street": "Hauptstr. 1"},
            {
                "source_system": "hotel_pms",
                "source_customer_id": "hotel_pms:9",
                "postal_code": "85056",
                **MAX,
            },
        ],
        [False, True],
    ),
    "same name and postcode with two birth dates: the undated record stays apart": (
        [
            {
                "source_system": "hotel_pms",
                "source_customer_id": "hotel_pms:1",
                "postal_code": "85056",
                "birth_date": "1944-11-25",
                **MAX,
            },
            {
                "source_system": "hotel_pms",
                "source_customer_id": "hotel_pms:2",
                "postal_code": "85056",
                "birth_date": "1996-03-19",
                **MAX,
            },
            {
                "source_system": "hotel_pms",
                "source_customer_id": "hotel_pms:3",
                "postal_code": "85056",
                **MAX,
            },
        ],
        [False, False],
    ),
    "same name and birth date link without a postcode": (
        [
            {"source_system": "crm", "crm_contact_id": "C1", "birth_date": "1980-01-02", **MAX},
            {
                "source_customer_id": "website:W1",
                "birth_date": "1980-01-02",
                "first_name": "Mueller",
                "last_name": "Max",
            },
            {"source_customer_id": "website:W2", "birth_date": "1981-01-02", **MAX},
        ],
        [True, False],
    ),
    "name-only ticket joins the guest of that name in house that day": (
        [
            {**PMS_STAY, "source_customer_id": "hotel_pms:1", "postal_code": "1", **MAX},
            {
                **PMS_STAY,
                "source_customer_id": "hotel_pms:2",
                "postal_code": "2",
                "birth_date": "1990-01-01",
                **MAX,
                "occurred_on": "2025-01-01",
                "ended_on": "2025-01-03",
            },
            {"source_system": "ticketing", "order_ref": "O1", "occurred_on": "2026-07-03", **MAX},
        ],
        [False, True],
    ),
    "name-only ticket with two guests of that name in house stays apart": (
        [
            {"source_system": "ticketing", "order_ref": "O1", "occurred_on": "2026-07-03", **MAX},
            {
                **PMS_STAY,
                "source_customer_id": "hotel_pms:1",
                "postal_code": "1",
                "birth_date": "1970-01-01",
                **MAX,
            },
            {
                **PMS_STAY,
                "source_customer_id": "hotel_pms:2",
                "postal_code": "2",
                "birth_date": "1990-01-01",
                **MAX,
            },
        ],
        [False, False],
    ),
    "name-only ticket joins the one person known by that name": (
        [
            {"source_system": "crm", "crm_contact_id": "C1", "email": "max@x.de", **MAX},
            {"source_system": "ticketing", "order_ref": "O1", "occurred_on": "2026-07-03", **MAX},
            {"source_system": "ticketing", "order_ref": "O2", "occurred_on": "2026-07-03", **LENA},
        ],
        [True, False],
    ),
    "name-only ticket with two people known by that name stays apart": (
        [
            {"source_system": "ticketing", "order_ref": "O1", "occurred_on": "2026-07-03", **MAX},
            {"source_system": "crm", "crm_contact_id": "C1", "email": "max@x.de", **MAX},
            {"source_system": "crm", "crm_contact_id": "C2", "email": "max@y.de", **MAX},
        ],
        [False, False],
    ),
}


@pytest.mark.parametrize(("rows", "expected"), RULE_CASES.values(), ids=RULE_CASES.keys())
def test_a_linking_rule_or_guard(rows: list[dict], expected: list[bool]) -> None:
    assert same_person(rows) == expected


@pytest.mark.parametrize(
    ("setting", "rows"),
    [
        (
            "name_address_enabled",
            RULE_CASES["same name at the CRM account's postcode links a companion's duplicate profile"][0],
        ),
        ("name_birth_date_enabled", RULE_CASES["same name and birth date link without a postcode"][0][:2]),
        (
            "in_house_name_enabled",
            RULE_CASES["name-only ticket joins the guest of that name in house that day"][0],
        ),
        (
            "unique_name_enabled",
            RULE_CASES["name-only ticket joins the one person known by that name"][0][:2],
        ),
    ],
)
def test_a_name_rule_can_be_switched_off(setting: str, rows: list[dict]) -> None:
    others = {
        "name_address_enabled",
        "name_birth_date_enabled",
        "in_house_name_enabled",
        "unique_name_enabled",
    }
    off = dict.fromkeys(others, False)
    assert any(same_person(rows, IdentitySettings(fuzzy_enabled=False, **{**off, setting: True})))
    assert not any(same_person(rows, IdentitySettings(fuzzy_enabled=False, **off)))


def test_a_shared_mailbox_can_hand_nameless_records_to_its_main_user() -> None:
    rows = RULE_CASES["shared mailbox: a nameless receipt the local part does not name stays apart"][0]
    rows = [
        rows[1],
        rows[2],
        {"source_system": "crm", "crm_contact_id": "C3", "email": "mueller@x.de", **LENA},
        rows[0],
    ]
    assert same_person(rows, IdentitySettings(nameless_shared_value_needs_name=False)) == [False, True, True]


def test_a_later_batch_finds_the_person_a_name_rule_joins(clean_db: Engine) -> None:
    add(
        clean_db,
        rec("crm", "CON-1", record_kind="contact", crm_contact_id="CON-1", email="anna@example.org", **ANNA),
    )
    resolve(clean_db)
    anna = contact_of(clean_db, "crm", "CON-1")
    # A ticket sold at the hotel desk: the buyer's name and nothing else.
    add(
        clean_db,
        rec(
            "ticketing",
            "T1",
            record_kind="ticket",
            order_ref="O1",
            first_name="ANNA",
            last_name="Muster",
            activity_type="water_park_ticket",
            occurred_at=at(2026, 7, 3),
        ),
    )
    summary = resolve(clean_db)

    assert summary.contacts_touched >= 1
    assert contact_of(clean_db, "ticketing", "T1") == anna
