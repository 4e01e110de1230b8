"""Rules selections against hand-built contacts in the embedded PostgreSQL: each condition of the
language, parameters and defaults, nesting, references and set operations, cycles, and the
validation messages a campaign manager sees for a mistake."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.engine import Engine

from campaign_lib.selection import SelectionError, contact_ids, list_selections, load_selection, read_only

AS_OF = dt.datetime(2026, 6, 15, 12, 0, tzinfo=dt.UTC)
BERLIN = ZoneInfo("Europe/Berlin")

# Ages on AS_OF: 1 is 40 today, 2 is 38, 3 is 8, 4 is 29 (30 tomorrow), 5 is 50 (born 29
# February), 7 is 70; 6 is anonymous and never selected; 8 has no birth date.
CONTACTS = [
    (1, 1, 1, "active", "Anna", "Weber", "1986-06-15", "anna@example.org", "de"),
    (2, 1, 1, "active", "Jonas", "Weber", "1988-01-10", None, "de"),
    (3, 1, 1, "active", "Mia", "Weber", "2018-03-01", None, "de"),
    (4, 2, 2, "active", "Liam", "O'Brien", "1996-06-16", "o'brien@example.org", "en"),
    (5, 3, 3, "active", "Petra", "100% Müller", "1976-02-29", "petra@firma.example", "de"),
    (6, 3, 3, "anonymous", None, None, None, None, "de"),
    (7, 4, None, "active", "Daan", "de Vries", "1956-05-01", "daan@example.nl", "nl"),
    (8, 4, None, "active", "Sanne", "de Vries", None, None, None),
]
CONTACT_COLUMNS = ("id", "account", "location", "status", "first", "last", "birth", "email", "language")
# (contact, type, source system, days before AS_OF, amount in cents, sku, outlet)
ACTIVITIES = [
    (1, "hotel_stay", "hotel_pms", 30, 50000, None, None),
    (1, "dolphinarium_ticket", "ticketing", 30, 6900, None, "dolphinarium"),
    (1, "restaurant_bill", "restaurant_pos", 400, 3000, None, "Trattoria Lago"),
    (1, "restaurant_bill", "restaurant_pos", 300, 4000, None, "Alpenstube"),
    (2, "hotel_stay", "hotel_pms", 30, None, None, None),
    (2, "water_park_ticket", "ticketing", 29, 3900, None, "water_park"),
    (4, "hotel_stay", "hotel_pms", 200, 120000, None, None),
    (4, "restaurant_bill", "restaurant_pos", 10, 2500, None, "Alpenstube"),
    (4, "restaurant_bill", "restaurant_pos", 20, 2500, None, "Alpenstube"),
    (4, "restaurant_bill", "restaurant_pos", 500, 9000, None, "Trattoria Lago"),
    (4, "newsletter_signup", "website", 100, None, None, None),
    (5, "shop_purchase", "shop_pos", 5, 24900, "JUW-6001", "S06"),
    (5, "shop_purchase", "shop_pos", 400, 1999, "SOU-2001", "S02"),
    (5, "hotel_stay", "hotel_pms", 700, 30000, None, None),
    (6, "hotel_stay", "hotel_pms", 10, 10000, None, None),
    (7, "newsletter_signup", "website", 50, None, None, None),
    (7, "water_park_ticket", "ticketing", 800, 3900, None, "water_park"),
]
# (contact, channel, purpose, status, days before AS_OF, confirmed by double opt-in); the
# latest entry wins, and at the same time the later entry (5 opted in and out at once).
CONSENTS = [
    (1, "email", "newsletter", "opt_in", 100, True),
    (1, "email", "newsletter", "opt_out", 10, False),
    (2, "email", "newsletter", "opt_out", 30, False),
    (2, "email", "newsletter", "opt_in", 5, False),
    (4, "email", "newsletter", "opt_in", 100, False),
    (5, "email", "newsletter", "opt_in", 20, False),
    (5, "email", "newsletter", "opt_out", 20, False),
    (7, "email", "newsletter", "opt_in", 50, True),
    (7, "sms", "offers", "opt_in", 50, False),
]
# Three late bar bills of contact 7, at 23:00 resort time.
LATE_BILLS = [dt.datetime(2026, 5, day, 23, 0, tzinfo=BERLIN) for day in (4, 5, 6)]
ACTIVE = [1, 2, 3, 4, 5, 7, 8]


@pytest.fixture
def resort(clean_db: Engine) -> Engine:
    """Four accounts (a family of three, a single, a company, a couple) with the contacts and
    activities above, and three products."""
    with clean_db.begin() as conn:
        conn.execute(
            text(
                "insert into core.account (account_id, account_type) overriding system value values "
                "(1, 'household'), (2, 'household'), (3, 'company'), (4, 'household')"
            )
        )
        conn.execute(
            text(
                "insert into core.location (location_id, account_id, postal_code, city, country_code) "
                "overriding system value values (1, 1, '10115', 'Berlin', 'DE'), (2, 2, '1010', 'Wien', 'AT'), "
                "(3, 3, '80331', 'München', 'DE')"
            )
        )
        conn.execute(
            text(
                "insert into core.contact (contact_id, account_id, location_id, status, first_name, last_name, "
                "birth_date, email, preferred_language) overriding system value values "
                "(:id, :account, :location, cast(:status as core.contact_status), :first, :last, "
                "cast(:birth as date), :email, :language)"
            ),
            [dict(zip(CONTACT_COLUMNS, row, strict=True)) for row in CONTACTS],
        )
        conn.execute(
            text(
                "insert into core.product (sku, name, category) values ('JUW-6001', 'Perlenkette', 'juwelier'), "
                "('SOU-2001', 'Plüschdelfin', 'souvenirshop'), ('KIO-4001', 'Sonnencreme', 'kiosk')"
            )
        )
        rows = [
            {
                "contact": contact,
                "type": type_,
                "source": source,
                "ref": f"A-{i}",
                "at": AS_OF - dt.timedelta(days=days),
                "amount": amount,
                "sku": sku,
                "outlet": outlet,
            }
            for i, (contact, type_, source, days, amount, sku, outlet) in enumerate(ACTIVITIES)
        ] + [
            {
                "contact": 7,
                "type": "bar_bill",
                "source": "restaurant_pos",
                "ref": f"LATE-{i}",
                "at": at,
                "amount": 1000,
                "sku": None,
                "outlet": "Sky Bar",
            }
            for i, at in enumerate(LATE_BILLS)
        ]
        conn.execute(
            text(
                "insert into core.activity (contact_id, activity_type, source_system, source_ref, occurred_at, "
                "amount_cents, currency, product_id, outlet) "
                "select :contact, :type, :source, :ref, :at, cast(:amount as bigint), "
                "case when cast(:amount as bigint) is not null then 'EUR' end, "
                "(select product_id from core.product where sku = :sku), :outlet"
            ),
            rows,
        )
        conn.execute(
            text(
                "insert into core.consent (contact_id, channel, purpose, status, recorded_at, source_system, "
                "source_ref, double_opt_in_at) values (:contact, cast(:channel as core.channel), :purpose, "
                "cast(:status as core.consent_status), :at, 'website', :ref, :confirmed)"
            ),
            [
                {
                    "contact": contact,
                    "channel": channel,
                    "purpose": purpose,
                    "status": status,
                    "at": AS_OF - dt.timedelta(days=days),
                    "ref": f"C-{i}",
                    "confirmed": AS_OF - dt.timedelta(days=days, hours=-1) if confirmed else None,
                }
                for i, (contact, channel, purpose, status, days, confirmed) in enumerate(CONSENTS)
            ],
        )
    return clean_db


def write(folder: Path, name: str, content: dict | str, suffix: str = ".yaml") -> Path:
    """A selection file in `folder`: a dict is written as YAML, a string as it is."""
    path = folder / f"{name}{suffix}"
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
    return path


def select_ids(engine: Engine, name: str, folder: Path, values: dict | None = None) -> list[int]:
    with engine.connect() as conn:
        return contact_ids(conn, load_selection(name, folder), values, as_of=AS_OF)


def rules(condition: dict, **extra) -> dict:
    return {"description": "test selection", **extra, "rules": condition}


WATER_PARK = {"activity": {"type": "water_park_ticket"}}
RECENT_WATER_PARK = {"activity": {"type": "water_park_ticket", "within_days": 365}}
CASES = [
    ("language-eq", {"contact": {"language": {"eq": "de"}}}, [1, 2, 3, 5]),
    ("language-shorthand-eq", {"contact": {"language": "de"}}, [1, 2, 3, 5]),
    ("language-shorthand-in", {"contact": {"language": ["de", "nl"]}}, [1, 2, 3, 5, 7]),
    ("language-ne-skips-unknown", {"contact": {"language": {"ne": "de"}}}, [4, 7]),
    ("language-is-null", {"contact": {"language": {"is_null": True}}}, [8]),
    ("language-is-not-null-false", {"contact": {"language": {"is_not_null": False}}}, [8]),
    ("first-name-not-in", {"contact": {"first_name": {"not_in": ["Anna"]}}}, [2, 3, 4, 5, 7, 8]),
    ("contact-id-in", {"contact": {"contact_id": {"in": [1, 6, 8]}}}, [1, 8]),
    ("age-ge-18", {"contact": {"age": {"ge": 18}}}, [1, 2, 4, 5, 7]),
    ("age-lt-18", {"contact": {"age": {"lt": 18}}}, [3]),
    ("age-eq-on-birthday", {"contact": {"age": {"eq": 40}}}, [1]),
    ("age-eq-day-before-birthday", {"contact": {"age": {"eq": 29}}}, [4]),
    ("age-born-29-february", {"contact": {"age": {"eq": 50}}}, [5]),
    ("age-ne", {"contact": {"age": {"ne": 40}}}, [2, 3, 4, 5, 7]),
    ("age-gt", {"contact": {"age": {"gt": 40}}}, [5, 7]),
    ("age-le", {"contact": {"age": {"le": 8}}}, [3]),
    ("age-between", {"contact": {"age": {"between": [30, 40]}}}, [1, 2]),
    ("age-two-operators", {"contact": {"age": {"ge": 30, "lt": 60}}}, [1, 2, 5]),
    ("age-is-null", {"contact": {"age": {"is_null": True}}}, [8]),
    ("birth-date-lt", {"contact": {"birth_date": {"lt": dt.date(1980, 1, 1)}}}, [5, 7]),
    ("birth-date-between", {"contact": {"birth_date": {"between": ["1986-01-01", "1988-12-31"]}}}, [1, 2]),
    ("email-contains-any-case", {"contact": {"email": {"contains": "EXAMPLE.ORG"}}}, [1, 4]),
    ("email-starts-with-quote", {"contact": {"email": {"starts_with": "o'b"}}}, [4]),
    ("percent-is-a-character", {"contact": {"last_name": {"contains": "%"}}}, [5]),
    ("underscore-is-a-character", {"contact": {"last_name": {"contains": "_"}}}, []),
    ("account-company", {"account": {"type": "company"}}, [5]),
    ("account-not-company", {"account": {"type": {"ne": "company"}}}, [1, 2, 3, 4, 7, 8]),
    ("location-country", {"location": {"country_code": "AT"}}, [4]),
    ("location-postal-code-prefix", {"location": {"postal_code": {"starts_with": "80"}}}, [5]),
    ("location-city-in", {"location": {"city": {"in": ["Berlin", "Wien"]}}}, [1, 2, 3, 4]),
    ("not-location-includes-no-address", {"not": {"location": {"country_code": "DE"}}}, [4, 7, 8]),
    ("hotel-stay-ever", {"activity": {"type": "hotel_stay"}}, [1, 2, 4, 5]),
    ("hotel-stay-within-60-days", {"activity": {"type": "hotel_stay", "within_days": 60}}, [1, 2]),
    (
        "hotel-stay-absolute-window",
        {"activity": {"type": "hotel_stay", "since": "2025-06-01", "until": "2026-01-31"}},
        [4],
    ),
    ("until-is-inclusive", {"activity": {"type": "hotel_stay", "until": "2025-11-27"}}, [4, 5]),
    ("until-day-before", {"activity": {"type": "hotel_stay", "until": "2025-11-26"}}, [5]),
    ("two-types", {"activity": {"type": ["water_park_ticket", "dolphinarium_ticket"]}}, [1, 2, 7]),
    (
        "source-system-website",
        {"activity": {"type": "newsletter_signup", "source_system": "website"}},
        [4, 7],
    ),
    ("source-system-crm", {"activity": {"type": "newsletter_signup", "source_system": "crm"}}, []),
    ("outlet", {"activity": {"type": "restaurant_bill", "outlet": "Trattoria Lago"}}, [1, 4]),
    ("outlet-recent", {"activity": {"outlet": "Alpenstube", "within_days": 30}}, [4]),
    ("currency", {"activity": {"currency": "CHF"}}, []),
    ("count-min-2", {"activity": {"type": "restaurant_bill", "count": {"min": 2}}}, [1, 4]),
    ("count-between", {"activity": {"type": "restaurant_bill", "count": {"min": 1, "max": 2}}}, [1]),
    (
        "count-max-includes-none",
        {"activity": {"type": "restaurant_bill", "count": {"max": 1}}},
        [2, 3, 5, 7, 8],
    ),
    ("count-max-0-is-never", {"activity": {"type": "hotel_stay", "count": {"max": 0}}}, [3, 7, 8]),
    ("count-min-0-is-everyone", {"activity": {"type": "hotel_stay", "count": {"min": 0}}}, ACTIVE),
    ("sum-min-euros", {"activity": {"amount": {"min": 1000}}}, [4]),
    ("sum-between-in-window", {"activity": {"within_days": 365, "amount": {"min": 500, "max": 1000}}}, [1]),
    ("sum-max-needs-an-activity", {"activity": {"amount": {"max": 100}}}, [2, 7]),
    (
        "sum-max-with-count-0-includes-none",
        {"activity": {"amount": {"max": 100}, "count": {"min": 0}}},
        [2, 3, 7, 8],
    ),
    ("sum-of-missing-amounts-is-0", {"activity": {"type": "hotel_stay", "amount": {"max": 0}}}, [2]),
    ("bought-sku", {"bought": {"sku": "JUW-6001"}}, [5]),
    ("bought-category", {"bought": {"category": "souvenirshop"}}, [5]),
    ("bought-never-sold", {"bought": {"sku": "KIO-4001"}}, []),
    ("bought-recently", {"bought": {"sku": ["SOU-2001"], "within_days": 30}}, []),
    ("not-bought", {"not": {"bought": {"category": "juwelier"}}}, [1, 2, 3, 4, 7, 8]),
    ("consent-in-force", {"consent": {"channel": "email", "purpose": "newsletter"}}, [2, 4, 7]),
    (
        "consent-double-opt-in",
        {"consent": {"channel": "email", "purpose": "newsletter", "double_opt_in": True}},
        [7],
    ),
    (
        "consent-opted-out",
        {"consent": {"channel": "email", "purpose": "newsletter", "status": "opt_out"}},
        [1, 5],
    ),
    ("consent-other-channel", {"consent": {"channel": "sms", "purpose": "offers"}}, [7]),
    ("consent-other-purpose", {"consent": {"channel": "email", "purpose": "offers"}}, []),
    ("no-consent", {"not": {"consent": {"channel": "email", "purpose": "newsletter"}}}, [1, 3, 5, 8]),
    ("household-has-child", {"household": {"contact": {"age": {"lt": 18}}}}, [1, 2]),
    ("household-visited-water-park", {"household": {"activity": {"type": "water_park_ticket"}}}, [1, 3, 8]),
    # "not X" next to "not household X" compiles to one "nobody of the household has X".
    (
        "nobody-at-home-visited-water-park",
        {"all": [{"not": WATER_PARK}, {"not": {"household": WATER_PARK}}]},
        [4, 5],
    ),
    (
        "nobody-at-home-household-first",
        {"all": [{"not": {"household": WATER_PARK}}, {"not": WATER_PARK}]},
        [4, 5],
    ),
    (
        "nobody-at-home-within-a-year",
        {"all": [{"not": RECENT_WATER_PARK}, {"not": {"household": RECENT_WATER_PARK}}]},
        [4, 5, 7, 8],
    ),
    (
        "not-self-and-household-of-other-conditions",
        {"all": [{"not": WATER_PARK}, {"not": {"household": RECENT_WATER_PARK}}]},
        [4, 5, 8],
    ),
    # An attribute can be NULL (8 has no language): "not" drops 8 there, so no merging.
    (
        "not-self-and-household-with-null",
        {
            "all": [
                {"not": {"contact": {"language": "de"}}},
                {"not": {"household": {"contact": {"language": "de"}}}},
            ]
        },
        [4, 7],
    ),
    ("any", {"any": [{"location": {"country_code": "AT"}}, {"account": {"type": "company"}}]}, [4, 5]),
    (
        "not-all",
        {"not": {"all": [{"contact": {"language": "de"}}, {"activity": {"type": "hotel_stay"}}]}},
        [3, 4, 7, 8],
    ),
    (
        "nested-any-in-all",
        {
            "all": [
                {
                    "any": [
                        {"activity": {"type": "hotel_stay", "within_days": 60}},
                        {"contact": {"age": {"gt": 60}}},
                    ]
                },
                {"not": {"activity": {"type": "water_park_ticket"}}},
            ]
        },
        [1],
    ),
]


@pytest.mark.parametrize(("condition", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_condition_selects_exactly_these_contacts(
    resort: Engine, tmp_path: Path, condition: dict, expected: list[int]
) -> None:
    write(tmp_path, "picked", rules(condition))
    assert select_ids(resort, "picked", tmp_path) == expected


def test_a_parameter_takes_its_default_or_the_given_value(resort: Engine, tmp_path: Path) -> None:
    write(
        tmp_path,
        "recent_guests",
        rules(
            {"activity": {"type": {"param": "kinds"}, "within_days": {"param": "days"}}},
            params={
                "days": {"type": "integer", "default": 60, "description": "stay at most this many days ago"},
                "kinds": {"type": "string_list", "default": ["hotel_stay"]},
            },
        ),
    )
    assert select_ids(resort, "recent_guests", tmp_path) == [1, 2]
    assert select_ids(resort, "recent_guests", tmp_path, {"days": 365}) == [1, 2, 4]
    # Trigger forms and the command line pass text.
    assert select_ids(
        resort, "recent_guests", tmp_path, {"days": "365", "kinds": "hotel_stay,shop_purchase"}
    ) == [
        1,
        2,
        4,
        5,
    ]
    selection = load_selection("recent_guests", tmp_path)
    assert selection.params["days"].description == "stay at most this many days ago"
    assert selection.bind({"days": "7"}) == {"days": 7, "kinds": ["hotel_stay"]}


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"dayz": 3}, "params.dayz: unknown parameter (declared: days, since)"),
        ({"days": "soon"}, "params.days: must be an integer, not 'soon'"),
        ({"days": True}, "params.days: must be an integer, not True"),
        ({"days": 2.5}, "params.days: must be an integer, not 2.5"),
        ({"since": "15.06.2026"}, "params.since: must be a date (YYYY-MM-DD), not '15.06.2026'"),
        (
            {"days": 0},
            "rules.activity.within_days: must be a positive integer, not 0 (from parameter 'days')",
        ),
    ],
    ids=["unknown-name", "text-for-integer", "boolean-for-integer", "fraction", "german-date", "zero-days"],
)
def test_a_wrong_parameter_value_is_refused_with_its_name(tmp_path: Path, values: dict, problem: str) -> None:
    path = write(
        tmp_path,
        "recent",
        rules(
            {"activity": {"within_days": {"param": "days"}, "since": {"param": "since"}}},
            params={
                "days": {"type": "integer", "default": 30},
                "since": {"type": "date", "default": "2026-01-01"},
            },
        ),
    )
    with pytest.raises(SelectionError) as error:
        load_selection("recent", tmp_path).query(values)
    assert str(error.value) == f"{path}: {problem}"


def test_a_parameter_without_default_must_be_given(resort: Engine, tmp_path: Path) -> None:
    path = write(
        tmp_path, "by_sku", rules({"bought": {"sku": {"param": "sku"}}}, params={"sku": {"type": "string"}})
    )
    with pytest.raises(SelectionError, match=r"params\.sku: needs a value \(it has no default\)") as error:
        load_selection("by_sku", tmp_path).query()
    assert str(error.value).startswith(str(path))
    assert select_ids(resort, "by_sku", tmp_path, {"sku": "SOU-2001"}) == [5]


def test_as_of_anchors_relative_windows_and_ages(resort: Engine, tmp_path: Path) -> None:
    write(tmp_path, "recent", rules({"activity": {"type": "hotel_stay", "within_days": 60}}))
    write(tmp_path, "thirty", rules({"contact": {"age": {"eq": 30}}}))
    later = AS_OF + dt.timedelta(days=1)
    with resort.connect() as conn:
        assert contact_ids(
            conn, load_selection("recent", tmp_path), as_of=later - dt.timedelta(days=200)
        ) == [4]
        assert contact_ids(conn, load_selection("thirty", tmp_path), as_of=later) == [4]
    with pytest.raises(SelectionError, match="as_of must carry a time zone"):
        load_selection("recent", tmp_path).query(as_of=dt.datetime(2026, 6, 15))


def test_membership_passes_parameters_to_the_other_selection(resort: Engine, tmp_path: Path) -> None:
    write(
        tmp_path,
        "stayed",
        rules(
            {"activity": {"type": "hotel_stay", "within_days": {"param": "days"}}},
            params={"days": {"type": "integer", "default": 60}},
        ),
    )
    write(
        tmp_path,
        "stayed_adults",
        rules(
            {
                "all": [
                    {"selection": {"name": "stayed", "params": {"days": {"param": "window"}}}},
                    {"contact": {"age": {"ge": 18}}},
                ]
            },
            params={"window": {"type": "integer", "default": 365}},
        ),
    )
    write(tmp_path, "not_stayed", rules({"not": {"selection": "stayed"}}))
    assert select_ids(resort, "stayed_adults", tmp_path) == [1, 2, 4]
    assert select_ids(resort, "stayed_adults", tmp_path, {"window": 60}) == [1, 2]
    assert select_ids(resort, "not_stayed", tmp_path) == [3, 4, 5, 7, 8]


def test_a_value_that_does_not_fit_the_other_selection_names_that_file(tmp_path: Path) -> None:
    stayed = write(
        tmp_path,
        "stayed",
        rules(
            {"activity": {"type": "hotel_stay", "within_days": {"param": "days"}}},
            params={"days": {"type": "integer", "default": 60}},
        ),
    )
    write(
        tmp_path,
        "outer",
        rules(
            {"selection": {"name": "stayed", "params": {"days": {"param": "window"}}}},
            params={"window": {"type": "integer", "default": 30}},
        ),
    )
    with pytest.raises(SelectionError) as error:
        load_selection("outer", tmp_path).query({"window": -1})
    assert str(error.value) == (
        f"{stayed}: rules.activity.within_days: must be a positive integer, not -1 (from parameter 'days')"
    )


SETS = [
    ("union", {"union": ["stayed", "bought_jewellery"]}, [1, 2, 4, 5]),
    (
        "intersection",
        {"intersection": ["stayed", {"name": "speaks", "params": {"language": "de"}}]},
        [1, 2, 5],
    ),
    ("exclusion", {"exclusion": {"from": "stayed", "minus": ["bought_jewellery", "water_park"]}}, [1, 4]),
    ("exclusion-of-one", {"exclusion": {"from": "stayed", "minus": "water_park"}}, [1, 4, 5]),
    ("union-of-unions", {"union": ["stayed_or_jewellery", "water_park"]}, [1, 2, 4, 5, 7]),
    (
        "same-selection-twice-other-values",
        {
            "union": [
                {"name": "speaks", "params": {"language": "en"}},
                {"name": "speaks", "params": {"language": "nl"}},
            ]
        },
        [4, 7],
    ),
]


@pytest.mark.parametrize(("body", "expected"), [s[1:] for s in SETS], ids=[s[0] for s in SETS])
def test_set_operations_combine_selections(
    resort: Engine, tmp_path: Path, body: dict, expected: list[int]
) -> None:
    write(tmp_path, "stayed", rules({"activity": {"type": "hotel_stay"}}))
    write(tmp_path, "bought_jewellery", rules({"bought": {"category": "juwelier"}}))
    write(tmp_path, "water_park", rules({"activity": {"type": "water_park_ticket"}}))
    write(
        tmp_path,
        "speaks",
        rules(
            {"contact": {"language": {"param": "language"}}},
            params={"language": {"type": "string", "default": "de"}},
        ),
    )
    write(tmp_path, "stayed_or_jewellery", {"description": "x", "union": ["stayed", "bought_jewellery"]})
    write(tmp_path, "combined", {"description": "combined", **body})
    assert select_ids(resort, "combined", tmp_path) == expected


def test_every_selection_is_listed_and_gets_a_version_of_its_files(tmp_path: Path) -> None:
    write(tmp_path, "stayed", rules({"activity": {"type": "hotel_stay"}}))
    write(tmp_path, "adults", rules({"all": [{"selection": "stayed"}, {"contact": {"age": {"ge": 18}}}]}))
    write(tmp_path, "owls", "-- description: x\nselect contact_id from core.contact", ".sql")
    (tmp_path / "README.md").write_text("not a selection")
    assert list_selections(tmp_path) == ["adults", "owls", "stayed"]
    before = load_selection("adults", tmp_path)
    assert len(before.version) == 16 and set(before.version) <= set("0123456789abcdef")
    assert load_selection("adults", tmp_path).version == before.version
    write(tmp_path, "stayed", rules({"activity": {"type": "hotel_stay", "within_days": 30}}))
    after = load_selection("adults", tmp_path)
    assert after.version != before.version, "a change in a referenced selection changes the version"
    assert set(after.references) == {"stayed"}
    assert not after.runs_sql_file and load_selection("owls", tmp_path).runs_sql_file


def test_the_selections_folder_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "only_here", rules({"contact": {"language": "de"}}))
    monkeypatch.setenv("KMS_SELECTIONS_DIR", str(tmp_path))
    assert list_selections() == ["only_here"]
    assert load_selection("only_here").path == tmp_path / "only_here.yaml"


def test_the_query_has_one_column_and_binds_every_value(tmp_path: Path) -> None:
    write(
        tmp_path,
        "guests",
        rules(
            {
                "all": [
                    {"contact": {"last_name": {"eq": "Weber-Unique-Name"}}},
                    {"activity": {"type": "hotel_stay", "outlet": "Outlet-Unique-Name", "count": {"min": 7}}},
                ]
            }
        ),
    )
    query = load_selection("guests", tmp_path).query(as_of=AS_OF)
    assert [c.name for c in query.selected_columns] == ["contact_id"]
    sql = str(query.compile())
    assert "Unique-Name" not in sql and "hotel_stay" not in sql and " 7" not in sql
    assert "GROUP BY" in sql and "EXISTS" in sql


def test_an_activity_condition_uses_the_covering_indexes(resort: Engine, tmp_path: Path) -> None:
    write(
        tmp_path,
        "lapsed",
        rules(
            {
                "all": [
                    {"activity": {"type": "restaurant_bill", "count": {"min": 2}}},
                    {"not": {"activity": {"type": "restaurant_bill", "within_days": 180}}},
                ]
            }
        ),
    )
    query = load_selection("lapsed", tmp_path).query(as_of=AS_OF)
    compiled = query.compile(dialect=resort.dialect, compile_kwargs={"render_postcompile": True})
    with resort.connect() as conn, read_only(conn):
        # The tables hold a handful of rows, which PostgreSQL would rather read whole; the
        # shape of the plan is what is checked here, as on the benchmark's 10M activities.
        conn.execute(text("set local enable_seqscan = off"))
        conn.execute(text("set local enable_bitmapscan = off"))
        plan = "\n".join(conn.exec_driver_sql("explain " + str(compiled), compiled.params).scalars())
    scans = [line.strip().split("  (")[0] for line in plan.splitlines() if " on activity " in line]
    assert len(scans) == 2, plan
    for scan in scans:
        assert re.search(r"Index Only Scan using activity_(contact_type_time|type_time)_idx", scan), plan
    assert "Anti Join" in plan, "NOT EXISTS must become an anti join, not a subplan per contact"


CYCLES = [
    ("self", {"selfish": {"selection": "selfish"}}, "selfish", "selfish -> selfish"),
    ("two", {"a": {"selection": "b"}, "b": {"not": {"selection": "a"}}}, "a", "a -> b -> a"),
    (
        "three-in-a-set",
        {"a": {"selection": "b"}, "b": {"all": [{"selection": "c"}]}, "c": {"selection": "a"}},
        "a",
        "a -> b -> c -> a",
    ),
]


@pytest.mark.parametrize(("files", "start", "cycle"), [c[1:] for c in CYCLES], ids=[c[0] for c in CYCLES])
def test_a_cycle_of_references_is_refused(tmp_path: Path, files: dict, start: str, cycle: str) -> None:
    for name, condition in files.items():
        write(tmp_path, name, rules(condition))
    with pytest.raises(SelectionError, match=f"cycle: {cycle}$"):
        load_selection(start, tmp_path)


def test_a_cycle_through_a_set_operation_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "a", {"description": "x", "union": ["b", "c"]})
    write(tmp_path, "b", rules({"contact": {"language": "de"}}))
    write(tmp_path, "c", {"description": "x", "exclusion": {"from": "b", "minus": ["a"]}})
    with pytest.raises(
        SelectionError,
        match=re.escape("exclusion.minus[0]: selections reference each other in a cycle: a -> c -> a"),
    ):
        load_selection("a", tmp_path)


# (id, file content, place and problem after "<file>: ")
INVALID = [
    ("not-a-mapping", "- a\n- b\n", "must be a mapping with description and rules (or union, intersection, exclusion)"),
    ("bad-yaml", "description: [\n", "is not valid YAML: while parsing a flow node"),
    ("unknown-top-key", {"description": "x", "rule": {}}, "rule: unknown key (expected: description, params, rules, union, intersection, exclusion)"),
    ("no-description", {"rules": {"contact": {"language": "de"}}}, "description: is required: one line saying who the selection finds"),
    ("two-bodies", {"description": "x", "rules": {}, "union": []}, "needs exactly one of rules, union, intersection, exclusion (found rules, union)"),
    ("two-conditions-in-one", rules({"contact": {"language": "de"}, "account": {"type": "company"}}), "rules: a condition is a mapping with exactly one of: all, any, not, contact, account, location, activity, bought, consent, household, selection (got contact, account)"),
    ("unknown-condition", rules({"all": [{"consents": {"channel": "email"}}]}), "rules.all[0].consents: unknown condition (expected one of: all, any, not, contact, account, location, activity, bought, consent, household, selection)"),
    ("empty-all", rules({"all": []}), "rules.all: must be a non-empty list of conditions"),
    ("unknown-field", rules({"contact": {"shoe_size": {"eq": 42}}}), "rules.contact.shoe_size: unknown contact field 'shoe_size' (fields: contact_id, salutation, first_name, last_name, birth_date, age, email, phone, language, created_at)"),
    ("unknown-operator", rules({"contact": {"age": {"like": 3}}}), "rules.contact.age.like: unknown operator 'like' for contact.age (operators: eq, ne, lt, le, gt, ge, between, is_null, is_not_null)"),
    ("contains-on-a-date", rules({"contact": {"birth_date": {"contains": "1980"}}}), "rules.contact.birth_date.contains: unknown operator 'contains' for contact.birth_date (operators: eq, ne, in, not_in, lt, le, gt, ge, between, is_null, is_not_null)"),
    ("text-for-age", rules({"contact": {"age": {"ge": "eighteen"}}}), "rules.contact.age.ge: must be an integer, not 'eighteen'"),
    ("negative-age", rules({"contact": {"age": {"ge": -1}}}), "rules.contact.age.ge: must not be negative, not -1"),
    ("unquoted-postal-code", rules({"location": {"postal_code": 80331}}), "rules.location.postal_code.eq: must be a string (quote it in YAML if it looks like a number or a date), not 80331"),
    ("empty-in", rules({"contact": {"language": {"in": []}}}), "rules.contact.language.in: must not be an empty list"),
    ("between-one-value", rules({"contact": {"age": {"between": [18]}}}), "rules.contact.age.between: must be a list of two values [low, high], not [18]"),
    ("is-null-yes-please", rules({"contact": {"email": {"is_null": "yes"}}}), "rules.contact.email.is_null: must be true or false, not 'yes'"),
    ("unknown-account-type", rules({"account": {"type": "family"}}), "rules.account.type.eq: unknown value 'family' (expected one of: household, company)"),
    ("unknown-activity-key", rules({"activity": {"typ": "hotel_stay"}}), "rules.activity.typ: unknown key (expected one of: type, source_system, outlet, currency, sku, category, within_days, since, until, count, amount)"),
    ("unknown-activity-type", rules({"activity": {"type": "hotel_sty"}}), "rules.activity.type: unknown value 'hotel_sty' (expected one of: hotel_stay, restaurant_bill, bar_bill, shop_purchase, water_park_ticket, dolphinarium_ticket, web_registration, web_login, web_page_view, newsletter_signup, comment, rating, call)"),
    ("unknown-source-system", rules({"activity": {"source_system": ["website", "pos"]}}), "rules.activity.source_system: unknown value 'pos' (expected one of: crm, hotel_pms, restaurant_pos, shop_pos, ticketing, website, kms, product_catalogue)"),
    ("text-within-days", rules({"activity": {"within_days": "x"}}), "rules.activity.within_days: must be an integer, not 'x'"),
    ("zero-within-days", rules({"activity": {"within_days": 0}}), "rules.activity.within_days: must be a positive integer, not 0"),
    ("date-as-text", rules({"activity": {"since": "last year"}}), "rules.activity.since: must be a date (YYYY-MM-DD), not 'last year'"),
    ("count-not-a-mapping", rules({"activity": {"count": 3}}), "rules.activity.count: must be {min: ..., max: ...} (one or both), not 3"),
    ("count-min-above-max", rules({"activity": {"count": {"min": 3, "max": 2}}}), "rules.activity.count: min 3 is above max 2"),
    ("negative-amount", rules({"activity": {"amount": {"min": -5}}}), "rules.activity.amount.min: must not be negative, not -5"),
    ("consent-without-purpose", rules({"consent": {"channel": "email"}}), "rules.consent: must name the channel and the purpose, e.g. {channel: email, purpose: newsletter}"),
    ("consent-unknown-channel", rules({"consent": {"channel": "fax", "purpose": "offers"}}), "rules.consent.channel: unknown value 'fax' (expected one of: email, sms, push, phone, post)"),
    ("consent-bad-purpose", rules({"consent": {"channel": "email", "purpose": "News Letter"}}), "rules.consent.purpose: is not a purpose (lower-case letters, digits, _): 'News Letter'"),
    ("consent-bad-status", rules({"consent": {"channel": "email", "purpose": "x", "status": "yes"}}), "rules.consent.status: must be opt_in or opt_out, not 'yes'"),
    ("consent-double-opt-out", rules({"consent": {"channel": "email", "purpose": "x", "status": "opt_out", "double_opt_in": True}}), "rules.consent.double_opt_in: must be true or false, and true only with status opt_in"),
    ("bought-without-product", rules({"bought": {"within_days": 30}}), "rules.bought: needs the product: sku or category"),
    ("unknown-parameter", rules({"activity": {"within_days": {"param": "dayz"}}}, params={"days": {"type": "integer", "default": 1}}), "rules.activity.within_days: unknown parameter 'dayz' (declared: days)"),
    ("parameter-of-wrong-type", rules({"activity": {"within_days": {"param": "d"}}}, params={"d": {"type": "date", "default": "2026-01-01"}}), "rules.activity.within_days: parameter 'd' is date, but this place needs an integer"),
    ("parameter-with-extra-key", rules({"activity": {"within_days": {"param": "d", "default": 3}}}, params={"d": {"type": "integer", "default": 1}}), "rules.activity.within_days: a parameter reference is written {param: name} and nothing else"),
    ("unused-parameter", rules({"contact": {"language": "de"}}, params={"days": {"type": "integer", "default": 1}}), "params.days: is declared but never used"),
    ("unknown-parameter-type", rules({"contact": {"age": {"param": "a"}}}, params={"a": {"type": "int", "default": 1}}), "params.a.type: must be one of integer, number, string, date, boolean, string_list, not 'int'"),
    ("default-of-wrong-type", rules({"contact": {"age": {"param": "a"}}}, params={"a": {"type": "integer", "default": "x"}}), "params.a.default: must be an integer, not 'x'"),
    ("unknown-parameter-key", rules({"contact": {"age": {"param": "a"}}}, params={"a": {"type": "integer", "min": 1}}), "params.a.min: unknown key (expected: type, default, description)"),
    ("bad-parameter-name", rules({"contact": {"age": {"param": "A"}}}, params={"A": {"type": "integer"}}), "params.A: is not a parameter name (lower-case letters, digits, _)"),
    ("missing-selection", rules({"selection": "nobody_here"}), "rules.selection: no selection 'nobody_here' (nobody_here.yaml or nobody_here.sql) in {folder}"),
    ("path-as-selection-name", rules({"selection": "../secrets"}), "rules.selection: '../secrets' is not a selection name (lower-case letters, digits, _)"),
    ("reference-with-unknown-argument", rules({"selection": {"name": "base", "params": {"days": 3}}}), "rules.selection.params.days: selection 'base' has no parameter 'days' (declared: none)"),
    ("union-of-one", {"description": "x", "union": ["base"]}, "union: must be a list of at least two selections"),
    ("exclusion-without-minus", {"description": "x", "exclusion": {"from": "base"}}, "exclusion: must be {from: selection, minus: [selection, ...]}"),
]  # fmt: skip


@pytest.mark.parametrize(("content", "problem"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_a_mistake_is_refused_when_loading_with_file_place_and_problem(
    tmp_path: Path, content: dict | str, problem: str
) -> None:
    write(tmp_path, "base", rules({"contact": {"language": "de"}}))
    path = write(tmp_path, "broken", content)
    with pytest.raises(SelectionError) as error:
        load_selection("broken", tmp_path)
    assert str(error.value).startswith(f"{path}: {problem.replace('{folder}', str(tmp_path))}")


def test_a_missing_selection_and_a_name_twice_are_refused(tmp_path: Path) -> None:
    (tmp_path.parent / "outside.yaml").write_text(yaml.safe_dump(rules({"contact": {"language": "de"}})))
    with pytest.raises(SelectionError, match=re.escape("selection: '../outside' is not a selection name")):
        load_selection("../outside", tmp_path)
    with pytest.raises(
        SelectionError, match=re.escape("selection: no selection 'ghost' (ghost.yaml or ghost.sql)")
    ):
        load_selection("ghost", tmp_path)
    write(tmp_path, "twice", rules({"contact": {"language": "de"}}))
    write(tmp_path, "twice", "-- description: x\nselect contact_id from core.contact", ".sql")
    with pytest.raises(SelectionError, match=re.escape("twice.yaml and twice.sql both exist; keep one")):
        load_selection("twice", tmp_path)


def test_messages_name_files_of_the_project_relative_to_it() -> None:
    with pytest.raises(SelectionError) as error:
        load_selection("no_such_selection_anywhere")
    assert str(error.value) == (
        "selection: no selection 'no_such_selection_anywhere' (no_such_selection_anywhere.yaml or "
        "no_such_selection_anywhere.sql) in selections"
    )


def test_not_x_and_not_household_x_read_the_activities_once(tmp_path: Path) -> None:
    """The merged form is one anti join over accounts, not two reads of the same activities."""
    write(tmp_path, "picked", rules({"all": [{"not": WATER_PARK}, {"not": {"household": WATER_PARK}}]}))
    sql = str(load_selection("picked", tmp_path).query(as_of=AS_OF))
    assert sql.count("FROM core.activity") == 1
    assert "!=" not in sql
