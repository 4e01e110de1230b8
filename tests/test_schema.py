"""The core schema's constraints, each shown to reject what it must, on real PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from campaign_lib.db.migrate import current_revision, head_revision, upgrade

FOREIGN_KEY, UNIQUE, CHECK, NOT_NULL, BAD_ENUM = "23503", "23505", "23514", "23502", "22P02"


@pytest.fixture
def resort(clean_db: Engine) -> dict[str, int]:
    """Two households with an address each, one contact with an email, one product."""
    ids = {}
    with clean_db.begin() as conn:

        def insert(sql: str, **values) -> int:
            return conn.execute(text(sql), values).scalar_one()

        ids["account"] = insert(
            "insert into core.account (account_type, name) values ('household', 'Müller') returning account_id"
        )
        ids["other_account"] = insert(
            "insert into core.account (account_type) values ('household') returning account_id"
        )
        ids["location"] = insert(
            "insert into core.location (account_id, street, postal_code, city, country_code) "
            "values (:a, 'Hauptstraße 1', '79312', 'Emmendingen', 'DE') returning location_id",
            a=ids["account"],
        )
        ids["other_location"] = insert(
            "insert into core.location (account_id, country_code) values (:a, 'AT') returning location_id",
            a=ids["other_account"],
        )
        ids["contact"] = insert(
            "insert into core.contact (account_id, location_id, first_name, email) "
            "values (:a, :l, 'Anna', 'anna@example.org') returning contact_id",
            a=ids["account"],
            l=ids["location"],
        )
        ids["product"] = insert(
            "insert into core.product (sku, name, category, price_cents, currency) "
            "values ('WP-DAY', 'Water park day ticket', 'water_park', 3900, 'EUR') returning product_id"
        )
        conn.execute(
            text(
                "insert into core.identifier (contact_id, kind, value, source_system) "
                "values (:c, 'email', 'anna@example.org', 'crm')"
            ),
            {"c": ids["contact"]},
        )
        conn.execute(
            text(
                "insert into core.activity (contact_id, activity_type, source_system, source_ref, occurred_at, "
                "amount_cents, currency) values (:c, 'hotel_stay', 'hotel_pms', 'R-1', now(), 45000, 'EUR')"
            ),
            {"c": ids["contact"]},
        )
        ids["file"] = insert(
            "insert into ingest.file (feed, channel, name, size_bytes, content_sha256) "
            "values ('hotel_pms', 'sftp', 'PMS_1.csv', 10, repeat('a', 64)) returning ingest_file_id"
        )
    return ids


REJECTED = [
    pytest.param(
        "insert into core.contact (first_name) values ('Nobody')",
        NOT_NULL,
        id="contact-without-account",
    ),
    pytest.param(
        "insert into core.contact (account_id) values (999999)",
        FOREIGN_KEY,
        id="contact-of-unknown-account",
    ),
    pytest.param(
        "insert into core.contact (account_id, location_id) values ({account}, {other_location})",
        FOREIGN_KEY,
        id="contact-location-of-another-account",
    ),
    pytest.param(
        "insert into core.contact (account_id, status) values ({account}, 'merged')",
        CHECK,
        id="merged-contact-without-survivor",
    ),
    pytest.param(
        "insert into core.contact (account_id, merged_into_contact_id) values ({account}, {contact})",
        CHECK,
        id="active-contact-pointing-to-survivor",
    ),
    pytest.param(
        "insert into core.contact (account_id, status) values ({account}, 'deleted')",
        BAD_ENUM,
        id="unknown-contact-status",
    ),
    pytest.param(
        "insert into core.contact (account_id, email) values ({account}, ' Anna@Example.org')",
        CHECK,
        id="contact-email-not-normalised",
    ),
    pytest.param(
        "insert into core.contact (account_id, phone_e164) values ({account}, '0170 1234567')",
        CHECK,
        id="contact-phone-not-e164",
    ),
    pytest.param(
        "insert into core.contact (account_id, birth_date) values ({account}, '1850-01-01')",
        CHECK,
        id="birth-date-before-1900",
    ),
    pytest.param(
        "insert into core.account (account_type) values ('family')",
        BAD_ENUM,
        id="unknown-account-type",
    ),
    pytest.param(
        "insert into core.location (account_id, country_code) values ({account}, 'de')",
        CHECK,
        id="country-not-iso-3166-alpha2",
    ),
    pytest.param(
        "insert into core.location (account_id, country_code, valid_from, valid_to) "
        "values ({account}, 'DE', '2026-01-01', '2025-01-01')",
        CHECK,
        id="location-valid-to-before-from",
    ),
    pytest.param(
        "insert into core.identifier (contact_id, kind, value, source_system) "
        "values ({contact}, 'email', 'anna@example.org', 'website')",
        UNIQUE,
        id="identifier-twice-per-kind-and-value",
    ),
    pytest.param(
        "insert into core.identifier (contact_id, kind, value, source_system) "
        "values ({contact}, 'email', 'Anna@Example.org', 'website')",
        CHECK,
        id="identifier-email-not-lower-case",
    ),
    pytest.param(
        "insert into core.identifier (contact_id, kind, value, source_system) "
        "values ({contact}, 'phone', '+49 170 1234567', 'website')",
        CHECK,
        id="identifier-phone-not-e164",
    ),
    pytest.param(
        "insert into core.identifier (contact_id, kind, value, source_system) "
        "values ({contact}, 'fax', '123', 'website')",
        BAD_ENUM,
        id="identifier-unknown-kind",
    ),
    pytest.param(
        "insert into core.identifier (contact_id, kind, value, source_system) "
        "values ({contact}, 'loyalty_card', 'C-1', 'unknown_pos')",
        FOREIGN_KEY,
        id="identifier-of-unknown-source-system",
    ),
    pytest.param(
        "insert into core.identifier (contact_id, kind, value, source_system, first_seen_at, last_seen_at) "
        "values ({contact}, 'loyalty_card', 'C-2', 'shop_pos', '2026-02-01', '2026-01-01')",
        CHECK,
        id="identifier-last-seen-before-first-seen",
    ),
    pytest.param(
        "insert into core.activity (contact_id, activity_type, source_system, source_ref, occurred_at) "
        "values ({contact}, 'hotel_stay', 'hotel_pms', 'R-1', now())",
        UNIQUE,
        id="activity-natural-key-twice",
    ),
    pytest.param(
        "insert into core.activity (contact_id, activity_type, source_system, source_ref, occurred_at, "
        "amount_cents, currency) values ({contact}, 'shop_purchase', 'shop_pos', 'S-1', now(), -100, 'EUR')",
        CHECK,
        id="activity-negative-amount",
    ),
    pytest.param(
        "insert into core.activity (contact_id, activity_type, source_system, source_ref, occurred_at, "
        "amount_cents) values ({contact}, 'shop_purchase', 'shop_pos', 'S-2', now(), 100)",
        CHECK,
        id="activity-amount-without-currency",
    ),
    pytest.param(
        "insert into core.activity (contact_id, activity_type, source_system, source_ref, occurred_at, "
        "amount_cents, currency) values ({contact}, 'shop_purchase', 'shop_pos', 'S-3', now(), 100, 'eur')",
        CHECK,
        id="activity-currency-not-iso-4217",
    ),
    pytest.param(
        "insert into core.activity (contact_id, activity_type, source_system, source_ref, occurred_at) "
        "values ({contact}, 'skydiving', 'shop_pos', 'S-4', now())",
        FOREIGN_KEY,
        id="activity-unknown-type",
    ),
    pytest.param(
        "insert into core.activity (contact_id, activity_type, source_system, source_ref, occurred_at, ended_at) "
        "values ({contact}, 'hotel_stay', 'hotel_pms', 'R-2', '2026-05-02', '2026-05-01')",
        CHECK,
        id="activity-ends-before-it-starts",
    ),
    pytest.param(
        "insert into core.activity (contact_id, activity_type, source_system, source_ref, occurred_at, quantity) "
        "values ({contact}, 'shop_purchase', 'shop_pos', 'S-5', now(), 0)",
        CHECK,
        id="activity-zero-quantity",
    ),
    pytest.param(
        "insert into core.activity (contact_id, activity_type, source_system, source_ref, occurred_at, attributes) "
        "values ({contact}, 'shop_purchase', 'shop_pos', 'S-6', now(), '[1, 2]')",
        CHECK,
        id="activity-attributes-not-an-object",
    ),
    pytest.param(
        "insert into core.consent (contact_id, channel, purpose, status, recorded_at, source_system) "
        "values ({contact}, 'fax', 'marketing', 'opt_in', now(), 'website')",
        BAD_ENUM,
        id="consent-unknown-channel",
    ),
    pytest.param(
        "insert into core.consent (contact_id, channel, purpose, status, recorded_at, source_system, "
        "double_opt_in_at) values ({contact}, 'email', 'newsletter', 'opt_out', now(), 'website', now())",
        CHECK,
        id="double-opt-in-on-an-opt-out",
    ),
    pytest.param(
        "insert into core.inquiry (contact_id, source_system, source_ref, opened_at, status) "
        "values ({contact}, 'website', 'T-1', now(), 'closed')",
        CHECK,
        id="closed-inquiry-without-closed-at",
    ),
    pytest.param(
        "insert into core.product (sku, name, category, price_cents) values ('X', 'X', 'shop', 100)",
        CHECK,
        id="product-price-without-currency",
    ),
    pytest.param(
        "insert into ingest.file (feed, channel, name, size_bytes, content_sha256) "
        "values ('hotel_pms', 'sftp', 'PMS_1.csv', 10, repeat('a', 64))",
        UNIQUE,
        id="same-file-content-twice-per-feed",
    ),
    pytest.param(
        "insert into ingest.file (feed, channel, name, size_bytes, content_sha256) "
        "values ('hotel_pms', 'sftp', 'x.csv', 10, 'not-a-hash')",
        CHECK,
        id="ledger-fingerprint-not-sha256",
    ),
    pytest.param(
        "insert into ingest.file (feed, channel, name, size_bytes, content_sha256, status) "
        "values ('hotel_pms', 'sftp', 'y.csv', 10, repeat('b', 64), 'quarantined')",
        CHECK,
        id="quarantined-file-without-reason",
    ),
    pytest.param(
        "insert into ingest.file (feed, channel, name, size_bytes, content_sha256, rows_received, rows_loaded, "
        "rows_quarantined) values ('hotel_pms', 'sftp', 'z.csv', 10, repeat('c', 64), 10, 8, 3)",
        CHECK,
        id="ledger-more-rows-accounted-than-received",
    ),
    pytest.param(
        "insert into ingest.quarantine (ingest_file_id, line_number, reasons) values ({file}, 7, '{{}}')",
        CHECK,
        id="quarantine-without-reason",
    ),
    pytest.param(
        "insert into ingest.quarantine (ingest_file_id, line_number, reasons) values (999999, 7, '{{bad}}')",
        FOREIGN_KEY,
        id="quarantine-of-unknown-file",
    ),
]


@pytest.mark.parametrize(("statement", "sqlstate"), REJECTED)
def test_constraint_rejects(resort: dict[str, int], engine: Engine, statement: str, sqlstate: str) -> None:
    with pytest.raises(DBAPIError) as raised, engine.begin() as conn:
        conn.execute(text(statement.format(**resort)))
    assert raised.value.orig.pgcode == sqlstate, raised.value.orig.pgerror


def test_valid_rows_are_accepted(resort: dict[str, int], engine: Engine) -> None:
    """The counterpart of the rejections: well-formed rows of every table load."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "insert into core.contact (account_id, location_id, status, phone_e164, birth_date, "
                "preferred_language) values (:a, :l, 'active', '+491701234567', '1985-03-04', 'de')"
            ),
            {"a": resort["account"], "l": resort["location"]},
        )
        conn.execute(
            text(
                "insert into core.consent (contact_id, channel, purpose, status, recorded_at, source_system, "
                "source_ref, double_opt_in_at) values (:c, 'email', 'newsletter', 'opt_in', now(), 'website', "
                "'E-1', now() + interval '5 minutes')"
            ),
            {"c": resort["contact"]},
        )
        conn.execute(
            text(
                "insert into ingest.quarantine (ingest_file_id, line_number, raw_line, reasons) "
                "values (:f, 3, 'x;y', array['birth date in the future'])"
            ),
            {"f": resort["file"]},
        )
        count = conn.execute(text("select count(*) from core.contact")).scalar_one()
    assert count == 2


