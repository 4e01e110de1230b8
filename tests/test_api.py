"""The ingest API over real HTTP: uvicorn on a free local port, httpx, the test database."""

from __future__ import annotations

import importlib.util
import json
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL, Engine

from campaign_lib.api import create_key, list_keys, revoke_key
from campaign_lib.api.keys import CONTACTS_WRITE, EVENTS_WRITE
from campaign_lib.api.limits import ApiLimits, limits_from_env
from campaign_lib.api.server import RunningServer, free_port, run_in_thread, start_in_thread
from campaign_lib.config import PROJECT_ROOT
from campaign_lib.errors import ConfigError

# Small limits keep the oversize tests fast; the defaults are tested in test_limits_*.
LIMITS = ApiLimits(max_body_bytes=64 * 1024, max_batch=50)
HOSTILE = "Robert'); DROP TABLE core.contact;-- {{ 7*7 }} ${jndi:x} <script>alert(1)</script>"
VISIBLE_WITHIN_S = 15.0


@pytest.fixture(scope="module")
def api(kms_url: URL) -> Iterator[RunningServer]:
    server = start_in_thread(kms_url, limits=LIMITS)
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def settled(api: RunningServer) -> None:
    """Identity resolution of the previous test's batches runs after its responses: let it
    finish before clean_db truncates the tables under it."""
    assert api.server.config.app.state.publisher.wait_idle()


@pytest.fixture(scope="module")
def client(api: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.base_url, timeout=60) as http:
        yield http


@pytest.fixture(scope="module")
def keys(engine: Engine) -> dict[str, str]:
    _, both = create_key(engine, "website (tests)", [EVENTS_WRITE, CONTACTS_WRITE], owner="web team")
    _, events_only = create_key(engine, "events only", [EVENTS_WRITE])
    revoked_id, revoked = create_key(engine, "revoked", [EVENTS_WRITE])
    revoke_key(engine, revoked_id)
    return {"both": both, "events_only": events_only, "revoked": revoked}


def event(event_type: str = "page_view", **fields) -> dict:
    """A website event exactly as the generator writes it."""
    base = {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "occurred_at": "2026-07-01T19:30:00+02:00",
    }
    by_type = {
        "page_view": {"cookie_id": "0123456789abcdef", "url": "/en/hotel/rooms", "referrer": ""},
        "registration": {
            "customer_id": "W000000001",
            "cookie_id": "0123456789abcdef",
            "email": "Anna.Muster@Example.org",
            "first_name": "Anna",
            "last_name": "Muster",
            "birth_date": "1985-04-12",
            "phone": "+49 170 1234567",
            "language": "de",
        },
        "login": {"customer_id": "W000000001", "cookie_id": "0123456789abcdef", "method": "password"},
        "newsletter_signup": {
            "email": "anna.muster@example.org",
            "cookie_id": "0123456789abcdef",
            "customer_id": "W000000001",
            "consent": {
                "channel": "email",
                "purpose": "newsletter",
                "opt_in_at": "2026-07-01T19:30:00+02:00",
                "double_opt_in_at": "2026-07-01T19:41:00+02:00",
                "source": "website_form",
            },
        },
        "comment": {
            "customer_id": "W000000001",
            "cookie_id": "0123456789abcdef",
            "subject": "hotel",
            "text": "Lovely",
        },
    }
    return {**base, **by_type[event_type], **fields}


def post(
    client: httpx.Client, key: str | None, body, path: str = "/api/v1/events", **kwargs
) -> httpx.Response:
    headers = kwargs.pop("headers", {})
    if key is not None:
        headers["X-API-Key"] = key
    if "content" in kwargs:
        return client.post(path, headers=headers, **kwargs)
    return client.post(path, headers=headers, json=body, **kwargs)


def scalar(engine: Engine, sql: str, **params):
    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar()


def wait_until(engine: Engine, sql: str, **params) -> float:
    """Seconds until `sql` returns true; fails after VISIBLE_WITHIN_S."""
    started = time.perf_counter()
    while time.perf_counter() - started < VISIBLE_WITHIN_S:
        if scalar(engine, sql, **params):
            return time.perf_counter() - started
        time.sleep(0.01)
    pytest.fail(f"not visible within {VISIBLE_WITHIN_S} s: {sql} {params}")


