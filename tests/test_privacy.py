"""Erasure on request: the person is gone from every table, stays out of later loads, and the
reports of past campaigns keep their counts."""

from __future__ import annotations

import json
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import DBAPIError
from test_cli import assert_one_line_error, kms
from test_identity import ANNA, add, at, contact_of, rec, scalar
from test_load import load, receipt
from test_schema import frozen_run

from campaign_lib.identity import resolve
from campaign_lib.privacy import PrivacyRequestError, erase, erasures, person_data
from campaign_lib.sqlfiles import queries

ANNA_EMAIL = "anna.muster@example.org"
ANNA_PHONE = "+491701234567"
ANNA_CARD = "RC0000000042"
MAX = {"first_name": "Max", "last_name": "Beispiel"}
MAX_EMAIL = "max.beispiel@example.org"


def resort(engine: Engine) -> dict[str, int]:
    """Anna (CRM contact, website registration with a newsletter opt-in, an inquiry, a
    receipt on her loyalty card) and Max (one registration), resolved; a frozen campaign
    run with a sent SMS and a pending email to Anna, her open with a browser, an address
    suppression of her email, and quarantined rows of both."""
    add(
        engine,
        rec(
            "crm",
            "CON-7",
            record_kind="contact",
            crm_contact_id="CON-7",
            email=ANNA_EMAIL,
            phone_e164=ANNA_PHONE,
            loyalty_card=ANNA_CARD,
            street="Hauptstraße 1",
            postal_code="79312",
            city="Emmendingen",
            country_code="DE",
            **ANNA,
        ),
        rec(
            "website",
            "nl-7",
            email=ANNA_EMAIL,
            cookie_id="c0ffee0000000007",
            activity_type="newsletter_signup",
            occurred_at=at(2026, 1),
            consent_channel="email",
            consent_purpose="newsletter",
            consent_status="opt_in",
            double_opt_in_at=at(2026, 1, 2),
            **ANNA,
        ),
        rec(
            "website",
            "inq-7",
            email=ANNA_EMAIL,
            inquiry_topic="booking",
            inquiry_body="Is the sauna open? Call me on 0170 1234567.",
            occurred_at=at(2026, 2),
            **ANNA,
        ),
        rec(
            "restaurant_pos",
            "R-7",
            record_kind="receipt",
            loyalty_card=ANNA_CARD,
            activity_type="restaurant_bill",
            occurred_at=at(2026, 3),
            amount_cents=4200,
            currency="EUR",
            attributes={"table": "12", "note": "Anna's birthday"},
        ),
        rec(
            "website",
            "reg-8",
            email=MAX_EMAIL,
            activity_type="web_registration",
            occurred_at=at(2026, 1),
            **MAX,
        ),
    )
    resolve(engine)
    anna = contact_of(engine, "crm", "CON-7")
    with engine.begin() as conn:
        run = frozen_run(conn)
        conn.execute(
            text(
                "insert into campaign.audience (campaign_run_id, contact_id, account_id, channel, cell, "
                "selection_version) select :r, contact_id, account_id, 'sms', 'main', 'v' "
                "from core.contact where contact_id = :c"
            ),
            {"r": run, "c": anna},
        )
        conn.execute(
            text(
                "insert into campaign.message (message_key, campaign_run_id, contact_id, channel, cell, batch_no, "
                "status, sent_at, address) values "
                "(md5('sms'), :r, :c, 'sms', 'main', 0, 'sent', now(), :phone), "
                "(md5('email'), :r, :c, 'email', 'main', 0, 'pending', null, null)"
            ),
            {"r": run, "c": anna, "phone": ANNA_PHONE},
        )
        conn.execute(
            text(
                "insert into campaign.message_event (message_id, campaign_run_id, contact_id, channel, "
                "event_type, occurred_at, user_agent, source, detail) select message_id, campaign_run_id, "
                "contact_id, channel, 'delivered', now(), 'Mozilla/5.0 (Anna''s phone)', 'sms', "
                '\'{"to": "' + ANNA_PHONE + "\"}' from campaign.message where channel = 'sms'"
            )
        )
        conn.execute(
            text(
                "insert into campaign.suppression (address_kind, address, reason, source) "
                "values ('email', :e, 'unsubscribe', 'tracking')"
            ),
            {"e": ANNA_EMAIL},
        )
        file_id = conn.execute(text("select min(ingest_file_id) from ingest.file")).scalar_one()
        conn.execute(
            text(
                "insert into ingest.quarantine (ingest_file_id, line_number, raw_line, reasons) values "
                "(:f, 90, :a, array['birth date in the future']), (:f, 91, :m, array['birth date in the future'])"
            ),
            {
                "f": file_id,
                "a": f"CON-7;Anna;Muster;{ANNA_EMAIL.upper()};2099-01-01",
                "m": f"x;Max;{MAX_EMAIL}",
            },
        )
    return {"anna": anna, "max": contact_of(engine, "website", "reg-8"), "run": run}


