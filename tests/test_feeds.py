"""Feed specs: every shipped feed loads, mistakes are named by file, field and problem, and a
new source system is added in YAML alone."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import text

from campaign_lib.config import PROJECT_ROOT
from campaign_lib.errors import ConfigError
from campaign_lib.generator.feeds import FEEDS
from campaign_lib.ingest.feeds import load_feed, load_feeds
from campaign_lib.ingest.parse import parse_file
from campaign_lib.ingest.record import RejectedRow, SourceRecord
from campaign_lib.ingest.sftp_ingest import register_feed

GENERATOR_FEEDS = {feed.name: feed for feed in FEEDS}


def test_every_generator_feed_has_a_spec_that_matches_its_export_format():
    specs = load_feeds()
    assert set(specs) == set(GENERATOR_FEEDS)
    for name, feed in GENERATOR_FEEDS.items():
        spec = specs[name]
        assert spec.sftp.folder == feed.folder
        assert spec.format.bom == feed.bom
        if feed.is_jsonl:
            assert spec.format.type == "jsonl"
        else:
            assert spec.header == feed.columns
            assert spec.format.delimiter == feed.delimiter
        assert spec.format.encoding == {"latin-1": "iso8859-1"}.get(feed.encoding, feed.encoding)
        assert spec.matches(f"{feed.folder}/{feed.file_name(dt.datetime(2025, 1, 1, 6, 5))}")


@pytest.mark.parametrize(
    ("feed", "file_name", "expected"),
    [
        ("hotel_pms", "PMS_RESERVATIONS_20250101T0605.csv", True),
        ("hotel_pms", "hotel_pms/PMS_RESERVATIONS_20250101T0605.csv", True),
        ("hotel_pms", "PMS_RESERVATIONS_20250101T0605.csv.part", False),
        ("crm_contacts", "CRM_ACCOUNTS_20261101_0200.csv", False),
        ("website", "web_events_20250101T003000Z.jsonl", True),
    ],
    ids=["bare-name", "with-folder", "part-file", "other-crm-file", "jsonl"],
)
def test_matches_file_names(feed, file_name, expected):
    assert load_feeds()[feed].matches(file_name) is expected


def test_crm_feeds_and_the_catalogue_are_snapshots_and_activity_feeds_are_not():
    specs = load_feeds()
    assert {name for name, spec in specs.items() if spec.snapshot.enabled} == {
        "crm_accounts",
        "crm_contacts",
        "crm_addresses",
        "products",
    }
    assert {spec.source_system for name, spec in specs.items() if name.startswith("crm_")} == {"crm"}
    assert {name for name, spec in specs.items() if spec.target == "product"} == {"products"}


GOOD = """\
name: {name}
source_system: ticketing
record_kind: ticket
description: a test feed
sftp: {{folder: t, pattern: "t_*.csv", completeness: stable_size}}
format: {{type: csv, encoding: utf-8, delimiter: ","}}
header: [id, email, price]
required: [id]
natural_key: [id]
mapping:
  email: {{email: email}}
  amount_cents: {{amount: price, currency: EUR}}
