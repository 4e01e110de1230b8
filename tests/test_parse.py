"""The parser and the standardisation: generator output, adversarial files, single values."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest

from campaign_lib.errors import FileRejected
from campaign_lib.generator import generate
from campaign_lib.ingest.feeds import load_feeds
from campaign_lib.ingest.load import _copy_columns, _copy_value, _line_function
from campaign_lib.ingest.parse import _splitter, parse_file
from campaign_lib.ingest.record import RECORD_COLUMNS, RejectedRow, SourceRecord
from campaign_lib.ingest.standardise import (
    FieldIssue,
    RowProblem,
    check_birth_date,
    clean_email,
    clean_name,
    clean_phone,
    country_code,
    datetime_parser,
    parse_amount,
    parse_date,
)

SPECS = load_feeds()
TODAY = dt.date(2026, 11, 22)
DIRTY_ISSUES = {"invalid_email", "invalid_phone", "birth_date_placeholder"}


# Generator output ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("generated") / "data"
    generate(out, 300, 11)
    return out


def _parse_all(spec, path: Path):
    parsed = parse_file(spec, path, today=TODAY)
    return list(parsed), parsed.stats


@pytest.mark.parametrize("feed", sorted(SPECS), ids=sorted(SPECS))
def test_generator_output_parses_cleanly(generated, feed):
    manifest = json.loads((generated / "manifest.json").read_text())
    entries = [entry for entry in manifest["files"] if entry["feed"] == feed]
    assert entries
    spec = SPECS[feed]
    issues: Counter[str] = Counter()
    records = []
    for entry in entries:
        assert spec.matches(entry["path"])
        items, stats = _parse_all(spec, generated / entry["path"])
        rejected = [item for item in items if isinstance(item, RejectedRow)]
        assert rejected == []
        assert len(items) == stats.records == stats.rows == entry["rows"]
        issues.update(stats.issues)
        records.extend(items)
    assert set(issues) <= DIRTY_ISSUES
    for record in records:
        assert record.source_system == spec.source_system and record.record_kind == spec.record_kind
        invalid = record.attributes.get("invalid", {})
        if "email" in invalid:
            assert record.email is None
        if "phone_e164" in invalid:
            assert record.phone_e164 is None
    assert sum(len(record.attributes.get("invalid", {})) for record in records) == (
        issues["invalid_email"] + issues["invalid_phone"]
    )
    # Keys are unique within a feed, as ingest.record's unique constraint needs.
    assert len({record.source_key for record in records}) == len(records)
    # The loader writes only the fields a parsed file's records can fill; that loses nothing.
    filled = parse_file(spec, generated / entries[0]["path"]).record_fields
    columns = _copy_columns(filled)
    for record in records:
        assert _line_function(filled)(record) == "\t".join(_copy_value(getattr(record, c)) for c in columns)
        assert all(getattr(record, name) is None for name in set(RECORD_COLUMNS) - filled)


def test_generator_pms_identity_fields(generated):
    spec = SPECS["hotel_pms"]
    records = [r for path in sorted((generated / "hotel_pms").iterdir()) for r in parse_file(spec, path)]
    main = [r for r in records if r.attributes["guest_role"] == "main_guest"]
    others = [r for r in records if r.attributes["guest_role"] == "accompanying_guest"]
    assert main and others
    assert all(r.booking_ref == r.source_key.split(":")[0] for r in main)
    assert all(r.booking_ref is None and r.amount_cents == 0 for r in others)
    assert all(r.activity_type == "hotel_stay" and r.ended_at >= r.occurred_at for r in records)
    assert all(r.source_customer_id == "hotel_pms:" + r.source_key.split(":")[1] for r in records)
    assert all(r.birth_date is None or r.birth_date >= dt.date(1900, 1, 2) for r in records)


def test_generator_website_events(generated):
    spec = SPECS["website"]
    records = [r for path in sorted((generated / "website").iterdir()) for r in parse_file(spec, path)]
    by_type = {}
    for record in records:
        by_type.setdefault(record.activity_type, record)
    assert {"web_registration", "web_page_view", "newsletter_signup", "web_login"} <= set(by_type)
    signup = by_type["newsletter_signup"]
    assert (signup.consent_channel, signup.consent_purpose, signup.consent_status) == (
        "email",
        "newsletter",
        "opt_in",
    )
    assert by_type["web_page_view"].source_customer_id is None and by_type["web_page_view"].cookie_id
    assert by_type["web_login"].source_customer_id.startswith("website:W")
    for record in records:
        assert record.occurred_at.tzinfo is not None
        if record.inquiry_body is not None:
            assert record.activity_type is None and record.inquiry_topic


# Adversarial files -------------------------------------------------------------------------

SHOP_HEADER = (
    "receipt_id,line_no,shop,sold_at,loyalty_card,sku,product,quantity,amount,currency,customer_email\n"
)
SHOP_ROW = "S01-{n},1,Souvenirshop,2025-01-10 12:00:00,,SOU-1,Wasser,1,2.50,EUR,\n"
PMS_HEADER = (
    "ResNr;GastNr;Gastrolle;Anrede;Titel;Vorname;Nachname;Geburtsdatum;EMail;Telefon;Straße;PLZ;Ort;"
    "Land;Firma;Anreise;Abreise;Zimmertyp;Erwachsene;Kinder;Betrag;Währung;Buchungskanal\r\n"
)
PMS_ROW = (
    "100000001;200000001;H;Herr;;Jürgen;Müller;17.12.1980;j.mueller@gmx.de;0170 1234567;Hauptstraße 5;"
    "80331;München;Deutschland;;01.08.2025;04.08.2025;DZ Seeblick;2;0;1.234,50;EUR;Direkt\r\n"
)
POS_HEADER = (
    "receipt_id,outlet,outlet_type,closed_at,loyalty_card,guest_name,guest_email,room_number,"
    "reservation_number,covers,amount,currency,payment_method\n"
)
POS_ROW = 'R01-1,Seeterrasse,restaurant,2025-07-01T20:15:00,,"Müller, Jürgen",,7068,100000001,2,73.06,EUR,room_charge\n'
WEB_ROW = (
    '{"event_id":"e1","event_type":"page_view","occurred_at":"2025-07-01T18:03:11+02:00",'
    '"cookie_id":"70cf2afc7de497a1","url":"https://x/","referrer":""}\n'
)


def _file(tmp_path: Path, content: bytes | str, name: str = "f.csv", encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode(encoding))
    return path


FILE_LEVEL = [
    ("empty-file", "shop_pos", b"", "empty file"),
    ("bom-only", "restaurant_pos", b"\xef\xbb\xbf", "empty file"),
    ("header-only", "shop_pos", SHOP_HEADER.encode(), "no data rows"),
    (
        "semicolons-instead-of-commas",
        "shop_pos",
        (SHOP_HEADER + SHOP_ROW.format(n=1)).replace(",", ";").encode(),
        "wrong delimiter: the header is separated by semicolons instead of commas",
    ),
    (
        "missing-and-unexpected-column",
        "shop_pos",
        (SHOP_HEADER.replace("quantity", "qty") + SHOP_ROW.format(n=1)).encode(),
        "header does not match feed shop_pos: missing columns quantity; unexpected columns 'qty'",
    ),
    (
        "columns-reordered",
        "shop_pos",
        (SHOP_HEADER.replace("sku,product", "product,sku") + SHOP_ROW.format(n=1)).encode(),
        "columns in another order",
    ),
    (
        "invalid-utf8-with-offset",
        "shop_pos",
        (SHOP_HEADER + SHOP_ROW.format(n=1)).encode() + b"S01-2,1,Caf\xe9,2025-01-10 12:00:00\n",
        f"not valid utf-8: byte 0xe9 at offset {len(SHOP_HEADER + SHOP_ROW.format(n=1)) + 11} (line 3)",
    ),
    (
        "utf8-into-latin1-feed",
        "hotel_pms",
        PMS_HEADER.encode("latin-1") + PMS_ROW.encode("utf-8"),
        "holds UTF-8 read as iso8859-1",
    ),
    (
        "utf8-header-into-latin1-feed",
        "hotel_pms",
        (PMS_HEADER + PMS_ROW).encode("utf-8"),
        "line 1 holds UTF-8 read as iso8859-1",
    ),
    (
        "bom-in-latin1-feed",
        "hotel_pms",
        b"\xef\xbb\xbf" + (PMS_HEADER + PMS_ROW).encode("latin-1"),
        "starts with a UTF-8 byte order mark, but feed hotel_pms is iso8859-1",
    ),
    (
        "last-line-without-terminator",
        "shop_pos",
        (SHOP_HEADER + SHOP_ROW.format(n=1) + SHOP_ROW.format(n=2).rstrip("\n")).encode(),
        "truncated: the last line (3) has no line terminator",
    ),
    (
        "last-line-cut-mid-row",
        "shop_pos",
        (SHOP_HEADER + SHOP_ROW.format(n=1) + "S01-2,1,Souvenirshop\n").encode(),
        "truncated: the last line (3) has 3 fields, the header 11",
    ),
    (
        "unterminated-quote-at-end",
        "shop_pos",
        (
            SHOP_HEADER + SHOP_ROW.format(n=1) + 'S01-2,1,Shop,2025-01-10 12:00:00,,SOU-1,"Wasser 0,5\n'
        ).encode(),
        "truncated: the quoted field opened on line 3 is not closed at the end of the file",
    ),
    (
        "jsonl-last-line-without-terminator",
        "website",
        (WEB_ROW + WEB_ROW.replace("e1", "e2").rstrip("\n")).encode(),
        "truncated: the last line (2) has no line terminator",
    ),
]


@pytest.mark.parametrize(
    ("feed", "content", "message"), [c[1:] for c in FILE_LEVEL], ids=[c[0] for c in FILE_LEVEL]
)
def test_file_level_problems_reject_the_file_before_any_row(tmp_path, feed, content, message):
    parsed = parse_file(SPECS[feed], _file(tmp_path, content))
    with pytest.raises(FileRejected) as error:
        next(parsed)
    assert message in str(error.value)


def test_missing_bom_is_fine_and_bom_is_dropped(tmp_path):
    spec = SPECS["restaurant_pos"]
    for content in ((POS_HEADER + POS_ROW).encode(), b"\xef\xbb\xbf" + (POS_HEADER + POS_ROW).encode()):
        [record] = list(parse_file(spec, _file(tmp_path, content)))
        assert isinstance(record, SourceRecord)
        assert (record.source_key, record.first_name, record.last_name) == ("R01-1", "Jürgen", "Müller")
        assert record.booking_ref == "100000001" and record.amount_cents == 7306


def _rows(tmp_path, feed, content, **kwargs):
    parsed = parse_file(SPECS[feed], _file(tmp_path, content), **kwargs)
    return list(parsed), parsed.stats


def test_latin1_pms_row_standardised(tmp_path):
    [record], _ = _rows(tmp_path, "hotel_pms", (PMS_HEADER + PMS_ROW).encode("latin-1"))
    assert record.source_key == "100000001:200000001"
    assert (record.first_name, record.last_name, record.city) == ("Jürgen", "Müller", "München")
    assert record.street == "Hauptstraße 5" and record.country_code == "DE"
    assert record.amount_cents == 123450 and record.currency == "EUR"
    assert record.birth_date == dt.date(1980, 12, 17)
    assert record.occurred_at.isoformat() == "2025-08-01T00:00:00+02:00"
    assert record.ended_at.isoformat() == "2025-08-04T00:00:00+02:00"


def test_pms_placeholder_birth_date_is_null_and_counted(tmp_path):
    row = PMS_ROW.replace("17.12.1980", "01.01.1900")
    [record], stats = _rows(tmp_path, "hotel_pms", (PMS_HEADER + row).encode("latin-1"))
    assert isinstance(record, SourceRecord) and record.birth_date is None
    assert stats.issues == {"birth_date_placeholder": 1}


ROW_LEVEL = [
    (
        "birth-date-in-future",
        "hotel_pms",
        PMS_ROW.replace("17.12.1980", "17.12.2030"),
        ["birth_date: birth date 2030-12-17 is in the future"],
    ),
    (
        "birth-date-before-1900",
        "hotel_pms",
        PMS_ROW.replace("17.12.1980", "31.12.1899"),
        ["birth_date: birth date 1899-12-31 is before 1900-01-02"],
    ),
    (
        "impossible-date",
        "hotel_pms",
        PMS_ROW.replace("01.08.2025", "31.02.2025"),
        ["occurred_at: unparsable date"],
    ),
    (
        "negative-amount",
        "hotel_pms",
        PMS_ROW.replace("1.234,50", "-1.234,50"),
        ["amount_cents: negative amount"],
    ),
    (
        "every-reason-of-a-row",
        "hotel_pms",
        PMS_ROW.replace("1.234,50", "12x").replace("17.12.1980", "17.12.2030").replace("100000001", ""),
        [
            "missing required field ResNr",
            "birth_date: birth date 2030-12-17 is in the future",
            "amount_cents: unparsable amount '12x'",
        ],
    ),
    (
        "departure-before-arrival",
        "hotel_pms",
        PMS_ROW.replace("04.08.2025", "30.07.2025"),
        ["ended_at 2025-07-30T00:00:00+02:00 is before occurred_at 2025-08-01T00:00:00+02:00"],
    ),
    (
        "unknown-outlet-type",
        "restaurant_pos",
        POS_ROW.replace("restaurant,", "spa,"),
        ["unknown outlet_type 'spa'"],
    ),
    (
        "bad-currency",
        "restaurant_pos",
        POS_ROW.replace(",EUR,", ",euro,"),
        ["currency 'euro' is not an ISO 4217"],
    ),
    (
        "unparsable-time",
        "restaurant_pos",
        POS_ROW.replace("T20:15:00", "T25:15:00"),
        ["unparsable date-time"],
    ),
    (
        "too-many-fields-in-the-middle",
        "restaurant_pos",
        POS_ROW.replace("room_charge", "room_charge,extra"),
        ["has 14 fields, the header 13"],
    ),
    (
        "missing-required",
        "restaurant_pos",
        POS_ROW.replace(",73.06,", ",,"),
        ["missing required field amount"],
    ),
    ("nul-character", "restaurant_pos", POS_ROW.replace("Seeterrasse", "See\x00terrasse"), ["NUL character"]),
    (
        "malformed-quotes",
        "restaurant_pos",
        POS_ROW.replace('"Müller, Jürgen"', '"Müller" x'),
        ["malformed quoting"],
    ),
]


@pytest.mark.parametrize(
    ("feed", "row", "reasons"), [c[1:] for c in ROW_LEVEL], ids=[c[0] for c in ROW_LEVEL]
)
def test_row_level_problems_reject_the_row_with_every_reason(tmp_path, feed, row, reasons):
    header, good = {"hotel_pms": (PMS_HEADER, PMS_ROW), "restaurant_pos": (POS_HEADER, POS_ROW)}[feed]
    good2 = good.replace("100000001", "100000002").replace("R01-1", "R01-2").replace("200000001", "200000002")
    content = header + row + good2
    encoding = "latin-1" if feed == "hotel_pms" else "utf-8"
    items, stats = _rows(tmp_path, feed, content.encode(encoding), today=TODAY)
    rejected, record = items
    assert isinstance(rejected, RejectedRow) and isinstance(record, SourceRecord)
    assert rejected.line_number == 2 and record.line_number == 3
    assert len(rejected.reasons) == len(reasons), rejected.reasons
    for expected, actual in zip(reasons, rejected.reasons, strict=True):
        assert expected in actual
    assert rejected.raw_line == row.rstrip("\r\n")
    assert (stats.rows, stats.records, stats.rejected) == (2, 1, 1)


def test_quotes_and_newlines_inside_fields_keep_physical_line_numbers(tmp_path):
    content = (
        SHOP_HEADER
        + 'S01-1,1,Shop,2025-01-10 12:00:00,,SOU-1,"Wasser 0,5 l, ""still""\nzweite Zeile\ndritte",1,2.50,EUR,\n'
        + SHOP_ROW.format(n=2)
        + '"S01-3","1","Shop","2025-01-10 12:00:00","","SOU-1","Tasse","2","9.00","EUR",""\n'
    )
    items, _ = _rows(tmp_path, "shop_pos", content)
    assert [item.line_number for item in items] == [2, 5, 6]
    assert items[0].product_name == 'Wasser 0,5 l, "still"\nzweite Zeile\ndritte'
    assert items[2].amount_cents == 900 and items[2].quantity == 2


def test_a_2mb_field_rejects_the_row_without_crashing(tmp_path):
    huge = "x" * (2 * 1024 * 1024)
    content = SHOP_HEADER + SHOP_ROW.format(n=1).replace("Wasser", f'"{huge}"') + SHOP_ROW.format(n=2)
    items, _ = _rows(tmp_path, "shop_pos", content)
    assert isinstance(items[0], RejectedRow) and isinstance(items[1], SourceRecord)
    assert items[0].reasons == ("field product has 2097152 bytes, more than max_field_bytes 4096",)
    content = SHOP_HEADER + SHOP_ROW.format(n=1).replace("Wasser", huge) + SHOP_ROW.format(n=2)
    items, _ = _rows(tmp_path, "shop_pos", content)
    assert isinstance(items[0], RejectedRow) and "2097152 bytes" in items[0].reasons[0]


def test_duplicate_natural_keys_keep_the_last_occurrence(tmp_path):
    content = (
        SHOP_HEADER
        + SHOP_ROW.format(n=1)
        + SHOP_ROW.format(n=2)
        + SHOP_ROW.format(n=1).replace("2.50", "3.00")
    )
    content += SHOP_ROW.format(n=1).replace("2.50", "4.00")
    items, stats = _rows(tmp_path, "shop_pos", content)
    assert [type(item).__name__ for item in items] == [
        "RejectedRow",
        "SourceRecord",
        "RejectedRow",
        "SourceRecord",
    ]
    assert items[0].reasons == ("duplicate natural key S01-1:1, superseded by line 5",)
    assert items[2].reasons == ("duplicate natural key S01-1:1, superseded by line 5",)
    assert items[3].amount_cents == 400
    assert stats.duplicate_keys == 1 and stats.rejected == 2


def test_duplicate_event_ids_in_json_lines(tmp_path):
    items, _ = _rows(tmp_path, "website", WEB_ROW + WEB_ROW.replace("e1", "e2") + WEB_ROW)
    assert isinstance(items[0], RejectedRow) and items[0].reasons == (
        "duplicate natural key e1, superseded by line 3",
    )
    assert [item.source_key for item in items[1:]] == ["e2", "e1"]


HOSTILE = ["Robert'); DROP TABLE core.contact;--", "{{ 7*7 }}", "<script>alert(1)</script>", "${jndi:x}"]


@pytest.mark.parametrize("text", HOSTILE, ids=["sql", "template", "script", "jndi"])
def test_hostile_text_in_names_is_data_and_survives_byte_for_byte(tmp_path, text):
    quoted = f'"{text}"' if ";" in text else text
    row = PMS_ROW.replace("Jürgen", quoted).replace("Müller", quoted)
    [record], _ = _rows(tmp_path, "hotel_pms", (PMS_HEADER + row).encode("latin-1"))
    assert record.first_name == text and record.last_name == text
    event = json.dumps(
        {
            "event_id": "e9",
            "event_type": "support_inquiry",
            "occurred_at": "2025-07-01T18:03:11+02:00",
            "customer_id": None,
            "email": "a@b.de",
            "name": "Max Mustermann",
            "topic": text,
            "message": text,
        }
    )
    [inquiry], _ = _rows(tmp_path, "website", event + "\n")
    assert inquiry.inquiry_body == text and inquiry.inquiry_topic == text


def test_json_line_problems(tmp_path):
    lines = [
        WEB_ROW,
        "{not json\n",
        "[1, 2]\n",
        WEB_ROW.replace('"occurred_at":"2025-07-01T18:03:11+02:00",', "").replace("e1", "e2"),
        WEB_ROW.replace("page_view", "teleport").replace("e1", "e3"),
        "\n",
    ]
    items, stats = _rows(tmp_path, "website", "".join(lines))
    assert isinstance(items[0], SourceRecord)
    assert "invalid JSON" in items[1].reasons[0]
    assert items[2].reasons == ("not a JSON object but list",)
    assert "missing key occurred_at" in items[3].reasons
    assert items[4].reasons == ("activity_type: unknown event_type 'teleport'",)
    assert (stats.rows, stats.blank_lines, stats.rejected) == (5, 1, 4)


def test_invalid_email_and_phone_become_null_and_are_kept_in_attributes(tmp_path):
    row = PMS_ROW.replace("j.mueller@gmx.de", "j.mueller(at)gmx.de").replace("0170 1234567", "0170 123O567")
    [record], stats = _rows(tmp_path, "hotel_pms", (PMS_HEADER + row).encode("latin-1"))
    assert isinstance(record, SourceRecord)
    assert record.email is None and record.phone_e164 is None
    assert record.attributes["invalid"] == {"email": "j.mueller(at)gmx.de", "phone_e164": "0170 123O567"}
    assert stats.issues == {"invalid_email": 1, "invalid_phone": 1}


# Product catalogue, ticket products, push subscriptions ------------------------------------

PRODUCT_HEADER = "sku,name,category,price,currency\n"
TICKET_HEADER = (
    "ticket_id,order_id,attraction,visit_date,ticket_type,price,currency,sales_channel,"
    "buyer_email,buyer_first_name,buyer_last_name,buyer_phone,product_sku\n"
)


def test_a_product_catalogue_row_becomes_a_product_and_bad_rows_say_why(tmp_path):
    content = PRODUCT_HEADER + (
        "WP-DAY-HOTEL,Wasserwelt Tageskarte Hotelgast,water_park,29.70,EUR\n"
        '"SOU-1","Wasser 0,5 l",shop_item,2.50,EUR\n'
        "BAD-CAT,Tasse,Shop Item,9.00,EUR\n"
        "NEG,Tasse,shop_item,-1.00,EUR\n"
        ",Ohne SKU,shop_item,1.00,EUR\n"
        "FREE,Parkplatz,parking,,\n"
    )
    items, stats = _rows(tmp_path, "products", content)
    hotel, water, bad_category, negative, no_sku, free = items
    assert (hotel.product_sku, hotel.product_name, hotel.attributes, hotel.amount_cents, hotel.currency) == (
        "WP-DAY-HOTEL",
        "Wasserwelt Tageskarte Hotelgast",
        {"category": "water_park"},
        2970,
        "EUR",
    )
    assert water.product_name == "Wasser 0,5 l" and hotel.source_key == "WP-DAY-HOTEL"
    assert bad_category.reasons == ("category 'Shop Item' is not a lower-case identifier such as water_park",)
    assert negative.reasons == ("amount_cents: negative amount '-1.00'",)
    assert no_sku.reasons == ("missing required field sku",)
    assert (free.amount_cents, free.currency) == (None, None)
    assert (stats.records, stats.rejected) == (3, 3)


def test_a_ticket_carries_its_product_sku(tmp_path):
    row = "T1,O1,water_park,2026-07-01,adult,29.70,EUR,hotel,,Anna,Muster,,WP-DAY-HOTEL\n"
    missing = "T2,O1,water_park,2026-07-01,adult,29.70,EUR,hotel,,Anna,Muster,,\n"
    ticket, rejected = _rows(tmp_path, "ticketing", TICKET_HEADER + row + missing)[0]
    assert (ticket.product_sku, ticket.activity_type, ticket.amount_cents) == (
        "WP-DAY-HOTEL",
        "water_park_ticket",
        2970,
    )
    assert rejected.reasons == ("missing required field product_sku",)


SUBSCRIPTION = {"endpoint": "https://push.example/send/abc", "keys": {"p256dh": "BNc", "auth": "tB"}}


def web_event(event_type: str, **fields) -> str:
    """One website event as a JSON line (the generator's shape)."""
    event = {"event_id": "e1", "event_type": event_type, "occurred_at": "2026-07-01T18:03:11+02:00"}
    event.update(fields)
    return json.dumps(event) + "\n"


@pytest.mark.parametrize(
    ("platform", "token", "stored"),
    [
        ("android", "fcm-token-1", "fcm-token-1"),
        ("ios", " apns-token-2 ", "apns-token-2"),
        (
            "web",
            SUBSCRIPTION,
            'webpush:{"endpoint":"https://push.example/send/abc","keys":{"auth":"tB","p256dh":"BNc"}}',
        ),
    ],
)
def test_a_push_subscription_becomes_a_push_token_with_push_consent(tmp_path, platform, token, stored):
    subscription = {"customer_id": "W42", "cookie_id": "c0ffee", "platform": platform, "push_token": token}
    [record], _ = _rows(tmp_path, "website", web_event("push_subscription", **subscription))
    assert record.push_token == stored and record.activity_type is None
    assert (record.consent_channel, record.consent_purpose, record.consent_status) == (
        "push",
        "newsletter",
        "opt_in",
    )
    assert record.source_customer_id == "website:W42" and record.attributes == {"platform": platform}
    # The consent the event spells out is taken as it is.
    consent = {"channel": "push", "purpose": "offers", "double_opt_in_at": None}
    [record], _ = _rows(tmp_path, "website", web_event("push_subscription", **subscription, consent=consent))
    assert (record.consent_channel, record.consent_purpose) == ("push", "offers")


def test_a_push_token_too_long_for_an_identifier_rejects_the_row(tmp_path):
    token = {"endpoint": "https://push.example/" + "x" * 1000, "keys": {}}
    event = web_event("push_subscription", cookie_id="c0ffee", platform="web", push_token=token)
    [rejected], _ = _rows(tmp_path, "website", event)
    assert rejected.reasons == ("push_token has 1054 characters, more than 1000",)


def test_a_push_token_that_is_an_object_outside_web_push_rejects_the_row(tmp_path):
    event = web_event("push_subscription", cookie_id="c0ffee", platform="android", push_token=SUBSCRIPTION)
    [rejected], _ = _rows(tmp_path, "website", event)
    assert rejected.reasons == ("push_token: expected a single value, got a JSON dict",)


def test_an_sms_newsletter_signup_keeps_the_phone_and_its_consent(tmp_path):
    consent = {"channel": "sms", "purpose": "newsletter", "source": "website_form"}
    signup = {"customer_id": None, "cookie_id": "c0ffee", "email": None, "phone": "0170 1234567"}
    [record], _ = _rows(tmp_path, "website", web_event("newsletter_signup", **signup, consent=consent))
    assert (record.phone_e164, record.email) == ("+491701234567", None)
    assert (record.consent_channel, record.consent_purpose, record.consent_status) == (
        "sms",
        "newsletter",
        "opt_in",
    )


# Standardisation -----------------------------------------------------------------------------

PHONES = [
    ("DE", "+49 170 1234567", "+491701234567"),
    ("DE", "0049 170 1234567", "+491701234567"),
    ("DE", "0170 1234567", "+491701234567"),
    ("DE", "0170/1234567", "+491701234567"),
    ("DE", "+491701234567", "+491701234567"),
    ("AT", "+43 664 1234567", "+436641234567"),
    ("AT", "0043 664 1234567", "+436641234567"),
    ("AT", "0664 1234567", "+436641234567"),
    ("CH", "+41 79 123 45 67", "+41791234567"),
    ("CH", "079 123 45 67", "+41791234567"),
    ("NL", "+31 6 12345678", "+31612345678"),
    ("NL", "06-12345678", "+31612345678"),
    ("GB", "+44 7700 900123", "+447700900123"),
    ("GB", "07700 900123", "+447700900123"),
    ("DK", "+45 20 12 34 56", "+4520123456"),
    ("DK", "20123456", "+4520123456"),
    ("PL", "+48 512 345 678", "+48512345678"),
    ("PL", "512 345 678", "+48512345678"),
]


@pytest.mark.parametrize(("region", "raw", "e164"), PHONES, ids=[f"{r}:{raw}" for r, raw, _ in PHONES])
def test_phone_formats_give_the_same_e164(region, raw, e164):
    assert clean_phone(raw, region) == e164


@pytest.mark.parametrize(
    ("raw", "e164"),
    [("078 694 58 71", "+41786945871"), ("0660 0820160", "+436600820160"), ("0170 1234567", "+491701234567")],
    ids=["swiss", "austrian", "german"],
)
def test_national_numbers_invalid_in_the_default_region_try_the_other_regions(raw, e164):
    # Only numbers that are no valid German number move: 0664 1234567 is valid in both.
    assert clean_phone(raw, "DE", ("AT", "CH", "NL", "GB", "DK", "PL")) == e164


@pytest.mark.parametrize("raw", ["0170 123O567", "12", "tel 0170", "+49 170 123456789012"])
def test_invalid_phones_are_field_issues(raw):
    with pytest.raises(FieldIssue) as issue:
        clean_phone(raw, "DE")
    assert issue.value.kind == "invalid_phone" and issue.value.raw == raw


@pytest.mark.parametrize(
    ("raw", "email"),
    [
        ("Max.Mueller123@Gmx.de", "max.mueller123@gmx.de"),
        ("MAX.MUELLER123@GMX.DE", "max.mueller123@gmx.de"),
        ("  max@gmx.de ", "max@gmx.de"),
        ("", None),
        ("   ", None),
        ("jörg@müller.de", "jörg@müller.de"),
        ("a+tag@sub.example.co.uk", "a+tag@sub.example.co.uk"),
    ],
    ids=["capitalised", "upper", "spaces", "empty", "blank", "unicode", "plus-and-subdomains"],
)
def test_emails(raw, email):
    assert clean_email(raw) == email


@pytest.mark.parametrize(
    "raw", ["local@", "local(at)gmx.de", "local@gmx", "@gmx.de", "a..b@gmx.de", "x@host.test"]
)
def test_invalid_emails_are_field_issues(raw):
    with pytest.raises(FieldIssue) as issue:
        clean_email(raw)
    assert issue.value.kind == "invalid_email"


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("  Müller ", "Müller"),
        ("MÜLLER-LÜDENSCHEIDT", "Müller-Lüdenscheidt"),
        ("de  Vries", "de Vries"),
        ("Mu\u0308ller", "Müller"),
        ("McDonald", "McDonald"),
        ("", None),
    ],
    ids=["trim", "all-caps", "inner-space", "nfc", "case-kept", "empty"],
)
def test_names(raw, name):
    assert clean_name(raw) == name


