"""Benchmark of identity resolution: N source records resolved into the single customer view.

    python bench/identity.py [--records 1000000] [--seed 42] [--data DIR] [--workers 2]
    python bench/identity.py --rerun [--ground-truth PATH]

`--rerun` iterates on resolution only, in the `kms` database as `kms demo` left it: it forgets
every resolution result (`reset_resolution`), resolves all records again and evaluates
against the demo's ground truth (.kms/demo/generated/ground_truth/ground_truth.csv.gz).

Generates resort data (about 11.5 records per guest, so guests = records / 11.5) or reuses
`--data`, maps the files into ingest.record with a small direct mapping (campaign_lib.ingest
has no feed parsers yet; this mapping is cruder than real standardisation: phones in a
national format without a country are taken as German), and loads them with COPY into a
database of its own on the embedded server, dropped at the end. Then it times, in the same
run:

- baseline: COPY of the same rows into an unindexed copy of ingest.record, and one
  `select email, count(*) ... group by email` pass over them;
- resolve() of every record (the initial build of the single customer view), in a process
  of its own so that its peak RSS is resolution's alone, with its seconds per stage;
- resolve() again with nothing new (idempotence), and an incremental batch (1 % of the
  records marked changed);
- evaluate() against the ground truth: pairwise precision, recall, F1.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import multiprocessing
import os
import re
import resource
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import make_url, text

from campaign_lib.config import load_settings
from campaign_lib.db import admin_connection, make_engine, open_databases
from campaign_lib.db.migrate import upgrade
from campaign_lib.generator import generate
from campaign_lib.identity import evaluate, reset_resolution, resolve

COLUMNS = [
    "source_system",
    "record_kind",
    "source_key",
    "feed",
    "ingest_file_id",
    "line_number",
    "salutation",
    "first_name",
    "last_name",
    "birth_date",
    "email",
    "phone_e164",
    "language",
    "company_name",
    "account_type",
    "street",
    "postal_code",
    "city",
    "country_code",
    "address_valid_from",
    "crm_contact_id",
    "crm_account_id",
    "source_customer_id",
    "booking_ref",
    "order_ref",
    "loyalty_card",
    "cookie_id",
    "activity_type",
    "occurred_at",
    "ended_at",
    "amount_cents",
    "currency",
    "quantity",
    "product_sku",
    "product_name",
    "outlet",
    "attributes",
    "consent_channel",
    "consent_purpose",
    "consent_status",
    "double_opt_in_at",
    "inquiry_topic",
    "inquiry_body",
]
_INDEX = {name: i for i, name in enumerate(COLUMNS)}
_EMAIL = re.compile(r"^[^@\s()]+@[^@\s()]+\.[a-z]{2,}$")
_COUNTRY = {
    "Deutschland": "DE",
    "Österreich": "AT",
    "Schweiz": "CH",
    "Niederlande": "NL",
    "Großbritannien": "GB",
    "Dänemark": "DK",
    "Polen": "PL",
}
_CALLING = {"DE": "49", "AT": "43", "CH": "41", "NL": "31", "GB": "44", "DK": "45", "PL": "48"}


def _email(raw: str | None) -> str | None:
    value = (raw or "").strip().lower()
    return value if _EMAIL.match(value) else None


def _phone(raw: str | None, country: str | None = None) -> str | None:
    value = re.sub(r"[\s/\-()]", "", raw or "")
    if not value or not re.fullmatch(r"\+?[0-9]+", value):
        return None
    if value.startswith("+"):
        number = value
    elif value.startswith("00"):
        number = "+" + value[2:]
    elif value.startswith("0"):
        number = "+" + _CALLING.get(country or "DE", "49") + value[1:]
    elif country in ("DK", "PL"):
        number = "+" + _CALLING[country] + value
    else:
        return None
    return number if re.fullmatch(r"\+[1-9][0-9]{6,14}", number) else None


def _german_date(value: str) -> str | None:
    if not value or value == "01.01.1900":
        return None
    day, month, year = value.split(".")
    return f"{year}-{month}-{day}"


def _cents(value: str, german: bool = False) -> int | None:
    if not value:
        return None
    if german:
        value = value.replace(".", "").replace(",", ".")
    whole, _, fraction = value.partition(".")
    return int(whole) * 100 + int((fraction + "00")[:2])


def _record(**fields) -> list:
    row: list = [None] * len(COLUMNS)
    row[_INDEX["attributes"]] = "{}"
    for name, value in fields.items():
        row[_INDEX[name]] = value
    return row


def _pms(row: dict) -> list:
    country = _COUNTRY.get(row["Land"])
    main = row["Gastrolle"] == "H"
    return _record(
        source_system="hotel_pms",
        record_kind="reservation_guest",
        source_key=f"{row['ResNr']}:{row['GastNr']}",
        salutation=row["Anrede"] or None,
        first_name=row["Vorname"] or None,
        last_name=row["Nachname"] or None,
        birth_date=_german_date(row["Geburtsdatum"]),
        email=_email(row["EMail"]),
        phone_e164=_phone(row["Telefon"], country),
        company_name=row["Firma"] or None,
        street=row["Straße"] or None,
        postal_code=row["PLZ"] or None,
        city=row["Ort"] or None,
        country_code=country,
        source_customer_id=f"hotel_pms:{row['GastNr']}",
        booking_ref=row["ResNr"],
        activity_type="hotel_stay",
        occurred_at=_german_date(row["Anreise"]),
        ended_at=_german_date(row["Abreise"]),
        amount_cents=_cents(row["Betrag"], german=True) if main else None,
        currency=row["Währung"] if main else None,
        attributes=json.dumps(
            {"guest_role": "main" if main else "accompanying", "room_type": row["Zimmertyp"]}
        ),
    )


def _restaurant(row: dict) -> list:
    last, _, first = row["guest_name"].partition(", ")
    return _record(
        source_system="restaurant_pos",
        record_kind="receipt",
        source_key=row["receipt_id"],
        first_name=first or None,
        last_name=last or None,
        email=_email(row["guest_email"]),
        loyalty_card=row["loyalty_card"] or None,
        booking_ref=row["reservation_number"] or None,
        activity_type="restaurant_bill" if row["outlet_type"] == "restaurant" else "bar_bill",
        occurred_at=row["closed_at"],
        amount_cents=_cents(row["amount"]),
        currency=row["currency"],
        outlet=row["outlet"],
        attributes=json.dumps({"payment_method": row["payment_method"], "covers": row["covers"]}),
    )


def _shop(row: dict) -> list:
    return _record(
        source_system="shop_pos",
        record_kind="receipt_line",
        source_key=f"{row['receipt_id']}:{row['line_no']}",
        email=_email(row["customer_email"]),
        loyalty_card=row["loyalty_card"] or None,
        activity_type="shop_purchase",
        occurred_at=row["sold_at"],
        amount_cents=_cents(row["amount"]),
        currency=row["currency"],
        quantity=int(row["quantity"]),
        product_sku=row["sku"],
        product_name=row["product"],
        outlet=row["shop"],
    )


def _ticket(row: dict) -> list:
    return _record(
        source_system="ticketing",
        record_kind="ticket",
        source_key=row["ticket_id"],
        first_name=row["buyer_first_name"] or None,
        last_name=row["buyer_last_name"] or None,
        email=_email(row["buyer_email"]),
        phone_e164=_phone(row["buyer_phone"]),
        order_ref=row["order_id"],
        activity_type=f"{row['attraction']}_ticket",
        occurred_at=row["visit_date"],
        amount_cents=_cents(row["price"]),
        currency=row["currency"],
        attributes=json.dumps({"ticket_type": row["ticket_type"], "sales_channel": row["sales_channel"]}),
    )


_WEB_ACTIVITY = {
    "registration": "web_registration",
    "login": "web_login",
    "page_view": "web_page_view",
    "newsletter_signup": "newsletter_signup",
    "comment": "comment",
    "rating": "rating",
}


def _web(event: dict) -> list:
    customer = event.get("customer_id")
    name = event.get("name") or ""
    first, _, last = name.partition(" ")
    consent = event.get("consent") or {}
    kept = ("url", "referrer", "subject", "stars", "method")
    attributes = {key: event[key] for key in kept if event.get(key) is not None}
    return _record(
        source_system="website",
        record_kind="event",
        source_key=event["event_id"],
        first_name=event.get("first_name") or first or None,
        last_name=event.get("last_name") or last or None,
        birth_date=event.get("birth_date"),
        email=_email(event.get("email")),
        phone_e164=_phone(event.get("phone")),
        language=event.get("language"),
        source_customer_id=f"website:{customer}" if customer else None,
        cookie_id=event.get("cookie_id"),
        activity_type=_WEB_ACTIVITY.get(event["event_type"]),
        occurred_at=event["occurred_at"],
        attributes=json.dumps(attributes),
        consent_channel=consent.get("channel"),
        consent_purpose=consent.get("purpose"),
        consent_status="opt_in" if consent else None,
        double_opt_in_at=consent.get("double_opt_in_at"),
        inquiry_topic=event.get("topic"),
        inquiry_body=event.get("message"),
    )


def _crm(kind: str, row: dict) -> list:
    if kind == "ACCOUNTS":
        return _record(
            source_system="crm",
            record_kind="account",
            source_key=row["account_id"],
            crm_account_id=row["account_id"],
            account_type=row["account_type"],
            company_name=row["account_name"],
        )
    if kind == "ADDRESSES":
        return _record(
            source_system="crm",
            record_kind="address",
            source_key=row["address_id"],
            crm_account_id=row["account_id"],
            street=f"{row['street']} {row['house_number']}".strip(),
            postal_code=row["postcode"],
            city=row["city"],
            country_code=row["country"],
            address_valid_from=row["valid_from"] or None,
        )
    web = row["web_customer_id"]
    return _record(
        source_system="crm",
        record_kind="contact",
        source_key=row["contact_id"],
        crm_contact_id=row["contact_id"],
        crm_account_id=row["account_id"],
        salutation=row["salutation"] or None,
        first_name=row["first_name"] or None,
        last_name=row["last_name"] or None,
        birth_date=row["birth_date"] or None,
        email=_email(row["email"]),
        phone_e164=_phone(row["phone"]),
        language=row["preferred_language"] or None,
        loyalty_card=row["loyalty_card"] or None,
        source_customer_id=f"website:{web}" if web else None,
    )


def source_files(data: Path) -> Iterator[tuple[str, Path]]:
    for feed in ("crm", "hotel_pms", "restaurant_pos", "shop_pos", "ticketing", "website"):
        for path in sorted((data / feed).iterdir()):
            yield feed, path


def rows_of(feed: str, path: Path) -> Iterator[list]:
    if feed == "website":
        with path.open(encoding="utf-8") as stream:
            for line in stream:
                yield _web(json.loads(line))
        return
    encoding = {"hotel_pms": "latin-1", "restaurant_pos": "utf-8-sig"}.get(feed, "utf-8")
    delimiter = ";" if feed == "hotel_pms" else ","
    with path.open(encoding=encoding, newline="") as stream:
        reader = csv.DictReader(stream, delimiter=delimiter)
        if feed == "crm":
            kind = path.name.split("_")[1]
            for row in reader:
                yield _crm(kind, row)
            return
        mappers = {"hotel_pms": _pms, "restaurant_pos": _restaurant, "shop_pos": _shop, "ticketing": _ticket}
        mapper = mappers[feed]
        for row in reader:
            yield mapper(row)


def load_generated(engine, data: Path, limit: int | None = None) -> tuple[io.StringIO, int]:
    """Ledger rows for the files and every record as COPY text; returns the text and count."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    count = 0
    with engine.begin() as conn:
        for feed, path in source_files(data):
            file_id = conn.execute(
                text(
                    "insert into ingest.file (feed, channel, name, size_bytes, content_sha256, status) "
                    "values (:feed, 'local', :name, :size, :sha, 'merged') returning ingest_file_id"
                ),
                {
                    "feed": feed,
                    "name": path.name,
                    "size": path.stat().st_size,
                    "sha": hashlib.sha256(str(path).encode()).hexdigest(),
                },
            ).scalar_one()
            for line, row in enumerate(rows_of(feed, path), start=1):
                row[_INDEX["feed"]] = feed
                row[_INDEX["ingest_file_id"]] = file_id
                row[_INDEX["line_number"]] = line
                writer.writerow(row)
                count += 1
                if limit is not None and count >= limit:
                    return buffer, count
    return buffer, count