"""


def _write(tmp_path: Path, text: str, name: str = "demo") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("email: {email: email}", "email: {emial: email}"), "mapping.email: unknown converter 'emial'"),
        (("{email: email}", "{email: email, regoin: DE}"), "mapping.email: unknown setting 'regoin'"),
        (("{email: email}", "{text: email, email: email}"), "mapping.email: more than one converter"),
        (("{email: email}", "{email: emial}"), "mapping.email: column 'emial' is not in the header"),
        (
            ("  email: {email: email}", "  emial: {email: email}"),
            "mapping.emial: not a field a feed can fill",
        ),
        (("{email: email}", "{date: email}"), "mapping.email: converter 'date' cannot fill this field"),
        (
            ("currency: EUR", "currency: euro"),
            "mapping.amount_cents: currency 'euro' is not an ISO 4217 code",
        ),
        (("encoding: utf-8", "encoding: utf-42"), "format.encoding: unknown encoding 'utf-42'"),
        (("type: csv", "type: xml"), "format.type: Input should be 'csv' or 'jsonl'"),
        (
            ("source_system: ticketing", "source_system: Ticket Shop"),
            "source_system: String should match pattern",
        ),
        (("natural_key: [id]", "natural_key: [ident]"), "natural_key: column 'ident' is not in the header"),
        (("description: a test feed\n", ""), "description: missing"),
        (("required: [id]", "requierd: [id]"), "(top level): unknown setting 'requierd'"),
        (("completeness: stable_size", "completeness: sometimes"), "sftp.completeness: Input should be"),
        (
            ("  amount_cents: {amount: price, currency: EUR}", "  activity_type: {constant: skydiving}"),
            "mapping.activity_type: 'skydiving' is not a activity_type; one of: hotel_stay, ",
        ),
        (
            ("mapping:", "activity_types: {Sky Diving: Jumps}\nmapping:"),
            "activity_types.Sky Diving.[key]: String should match pattern",
        ),
        (
            ("mapping:", "activity_types: {skydiving: ' '}\nmapping:"),
            "activity_types: skydiving: give a description (what a campaign manager sees)",
        ),
        (
            ("record_kind: ticket", "record_kind: product\ntarget: product"),
            "mapping.product_sku: missing (a product feed maps product_sku, product_name)",
        ),
        (
            ("record_kind: ticket", "record_kind: product\ntarget: product"),
            "attributes.category: missing (a product feed maps the category)",
        ),
        (("record_kind: ticket", "record_kind: ticket\ntarget: products"), "target: Input should be"),
    ],
    ids=[
        "converter-typo",
        "option-typo",
        "two-converters",
        "column-typo",
        "field-typo",
        "converter-for-wrong-field",
        "bad-currency",
        "unknown-encoding",
        "unknown-format",
        "source-system-not-a-code",
        "key-not-in-header",
        "missing-setting",
        "top-level-typo",
        "bad-completeness",
        "unknown-activity-type",
        "activity-type-not-a-code",
        "activity-type-without-description",
        "product-feed-without-sku",
        "product-feed-without-category",
        "unknown-target",
    ],
)
def test_a_mistake_names_file_field_and_problem(tmp_path, change, message):
    old, new = change
    text = GOOD.format(name="demo")
    assert old in text
    path = _write(tmp_path, text.replace(old, new))
    with pytest.raises(ConfigError) as error:
        load_feed(path)
    assert f"{path}: {message}" in str(error.value)


def test_the_good_feed_loads(tmp_path):
    spec = load_feed(_write(tmp_path, GOOD.format(name="demo")))
    assert spec.name == "demo"


def test_relative_label_inside_the_project():
    with pytest.raises(ConfigError, match=r"^feeds/nope\.yaml: cannot be read"):
        load_feed(PROJECT_ROOT / "feeds" / "nope.yaml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: [unclosed", "is not valid YAML"),
        ("- a list", "must hold a mapping of settings"),
    ],
    ids=["broken-yaml", "not-a-mapping"],
)
def test_unreadable_files(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_feed(_write(tmp_path, text))


def test_file_name_must_match_feed_name(tmp_path):
    with pytest.raises(ConfigError, match="name: 'other' must match the file name 'demo'"):
        load_feed(_write(tmp_path, GOOD.format(name="other")))


def test_load_feeds_reports_the_bad_file(tmp_path):
    _write(tmp_path, GOOD.format(name="good"), "good")
    _write(tmp_path, GOOD.format(name="bad").replace("{email: email}", "{emial: email}"), "bad")
    with pytest.raises(ConfigError, match=r"bad\.yaml: mapping\.email: unknown converter 'emial'"):
        load_feeds(tmp_path)


def test_a_new_booking_system_needs_only_yaml(tmp_path):
    """A spa booking system nobody wrote code for: tab-separated, cp1252, German dates and amounts."""
    feed = _write(
        tmp_path,
        """\
        name: spa_bookings
        source_system: spa
        source_name: Spa booking system
        source_trust_rank: 45
        record_kind: spa_booking
        description: Bookings of the spa's own system, exported nightly.
        activity_types:
          spa_treatment: A treatment booked at the spa
        sftp: {folder: spa, pattern: "SPA_*.txt", completeness: done_marker}
        format:
          type: csv
          encoding: cp1252
          delimiter: "\\t"
          line_end: crlf
          decimal_separator: ","
          thousands_separator: "."
          date_format: "%d.%m.%Y"
          datetime_formats: ["%d.%m.%Y %H:%M"]
          timezone: Europe/Berlin
          default_region: AT
        header: [Buchung, Kunde, Name, Mail, Handy, Land, Termin, Preis, Behandlung, Zimmer]
        required: [Buchung, Termin, Preis]
        natural_key: [Buchung]
        mapping:
          source_customer_id: {template: "spa:{Kunde}"}
          booking_ref: {text: Zimmer}
          last_name: {name: Name, split: "last, first", part: last}
          first_name: {name: Name, split: "last, first", part: first}
          email: {email: Mail}
          phone_e164: {phone: Handy, region_from: Land}
          country_code: {country: Land}
          activity_type: {map: Behandlung, values: {}, default: spa_treatment}
          occurred_at: {datetime: Termin}
          amount_cents: {amount: Preis, currency: EUR}
          product_name: {text: Behandlung}
        attributes:
          treatment: {text: Behandlung}
        """,
        "spa_bookings",
    )
    spec = load_feed(feed)
    data = tmp_path / "SPA_20250101.txt"
    data.write_bytes(
        "Buchung\tKunde\tName\tMail\tHandy\tLand\tTermin\tPreis\tBehandlung\tZimmer\r\n"
        "B1\tK7\tGräf, Jürgen\tJ.Graef@Example.COM\t0664 1234567\tÖsterreich\t30.03.2025 10:30\t1.249,90\t"
        "Hot Stone \u2013 Massage\t\r\n".encode("cp1252")
    )
    assert spec.matches(data.name)
    [record] = list(parse_file(spec, data))
    assert isinstance(record, SourceRecord), record
    assert (record.source_key, record.source_customer_id) == ("B1", "spa:K7")
    assert (record.first_name, record.last_name) == ("Jürgen", "Gräf")
    assert record.email == "j.graef@example.com"
    assert record.phone_e164 == "+436641234567"
    assert record.country_code == "AT"
    assert record.amount_cents == 124990 and record.currency == "EUR"
    assert record.occurred_at.isoformat() == "2025-03-30T10:30:00+02:00"
    assert record.product_name == "Hot Stone \u2013 Massage"
    assert record.booking_ref is None
    assert record.activity_type == "spa_treatment"
    assert not isinstance(record, RejectedRow)


def test_an_activity_type_read_from_a_column_must_be_known(tmp_path):
    """A column read as it is (not a value map) can hold anything: a row with an unknown type is refused."""
    spec = load_feed(
        _write(
            tmp_path,
            """\
            name: demo
            source_system: ticketing
            record_kind: ticket
            description: a test feed
            activity_types: {skydiving: A tandem jump}
            sftp: {folder: t, pattern: "t_*.csv", completeness: stable_size}
            format: {type: csv, encoding: utf-8, delimiter: ","}
            header: [id, day, kind]
            natural_key: [id]
            mapping:
              occurred_at: {datetime: day, date_only: true}
              activity_type: {text: kind}
            """,
        )
    )
    data = tmp_path / "t_1.csv"
    data.write_text("id,day,kind\n1,2025-01-01,skydiving\n2,2025-01-01,bungee\n")
    first, second = parse_file(spec, data)
    assert isinstance(first, SourceRecord) and first.activity_type == "skydiving"
    assert isinstance(second, RejectedRow)
    assert second.reasons[0].startswith("activity_type 'bungee' is not one of hotel_stay, ")
    assert second.reasons[0].endswith(", call, skydiving")


def _forget_spa(engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("delete from core.activity_type where activity_type = 'spa_treatment'"))
        conn.execute(text("delete from core.source_system where source_system = 'spa_test'"))


def test_a_new_source_system_and_its_activity_types_are_registered_when_its_feed_loads(
    clean_db, request
) -> None:
    crm = load_feeds()["crm_contacts"]
    spa = crm.model_copy(
        update={
            "source_system": "spa_test",
            "source_name": "Spa booking system",
            "source_trust_rank": 45,
            "activity_types": {"spa_treatment": "  A treatment booked at the spa ", "hotel_stay": "Renamed"},
        }
    )
    register_feed(clean_db, spa)
    register_feed(clean_db, spa)
    register_feed(clean_db, crm)
    # Reference rows outlive clean_db's truncation: remove this test's own afterwards.
    request.addfinalizer(lambda: _forget_spa(clean_db))
    with clean_db.connect() as conn:
        rows = dict(
            conn.execute(
                text(
                    "select source_system, trust_rank from core.source_system where source_system in ('spa_test', 'crm')"
                )
            ).all()
        )
        types = dict(
            conn.execute(
                text(
                    "select activity_type, description from core.activity_type "
                    "where activity_type in ('spa_treatment', 'hotel_stay')"
                )
            ).all()
        )
    assert rows == {"spa_test": 45, "crm": 90}
    # A new type gets its description; a built-in one keeps its own.
    assert types == {
        "spa_treatment": "A treatment booked at the spa",
        "hotel_stay": "A hotel reservation (arrival to departure)",
    }