@pytest.mark.parametrize(
    ("raw", "decimal", "thousands", "cents"),
    [
        ("1.234,50", ",", ".", 123450),
        ("0,00", ",", ".", 0),
        ("254,00", ",", ".", 25400),
        ("73.06", ".", None, 7306),
        ("5", ".", None, 500),
        ("5.5", ".", None, 550),
        ("12.300", ".", None, 1230),
        ("1.234.567,89", ",", ".", 123456789),
    ],
)
def test_amounts_are_exact_cents(raw, decimal, thousands, cents):
    assert parse_amount(raw, decimal, thousands) == cents


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("-1,00", "negative amount"),
        ("12,345", "fractions of a cent"),
        ("1.23,00", "thousands"),
        ("abc", "unparsable"),
    ],
)
def test_bad_amounts_are_row_problems(raw, message):
    with pytest.raises(RowProblem, match=message):
        parse_amount(raw, ",", ".")


@pytest.mark.parametrize(
    ("raw", "offset"),
    [
        ("2025-03-30T01:30:00", "+01:00"),
        ("2025-03-30T03:30:00", "+02:00"),
        ("2025-10-26T01:30:00", "+02:00"),
        ("2025-10-26T02:30:00", "+02:00"),
        ("2025-10-26T03:30:00", "+01:00"),
    ],
    ids=[
        "before-spring-change",
        "after-spring-change",
        "before-autumn",
        "ambiguous-hour-first",
        "after-autumn",
    ],
)
def test_local_times_across_dst(raw, offset):
    parse = datetime_parser(("%Y-%m-%dT%H:%M:%S",), "Europe/Berlin")
    assert parse(raw).isoformat()[-6:] == offset