def test_health_needs_no_key(client: httpx.Client) -> None:
    response = client.get("/api/v1/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize(
    "presented",
    [
        pytest.param(None, id="no-key"),
        pytest.param("wrong-secret", id="wrong-secret"),
        pytest.param("revoked", id="revoked-key"),
        pytest.param("kms_aaaaaaaaaaaa." + "A" * 43, id="unknown-key-id"),
        pytest.param("not a key at all", id="malformed"),
        pytest.param("kms_aaaaaaaaaaaa", id="no-secret"),
    ],
)
def test_a_bad_key_gets_401_without_a_hint(
    client: httpx.Client, keys: dict[str, str], clean_db: Engine, presented: str | None
) -> None:
    if presented == "wrong-secret":
        key_id, _, secret = keys["both"].partition(".")
        presented = f"{key_id}.{'x' if secret[0] != 'x' else 'y'}{secret[1:]}"
    elif presented == "revoked":
        presented = keys["revoked"]
    response = post(client, presented, {"events": [event()]})
    assert response.status_code == 401
    assert response.json() == {
        "error": {
            "code": "unauthorized",
            "message": "a valid API key is required in the X-API-Key header (or Authorization: Bearer)",
        }
    }
    assert scalar(clean_db, "select count(*) from ingest.file") == 0