def rows_naming(engine: Engine, *values: str) -> dict[str, int]:
    """Per table of the core, ingest, campaign and privacy schemas: rows whose text holds
    one of `values` (case-insensitive)."""
    found = {}
    with engine.connect() as conn:
        tables = conn.execute(
            text(
                "select format('%I.%I', table_schema, table_name) from information_schema.tables "
                "where table_schema in ('core', 'ingest', 'campaign', 'privacy') and table_type = 'BASE TABLE'"
            )
        ).scalars()
        for table in tables:
            count = conn.execute(
                text(f"select count(*) from {table} as t where t::text ilike any (:patterns)"),
                {"patterns": [f"%{value}%" for value in values]},
            ).scalar_one()
            if count:
                found[table] = count
    return found


def test_erasure_leaves_nothing_that_names_the_person_and_keeps_the_reports_counts(clean_db: Engine) -> None:
    ids = resort(clean_db)
    revenue = scalar(clean_db, "select sum(amount_cents) from core.activity")
    activities = scalar(clean_db, "select count(*) from core.activity where contact_id = :c", c=ids["anna"])
    history = scalar(clean_db, "select count(*) from campaign.contact_history")
    assert rows_naming(clean_db, ANNA_EMAIL, ANNA_CARD, "Muster")

    result = erase(
        clean_db, email=f"  {ANNA_EMAIL.upper()} ", requested_by="dpo@resort.example", reason="T-4711"
    )

    assert result.status == "erased" and result.contact_ids == (ids["anna"],)
    assert (
        rows_naming(
            clean_db, ANNA_EMAIL, ANNA_PHONE, ANNA_CARD, "CON-7", "c0ffee0000000007", "Muster", "sauna"
        )
        == {}
    )
    with clean_db.connect() as conn:
        contact = (
            conn.execute(text("select * from core.contact where contact_id = :c"), {"c": ids["anna"]})
            .one()
            ._mapping
        )
        messages = conn.execute(
            text("select channel::text, status::text, reason, address from campaign.message order by channel")
        ).all()
        suppressions = conn.execute(
            text("select contact_id, address, channel, reason::text from campaign.suppression")
        ).all()
    assert contact["status"] == "erased"
    assert {k for k, v in contact.items() if v is not None} == {
        "contact_id",
        "account_id",
        "status",
        "created_at",
        "updated_at",
    }
    # Reports of past campaigns and revenue keep their counts; the pending email is never sent.
    assert scalar(clean_db, "select sum(amount_cents) from core.activity") == revenue
    assert (
        scalar(clean_db, "select count(*) from core.activity where contact_id = :c", c=ids["anna"])
        == activities
    )
    assert scalar(clean_db, "select count(*) from core.activity where attributes <> '{}'") == 0
    assert scalar(clean_db, "select count(*) from campaign.contact_history") == history
    assert scalar(clean_db, "select count(*) from campaign.audience") == 1
    assert [tuple(m) for m in messages] == [
        ("email", "skipped", "erased on request", None),
        ("sms", "sent", None, None),
    ]
    assert [tuple(s) for s in suppressions] == [(ids["anna"], None, None, "erasure")]
    # Max is untouched.
    assert scalar(clean_db, "select email from core.contact where contact_id = :c", c=ids["max"]) == MAX_EMAIL
    assert scalar(clean_db, "select count(*) from ingest.quarantine") == 1
    # The log names who asked and what went, and nothing of the person.
    [entry] = erasures(clean_db)
    assert (entry.erasure_id, entry.requested_by, entry.reason) == (
        result.erasure_id,
        "dpo@resort.example",
        "T-4711",
    )
    assert entry.contact_ids == [ids["anna"]]
    assert entry.erased_rows == result.erased_rows
    assert result.erased_rows["delete_source_records"] == 4
    assert result.erased_rows["delete_quarantined_rows"] == 1
    assert result.erased_rows["replace_address_suppressions.removed"] == 1
    assert (
        scalar(clean_db, "select count(*) from privacy.erased_identifier") == 5
    )  # email, phone, card, CRM id, cookie