def test_local_times_are_an_hour_apart_across_the_spring_change():
    parse = datetime_parser(("%Y-%m-%dT%H:%M:%S",), "Europe/Berlin")
    # Python subtracts datetimes sharing one tzinfo on the wall clock: compare instants in UTC.
    later, earlier = parse("2025-03-30T03:00:00"), parse("2025-03-30T01:59:59")
    assert later.astimezone(dt.UTC) - earlier.astimezone(dt.UTC) == dt.timedelta(seconds=1)


def test_iso_times_with_offsets_are_kept():
    parse = datetime_parser(("iso8601",), "Europe/Berlin")
    assert parse("2025-07-01T18:03:11+02:00") == dt.datetime(2025, 7, 1, 16, 3, 11, tzinfo=dt.UTC)
    assert parse("2025-07-01T18:03:11").utcoffset() == dt.timedelta(hours=2)


@pytest.mark.parametrize("raw", ["31.02.2025", "2025-13-01", "1.1.", ""])
def test_impossible_dates_are_row_problems(raw):
    with pytest.raises(RowProblem):
        parse_date(raw, ("%d.%m.%Y", "%Y-%m-%d"))


def test_birth_date_bounds():
    assert check_birth_date(dt.date(1900, 1, 2), TODAY) == dt.date(1900, 1, 2)
    with pytest.raises(RowProblem, match="future"):
        check_birth_date(TODAY + dt.timedelta(days=1), TODAY)
    with pytest.raises(RowProblem, match="before 1900-01-02"):
        check_birth_date(dt.date(1900, 1, 1), TODAY)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("Deutschland", "DE"),
        ("Österreich", "AT"),
        ("Schweiz", "CH"),
        ("Niederlande", "NL"),
        ("Großbritannien", "GB"),
        ("Dänemark", "DK"),
        ("Polen", "PL"),
        ("United Kingdom", "GB"),
        ("germany", "DE"),
        ("de", "DE"),
        ("NL", "NL"),
    ],
)
def test_countries(raw, code):
    assert country_code(raw) == code