def copy_rows(raw, table: str, buffer: io.StringIO) -> float:
    buffer.seek(0)
    started = time.perf_counter()
    with raw.cursor() as cursor:
        cursor.execute("set timezone = 'Europe/Berlin'")
        cursor.copy_expert(f"copy {table} ({', '.join(COLUMNS)}) from stdin with (format csv)", buffer)
    raw.commit()
    return time.perf_counter() - started


def _resolve_and_measure(url: str) -> tuple[dict, float]:
    """resolve() on the database at `url`; returns its summary and this process's peak RSS
    in MiB. Runs in a spawned process, which holds nothing but resolution."""
    engine = make_engine(make_url(url))
    try:
        summary = resolve(engine).as_dict()
    finally:
        engine.dispose()
    return summary, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rerun(ground_truth: Path) -> None:
    """Reset, resolve and evaluate the `kms` database (loaded by `kms demo`)."""
    engine = make_engine(open_databases(load_settings()).kms)
    try:
        started = time.perf_counter()
        reset_resolution(engine)
        print(f"reset in {time.perf_counter() - started:.1f} s")
        summary = resolve(engine)
        print(f"resolve: {json.dumps(summary.as_dict())}")
        print(f"evaluate: {json.dumps(evaluate(engine, ground_truth).as_dict())}")
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data", type=Path, help="reuse generated data instead of generating")
    parser.add_argument("--rerun", action="store_true", help="reset, resolve and evaluate the kms database")
    parser.add_argument(
        "--ground-truth",
        type=Path,
        default=Path(".kms/demo/generated/ground_truth/ground_truth.csv.gz"),
        help="ground truth for --rerun",
    )
    args = parser.parse_args()
    if args.rerun:
        rerun(args.ground_truth)
        return

    settings = load_settings()
    server = open_databases(settings)
    name = f"kms_bench_identity_{os.getpid()}"
    url = server.kms
    admin = admin_connection(url)
    with admin.cursor() as cursor:
        cursor.execute(f'create database "{name}"')
    engine = make_engine(url.set(database=name))
    try:
        upgrade(engine)
        with tempfile.TemporaryDirectory(prefix="kms-bench-identity-") as tmp:
            data = args.data
            if data is None:
                data = Path(tmp) / "data"
                guests = max(1, round(args.records / 11.5))
                started = time.perf_counter()
                generate(data, guests, args.seed, workers=args.workers)
                print(f"generated {guests:,} guests in {time.perf_counter() - started:.1f} s")
            started = time.perf_counter()
            buffer, count = load_generated(engine, data, limit=args.records)
            print(f"mapped {count:,} records in {time.perf_counter() - started:.1f} s")

            raw = engine.raw_connection()
            try:
                with raw.cursor() as cursor:
                    cursor.execute(
                        "create unlogged table public.baseline_record as "
                        "select * from ingest.record with no data"
                    )
                raw.commit()
                baseline_copy = copy_rows(raw, "public.baseline_record", buffer)
                started = time.perf_counter()
                with raw.cursor() as cursor:
                    cursor.execute(
                        "select count(*) from "
                        "(select email, count(*) from public.baseline_record group by email) as g"
                    )
                    cursor.fetchone()
                baseline_group = time.perf_counter() - started
                with raw.cursor() as cursor:
                    cursor.execute("drop table public.baseline_record")
                raw.commit()
                copy_rows(raw, "ingest.record", buffer)
                with raw.cursor() as cursor:
                    # What the ingest merge does for each inserted record.
                    cursor.execute(
                        "insert into ingest.record_pending (record_id) select record_id from ingest.record"
                    )
                    cursor.execute("analyze ingest.record")
                raw.commit()
            finally:
                raw.close()

            with multiprocessing.get_context("spawn").Pool(1) as child:
                initial, peak_rss = child.apply(
                    _resolve_and_measure, (engine.url.render_as_string(hide_password=False),)
                )
            again = resolve(engine)
            with engine.begin() as conn:
                conn.execute(
                    text(
                        "with changed as (update ingest.record set changed_at = now() "
                        "where record_id % 100 = 0 returning record_id) "
                        "insert into ingest.record_pending (record_id) select record_id from changed"
                    )
                )
            incremental = resolve(engine)
            ground_truth = data / "ground_truth" / "ground_truth.csv.gz"
            evaluation = evaluate(engine, ground_truth)

        seconds = initial["elapsed_seconds"]
        rate = count / seconds
        print(
            f"baseline COPY of {count:,} rows (no indexes): {baseline_copy:.2f} s "
            f"= {count / baseline_copy:,.0f} rows/s"
        )
        print(f"baseline group by email over them:          {baseline_group:.2f} s")
        print(
            f"resolve, initial:     {seconds:.2f} s = {rate:,.0f} records/s "
            f"(bulk mode: {initial['bulk']}); ratio to COPY: {seconds / baseline_copy:.1f}x the time; "
            f"peak RSS {peak_rss:,.0f} MiB"
        )
        print(
            "  seconds per stage: " + ", ".join(f"{k} {v:.2f}" for k, v in initial["stage_seconds"].items())
        )
        print(f"  {json.dumps(initial)}")
        print(f"resolve, nothing new: {again.elapsed_seconds:.3f} s")
        print(
            f"resolve, 1 % changed: {incremental.elapsed_seconds:.2f} s "
            f"for {incremental.batch_records:,} records "
            f"({incremental.scope_records:,} in scope, {incremental.contacts_touched:,} contacts touched)"
        )
        print(
            f"evaluation: precision {evaluation.precision:.4f}, recall {evaluation.recall:.4f}, "
            f"F1 {evaluation.f1:.4f} over {evaluation.records_evaluated:,} records "
            f"({evaluation.records_unidentifiable:,} unidentifiable and "
            f"{evaluation.records_anonymous_cookie:,} anonymous-cookie records excluded, "
            f"{evaluation.records_missing:,} not loaded)"
        )
    finally:
        engine.dispose()
        with admin.cursor() as cursor:
            cursor.execute(f'drop database if exists "{name}" with (force)')
        admin.close()


if __name__ == "__main__":
    main()
