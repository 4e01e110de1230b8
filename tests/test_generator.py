"""Tests of the resort data generator: formats, ground truth, determinism, realism."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import gzip
import hashlib
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from campaign_lib.generator import GENERATOR_VERSION, generate
from campaign_lib.generator import export as generator_export

GUESTS = 2_500  # three blocks, the last one partial
SEED = 11


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def drops(tmp_path_factory) -> Path:
    out_dir = tmp_path_factory.mktemp("drops") / "out"
    generate(out_dir, guests=GUESTS, seed=SEED)
    return out_dir


@pytest.fixture(scope="module")
def manifest(drops) -> dict:
    return json.loads((drops / "manifest.json").read_text(encoding="utf-8"))


def _files(drops: Path, feed: str) -> list[Path]:
    return [
        drops / f["path"]
        for f in json.loads((drops / "manifest.json").read_text())["files"]
        if f["feed"] == feed
    ]


# (feed, encoding, delimiter) exactly as docs/generator.md declares them
CSV_FEEDS = {
    "hotel_pms": ("latin-1", ";"),
    "restaurant_pos": ("utf-8-sig", ","),
    "shop_pos": ("utf-8", ","),
    "ticketing": ("utf-8", ","),
    "crm_accounts": ("utf-8", ","),
    "crm_contacts": ("utf-8", ","),
    "crm_addresses": ("utf-8", ","),
    "products": ("utf-8", ","),
}


def _rows(drops: Path, feed: str) -> list[dict]:
    encoding, delimiter = CSV_FEEDS[feed]
    rows = []
    for path in _files(drops, feed):
        with path.open(encoding=encoding, newline="") as stream:
            rows.extend(csv.DictReader(stream, delimiter=delimiter))
    return rows


def _web_events(drops: Path) -> list[dict]:
    events = []
    for path in _files(drops, "website"):
        with path.open(encoding="utf-8") as stream:
            events.extend(json.loads(line) for line in stream)
    return events


@pytest.fixture(scope="module")
def ground_truth(drops) -> list[dict]:
    path = drops / "ground_truth" / "ground_truth.csv.gz"
    with gzip.open(path, "rt", encoding="utf-8", newline="") as stream:
        return list(csv.DictReader(stream))


def _is_iso_date(text: str) -> bool:
    return bool(dt.date.fromisoformat(text))


def _is_german_date(text: str) -> bool:
    return bool(dt.datetime.strptime(text, "%d.%m.%Y"))


def _is_german_amount(text: str) -> bool:
    return re.fullmatch(r"\d{1,3}(\.\d{3})*,\d{2}", text) is not None


def _is_point_amount(text: str) -> bool:
    return re.fullmatch(r"\d+\.\d{2}", text) is not None


# (feed, column, check): every non-empty value of the column must pass the check
FIELD_CHECKS = [
    ("hotel_pms", "Anreise", _is_german_date),
    ("hotel_pms", "Abreise", _is_german_date),
    ("hotel_pms", "Geburtsdatum", _is_german_date),
    ("hotel_pms", "Betrag", _is_german_amount),
    ("restaurant_pos", "closed_at", lambda v: dt.datetime.fromisoformat(v).tzinfo is None),
    ("restaurant_pos", "amount", _is_point_amount),
    ("shop_pos", "sold_at", lambda v: bool(dt.datetime.strptime(v, "%Y-%m-%d %H:%M:%S"))),
    ("shop_pos", "amount", _is_point_amount),
    ("ticketing", "visit_date", _is_iso_date),
    ("ticketing", "price", _is_point_amount),
    ("ticketing", "attraction", lambda v: v in ("water_park", "dolphinarium")),
    ("ticketing", "ticket_type", lambda v: v in ("adult", "child", "family")),
    ("ticketing", "product_sku", lambda v: re.fullmatch(r"(WP|DOL)-[A-Z-]+", v) is not None),
    ("products", "price", _is_point_amount),
    ("products", "category", lambda v: re.fullmatch(r"[a-z][a-z0-9_]*", v) is not None),
    ("crm_contacts", "birth_date", _is_iso_date),
    ("crm_addresses", "valid_from", _is_iso_date),
    ("crm_accounts", "account_type", lambda v: v in ("household", "company")),
]


@pytest.mark.parametrize(
    ("feed", "column", "check"), FIELD_CHECKS, ids=[f"{feed}.{column}" for feed, column, _ in FIELD_CHECKS]
)
def test_csv_fields_parse_with_declared_formats(drops, feed, column, check):
    values = [row[column] for row in _rows(drops, feed) if row[column]]
    assert values, f"{feed}.{column} is never filled"
    bad = [v for v in values if not check(v)]
    assert not bad, f"{len(bad)} bad values in {feed}.{column}, e.g. {bad[:3]}"


@pytest.mark.parametrize("feed", sorted(CSV_FEEDS))
def test_every_csv_row_has_the_header_width(drops, feed):
    encoding, delimiter = CSV_FEEDS[feed]
    for path in _files(drops, feed):
        with path.open(encoding=encoding, newline="") as stream:
            header, *rows = list(csv.reader(stream, delimiter=delimiter))
        assert all(len(row) == len(header) for row in rows), path.name


# (feed, first bytes of a file, line end)
RAW_SHAPES = [
    ("hotel_pms", b"ResNr;GastNr;", b"\r\n"),
    ("restaurant_pos", b"\xef\xbb\xbfreceipt_id,", b"\n"),
    ("shop_pos", b"receipt_id,line_no,", b"\n"),
    ("ticketing", b'"ticket_id","order_id",', b"\n"),
    ("crm_contacts", b"contact_id,account_id,", b"\r\n"),
]


@pytest.mark.parametrize(("feed", "start", "line_end"), RAW_SHAPES, ids=[s[0] for s in RAW_SHAPES])
def test_raw_file_shape(drops, feed, start, line_end):
    data = _files(drops, feed)[0].read_bytes()
    assert data.startswith(start)
    assert data.endswith(line_end)
    if line_end == b"\n":
        assert b"\r" not in data


def test_hotel_pms_is_latin1_with_umlauts(drops):
    data = b"".join(path.read_bytes() for path in _files(drops, "hotel_pms"))
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    text = data.decode("latin-1")
    assert "Straße" in text.splitlines()[0]
    assert any(ch in text for ch in "äöüÄÖÜß")


def test_ticketing_quotes_every_field(drops):
    first_line = _files(drops, "ticketing")[0].read_text(encoding="utf-8").splitlines()[1]
    assert first_line.startswith('"T') and first_line.endswith('"')


def test_web_events_are_json_lines_with_unique_ids(drops):
    events = _web_events(drops)
    assert len({e["event_id"] for e in events}) == len(events)
    assert {e["event_type"] for e in events} == {
        "registration",
        "login",
        "newsletter_signup",
        "page_view",
        "comment",
        "rating",
        "support_inquiry",
        "push_subscription",
    }
    assert all(
        dt.datetime.fromisoformat(e["occurred_at"]).utcoffset()
        in (dt.timedelta(hours=1), dt.timedelta(hours=2))
        for e in events
    )
    signups = [e for e in events if e["event_type"] == "newsletter_signup"]
    assert any(e["consent"]["double_opt_in_at"] for e in signups)
    assert all(e["cookie_id"] and e["customer_id"] for e in events if e["event_type"] == "login")


def _natural_keys(drops: Path) -> list[tuple[str, str, str]]:
    keys = [
        ("hotel_pms", "reservation_guest", f"{r['ResNr']}:{r['GastNr']}") for r in _rows(drops, "hotel_pms")
    ]
    keys += [("restaurant_pos", "receipt", r["receipt_id"]) for r in _rows(drops, "restaurant_pos")]
    keys += [
        ("shop_pos", "receipt_line", f"{r['receipt_id']}:{r['line_no']}") for r in _rows(drops, "shop_pos")
    ]
    keys += [("ticketing", "ticket", r["ticket_id"]) for r in _rows(drops, "ticketing")]
    keys += [("website", "event", e["event_id"]) for e in _web_events(drops)]
    keys += [("crm", "account", r["account_id"]) for r in _rows(drops, "crm_accounts")]
    keys += [("crm", "contact", r["contact_id"]) for r in _rows(drops, "crm_contacts")]
    keys += [("crm", "address", r["address_id"]) for r in _rows(drops, "crm_addresses")]
    return keys


def test_ground_truth_covers_every_record_exactly_once(drops, ground_truth):
    truth_keys = [(t["source_system"], t["record_kind"], t["source_key"]) for t in ground_truth]
    assert len(set(truth_keys)) == len(truth_keys)
    record_keys = _natural_keys(drops)
    assert len(set(record_keys)) == len(record_keys)
    assert set(truth_keys) == set(record_keys)


def test_ground_truth_persons_and_households_are_consistent(drops, ground_truth):
    persons = {t["person_id"] for t in ground_truth if t["person_id"]}
    assert persons <= {f"P{i:08d}" for i in range(GUESTS)}
    household_of_person = {}
    for t in ground_truth:
        if t["person_id"]:
            assert household_of_person.setdefault(t["person_id"], t["household_id"]) == t["household_id"]
    truth = {(t["record_kind"], t["source_key"]): t for t in ground_truth if t["source_system"] == "crm"}
    for contact in _rows(drops, "crm_contacts"):
        account_household = truth[("account", contact["account_id"])]["household_id"]
        assert truth[("contact", contact["contact_id"])]["household_id"] == account_household


def test_shared_family_email_maps_to_two_persons_of_one_household(drops, ground_truth):
    person_of = {t["source_key"]: t for t in ground_truth if t["record_kind"] == "contact"}
    persons_by_email = defaultdict(set)
    for contact in _rows(drops, "crm_contacts"):
        email = contact["email"].strip().lower()
        if re.fullmatch(r"[^@\s]+@[^@\s]+\.[a-z]+", email):
            truth = person_of[contact["contact_id"]]
            persons_by_email[email].add((truth["person_id"], truth["household_id"]))
    shared = [owners for owners in persons_by_email.values() if len({p for p, _ in owners}) > 1]
    assert shared, "no family shares a mailbox"
    assert all(len({h for _, h in owners}) == 1 for owners in shared), "a mailbox spans two households"


@pytest.mark.parametrize(
    ("identifier", "feed", "column"),
    [
        ("loyalty card", "restaurant_pos", "loyalty_card"),
        ("loyalty card", "shop_pos", "loyalty_card"),
        ("reservation", "restaurant_pos", "reservation_number"),
    ],
    ids=["card-restaurant", "card-shop", "room-charge"],
)
def test_identifiers_link_records_of_one_person(drops, ground_truth, identifier, feed, column):
    kind = "receipt_line" if feed == "shop_pos" else "receipt"
    person_of = {t["source_key"]: t["person_id"] for t in ground_truth if t["record_kind"] == kind}
    persons = defaultdict(set)
    for row in _rows(drops, feed):
        if row[column]:
            key = f"{row['receipt_id']}:{row['line_no']}" if feed == "shop_pos" else row["receipt_id"]
            persons[row[column]].add(person_of[key])
    assert persons, f"no {identifier} on {feed}"
    assert all(len(owners) == 1 for owners in persons.values())


def test_cookies_become_known_at_login(drops, ground_truth):
    person_of = {t["source_key"]: t["person_id"] for t in ground_truth if t["source_system"] == "website"}
    events = _web_events(drops)
    cookie_person = {e["cookie_id"]: person_of[e["event_id"]] for e in events if e["event_type"] == "login"}
    anonymous = [e for e in events if e["event_type"] == "page_view" and e["cookie_id"] in cookie_person]
    assert anonymous
    assert all(person_of[e["event_id"]] == cookie_person[e["cookie_id"]] for e in anonymous)


def test_catalogue_prices_every_sold_sku(drops):
    catalogue = {row["sku"]: row for row in _rows(drops, "products")}
    assert len(catalogue) == len(_rows(drops, "products"))
    offer = catalogue["WP-DAY-HOTEL"]
    assert (offer["name"], offer["category"], offer["price"]) == (
        "Wasserwelt Tageskarte Hotelgast",
        "water_park",
        "35.10",
    )
    tickets = _rows(drops, "ticketing")
    assert all(catalogue[t["product_sku"]]["price"] == t["price"] for t in tickets)
    assert all(catalogue[t["product_sku"]]["category"] == t["attraction"] for t in tickets)
    shop_lines = _rows(drops, "shop_pos")
    assert all(line["sku"] in catalogue for line in shop_lines)
    rooms = {row["name"] for row in catalogue.values() if row["category"] == "hotel_room"}
    assert {row["Zimmertyp"] for row in _rows(drops, "hotel_pms")} <= rooms


def test_hotel_guests_buy_at_the_hotel_guest_rate(drops):
    tickets = _rows(drops, "ticketing")
    by_channel = defaultdict(Counter)
    for ticket in tickets:
        by_channel[ticket["sales_channel"]][ticket["product_sku"].endswith("-HOTEL")] += 1
    assert set(by_channel["hotel"]) == {True}
    assert set(by_channel["counter"]) == {False}
    assert set(by_channel["online"]) == {True, False}
    water_park = Counter(t["product_sku"] for t in tickets if t["attraction"] == "water_park")
    assert water_park["WP-DAY-HOTEL"] > 0 and water_park["WP-DAY"] > 0


def _is_p256_point(text: str) -> bool:
    from cryptography.hazmat.primitives.asymmetric import ec

    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw).curve.name == "secp256r1"


def test_sms_signups_and_push_subscriptions_link_to_their_person(drops, ground_truth):
    person_of = {t["source_key"]: t["person_id"] for t in ground_truth if t["source_system"] == "website"}
    events = _web_events(drops)
    customer_person = {
        e["customer_id"]: person_of[e["event_id"]] for e in events if e["event_type"] == "registration"
    }
    sms = [e for e in events if e["event_type"] == "newsletter_signup" and e["consent"]["channel"] == "sms"]
    assert sms and all(e["phone"] and e["email"] is None for e in sms)
    pushes = [e for e in events if e["event_type"] == "push_subscription"]
    assert {e["platform"] for e in pushes} == {"android", "ios", "web"}
    assert all(customer_person[e["customer_id"]] == person_of[e["event_id"]] for e in pushes)
    assert all(e["consent"]["channel"] == "push" and e["consent"]["purpose"] == "newsletter" for e in pushes)
    apps = [e["push_token"] for e in pushes if e["platform"] != "web"]
    assert all(re.fullmatch(r"(stale-)?[A-Za-z0-9_-]{22}:APA91b[A-Za-z0-9_-]{134}", token) for token in apps)
    assert len(set(apps)) == len(apps)
    web = [e["push_token"] for e in pushes if e["platform"] == "web"]
    assert all(token["endpoint"].startswith("http://127.0.0.1:8791/") for token in web)
    assert all(_is_p256_point(token["keys"]["p256dh"]) for token in web)
    assert all(len(base64.urlsafe_b64decode(token["keys"]["auth"] + "==")) == 16 for token in web)


def test_email_stays_the_main_channel_with_sms_and_push_beside_it(drops, ground_truth):
    person_of = {t["source_key"]: t["person_id"] for t in ground_truth if t["source_system"] == "website"}
    channels = defaultdict(set)
    for event in _web_events(drops):
        if event["event_type"] in ("newsletter_signup", "push_subscription"):
            channels[person_of[event["event_id"]]].add(event["consent"]["channel"])
    # The demo campaign prefers email, else SMS, else push: who gets which channel.
    reached = Counter("email" if "email" in c else "sms" if "sms" in c else "push" for c in channels.values())
    assert reached["email"] > reached["sms"] + reached["push"]
    assert reached["sms"] > GUESTS * 0.01 and reached["push"] > GUESTS * 0.02


def test_moved_households_have_a_second_address(drops):
    addresses = Counter(row["account_id"] for row in _rows(drops, "crm_addresses"))
    assert any(n == 2 for n in addresses.values())


def _all_emails_and_phones(drops: Path) -> tuple[list[str], list[str]]:
    pms, contacts = _rows(drops, "hotel_pms"), _rows(drops, "crm_contacts")
    emails = [r["EMail"] for r in pms] + [r["email"] for r in contacts]
    emails += [r["buyer_email"] for r in _rows(drops, "ticketing")]
    phones = [r["Telefon"] for r in pms] + [r["phone"] for r in contacts]
    return [e for e in emails if e], [p for p in phones if p]


VARIATIONS = [
    ("email with upper case", 0, lambda v: v != v.lower() and "@" in v),
    ("email with surrounding spaces", 0, lambda v: v != v.strip()),
    ("invalid email", 0, lambda v: v.endswith("@") or "(at)" in v or v.startswith("@")),
    ("phone +49", 1, lambda v: v.startswith("+49 ")),
    ("phone 0049", 1, lambda v: v.startswith("0049 ")),
    ("phone national 0", 1, lambda v: re.fullmatch(r"01\d{2}[ /]\d+", v) is not None),
    ("phone foreign", 1, lambda v: v[:3] in ("+43", "+41", "+31", "+44", "+45", "+48")),
    ("phone with letters", 1, lambda v: re.search(r"[A-Za-z]", v) is not None),
]


@pytest.mark.parametrize(("variation", "field", "matches"), VARIATIONS, ids=[v[0] for v in VARIATIONS])
def test_sources_show_realistic_variation(drops, variation, field, matches):
    values = _all_emails_and_phones(drops)[field]
    assert any(matches(v) for v in values), f"no {variation}"


def test_about_ten_activities_per_guest(drops, manifest):
    activity_feeds = {"hotel_pms", "restaurant_pos", "shop_pos", "ticketing", "website"}
    activities = sum(f["rows"] for f in manifest["files"] if f["feed"] in activity_feeds)
    assert 6 <= activities / GUESTS <= 14


def test_manifest_matches_files(drops, manifest):
    assert (manifest["seed"], manifest["guests"], manifest["as_of"]) == (SEED, GUESTS, "2026-11-01")
    assert manifest["generator_version"] == GENERATOR_VERSION
    on_disk = {p.relative_to(drops).as_posix() for p in drops.rglob("*") if p.is_file()} - {"manifest.json"}
    assert on_disk == {f["path"] for f in manifest["files"]}
    for entry in manifest["files"]:
        data = (drops / entry["path"]).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (entry["bytes"], entry["sha256"])
        if entry["path"].endswith(".gz"):
            data = gzip.decompress(data)
        if entry["feed"] != "website":
            data = data.split(b"\n", 1)[1]
        assert data.count(b"\n") == entry["rows"], entry["path"]


def test_file_names_follow_each_source_convention(manifest):
    patterns = {
        "hotel_pms": r"hotel_pms/PMS_RESERVATIONS_\d{8}T\d{4}\.csv",
        "restaurant_pos": r"restaurant_pos/pos_receipts_\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.csv",
        "shop_pos": r"shop_pos/shop_sales_\d{8}_\d{6}\.csv",
        "ticketing": r"ticketing/tickets_export_\d{4}-\d\d-\d\d_\d{4}\.csv",
        "website": r"website/web_events_\d{8}T\d{6}Z\.jsonl",
        "crm_accounts": r"crm/CRM_ACCOUNTS_\d{8}_\d{4}\.csv",
        "crm_contacts": r"crm/CRM_CONTACTS_\d{8}_\d{4}\.csv",
        "crm_addresses": r"crm/CRM_ADDRESSES_\d{8}_\d{4}\.csv",
        "products": r"products/products_\d{8}T\d{6}\.csv",
        "ground_truth": r"ground_truth/ground_truth\.csv\.gz",
    }
    for entry in manifest["files"]:
        assert re.fullmatch(patterns[entry["feed"]], entry["path"]), entry["path"]
    assert sum(1 for f in manifest["files"] if f["feed"] == "website") == 24


@pytest.mark.parametrize(
    ("variant", "seed", "workers", "identical"),
    [
        ("same seed again", SEED, 1, True),
        ("two workers", SEED, 2, True),
        ("other seed", SEED + 1, 1, False),
    ],
    ids=["same-seed", "workers-2", "other-seed"],
)
def test_output_is_deterministic(drops, tmp_path, variant, seed, workers, identical):
    generate(tmp_path / "again", guests=GUESTS, seed=seed, workers=workers)
    assert (_tree_digest(tmp_path / "again") == _tree_digest(drops)) is identical, variant


def test_large_exports_split_into_further_timestamped_files(drops, manifest, tmp_path, monkeypatch):
    # With a cap of one row every file holds exactly one block's rows: files split only between blocks.
    monkeypatch.setattr(generator_export, "MAX_ROWS_PER_FILE", 1)
    generate(tmp_path / "split", guests=GUESTS, seed=SEED)
    split = json.loads((tmp_path / "split" / "manifest.json").read_text())
    blocks = -(-GUESTS // 1000)
    assert sum(1 for f in split["files"] if f["feed"] == "website") == 24 * blocks
    # A snapshot stays whole: half of one would be quarantined as a shrunken snapshot.
    assert sum(1 for f in split["files"] if f["feed"] == "crm_contacts") == 1
    assert len({f["path"] for f in split["files"]}) == len(split["files"])
    assert _rows_by_feed(split) == _rows_by_feed(manifest)


def _rows_by_feed(manifest: dict) -> Counter:
    rows = Counter()
    for entry in manifest["files"]:
        rows[entry["feed"]] += entry["rows"]
    return rows


@pytest.mark.parametrize(
    ("guests", "workers", "prepare", "message"),
    [
        (0, 1, None, "guests must be at least 1"),
        (-5, 1, None, "guests must be at least 1"),
        (10, 0, None, "workers must be at least 1"),
        (10, 1, "file", "exists and is not empty"),
    ],
    ids=["zero-guests", "negative-guests", "zero-workers", "non-empty-folder"],
)
def test_bad_arguments_raise_value_error(tmp_path, guests, workers, prepare, message):
    out_dir = tmp_path / "out"
    if prepare == "file":
        out_dir.mkdir()
        (out_dir / "leftover.csv").write_text("x")
    with pytest.raises(ValueError, match=message):
        generate(out_dir, guests=guests, seed=1, workers=workers)


def test_an_empty_existing_folder_is_accepted(tmp_path):
    summary = generate(tmp_path, guests=3, seed=1)
    assert summary.as_dict()["guests"] == 3
    assert json.loads(json.dumps(summary.as_dict()))["total_rows"] == summary.total_rows
