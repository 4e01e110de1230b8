"""Loading parsed rows exactly once: ledger, staging, quality gate, merge, quarantine."""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL, Engine

from campaign_lib.errors import ConfigError, FileRejected
from campaign_lib.ingest.feeds import load_feeds
from campaign_lib.ingest.load import file_fingerprint, load_rows
from campaign_lib.ingest.parse import parse_file
from campaign_lib.ingest.record import RejectedRow, SourceRecord
from campaign_lib.ingest.sftp_ingest import register_feed

BERLIN = dt.timezone(dt.timedelta(hours=2))
HOSTILE = "Robert'); DROP TABLE core.contact;-- {{ 7*7 }} <script>alert(1)</script>"


def receipt(number: int, amount: int = 1250, **fields) -> SourceRecord:
    values = {
        "source_system": "restaurant_pos",
        "record_kind": "receipt",
        "source_key": f"R11-{number}",
        "line_number": number + 1,
        "loyalty_card": f"RC{number:010d}",
        "activity_type": "restaurant_bill",
        "occurred_at": dt.datetime(2026, 7, 1, 19, 30, tzinfo=BERLIN),
        "amount_cents": amount,
        "currency": "EUR",
        "outlet": "Seeblick",
        "attributes": {"covers": 2},
    }
    values.update(fields)
    return SourceRecord(**values)


def load(engine: Engine, url: URL, rows, sha: str = "a", **kwargs):
    arguments = {
        "feed": "restaurant_pos",
        "channel": "sftp",
        "name": f"pos_receipts_{sha}.csv",
        "content_sha256": sha * 64,
        "size_bytes": 100,
        "rows": rows,
        "today": dt.date(2026, 11, 22),
    }
    arguments.update(kwargs)
    return load_rows(engine, url, **arguments)


def scalar(engine: Engine, sql: str, **params):
    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar()


def test_a_file_loads_and_is_accounted_for(clean_db: Engine, kms_url: URL) -> None:
    rows = [receipt(1), receipt(2), RejectedRow(4, ("negative amount", "closed_at: not a date"), "x,y,z")]
    result = load(clean_db, kms_url, rows)

    assert (result.status, result.rows_received, result.rows_loaded, result.rows_quarantined) == (
        "merged",
        3,
        2,
        1,
    )
    assert result.records_changed == 2
    assert scalar(clean_db, "select count(*) from ingest.record_pending") == 2
    assert scalar(clean_db, "select reasons from ingest.quarantine where line_number = 4") == [
        "negative amount",
        "closed_at: not a date",
    ]
    quality = scalar(clean_db, "select quality from ingest.file")
    assert all(entry["success"] for entry in quality["expectations"])
    assert scalar(clean_db, "select count(*) from ingest.stage_record") == 0


def test_the_same_content_twice_is_a_no_op(clean_db: Engine, kms_url: URL) -> None:
    load(clean_db, kms_url, [receipt(1)])

    def must_not_be_read() -> Iterator[SourceRecord]:
        raise AssertionError("a redelivered file must not be parsed again")
        yield

    again = load(clean_db, kms_url, must_not_be_read(), name="pos_receipts_copy.csv")
    assert again.duplicate and again.status == "merged"
    assert scalar(clean_db, "select count(*) from ingest.file") == 1


def test_a_corrected_file_updates_by_natural_key(clean_db: Engine, kms_url: URL) -> None:
    load(clean_db, kms_url, [receipt(1), receipt(2)])
    with clean_db.begin() as conn:
        conn.execute(text("delete from ingest.record_pending"))

    corrected = load(clean_db, kms_url, [receipt(1), receipt(2, amount=990)], sha="b")

    assert corrected.records_changed == 1
    assert scalar(clean_db, "select count(*) from ingest.record") == 2
    assert scalar(clean_db, "select amount_cents from ingest.record where source_key = 'R11-2'") == 990
    assert scalar(clean_db, "select record_id from ingest.record_pending") == scalar(
        clean_db, "select record_id from ingest.record where source_key = 'R11-2'"
    )