def test_merged_contact_points_to_its_survivor(resort: dict[str, int], engine: Engine) -> None:
    with engine.begin() as conn:
        duplicate = conn.execute(
            text("insert into core.contact (account_id) values (:a) returning contact_id"),
            {"a": resort["account"]},
        ).scalar_one()
        conn.execute(
            text(
                "update core.contact set status = 'merged', merged_into_contact_id = :s where contact_id = :d"
            ),
            {"s": resort["contact"], "d": duplicate},
        )
        survivor = conn.execute(
            text("select merged_into_contact_id from core.contact where contact_id = :d"), {"d": duplicate}
        ).scalar_one()
    assert survivor == resort["contact"]


def frozen_run(conn: Connection, campaign_name: str = "spring") -> int:
    """A campaign and one frozen run of it; returns the run's id."""
    conn.execute(
        text(
            "insert into campaign.campaign (campaign_name, origin, definition_version, definition) "
            "values (:n, 'file', '0000000000000000', '{}')"
        ),
        {"n": campaign_name},
    )
    return conn.execute(
        text(
            "insert into campaign.campaign_run (campaign_name, dag_id, run_id, status, definition_version, "
            "selection_name, selection_version, as_of, frozen_at) values (:n, 'd', 'r', 'frozen', 'v', "
            "'s', 'v', now(), now()) returning campaign_run_id"
        ),
        {"n": campaign_name},
    ).scalar_one()