def test_unknown_country_is_a_field_issue():
    with pytest.raises(FieldIssue):
        country_code("Atlantis")


@pytest.mark.parametrize("quoting", [csv.QUOTE_ALL, csv.QUOTE_MINIMAL], ids=["quote-all", "quote-minimal"])
def test_fast_field_splitting_agrees_with_the_csv_module(quoting):
    split = _splitter(SPECS["ticketing"])
    values = ["a", "", '"', "x,y", '","', 'a""b', '",', ',"', "\n", ' "q" ']
    chosen = random.Random(5)
    for _ in range(3000):
        row = [chosen.choice(values) for _ in range(chosen.randint(1, 5))]
        buffer = io.StringIO()
        csv.writer(buffer, quoting=quoting, lineterminator="\n").writerow(row)
        line = buffer.getvalue()[:-1]
        if line:
            assert split(line) == row, line


def _full_phone_path(text: str, region: str, others: tuple[str, ...]) -> str | None:
    """clean_phone without its fast path (the reference the fast path must agree with)."""
    import phonenumbers

    if not re.fullmatch(r"\+?[0-9 ()./-]+", text):
        return None
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        if not text.startswith(("+", "00")):
            for other in others:
                try:
                    candidate = phonenumbers.parse(text, other)
                except phonenumbers.NumberParseException:
                    continue
                if phonenumbers.is_valid_number(candidate):
                    return phonenumbers.format_number(candidate, phonenumbers.PhoneNumberFormat.E164)
        if phonenumbers.is_possible_number_with_reason(number) != phonenumbers.ValidationResult.IS_POSSIBLE:
            return None
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return e164 if re.fullmatch(r"\+[1-9][0-9]{6,14}", e164) else None