def test_a_file_of_new_and_known_keys_inserts_the_new_and_updates_only_the_changed(
    clean_db: Engine, kms_url: URL
) -> None:
    first = load(clean_db, kms_url, [receipt(1), receipt(2)])
    assert first.records_changed == 2
    with clean_db.begin() as conn:
        conn.execute(text("delete from ingest.record_pending"))

    # R11-0 sorts first, so the plain insert writes it before R11-1 conflicts; all of that
    # is rolled back and the upsert runs: one new record, one changed, one unchanged.
    mixed = load(clean_db, kms_url, [receipt(0), receipt(1), receipt(2, amount=990)], sha="b")

    assert (mixed.status, mixed.rows_loaded, mixed.records_changed) == ("merged", 3, 2)
    with clean_db.connect() as conn:
        queued = (
            conn.execute(
                text(
                    "select r.source_key from ingest.record_pending join ingest.record r using (record_id) "
                    "order by 1"
                )
            )
            .scalars()
            .all()
        )
    assert queued == ["R11-0", "R11-2"]
    assert scalar(clean_db, "select count(*) from ingest.record") == 3


def test_hostile_text_is_stored_as_data(clean_db: Engine, kms_url: URL) -> None:
    load(clean_db, kms_url, [receipt(1, first_name=HOSTILE, outlet="Tab\tand\nnewline \\ backslash")])
    assert scalar(clean_db, "select first_name from ingest.record") == HOSTILE
    assert scalar(clean_db, "select outlet from ingest.record") == "Tab\tand\nnewline \\ backslash"
    assert scalar(clean_db, "select count(*) from core.contact") == 0


def test_a_file_with_only_bad_rows_is_quarantined_whole(clean_db: Engine, kms_url: URL) -> None:
    result = load(
        clean_db, kms_url, [RejectedRow(2, ("negative amount",)), RejectedRow(3, ("negative amount",))]
    )
    assert (result.status, result.rows_received, result.rows_quarantined) == ("quarantined", 2, 2)
    assert "all 2 rows were rejected" in result.error
    assert scalar(clean_db, "select status from ingest.file") == "quarantined"
    assert scalar(clean_db, "select count(*) from ingest.quarantine where line_number is null") == 1
    # Each row keeps its own reason beside the file's.
    with clean_db.connect() as conn:
        rows = conn.execute(
            text(
                "select line_number, reasons from ingest.quarantine where line_number is not null order by 1"
            )
        ).all()
    assert [(row.line_number, row.reasons) for row in rows] == [
        (2, ["negative amount"]),
        (3, ["negative amount"]),
    ]
    assert scalar(clean_db, "select count(*) from ingest.record") == 0


def test_a_shrunken_snapshot_is_refused(clean_db: Engine, kms_url: URL) -> None:
    load(clean_db, kms_url, [receipt(n) for n in range(1, 11)], snapshot_max_shrink=0.5)
    shrunk = load(clean_db, kms_url, [receipt(n) for n in range(1, 4)], sha="b", snapshot_max_shrink=0.5)
    assert shrunk.status == "quarantined"
    assert "snapshot shrank from 10 to 3 rows" in shrunk.error
    assert scalar(clean_db, "select count(*) from ingest.record") == 10
    assert scalar(clean_db, "select error from ingest.file where status = 'quarantined'").startswith(
        "snapshot"
    )


@pytest.mark.parametrize(
    ("rows", "failure"),
    [
        pytest.param(
            [receipt(1), receipt(1)], "expect_column_values_to_be_unique(source_key): 2", id="duplicate-key"
        ),
        pytest.param(
            [receipt(1, currency="eur")], "expect_column_values_to_match_regex(currency)", id="bad-currency"
        ),
        pytest.param(
            [receipt(1, occurred_at=dt.datetime(1970, 1, 1, tzinfo=dt.UTC))],
            "expect_column_values_to_be_between(occurred_at)",
            id="implausible-time",
        ),
    ],
)
def test_the_quality_gate_quarantines_a_file_that_breaks_the_contract(
    clean_db: Engine, kms_url: URL, rows: list[SourceRecord], failure: str
) -> None:
    result = load(clean_db, kms_url, rows)
    assert result.status == "quarantined"
    assert result.error.startswith("quality gate failed")
    assert failure in result.error
    assert scalar(clean_db, "select count(*) from ingest.record") == 0
    assert scalar(clean_db, "select status from ingest.file") == "quarantined"