def test_a_bearer_token_works_like_the_header(
    client: httpx.Client, keys: dict[str, str], clean_db: Engine
) -> None:
    response = client.post(
        "/api/v1/events", json={"events": [event()]}, headers={"Authorization": f"Bearer {keys['both']}"}
    )
    assert response.status_code == 200, response.text
    bad = client.post("/api/v1/events", json={"events": [event()]}, headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401


def test_a_key_without_the_scope_is_forbidden(client: httpx.Client, keys: dict[str, str]) -> None:
    response = post(client, keys["events_only"], {"contacts": [{"customer_id": "W1"}]}, "/api/v1/contacts")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"


def test_a_body_over_the_limit_is_refused_by_its_content_length(
    client: httpx.Client, keys: dict[str, str]
) -> None:
    body = json.dumps({"events": [event(url="/" + "x" * 4000) for _ in range(20)]}).encode()
    assert len(body) > LIMITS.max_body_bytes
    response = post(client, keys["both"], None, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"


def test_a_chunked_body_is_cut_off_at_the_limit(client: httpx.Client, keys: dict[str, str]) -> None:
    sent = []

    def chunks() -> Iterator[bytes]:
        yield b'{"events": ['
        for _ in range(30):
            piece = json.dumps(event(url="/" + "x" * 4000)).encode() + b","
            sent.append(len(piece))
            yield piece
        yield json.dumps(event()).encode() + b"]}"

    response = post(
        client, keys["both"], None, content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert sum(sent) > LIMITS.max_body_bytes
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"


@pytest.mark.parametrize(
    ("content_type", "body", "status", "code"),
    [
        pytest.param("text/plain", b'{"events": []}', 415, "unsupported_media_type", id="text-plain"),
        pytest.param("application/x-www-form-urlencoded", b"a=1", 415, "unsupported_media_type", id="form"),
        pytest.param("application/json", b'{"events": [', 400, "invalid_json", id="broken-json"),
        pytest.param("application/json", b"\xff\xfe{}", 400, "invalid_json", id="not-utf8"),
        pytest.param("application/json", b"[" * 60_000, 400, "invalid_json", id="deep-nesting"),
        pytest.param("application/json", b"[]", 422, "invalid_batch", id="bare-array"),
        pytest.param("application/json", b'{"events": []}', 422, "invalid_batch", id="empty"),
        pytest.param("application/json", b'{"events": [], "x": 1}', 422, "invalid_batch", id="extra-key"),
    ],
)
def test_requests_that_are_not_a_batch(
    client: httpx.Client, keys: dict[str, str], content_type: str, body: bytes, status: int, code: str
) -> None:
    response = post(client, keys["both"], None, content=body, headers={"Content-Type": content_type})
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


def test_a_batch_over_the_length_limit_is_refused(client: httpx.Client, keys: dict[str, str]) -> None:
    response = post(client, keys["both"], {"events": [event() for _ in range(LIMITS.max_batch + 1)]})
    assert response.status_code == 422
    assert response.json()["error"] == {
        "code": "batch_too_long",
        "message": "the batch has 51 events; at most 50 per request",
    }


def test_a_valid_batch_is_accepted_and_reaches_the_core_tables(
    client: httpx.Client, keys: dict[str, str], clean_db: Engine
) -> None:
    events = [event("registration"), event("login"), event("page_view"), event("newsletter_signup")]
    response = post(client, keys["both"], {"events": events})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result | {"batch_id": 0} == {
        "batch_id": 0,
        "duplicate_batch": False,
        "received": 4,
        "accepted": 4,
        "rejected": 0,
        "records_changed": 4,
        "records_unchanged": 0,
        "errors": [],
    }
    with clean_db.connect() as ledger:
        row = ledger.execute(
            text("select feed, channel::text, status::text, rows_loaded, name from ingest.file")
        ).one()
    assert tuple(row)[:4] == ("website_api", "api", "merged", 4)
    assert row.name.startswith("POST /api/v1/events by kms_")
    assert scalar(clean_db, "select count(*) from ingest.record where feed = 'website_api'") == 4
    # Identity resolution runs after the response: the registration becomes a contact with
    # its page view (via the login's cookie) and its newsletter consent.
    wait_until(
        clean_db,
        "select count(*) = 4 from core.activity a join core.contact c using (contact_id)"
        " where a.source_ref = any(:refs) and c.email = 'anna.muster@example.org'",
        refs=[e["event_id"] for e in events if e["event_type"] != "newsletter_signup"]
        + [events[3]["event_id"]],
    )
    wait_until(
        clean_db, "select count(*) = 1 from core.consent where source_ref = :ref", ref=events[3]["event_id"]
    )


def test_sms_sign_ups_and_push_subscriptions_reach_the_core_tables(
    client: httpx.Client, keys: dict[str, str], clean_db: Engine
) -> None:
    consent = {"purpose": "newsletter", "opt_in_at": "2026-07-01T19:30:00+02:00", "double_opt_in_at": None}
    sms = event(
        "newsletter_signup",
        email=None,
        phone="0170 1234567",
        consent={**consent, "channel": "sms", "source": "website_form"},
    )
    app = event(
        "registration",
        customer_id="W000000002",
        email="bea@example.org",
        phone=None,
    )
    push = {
        **event("login", customer_id="W000000002"),
        "event_type": "push_subscription",
        "platform": "web",
        "push_token": {
            "endpoint": "https://push.example.org/wp/abc",
            "keys": {"p256dh": "B" + "A" * 86, "auth": "N6xQmuQa1rmQURNreRWNKw"},
        },
        "consent": {**consent, "channel": "push", "source": "website_push_prompt"},
    }
    del push["method"]
    wrong = {**push, "event_id": str(uuid.uuid4()), "platform": "android"}

    result = post(client, keys["both"], {"events": [sms, app, push, wrong]}).json()

    assert (result["accepted"], result["rejected"]) == (3, 1)
    assert result["errors"][0]["index"] == 3 and "a string for android" in json.dumps(result["errors"])
    wait_until(
        clean_db,
        "select count(*) = 1 from core.consent k join core.contact c using (contact_id)"
        " where k.channel = 'sms' and c.phone_e164 = '+491701234567'",
    )
    wait_until(
        clean_db,
        "select count(*) = 1 from core.identifier i join core.contact c using (contact_id)"
        " join core.consent k using (contact_id)"
        " where i.kind = 'push_token' and i.value like 'webpush:{\"endpoint\":\"https://push.example.org/wp/abc\"%'"
        " and c.email = 'bea@example.org' and k.channel = 'push'",
    )


def test_the_same_batch_twice_is_one_ledger_entry(
    client: httpx.Client, keys: dict[str, str], clean_db: Engine
) -> None:
    batch = {"events": [event(), event("registration")]}
    first = post(client, keys["both"], batch).json()
    # The same content with other key order and spacing is the same batch.
    again = json.dumps({"events": [dict(reversed(e.items())) for e in batch["events"]]}, indent=2)
    second = post(client, keys["both"], None, content=again, headers={"Content-Type": "application/json"})
    assert second.status_code == 200
    assert second.json() == first | {"duplicate_batch": True, "records_changed": 0, "records_unchanged": 2}
    assert scalar(clean_db, "select count(*) from ingest.file") == 1
    assert scalar(clean_db, "select count(*) from ingest.record") == 2


def test_an_event_resent_in_another_batch_changes_nothing(
    client: httpx.Client, keys: dict[str, str], clean_db: Engine
) -> None:
    resent = event("comment")
    assert post(client, keys["both"], {"events": [resent]}).status_code == 200
    changed_at = scalar(
        clean_db, "select changed_at from ingest.record where source_key = :k", k=resent["event_id"]
    )
    result = post(client, keys["both"], {"events": [resent, event()]}).json()
    assert (result["duplicate_batch"], result["records_changed"], result["records_unchanged"]) == (
        False,
        1,
        1,
    )
    assert scalar(clean_db, "select count(*) from ingest.file") == 2
    assert (
        scalar(clean_db, "select changed_at from ingest.record where source_key = :k", k=resent["event_id"])
        == changed_at
    )


def test_a_mixed_batch_loads_the_good_items_and_reports_the_bad_by_index(
    client: httpx.Client, keys: dict[str, str], clean_db: Engine
) -> None:
    good = [event(), event("registration")]
    duplicate = event()
    items = [
        good[0],
        event(occurred_at="yesterday"),
        "not an object",
        event() | {"event_type": "purchase"},
        good[1],
        event("comment", text="a\u0000b"),
        event(event_id="not-a-uuid"),
        event(rating=5),
        duplicate,
        duplicate,
        event("comment", text="lone \ud800 surrogate"),
    ]
    # ensure_ascii: the lone surrogate travels as the escape \\ud800, as a client would send it.
    body = json.dumps({"events": items}, ensure_ascii=True)
    response = post(client, keys["both"], None, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["received"], result["accepted"], result["rejected"]) == (11, 3, 8)
    errors = {error["index"]: error for error in result["errors"]}
    assert sorted(errors) == [1, 2, 3, 5, 6, 7, 8, 10]
    assert errors[1]["event_id"] == items[1]["event_id"]
    assert errors[1]["errors"][0].startswith("occurred_at: ")
    assert errors[2] == {"index": 2, "errors": ["not a JSON object but str"]}
    assert "event_type" in errors[3]["errors"][0]
    assert errors[5]["errors"] == ["contains a NUL character (\\u0000), which cannot be stored"]
    assert errors[6]["errors"][0].startswith("event_id: ")
    assert errors[7]["errors"] == ["rating: Extra inputs are not permitted"]
    assert "duplicate natural key" in errors[8]["errors"][0]
    assert "unpaired UTF-16 surrogate" in errors[10]["errors"][0]
    with clean_db.connect() as conn:
        stored = set(conn.execute(text("select source_key from ingest.record")).scalars())
        quarantined = conn.execute(
            text("select line_number, reasons, raw_line from ingest.quarantine order by line_number")
        ).all()
    assert stored == {good[0]["event_id"], good[1]["event_id"], duplicate["event_id"]}
    assert [row.line_number for row in quarantined] == [2, 3, 4, 6, 7, 8, 9, 11]
    assert quarantined[0].reasons == errors[1]["errors"]
    assert json.loads(quarantined[0].raw_line) == items[1]


def test_an_event_of_a_person_erased_on_request_is_refused_by_index_and_not_stored(
    client: httpx.Client, keys: dict[str, str], clean_db: Engine
) -> None:
    from campaign_lib.privacy import erase

    erased = erase(clean_db, email="anna.muster@example.org", requested_by="dpo")
    items = [event(), event("newsletter_signup"), event("registration", email="ben@example.org")]

    response = post(client, keys["both"], {"events": items})

    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["received"], result["accepted"], result["rejected"]) == (3, 2, 1)
    assert result["errors"] == [
        {
            "index": 1,
            "event_id": items[1]["event_id"],
            "errors": [f"belongs to a person erased on request (privacy.erasure {erased.erasure_id})"],
        }
    ]
    assert result["records_changed"] + result["records_unchanged"] == 2
    with clean_db.connect() as conn:
        stored = set(conn.execute(text("select source_key from ingest.record")).scalars())
        kept = conn.execute(text("select raw_line, record from ingest.quarantine")).one()
    assert stored == {items[0]["event_id"], items[2]["event_id"]}
    assert tuple(kept) == (None, None)


def test_a_batch_without_an_acceptable_item_is_422_with_every_reason(
    client: httpx.Client, keys: dict[str, str], clean_db: Engine
) -> None:
    response = post(client, keys["both"], {"events": [event(occurred_at=None), 42]})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "batch_rejected"
    assert [item["index"] for item in error["items"]] == [0, 1]
    assert scalar(clean_db, "select status::text from ingest.file") == "quarantined"
    # The batch's reason and each item's own reasons are kept in the quarantine.
    with clean_db.connect() as conn:
        kept = conn.execute(
            text("select line_number, reasons from ingest.quarantine order by line_number nulls first")
        ).all()
    assert kept[0].line_number is None
    assert [(row.line_number, row.reasons) for row in kept[1:]] == [
        (item["index"] + 1, item["errors"]) for item in error["items"]
    ]
    assert scalar(clean_db, "select count(*) from ingest.record") == 0


def test_hostile_text_is_stored_as_data(client: httpx.Client, keys: dict[str, str], clean_db: Engine) -> None:
    hostile = event(
        "registration",
        first_name=HOSTILE,
        last_name="<b>Muster</b>",
        customer_id="W000000777",
        cookie_id=HOSTILE[:64],
    )
    comment = event("comment", text=HOSTILE, customer_id="W000000777")
    response = post(client, keys["both"], {"events": [hostile, comment]})
    assert response.status_code == 200, response.text
    with clean_db.connect() as conn:
        rows = dict(conn.execute(text("select source_key, attributes->>'comment' from ingest.record")).all())
        names = conn.execute(
            text("select first_name, last_name from ingest.record where source_key = :k"),
            {"k": hostile["event_id"]},
        ).one()
    assert rows[comment["event_id"]] == HOSTILE
    assert tuple(names) == (HOSTILE, "<b>Muster</b>")
    assert scalar(clean_db, "select count(*) from core.source_system") > 0


def test_contacts_with_consents_are_accepted_and_reach_the_core_tables(
    client: httpx.Client, keys: dict[str, str], clean_db: Engine
) -> None:
    contacts = [
        {
            "customer_id": "W000000042",
            "email": " Lena.Berg@Example.org ",
            "first_name": "LENA",
            "last_name": "Berg",
            "phone": "0170 7654321",
            "birth_date": "1990-02-03",
            "language": "de",
            "consents": [
                {
                    "channel": "email",
                    "purpose": "newsletter",
                    "status": "opt_in",
                    "changed_at": "2026-06-01T10:00:00+02:00",
                    "double_opt_in_at": "2026-06-01T10:05:00+02:00",
                    "source": "profile_page",
                },
                {
                    "channel": "sms",
                    "purpose": "offers",
                    "status": "opt_out",
                    "changed_at": "2026-06-02T10:00:00+02:00",
                },
            ],
        },
        {"customer_id": "W000000043", "email": "no-consents@example.org"},
        {"customer_id": "W000000044", "consents": [{"channel": "fax", "status": "opt_in"}]},
    ]
    response = post(client, keys["both"], {"contacts": contacts}, "/api/v1/contacts")
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["accepted"], result["rejected"], result["records_changed"]) == (2, 1, 4)
    assert result["errors"][0]["index"] == 2
    assert result["errors"][0]["customer_id"] == "W000000044"
    with clean_db.connect() as conn:
        profile = conn.execute(
            text(
                "select record_kind, feed, source_customer_id, email, first_name, phone_e164 from ingest.record"
                " where source_key = 'W000000042'"
            )
        ).one()
    assert tuple(profile) == (
        "contact",
        "website_contacts_api",
        "website:W000000042",
        "lena.berg@example.org",
        "Lena",
        "+491707654321",
    )
    wait_until(
        clean_db,
        "select count(*) = 2 from core.consent s join core.contact c using (contact_id)"
        " where c.email = 'lena.berg@example.org'",
    )
    again = post(client, keys["both"], {"contacts": contacts[:2]}, "/api/v1/contacts").json()
    assert (again["records_changed"], again["records_unchanged"]) == (0, 4)


def test_keys_are_stored_hashed_and_listed_without_secrets(engine: Engine, keys: dict[str, str]) -> None:
    key_id, plaintext = create_key(engine, "hash check", [CONTACTS_WRITE])
    secret = plaintext.partition(".")[2]
    with engine.connect() as conn:
        stored = conn.execute(text("select t::text from ingest.api_key t")).scalars().all()
        ledger = conn.execute(text("select t::text from ingest.file t")).scalars().all()
    assert not any(secret in row for row in stored + ledger)
    assert not any(key.partition(".")[2] in row for key in keys.values() for row in stored + ledger)
    listed = {key.key_id: key for key in list_keys(engine)}
    assert listed[key_id].scopes == (CONTACTS_WRITE,)
    assert listed[key_id].revoked_at is None
    assert listed[keys["revoked"].partition(".")[0]].revoked_at is not None
    assert not any(secret in repr(key) for key in listed.values())


@pytest.mark.parametrize(
    ("name", "scopes", "problem"),
    [
        pytest.param(" ", [EVENTS_WRITE], "needs a name", id="no-name"),
        pytest.param("x", ["admin"], "unknown API key scope admin", id="unknown-scope"),
        pytest.param("x", [], "an API key needs a scope", id="no-scope"),
    ],
)
def test_key_creation_refuses_bad_input(engine: Engine, name: str, scopes: list[str], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        create_key(engine, name, scopes)


def test_revoking_an_unknown_key_says_so(engine: Engine) -> None:
    with pytest.raises(ConfigError, match="no API key has the id"):
        revoke_key(engine, "kms_zzzzzzzzzzzz")


def test_limits_come_from_the_environment() -> None:
    assert limits_from_env({}) == ApiLimits(1 << 20, 1000)
    assert limits_from_env({"KMS_API_MAX_BODY_BYTES": "2_000_000", "KMS_API_MAX_BATCH": "10"}) == ApiLimits(
        2_000_000, 10
    )
    with pytest.raises(ConfigError, match="KMS_API_MAX_BATCH must be a positive whole number"):
        limits_from_env({"KMS_API_MAX_BATCH": "-1"})


def test_the_openapi_document_describes_both_endpoints(client: httpx.Client) -> None:
    document = client.get("/api/v1/openapi.json").json()
    paths = document["paths"]
    # The tracking paths (/t/...) are tested in tests/test_tracking.py.
    assert {path for path in paths if not path.startswith("/t/")} == {
        "/api/v1/health",
        "/api/v1/events",
        "/api/v1/contacts",
    }
    schemas = document["components"]["schemas"]
    for path, batch in (("/api/v1/events", "EventBatch"), ("/api/v1/contacts", "ContactBatch")):
        post_op = paths[path]["post"]
        assert post_op["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(batch)
        assert post_op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
            "BatchResult"
        )
        assert {"401", "403", "413", "415", "422"} <= set(post_op["responses"])
    assert set(schemas["Registration"]["required"]) >= {"event_id", "occurred_at", "customer_id", "email"}
    assert "consents" in schemas["WebsiteContact"]["properties"]
    assert {"APIKeyHeader", "HTTPBearer"} == set(document["components"]["securitySchemes"])
    docs = client.get("/api/v1/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()


def test_unknown_paths_get_the_same_error_shape(client: httpx.Client) -> None:
    response = client.get("/api/v1/nothing")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert client.get("/api/v1/events").json()["error"]["code"] == "method_not_allowed"


def test_the_airflow_plugin_mounts_the_app(kms_url: URL, keys: dict[str, str]) -> None:
    import uvicorn
    from fastapi import FastAPI

    spec = importlib.util.spec_from_file_location("kms_api_plugin", PROJECT_ROOT / "plugins" / "kms_api.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (entry,) = module.KmsApiPlugin.fastapi_apps
    assert entry["url_prefix"] == "/kms"
    assert entry["name"] == "kms ingest and tracking API"
    assert isinstance(entry["app"], FastAPI)

    # Mounted under /kms as the API server does it; KMS_DATABASE_URL (set by conftest) names the database.
    host = FastAPI()
    host.mount("/kms", entry["app"])
    server = run_in_thread(uvicorn.Config(host, port=free_port(), log_level="warning"))
    try:
        with httpx.Client(base_url=server.base_url, timeout=60) as http:
            assert http.get("/kms/api/v1/health").json() == {"status": "ok"}
            assert http.post("/kms/api/v1/events", json={"events": [event()]}).status_code == 401
            ok = http.post(
                "/kms/api/v1/events", json={"events": [event()]}, headers={"X-API-Key": keys["both"]}
            )
            assert ok.status_code == 200, ok.text
            assert "/api/v1/events" in http.get("/kms/api/v1/openapi.json").json()["paths"]
        assert entry["app"].state.publisher.wait_idle()
    finally:
        server.stop()