def test_an_erased_person_stays_out_of_later_loads_and_resolution(clean_db: Engine, kms_url: URL) -> None:
    ids = resort(clean_db)
    erase(clean_db, email=ANNA_EMAIL, requested_by="dpo")
    contacts = scalar(clean_db, "select count(*) from core.contact")

    result = load(clean_db, kms_url, [receipt(1, loyalty_card=ANNA_CARD), receipt(2, email=MAX_EMAIL)])
    resolve(clean_db)

    assert (result.status, result.rows_received, result.rows_loaded, result.rows_quarantined) == (
        "merged",
        2,
        1,
        1,
    )
    with clean_db.connect() as conn:
        quarantined = conn.execute(
            text("select line_number, reasons, raw_line, record from ingest.quarantine where line_number = 2")
        ).one()
    erasure = erasures(clean_db)[0].erasure_id
    assert tuple(quarantined) == (
        2,
        [f"belongs to a person erased on request (privacy.erasure {erasure})"],
        None,
        None,
    )
    assert scalar(clean_db, "select count(*) from core.contact") == contacts
    assert contact_of(clean_db, "restaurant_pos", "R11-2") == ids["max"]
    assert rows_naming(clean_db, ANNA_CARD) == {}


def test_records_loaded_but_not_resolved_yet_are_erased_with_what_else_they_carry(clean_db: Engine) -> None:
    resort(clean_db)
    add(clean_db, rec("website", "reg-9", email=ANNA_EMAIL, phone_e164="+491709999999", **ANNA))

    erase(clean_db, email=ANNA_EMAIL, requested_by="dpo")

    assert rows_naming(clean_db, ANNA_EMAIL, "+491709999999") == {}
    assert scalar(clean_db, "select count(*) from ingest.record_pending") == 0
    blocked = scalar(
        clean_db,
        "select count(*) from privacy.erased_identifier where value_sha256 = sha256(convert_to(:v, 'UTF8'))",
        v="+491709999999",
    )
    assert blocked == 1


def test_an_erasure_waits_for_a_merge_in_flight_and_then_erases_what_it_wrote(clean_db: Engine) -> None:
    """A loader holds its erasure check's lock until its merge commits; an erasure that
    starts meanwhile waits, then finds the merged record in the queue."""
    resort(clean_db)
    merging = clean_db.connect()
    merging.execute(text("lock table privacy.erased_identifier in share mode"))
    with ThreadPoolExecutor(max_workers=1) as pool:
        erasure = pool.submit(erase, clean_db, email=ANNA_EMAIL, requested_by="dpo")
        time.sleep(0.5)
        assert not erasure.done()
        file_id = merging.execute(text("select min(ingest_file_id) from ingest.file")).scalar_one()
        record_id = merging.execute(
            text(
                "insert into ingest.record (source_system, record_kind, source_key, feed, ingest_file_id, "
                "line_number, email) values ('website', 'event', 'late-1', 'website', :f, 99, :e) "
                "returning record_id"
            ),
            {"f": file_id, "e": ANNA_EMAIL},
        ).scalar_one()
        merging.execute(text("insert into ingest.record_pending values (:r)"), {"r": record_id})
        merging.commit()
        merging.close()
        assert erasure.result(timeout=30).status == "erased"

    assert scalar(clean_db, "select count(*) from ingest.record where source_key = 'late-1'") == 0