def test_a_file_naming_an_unknown_source_system_or_activity_type_is_quarantined_whole(
    clean_db: Engine, kms_url: URL
) -> None:
    """ingest.record has no per-row foreign keys: one check per file stands in for them."""
    rows = [
        receipt(1),
        receipt(2, activity_type="mud_bath"),
        receipt(3, activity_type="mud_bath", source_system="thermal_baths"),
    ]
    result = load(clean_db, kms_url, rows)
    assert result.status == "quarantined"
    assert (
        result.error == "unknown to the core tables: activity type 'mud_bath', source system 'thermal_baths'"
    )
    assert scalar(clean_db, "select count(*) from ingest.record") == 0

    # Reference rows outlive clean_db's truncation: remove this test's own afterwards.
    with clean_db.begin() as conn:
        conn.execute(text("insert into core.activity_type values ('mud_bath', 'A mud bath')"))
    try:
        registered = load(clean_db, kms_url, rows[:2], sha="b")
        assert (registered.status, registered.rows_loaded) == ("merged", 2)
        assert scalar(clean_db, "select activity_type from ingest.record where source_key = 'R11-2'") == (
            "mud_bath"
        )
    finally:
        with clean_db.begin() as conn:
            conn.execute(text("truncate ingest.record"))
            conn.execute(text("delete from core.activity_type where activity_type = 'mud_bath'"))


def test_a_value_that_does_not_fit_the_staging_schema_rejects_the_file(
    clean_db: Engine, kms_url: URL
) -> None:
    result = load(clean_db, kms_url, [receipt(1), receipt(2, currency="euro")])
    assert result.status == "quarantined"
    assert re.search(r"staging refused a standardised value: .*character\(3\)", result.error)
    assert scalar(clean_db, "select count(*) from ingest.record") == 0
    assert scalar(clean_db, "select count(*) from ingest.stage_record") == 0


def test_a_file_rejected_by_the_parser_half_way_is_quarantined_whole(clean_db: Engine, kms_url: URL) -> None:
    def truncated() -> Iterator[SourceRecord]:
        yield receipt(1)
        yield receipt(2)
        raise FileRejected("truncated: unterminated quote at end of file")

    result = load(clean_db, kms_url, truncated())
    assert (result.status, result.rows_received, result.rows_loaded) == ("quarantined", 2, 0)
    assert result.error == "truncated: unterminated quote at end of file"
    assert scalar(clean_db, "select count(*) from ingest.record") == 0
    assert scalar(clean_db, "select reasons from ingest.quarantine") == [result.error]


def test_a_load_killed_half_way_is_redone_on_retry(clean_db: Engine, kms_url: URL) -> None:
    def dies_after_two() -> Iterator[SourceRecord]:
        yield receipt(1)
        yield receipt(2)
        raise ConnectionResetError("worker killed")

    with pytest.raises(ConnectionResetError):
        load(clean_db, kms_url, dies_after_two())
    assert scalar(clean_db, "select status from ingest.file") == "received"
    assert scalar(clean_db, "select count(*) from ingest.record") == 0

    retry = load(clean_db, kms_url, [receipt(1), receipt(2), receipt(3)])
    assert (retry.status, retry.rows_loaded) == ("merged", 3)
    assert scalar(clean_db, "select count(*) from ingest.record") == 3