def test_the_phone_fast_path_agrees_with_phonenumbers_on_the_generators_formats() -> None:
    from campaign_lib.generator.people import new_phone, render_phone
    from campaign_lib.generator.reference import MOBILE_PREFIXES
    from campaign_lib.ingest.standardise import _fast_e164

    rng = random.Random(11)
    others = ("AT", "CH", "NL", "GB", "DK", "PL")
    settled = Counter()
    extra = [
        "+49 (0)170 1234567", "+49 0170 1234567", "0170-1234567", "030 1234567", "+49 30 12345678",
        "00 49 170 1234567", "0049170123456789012", "+4917", "0", "00", "+", "0170 12345", "+41 79 123 45 67",
        "079 123 45 67", "0800 1234567", "0900 1234567", "+43 664 1234567", "20 12 34 56", "+45 20123456",
        "512 345 678", "+48 512 345 678", "0 512 345 678", "06-12345678", "+31 6 12345678", "1701234567",
    ]  # fmt: skip
    cases = [(text, "DE") for text in extra] + [(text, region) for text in extra for region in others]
    for _ in range(3000):  # random digits in the fast path's alphabet, read in every region
        start = rng.choice(["+", "00", "0", "", "+49", "0049", "+41", "+43", "+45", "+48", "+31", "+44"])
        body = "".join(rng.choice("0123456789" * 6 + " /-") for _ in range(rng.randint(1, 14)))
        cases.append((start + body, rng.choice(("DE", *others))))
    for index in range(4000):
        country = list(MOBILE_PREFIXES)[index % len(MOBILE_PREFIXES)]
        text = render_phone(new_phone(rng, country, index), rng.random)
        cases += [(text, "DE"), (text, country)]
    for text, region in cases:
        fast = _fast_e164(text.strip(), region, others)
        if fast is not None:
            settled[region] += 1
            assert fast == _full_phone_path(text.strip(), region, others), (text, region)
        assert clean_phone_or_issue(text, region, others) == _full_phone_path(text.strip(), region, others), (
            text,
            region,
        )
    # The fast path settles most numbers of the feed's region, and those of the other regions read there.
    assert settled["DE"] > 1000 and all(settled[region] > 300 for region in ("AT", "CH", "DK", "PL"))


def clean_phone_or_issue(text: str, region: str, others: tuple[str, ...]) -> str | None:
    from campaign_lib.ingest.standardise import FieldIssue, clean_phone

    try:
        return clean_phone(text, region, others)
    except FieldIssue:
        return None