def test_asking_again_changes_nothing_and_an_unknown_identifier_is_blocked(clean_db: Engine) -> None:
    resort(clean_db)
    first = erase(clean_db, phone="0170 1234567", requested_by="dpo")
    assert first.status == "erased"

    again = erase(clean_db, email=ANNA_EMAIL, requested_by="dpo")
    unknown = erase(clean_db, email="nobody@example.org", requested_by="dpo")
    unknown_again = erase(clean_db, email="Nobody@Example.org", requested_by="dpo")

    assert (again.status, again.erasure_id) == ("already_erased", first.erasure_id)
    assert unknown.status == "not_found" and unknown.contact_ids == ()
    assert (unknown_again.status, unknown_again.erasure_id) == ("already_erased", unknown.erasure_id)
    assert len(erasures(clean_db)) == 2
    assert scalar(clean_db, "select count(*) from campaign.suppression where reason = 'erasure'") == 1


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"email": "not an address"}, "not a valid email"),
        ({}, "name the person"),
        ({"contact_id": 999_999}, "there is no contact 999999"),
        ({"email": MAX_EMAIL, "phone": ANNA_PHONE}, "more than one person"),
        ({"email": ANNA_EMAIL, "requested_by": " "}, "requested_by"),
    ],
)
def test_a_request_that_cannot_be_carried_out_is_refused_and_erases_nothing(
    clean_db: Engine, request_: dict, message: str
) -> None:
    resort(clean_db)
    arguments = {"requested_by": "dpo", **request_}

    with pytest.raises(PrivacyRequestError, match=message):
        erase(clean_db, **arguments)

    assert scalar(clean_db, "select count(*) from privacy.erasure") == 0
    assert scalar(clean_db, "select count(*) from core.contact where status = 'erased'") == 0