def test_a_message_that_becomes_sent_gets_one_contact_history_row(
    resort: dict[str, int], engine: Engine
) -> None:
    """Whatever statement makes a message sent (inserted as sent, or updated to sent), the
    database writes its contact-history row once; other updates of a sent message add none."""
    history = (
        "select channel::text, campaign_name, sent_at is not null from campaign.contact_history order by 1"
    )
    with engine.begin() as conn:
        run = frozen_run(conn)
        conn.execute(
            text(
                "insert into campaign.message (message_key, campaign_run_id, contact_id, channel, cell, batch_no, "
                "status, sent_at, reason) values (md5('email'), :r, :c, 'email', 'main', 0, 'sent', now(), null), "
                "(md5('sms'), :r, :c, 'sms', 'main', 0, 'pending', null, null), "
                "(md5('push'), :r, :c, 'push', 'main', 0, 'failed_hard', null, 'no token')"
            ),
            {"r": run, "c": resort["contact"]},
        )
        after_insert = conn.execute(text(history)).all()
        conn.execute(
            text("update campaign.message set status = 'sent', sent_at = now() where channel = 'sms'")
        )
        conn.execute(text("update campaign.message set updated_at = now(), attempts = attempts + 1"))
        after_updates = conn.execute(text(history)).all()

    assert after_insert == [("email", "spring", True)]
    assert after_updates == [("email", "spring", True), ("sms", "spring", True)]