def test_two_copies_of_the_task_load_the_file_once(clean_db: Engine, kms_url: URL) -> None:
    results = []

    def run() -> None:
        results.append(load(clean_db, kms_url, [receipt(n) for n in range(1, 200)]))

    workers = [threading.Thread(target=run) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    assert sorted(result.duplicate for result in results) == [False, True]
    assert scalar(clean_db, "select count(*) from ingest.record") == 199
    assert scalar(clean_db, "select rows_loaded from ingest.file") == 199


def test_the_one_pass_gate_agrees_with_great_expectations(clean_db: Engine, kms_url: URL) -> None:
    """The loader's gate computes GX's suite in one SQL pass; GX itself must reach the same verdict."""
    from campaign_lib.ingest.load import _Counts, _stage
    from campaign_lib.ingest.quality import check_staged_file, check_staged_file_gx

    today = dt.date(2026, 11, 22)
    rows = [
        receipt(1),
        receipt(1, amount=5),
        receipt(
            2, email="a@b.de", phone_e164="+4917012345678", country_code="DE", birth_date=dt.date(1980, 1, 2)
        ),
        receipt(3, email="not-an-email", phone_e164="0170 123", country_code="de", currency="eur"),
        receipt(4, amount=100_000_001, quantity=0, birth_date=dt.date(2027, 1, 1)),
        receipt(5, occurred_at=dt.datetime(1999, 12, 31, 23, 0, tzinfo=dt.UTC), quantity=100_000),
        receipt(6, amount=None, currency=None, occurred_at=dt.datetime(2029, 2, 1, tzinfo=dt.UTC)),
    ]
    with clean_db.begin() as conn:
        file_id = conn.execute(
            text(
                "insert into ingest.file (feed, channel, name, size_bytes, content_sha256) "
                "values ('restaurant_pos', 'sftp', 'x.csv', 1, :sha) returning ingest_file_id"
            ),
            {"sha": "c" * 64},
        ).scalar_one()
    for staged in (rows, [receipt(7), receipt(8)]):
        with clean_db.begin() as conn:
            conn.execute(text("delete from ingest.stage_record"))
        _stage(clean_db, staged, file_id, "restaurant_pos", _Counts())
        fast = check_staged_file(clean_db, file_id, 40, today)
        reference = check_staged_file_gx(kms_url, file_id, 40, today)
        assert (fast.passed, fast.failures) == (reference.passed, reference.failures)
        pick = ("expectation", "success", "critical", "unexpected_count", "element_count")
        assert [{k: e[k] for k in pick} for e in fast.report["expectations"]] == [
            {k: e[k] for k in pick} for e in reference.report["expectations"]
        ]
    assert not fast.report["expectations"][2]["success"]  # 2 rows against 40 before: reported only
    with clean_db.begin() as conn:
        conn.execute(text("delete from ingest.stage_record"))


def test_the_compiled_copy_line_matches_the_generic_serialisation() -> None:
    from campaign_lib.ingest.load import _copy_value, _line_function
    from campaign_lib.ingest.record import RECORD_COLUMNS

    tricky = "Tab\tand\nnewline\r \\ backslash ü"
    rows = [
        receipt(1),
        receipt(2, attributes={}, outlet=tricky, first_name=HOSTILE, birth_date=dt.date(1980, 2, 3)),
        receipt(3, attributes={"note": tricky, "n": 1.5, "list": [1, None]}, quantity=2),
        receipt(4, amount="12", line_number="5"),  # a wrong type still serialises as before
    ]
    for row in rows:
        assert _line_function()(row) == "\t".join(_copy_value(getattr(row, name)) for name in RECORD_COLUMNS)


@pytest.mark.parametrize("gate", ["great_expectations", "sql"])
def test_both_ways_of_running_the_gate_load_and_refuse_alike(
    clean_db: Engine, kms_url: URL, monkeypatch: pytest.MonkeyPatch, gate: str
) -> None:
    monkeypatch.setenv("KMS_QUALITY_GATE", gate)
    good = load(clean_db, kms_url, [receipt(1), receipt(2)])
    bad = load(clean_db, kms_url, [receipt(3), receipt(3)], sha="b")
    assert (good.status, bad.status) == ("merged", "quarantined")
    assert "expect_column_values_to_be_unique(source_key): 2" in bad.error


def test_an_unknown_gate_setting_is_a_clear_error(clean_db: Engine, kms_url: URL, monkeypatch) -> None:
    monkeypatch.setenv("KMS_QUALITY_GATE", "yolo")
    with pytest.raises(ConfigError, match="KMS_QUALITY_GATE must be one of great_expectations, sql"):
        load(clean_db, kms_url, [receipt(1)])


# The product catalogue ----------------------------------------------------------------------

CATALOGUE = (
    "sku,name,category,price,currency\n"
    "WP-DAY,Wasserwelt Tageskarte,water_park,33.00,EUR\n"
    "WP-DAY-HOTEL,Wasserwelt Tageskarte Hotelgast,water_park,29.70,EUR\n"
    '"SOU-1","Wasser 0,5 l",shop_item,2.50,EUR\n'
    "BAD,Tasse,Shop Item,9.00,EUR\n"
)


def load_catalogue(
    engine: Engine, url: URL, tmp_path, content: str, name: str = "products_20261101T010000.csv"
):
    spec = load_feeds()["products"]
    register_feed(engine, spec)
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    sha256, size = file_fingerprint(path)
    return load_rows(
        engine,
        url,
        feed=spec.name,
        channel="local",
        name=name,
        content_sha256=sha256,
        size_bytes=size,
        rows=parse_file(spec, path),
        snapshot_max_shrink=spec.snapshot.max_shrink,
    )


def products(engine: Engine) -> list[tuple]:
    with engine.connect() as conn:
        return [
            tuple(row)
            for row in conn.execute(
                text("select sku, name, category, price_cents, currency from core.product order by sku")
            )
        ]


def test_a_catalogue_upserts_products_by_sku_and_an_unchanged_one_changes_nothing(
    clean_db: Engine, kms_url: URL, tmp_path
) -> None:
    first = load_catalogue(clean_db, kms_url, tmp_path, CATALOGUE)
    assert (first.status, first.rows_received, first.rows_loaded, first.rows_quarantined) == (
        "merged",
        4,
        3,
        1,
    )
    assert first.records_changed == 3
    assert products(clean_db) == [
        ("SOU-1", "Wasser 0,5 l", "shop_item", 250, "EUR"),
        ("WP-DAY", "Wasserwelt Tageskarte", "water_park", 3300, "EUR"),
        ("WP-DAY-HOTEL", "Wasserwelt Tageskarte Hotelgast", "water_park", 2970, "EUR"),
    ]
    assert scalar(clean_db, "select reasons from ingest.quarantine") == [
        "category 'Shop Item' is not a lower-case identifier such as water_park"
    ]
    # Products are not source records: nothing for identity resolution.
    assert scalar(clean_db, "select count(*) from ingest.record") == 0

    # The next day's catalogue: the same products, one new price, the bad row fixed.
    tomorrow = CATALOGUE.replace("33.00", "34.50").replace("Shop Item", "shop_item")
    second = load_catalogue(clean_db, kms_url, tmp_path, tomorrow, "products_20261102T010000.csv")
    assert (second.status, second.rows_loaded, second.rows_quarantined, second.records_changed) == (
        "merged",
        4,
        0,
        2,
    )
    assert ("WP-DAY", "Wasserwelt Tageskarte", "water_park", 3450, "EUR") in products(clean_db)

    # The same catalogue under another name changes nothing; a cut one is refused.
    same = load_catalogue(clean_db, kms_url, tmp_path, tomorrow + "\n", "products_20261103T010000.csv")
    assert (same.status, same.records_changed) == ("merged", 0)
    cut = "sku,name,category,price,currency\nWP-DAY,Wasserwelt Tageskarte,water_park,34.50,EUR\n"
    shrunk = load_catalogue(clean_db, kms_url, tmp_path, cut, "products_20261104T010000.csv")
    assert shrunk.status == "quarantined" and "snapshot shrank from 4 to 1 rows" in shrunk.error
    assert len(products(clean_db)) == 4


def test_activities_written_before_their_product_point_to_it_once_the_catalogue_has_it(
    clean_db: Engine, kms_url: URL, tmp_path
) -> None:
    with clean_db.begin() as conn:
        contact = conn.execute(
            text(
                "with a as (insert into core.account (account_type) values ('household') returning account_id) "
                "insert into core.contact (account_id, status) select account_id, 'active' from a "
                "returning contact_id"
            )
        ).scalar_one()
        # As identity resolution writes a ticket whose SKU the catalogue does not know yet.
        conn.execute(
            text(
                "insert into core.activity (contact_id, activity_type, source_system, source_ref, "
                "occurred_at, attributes) values (:c, 'water_park_ticket', 'ticketing', 'T1', now(), "
                """'{"ticket_type": "adult", "product_sku": "WP-DAY-HOTEL", "product_name": "x"}')"""
            ),
            {"c": contact},
        )
    load_catalogue(clean_db, kms_url, tmp_path, CATALOGUE)
    with clean_db.connect() as conn:
        sku, attributes = conn.execute(
            text("select p.sku, a.attributes from core.activity a join core.product p using (product_id)")
        ).one()
    assert (sku, attributes) == ("WP-DAY-HOTEL", {"ticket_type": "adult"})


def test_a_ticket_with_an_sku_the_catalogue_does_not_know_loads_and_is_counted(
    clean_db: Engine, kms_url: URL, tmp_path
) -> None:
    load_catalogue(clean_db, kms_url, tmp_path, CATALOGUE)
    rows = [
        receipt(1, product_sku="WP-DAY-HOTEL"),
        receipt(2, product_sku="WP-NIGHT"),
        receipt(3, product_sku="WP-NIGHT"),
        receipt(4),
    ]
    result = load(clean_db, kms_url, rows)
    assert (result.status, result.rows_loaded) == ("merged", 4)
    quality = scalar(clean_db, "select quality from ingest.file where feed = 'restaurant_pos'")
    assert quality["unknown_product_skus"] == {"rows": 2, "skus": ["WP-NIGHT"]}