def test_an_erasure_that_fails_half_way_changes_nothing_and_releases_its_locks(
    clean_db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = resort(clean_db)
    privacy = sys.modules["campaign_lib.privacy"]
    real = privacy.queries

    def failing(name: str) -> dict:
        statements = dict(real(name))
        if name == "privacy.sql":
            statements["erase_contacts"] = text("select 1 / 0")
        return statements

    monkeypatch.setattr(privacy, "queries", failing)
    with pytest.raises(DBAPIError, match="division by zero"):
        erase(clean_db, email=ANNA_EMAIL, requested_by="dpo")

    assert (
        scalar(clean_db, "select status::text from core.contact where contact_id = :c", c=ids["anna"])
        == "active"
    )
    assert scalar(clean_db, "select count(*) from privacy.erasure") == 0
    assert scalar(clean_db, "select count(*) from privacy.erased_identifier") == 0
    assert scalar(clean_db, "select count(*) from ingest.record") == 5
    monkeypatch.setattr(privacy, "queries", real)
    assert erase(clean_db, email=ANNA_EMAIL, requested_by="dpo").status == "erased"
    resolve(clean_db)  # resolution's lock was given back


def test_every_contact_merged_into_the_person_is_erased_too(clean_db: Engine) -> None:
    ids = resort(clean_db)
    with clean_db.begin() as conn:
        loser = conn.execute(
            text(
                "insert into core.contact (account_id, status, merged_into_contact_id, first_name, email) "
                "select account_id, 'merged', contact_id, 'Anna', 'old.anna@example.org' from core.contact "
                "where contact_id = :c returning contact_id"
            ),
            {"c": ids["anna"]},
        ).scalar_one()

    result = erase(clean_db, contact_id=loser, requested_by="dpo")

    assert result.contact_ids == tuple(sorted((ids["anna"], loser)))
    assert rows_naming(clean_db, "old.anna@example.org", ANNA_EMAIL) == {}


def test_the_command_line_erases_and_shows_the_log(clean_db: Engine) -> None:
    ids = resort(clean_db)

    erased = kms("privacy", "erase", "--phone", "0170 1234567", "--requested-by", "dpo", "--reason", "T-1")
    unknown = kms("privacy", "erase", "--contact", "999999", "--requested-by", "dpo")
    both = kms("privacy", "erase", "--email", ANNA_EMAIL, "--phone", ANNA_PHONE, "--requested-by", "dpo")
    log = kms("privacy", "log")

    assert erased.returncode == 0, erased.stderr
    assert erased.stdout.startswith(f"erasure 1: contacts {ids['anna']} erased; rows: ")
    assert_one_line_error(unknown, 1, "there is no contact 999999")
    assert_one_line_error(both, 2, "not allowed with argument")
    assert log.returncode == 0 and log.stdout.count("\n") == 1
    assert log.stdout.startswith("1\t") and f"\tdpo\tcontacts {ids['anna']}\t" in log.stdout
    assert log.stdout.rstrip().endswith("\tT-1")


def test_a_request_for_access_gets_everything_held_about_the_person_and_nothing_else(
    clean_db: Engine, tmp_path: Path
) -> None:
    ids = resort(clean_db)

    data = person_data(clean_db, email=ANNA_EMAIL.upper())
    exported = kms("privacy", "export", "--contact", str(ids["anna"]), "--out", str(tmp_path / "anna.json"))

    assert data["contact_ids"] == [ids["anna"]]
    assert [c["email"] for c in data["contacts"]] == [ANNA_EMAIL]
    assert [a["name"] for a in data["accounts"]] == ["Muster"]
    assert [(loc["street"], loc["city"]) for loc in data["locations"]] == [("Hauptstraße 1", "Emmendingen")]
    assert sorted(i["kind"] for i in data["identifiers"]) == [
        "cookie_id",
        "crm_id",
        "email",
        "loyalty_card",
        "phone",
    ]
    assert [(k["channel"], k["status"]) for k in data["consents"]] == [("email", "opt_in")]
    assert [q["body"] for q in data["inquiries"]] == ["Is the sauna open? Call me on 0170 1234567."]
    assert [a["amount_cents"] for a in data["activities"] if a["activity_type"] == "restaurant_bill"] == [
        4200
    ]
    assert sorted(r["source_key"] for r in data["source_records"]) == ["CON-7", "R-7", "inq-7", "nl-7"]
    assert [(m["channel"], m["status"], m["address"]) for m in data["messages"]] == [
        ("sms", "sent", ANNA_PHONE),
        ("email", "pending", None),
    ]
    assert [r["user_agent"] for r in data["responses"]] == ["Mozilla/5.0 (Anna's phone)"]
    assert [h["campaign_name"] for h in data["contact_history"]] == ["spring"]
    assert [(x["address"], x["reason"]) for x in data["suppressions"]] == [(ANNA_EMAIL, "unsubscribe")]
    assert MAX_EMAIL not in json.dumps(data, default=str)
    assert exported.returncode == 0, exported.stderr
    assert json.loads((tmp_path / "anna.json").read_text(encoding="utf-8"))["contact_ids"] == [ids["anna"]]


def test_after_erasure_a_request_for_access_finds_only_the_stub(clean_db: Engine) -> None:
    ids = resort(clean_db)
    erase(clean_db, email=ANNA_EMAIL, requested_by="dpo")

    by_email = person_data(clean_db, email=ANNA_EMAIL)
    by_id = person_data(clean_db, contact_id=ids["anna"])

    assert by_email["contact_ids"] == [] and by_email["contacts"] == []
    assert [c["status"] for c in by_id["contacts"]] == ["erased"]
    assert by_id["identifiers"] == by_id["consents"] == by_id["source_records"] == []
    assert ANNA_EMAIL not in json.dumps(by_id, default=str)


def test_the_loader_checks_every_kind_of_identifier_resolution_reads(engine: Engine) -> None:
    """quarantine_erased lists the staged record's identifiers as the view
    ingest.record_identifier lists the record's (kind and column)."""
    pairs = re.compile(r"\('([a-z_]+)'(?:::core\.identifier_kind)?, ?[rs]\.([a-z_0-9]+)\)")
    with engine.connect() as conn:
        view = conn.execute(text("select pg_get_viewdef('ingest.record_identifier')")).scalar_one()
    checked = set(pairs.findall(queries("ingest.sql")["quarantine_erased"].text))
    assert len(checked) == 9
    assert checked == set(pairs.findall(view))