def test_latest_consent_entry_wins(resort: dict[str, int], engine: Engine) -> None:
    entries = [
        ("opt_in", "2026-01-01T10:00:00Z", "C-1"),
        ("opt_out", "2026-03-01T10:00:00Z", "C-2"),
        ("opt_in", "2026-02-01T10:00:00Z", "C-3"),
    ]
    with engine.begin() as conn:
        for status, recorded_at, ref in entries:
            conn.execute(
                text(
                    "insert into core.consent (contact_id, channel, purpose, status, recorded_at, source_system, "
                    "source_ref) values (:c, 'email', 'marketing', :s, :t, 'website', :r)"
                ),
                {"c": resort["contact"], "s": status, "t": recorded_at, "r": ref},
            )
        current = conn.execute(
            text("select status from core.current_consent where contact_id = :c and channel = 'email'"),
            {"c": resort["contact"]},
        ).scalar_one()
    assert current == "opt_out"


def test_selection_query_uses_the_covering_activity_index(resort: dict[str, int], engine: Engine) -> None:
    """The index that ADR 0001 relies on serves a typical selection predicate."""
    with engine.begin() as conn:
        # 200 contacts with 50 activities each, so the planner has real statistics.
        conn.execute(
            text(
                "insert into core.contact (account_id) select :a from generate_series(1, 200); "
                "insert into core.activity (contact_id, activity_type, source_system, source_ref, occurred_at) "
                "select c.contact_id, (array['hotel_stay', 'restaurant_bill', 'shop_purchase'])[1 + n % 3], "
                "'shop_pos', 'G-' || c.contact_id || '-' || n, now() - n * interval '7 days' "
                "from core.contact as c cross join generate_series(1, 50) as n; "
                "analyze core.activity"
            ),
            {"a": resort["account"]},
        )
    with engine.connect() as conn:
        plan = "\n".join(
            row[0]
            for row in conn.execute(
                text(
                    "explain select contact_id, count(*) from core.activity "
                    "where contact_id = :c and activity_type = 'hotel_stay' "
                    "and occurred_at > now() - interval '365 days' group by contact_id"
                ),
                {"c": resort["contact"]},
            )
        )
    assert "activity_contact_type_time_idx" in plan


def test_upgrade_is_idempotent(engine: Engine) -> None:
    before = current_revision(engine)
    assert upgrade(engine) == (before, head_revision())
    assert current_revision(engine) == head_revision()
