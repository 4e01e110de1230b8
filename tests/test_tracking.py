"""Tracking links over real HTTP: the kms API app under uvicorn, httpx, the test database.

Tokens are checked on their own first (every one-character change of a token is refused),
then the open pixel, the click redirect and the unsubscribe page end to end, with the
tampered tokens of issue 5 item 7, and the bot and scanner flags.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from servers_tracking import BROWSER, PREVIOUS_SECRET, TRACKING_SECRET, events_of
from sqlalchemy import text
from sqlalchemy.engine import Engine

from campaign_lib.errors import ConfigError
from campaign_lib.tracking.settings import TrackingSettings, derived_secret, tracking_settings_from_env
from campaign_lib.tracking.tokens import (
    TrackingLinks,
    installation_secret,
    tracking_links_from_connection,
    tracking_links_from_env,
)

TARGET = "https://resort.example/de/wasserwelt?utm_campaign=wp&x=1"
OTHER_TARGET = "https://evil.example/phish"
KEY = "0123456789abcdef0123456789abcdef"
OTHER_KEY = "fedcba9876543210fedcba9876543210"
LINKS = TrackingLinks("http://127.0.0.1:1/kms/", TRACKING_SECRET, (PREVIOUS_SECRET,))
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."


def path_of(url: str) -> str:
    return httpx.URL(url).raw_path.decode("ascii")


def token_of(url: str) -> str:
    return path_of(url).rsplit("/", 1)[1].removesuffix(".gif")


def counts(engine: Engine, contact_id: int) -> dict[str, int]:
    """What an unsubscribe writes, for one contact."""
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "select (select count(*) from core.consent where contact_id = :c) as consents, "
                "(select count(*) from campaign.suppression where contact_id = :c) as suppressions, "
                "(select count(*) from campaign.message_event where contact_id = :c) as events"
            ),
            {"c": contact_id},
        ).one()
    return dict(row._mapping)


# Tokens, without a server


@pytest.mark.parametrize("purpose", ["open", "click", "unsubscribe"])
def test_a_token_verifies_for_its_purpose_only(purpose: str) -> None:
    url = TARGET if purpose == "click" else None
    token = LINKS.token(purpose, KEY, url)
    claims = LINKS.verify(purpose, token)
    assert claims is not None and (claims.message_key, claims.url) == (KEY, url)
    for other in {"open", "click", "unsubscribe"} - {purpose}:
        assert LINKS.verify(other, token) is None


@pytest.mark.parametrize("purpose", ["open", "click", "unsubscribe"])
def test_every_one_character_change_of_a_token_is_refused(purpose: str) -> None:
    token = LINKS.token(purpose, KEY, TARGET if purpose == "click" else None)
    tried = 0
    for position, original in enumerate(token):
        for replacement in ALPHABET:
            if replacement != original:
                changed = token[:position] + replacement + token[position + 1 :]
                assert LINKS.verify(purpose, changed) is None, changed
                tried += 1
    for changed in (token[:-1], token + "A", token[1:], token.replace(".", "", 1), ""):
        assert LINKS.verify(purpose, changed) is None
    assert tried == len(token) * (len(ALPHABET) - 1)


def test_parts_of_two_valid_tokens_do_not_combine() -> None:
    mine = LINKS.token("click", KEY, TARGET).split(".")
    other = LINKS.token("click", OTHER_KEY, OTHER_TARGET).split(".")
    spliced = [
        [mine[0], mine[1], other[2], mine[3]],  # my key and mac, another URL
        [mine[0], other[1], mine[2], mine[3]],  # another message, my URL and mac
        [mine[0], mine[1], mine[2], other[3]],  # another token's mac
    ]
    for parts in spliced:
        assert LINKS.verify("click", ".".join(parts)) is None
    unsubscribe = LINKS.token("unsubscribe", KEY).split(".")
    assert LINKS.verify("open", ".".join(unsubscribe)) is None


def test_tokens_of_the_previous_secret_still_verify_and_unknown_secrets_do_not() -> None:
    previous = TrackingLinks("http://x", PREVIOUS_SECRET)
    stranger = TrackingLinks("http://x", b"a-secret-nobody-configured-0123456789abc")
    assert LINKS.verify("open", previous.token("open", KEY)) is not None
    assert LINKS.verify("open", stranger.token("open", KEY)) is None
    rotated_away = TrackingLinks("http://x", TRACKING_SECRET)
    assert rotated_away.verify("open", previous.token("open", KEY)) is None
    assert LINKS.key_id != previous.key_id


@pytest.mark.parametrize(
    ("message_key", "url"),
    [
        ("not a key", TARGET),
        (KEY + "\n", TARGET),
        (KEY, "javascript:alert(1)"),
        (KEY, "/relative/path"),
        (KEY, "https://resort.example/a b"),
        (KEY, "https://resort.example/\r\nSet-Cookie: x=1"),
        (KEY, "https://resort.example/" + "x" * 5000),
    ],
    ids=["bad-key", "newline-key", "javascript", "relative", "space", "crlf", "too-long"],
)
def test_links_refuse_keys_and_targets_they_cannot_sign_safely(message_key: str, url: str) -> None:
    with pytest.raises(ValueError):
        LINKS.click_url(message_key, url)


def test_secrets_never_show_in_a_repr() -> None:
    settings = TrackingSettings(LINKS, sms_auth_token="sms-token", push_webhook_secret="push-secret")
    shown = repr(settings)
    assert "sms-token" not in shown and "push-secret" not in shown
    assert TRACKING_SECRET.decode() not in shown and PREVIOUS_SECRET.decode() not in shown
    assert "127.0.0.1:1/kms" in shown


def test_urls_have_the_documented_shape() -> None:
    assert LINKS.open_url(KEY).startswith("http://127.0.0.1:1/kms/t/o/") and LINKS.open_url(KEY).endswith(
        ".gif"
    )
    assert LINKS.click_url(KEY, TARGET).startswith("http://127.0.0.1:1/kms/t/c/")
    assert LINKS.unsubscribe_url(KEY).startswith("http://127.0.0.1:1/kms/t/u/")
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        TrackingLinks("http://x", b"short")


def test_the_embedded_default_makes_one_private_secret_and_production_needs_one(tmp_path: Path) -> None:
    embedded = {"KMS_HOME": str(tmp_path), "KMS_AIRFLOW_PORT": "8123"}
    first = tracking_links_from_env(embedded)
    again = tracking_links_from_env(embedded)
    secret_file = tmp_path / "tracking_secret"
    assert first.secret == again.secret == installation_secret(tmp_path)
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert first.base_url == "http://127.0.0.1:8123/kms"
    assert [p.name for p in tmp_path.iterdir()] == ["tracking_secret"]
    settings = tracking_settings_from_env(embedded)
    assert settings.sms_auth_token == derived_secret(first, "sms") != settings.push_webhook_secret

    production = {"KMS_HOME": str(tmp_path), "KMS_DATABASE_URL": "postgresql://db.example/kms"}
    with pytest.raises(ConfigError, match="KMS_TRACKING_SECRET"):
        tracking_links_from_env(production)
    configured = tracking_settings_from_env(
        {**production, "KMS_TRACKING_SECRET": "s" * 40, "KMS_TRACKING_BASE_URL": "https://t.resort.example"}
    )
    assert configured.links.base_url == "https://t.resort.example"
    assert configured.sms_auth_token is None and configured.email_webhook_secret is None
    with pytest.raises(ConfigError, match="KMS_TRACKING_BOT_SECONDS"):
        tracking_settings_from_env(
            {**production, "KMS_TRACKING_SECRET": "s" * 40, "KMS_TRACKING_BOT_SECONDS": "x"}
        )


def test_links_from_the_airflow_connection() -> None:
    links = tracking_links_from_connection(
        {
            "password": "c" * 40,
            "host": "https://t.resort.example/kms",
            "extra": {"previous_secret": "p" * 40},
        },
        {"KMS_DATABASE_URL": "postgresql://db.example/kms"},
    )
    old = TrackingLinks("http://x", b"p" * 40)
    assert links.base_url == "https://t.resort.example/kms"
    assert links.verify("open", old.token("open", KEY)) is not None
    with pytest.raises(ConfigError, match="password"):
        tracking_links_from_connection({"host": "https://t.resort.example"})


# The open pixel


def test_the_pixel_is_a_gif_that_is_never_cached_and_stores_an_open(
    tracking_client, tracking_links, make_message, engine
):
    message = make_message()
    for _ in range(2):
        response = tracking_client.get(path_of(tracking_links.open_url(message.message_key)))
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/gif"
        assert response.content.startswith(b"GIF89a") and len(response.content) == 43
        assert "no-store" in response.headers["cache-control"]
        assert "set-cookie" not in response.headers
    opens = events_of(engine, message.message_id)
    assert [(e["event_type"], e["is_bot"], e["source"]) for e in opens] == [("open", False, "tracking")] * 2
    assert opens[0]["campaign_run_id"] == message.campaign_run_id
    assert (opens[0]["contact_id"], opens[0]["channel"], opens[0]["user_agent"]) == (
        message.contact_id,
        "email",
        BROWSER,
    )


def test_a_bad_pixel_token_still_gets_the_gif_and_stores_nothing(
    tracking_client, tracking_links, make_message, engine
):
    message = make_message()
    token = token_of(tracking_links.open_url(message.message_key))
    flipped = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
    for bad in (flipped, "garbage", tracking_links.token("unsubscribe", message.message_key)):
        response = tracking_client.get(f"/t/o/{bad}.gif")
        assert (response.status_code, response.content[:6]) == (200, b"GIF89a")
    assert events_of(engine, message.message_id) == []


def test_a_valid_token_of_a_message_that_does_not_exist_stores_nothing(
    tracking_client, tracking_links, engine
):
    before = _all_events(engine)
    response = tracking_client.get(path_of(tracking_links.open_url("ffffffffffffffffffffffffffffffff")))
    assert response.status_code == 200
    response = tracking_client.get(
        path_of(tracking_links.click_url("ffffffffffffffffffffffffffffffff", TARGET))
    )
    assert (response.status_code, response.headers["location"]) == (302, TARGET)
    assert _all_events(engine) == before


def _all_events(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("select count(*) from campaign.message_event")).scalar_one()


# The click redirect


def test_a_click_redirects_to_the_signed_url_and_stores_it(
    tracking_client, tracking_links, make_message, engine
):
    message = make_message()
    response = tracking_client.get(path_of(tracking_links.click_url(message.message_key, TARGET)))
    assert response.status_code == 302
    assert response.headers["location"] == TARGET
    assert response.headers["referrer-policy"] == "no-referrer"
    [click] = events_of(engine, message.message_id)
    assert (click["event_type"], click["url"], click["is_bot"]) == ("click", TARGET, False)


def _tampered_click_tokens(links: TrackingLinks, key: str, other_key: str) -> dict[str, str]:
    token = links.token("click", key, TARGET)
    parts = token.split(".")
    other = links.token("click", other_key, OTHER_TARGET).split(".")
    evil_url = TrackingLinks("http://x", TRACKING_SECRET).token("click", key, OTHER_TARGET).split(".")[2]
    last = parts[3][-1]
    return {
        "bit-flip-in-mac": ".".join([*parts[:3], parts[3][:-1] + ("B" if last == "A" else "A")]),
        "bit-flip-in-url": ".".join([parts[0], parts[1], parts[2][:-2] + "xx", parts[3]]),
        "changed-url": ".".join([parts[0], parts[1], evil_url, parts[3]]),
        "other-messages-token": ".".join([parts[0], other[1], *parts[2:]]),
        "other-messages-mac": ".".join([*parts[:3], other[3]]),
        "open-token": links.token("open", key),
        "unsubscribe-token": links.token("unsubscribe", key),
        "unknown-secret": TrackingLinks("http://x", b"z" * 40).token("click", key, OTHER_TARGET),
        "garbage": "not-a-token",
    }


@pytest.mark.parametrize(
    "case",
    [
        "bit-flip-in-mac",
        "bit-flip-in-url",
        "changed-url",
        "other-messages-token",
        "other-messages-mac",
        "open-token",
        "unsubscribe-token",
        "unknown-secret",
        "garbage",
    ],
)
def test_a_tampered_click_token_never_redirects_and_changes_nothing(
    case, tracking_client, tracking_links, make_message, engine
):
    message, other = make_message(), make_message()
    token = _tampered_click_tokens(tracking_links, message.message_key, other.message_key)[case]
    response = tracking_client.get(f"/t/c/{token}")
    assert response.status_code == 404
    assert "location" not in response.headers
    assert response.headers["content-type"].startswith("text/html")
    assert "Dieser Link ist ungültig" in response.text
    assert events_of(engine, message.message_id) == events_of(engine, other.message_id) == []


# Unsubscribe


def test_get_shows_a_confirmation_and_changes_nothing(tracking_client, tracking_links, make_message, engine):
    message = make_message()
    url = path_of(tracking_links.unsubscribe_url(message.message_key))
    for agent in (BROWSER, "Mozilla/5.0 (compatible; Proofpoint URL Defense)"):
        response = tracking_client.get(url, headers={"User-Agent": agent})
        assert response.status_code == 200
        assert '<form method="post" action="">' in response.text
        assert "Möchten Sie sich abmelden?" in response.text and 'lang="de"' in response.text
    assert counts(engine, message.contact_id) == {"consents": 0, "suppressions": 0, "events": 0}
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


@pytest.mark.parametrize(
    "body",
    [{"data": {"List-Unsubscribe": "One-Click"}}, {"files": {"List-Unsubscribe": (None, "One-Click")}}],
    ids=["urlencoded", "multipart"],
)
def test_one_click_post_unsubscribes_without_cookies_once(
    body, tracking_api, tracking_links, make_message, engine
):
    message = make_message()
    url = path_of(tracking_links.unsubscribe_url(message.message_key))
    # A mailbox provider's one-click POST: no cookies, no CSRF token, just the RFC 8058 body.
    with httpx.Client(base_url=tracking_api.base_url, timeout=30) as fresh:
        first = fresh.post(url, **body)
        assert first.status_code == 200 and "Sie sind abgemeldet" in first.text
        assert "set-cookie" not in first.headers and not fresh.cookies
        after_first = counts(engine, message.contact_id)
        again = fresh.post(url, content=b"List-Unsubscribe=One-Click")
        assert again.status_code == 200 and "Sie sind abgemeldet" in again.text
    assert (
        after_first == counts(engine, message.contact_id) == {"consents": 1, "suppressions": 1, "events": 1}
    )
    with engine.connect() as conn:
        consent = conn.execute(
            text(
                "select channel::text, purpose, status::text, source_system, evidence "
                "from core.consent where contact_id = :c"
            ),
            {"c": message.contact_id},
        ).one()
        suppression = conn.execute(
            text("select channel::text, reason::text from campaign.suppression where contact_id = :c"),
            {"c": message.contact_id},
        ).one()
        current = conn.execute(
            text("select status::text from core.current_consent where contact_id = :c and channel = 'email'"),
            {"c": message.contact_id},
        ).scalar_one()
    assert consent[:4] == ("email", "newsletter", "opt_out", "kms") and consent[4]["one_click"] is True
    assert tuple(suppression) == ("email", "unsubscribe") and current == "opt_out"
    [event] = events_of(engine, message.message_id)
    assert event["event_type"] == "unsubscribe" and event["detail"] == {"one_click": True}


def test_simultaneous_unsubscribes_of_one_message_write_once(
    tracking_api, tracking_links, make_message, engine
):
    message = make_message()
    url = tracking_links.unsubscribe_url(message.message_key)

    def post(_: int) -> int:
        return httpx.post(url, data={"List-Unsubscribe": "One-Click"}, timeout=30).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(post, range(8))) == [200] * 8
    assert counts(engine, message.contact_id) == {"consents": 1, "suppressions": 1, "events": 1}


def test_the_confirmation_form_unsubscribes_in_english_and_get_then_says_so(
    tracking_client, tracking_links, make_message, engine
):
    message = make_message("sms", language="en")
    url = path_of(tracking_links.unsubscribe_url(message.message_key))
    page = tracking_client.get(url)
    assert "Do you want to unsubscribe?" in page.text and "by text message" in page.text
    done = tracking_client.post(url, data={"confirm": "yes"})
    assert done.status_code == 200 and "You are unsubscribed" in done.text
    assert "already unsubscribed" in tracking_client.get(url).text
    [event] = events_of(engine, message.message_id)
    assert event["detail"] == {"one_click": False} and event["channel"] == "sms"


def test_an_unsubscribe_after_a_merge_reaches_the_surviving_contact(
    tracking_client, tracking_links, make_message, engine
):
    message = make_message()
    with engine.begin() as conn:
        survivor = conn.execute(
            text(
                "insert into core.contact (account_id, first_name) "
                "select account_id, 'Ina' from core.contact where contact_id = :c returning contact_id"
            ),
            {"c": message.contact_id},
        ).scalar_one()
        conn.execute(
            text(
                "update core.contact set status = 'merged', merged_into_contact_id = :s where contact_id = :c"
            ),
            {"s": survivor, "c": message.contact_id},
        )
    url = path_of(tracking_links.unsubscribe_url(message.message_key))
    assert tracking_client.post(url, data={"confirm": "yes"}).status_code == 200
    assert counts(engine, survivor) == {"consents": 1, "suppressions": 1, "events": 0}
    assert counts(engine, message.contact_id) == {"consents": 0, "suppressions": 0, "events": 1}


@pytest.mark.parametrize("case", ["bit-flip", "open-token", "other-secret", "click-token"])
def test_a_tampered_unsubscribe_token_changes_nothing(
    case, tracking_client, tracking_links, make_message, engine
):
    message = make_message()
    token = tracking_links.token("unsubscribe", message.message_key)
    bad = {
        "bit-flip": token[:-1] + ("B" if token[-1] == "A" else "A"),
        "open-token": tracking_links.token("open", message.message_key),
        "other-secret": TrackingLinks("http://x", b"q" * 40).token("unsubscribe", message.message_key),
        "click-token": tracking_links.token("click", message.message_key, TARGET),
    }[case]
    for response in (
        tracking_client.get(f"/t/u/{bad}"),
        tracking_client.post(f"/t/u/{bad}", data={"confirm": "yes"}),
    ):
        assert response.status_code == 404 and "Dieser Link ist ungültig" in response.text
    assert counts(engine, message.contact_id) == {"consents": 0, "suppressions": 0, "events": 0}


# Bots and scanners


@pytest.mark.parametrize(
    ("method", "headers", "sent_seconds_ago", "reason"),
    [
        ("GET", {}, 3600, None),
        ("HEAD", {}, 3600, "head_request"),
        ("GET", {"User-Agent": ""}, 3600, "no_user_agent"),
        ("GET", {"User-Agent": "Mozilla/5.0 (compatible; bingbot/2.0)"}, 3600, "scanner_agent"),
        ("GET", {"User-Agent": "Barracuda Sentinel (EE)"}, 3600, "scanner_agent"),
        ("GET", {"User-Agent": "python-requests/2.32"}, 3600, "scanner_agent"),
        ("GET", {"User-Agent": "Mozilla/5.0"}, 3600, "privacy_proxy"),
        ("GET", {"X-Forwarded-For": "17.58.63.1"}, 3600, "privacy_proxy"),
        ("GET", {}, 2, "soon_after_send"),
    ],
    ids=[
        "person",
        "head",
        "no-agent",
        "crawler",
        "mail-scanner",
        "library",
        "apple-mpp-agent",
        "apple-network",
        "right-after-send",
    ],
)
def test_opens_are_flagged_by_what_shows_a_bot(
    method, headers, sent_seconds_ago, reason, tracking_client, tracking_links, make_message, engine
):
    message = make_message(sent_seconds_ago=sent_seconds_ago)
    response = tracking_client.request(
        method, path_of(tracking_links.open_url(message.message_key)), headers=headers
    )
    assert response.status_code == 200
    [event] = events_of(engine, message.message_id)
    assert (event["event_type"], event["is_bot"], event["bot_reason"]) == ("open", reason is not None, reason)


def test_a_click_from_the_apple_network_is_a_person(tracking_client, tracking_links, make_message, engine):
    message = make_message()
    url = path_of(tracking_links.click_url(message.message_key, TARGET))
    assert tracking_client.get(url, headers={"X-Forwarded-For": "17.58.63.1"}).status_code == 302
    assert [e["is_bot"] for e in events_of(engine, message.message_id)] == [False]


def test_clicks_on_every_link_within_a_second_are_a_scanner(
    tracking_api, tracking_links, make_message, engine
):
    message = make_message()
    links = [f"https://resort.example/{page}" for page in ("wasserwelt", "hotel", "impressum")]
    urls = [tracking_links.click_url(message.message_key, link) for link in links]
    # A scanner follows every link at once, as here: in parallel requests.
    with ThreadPoolExecutor(max_workers=3) as pool:
        answers = list(
            pool.map(lambda url: httpx.get(url, headers={"User-Agent": BROWSER}, timeout=30), urls)
        )
    assert [answer.status_code for answer in answers] == [302, 302, 302]
    clicks = events_of(engine, message.message_id)
    assert sorted((c["url"], c["is_bot"], c["bot_reason"]) for c in clicks) == [
        (link, True, "link_burst") for link in sorted(links)
    ]


def test_a_person_clicking_one_link_twice_and_another_later_is_not_a_scanner(
    tracking_client, tracking_links, make_message, engine
):
    message = make_message()
    first = path_of(tracking_links.click_url(message.message_key, TARGET))
    assert tracking_client.get(first).status_code == tracking_client.get(first).status_code == 302
    time.sleep(1.2)
    other = path_of(tracking_links.click_url(message.message_key, "https://resort.example/hotel"))
    assert tracking_client.get(other).status_code == 302
    assert [c["is_bot"] for c in events_of(engine, message.message_id)] == [False, False, False]


def test_the_openapi_document_lists_the_tracking_paths(tracking_client):
    paths = tracking_client.get("/api/v1/openapi.json").json()["paths"]
    assert {
        "/t/c/{token}",
        "/t/u/{token}",
        "/t/webhooks/sms",
        "/t/webhooks/push",
        "/t/webhooks/email",
    } <= set(paths)
    assert set(paths["/t/u/{token}"]) == {"get", "post"}


def test_the_ingest_endpoints_still_want_their_api_key(tracking_client):
    response = tracking_client.post("/api/v1/events", json={"events": []})
    assert response.status_code == 401


# Inside Airflow's API server (plugins/kms_api.py mounts the app under /kms)


@pytest.fixture(scope="module")
def airflow_tracking_secret() -> Iterator[bytes]:
    """The secret of the Airflow connection kms_tracking, which Airflow's API server uses over
    KMS_TRACKING_SECRET (both set in its environment before it starts)."""
    secret = "connection-tracking-secret-0123456789abcdef"
    names = {
        "KMS_TRACKING_SECRET": "environment-tracking-secret-0123456789abcdef",
        "AIRFLOW_CONN_KMS_TRACKING": json.dumps({"conn_type": "http", "password": secret}),
    }
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(names)
    yield secret.encode()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def test_the_tracking_links_work_inside_airflows_api_server_without_a_login(
    airflow_tracking_secret, api_server, make_message, engine
):
    links = TrackingLinks(f"{api_server['host']}/kms", airflow_tracking_secret)
    environment_links = TrackingLinks(links.base_url, os.environ["KMS_TRACKING_SECRET"].encode())
    message = make_message()
    with httpx.Client(timeout=30, headers={"User-Agent": BROWSER}) as client:
        pixel = client.get(links.open_url(message.message_key))
        click = client.get(links.click_url(message.message_key, TARGET))
        forged = client.get(environment_links.click_url(message.message_key, OTHER_TARGET))
        page = client.get(links.unsubscribe_url(message.message_key))
        done = client.post(links.unsubscribe_url(message.message_key), data={"List-Unsubscribe": "One-Click"})
    assert (pixel.status_code, pixel.headers["content-type"]) == (200, "image/gif")
    assert (click.status_code, click.headers["location"]) == (302, TARGET)
    assert forged.status_code == 404 and "location" not in forged.headers
    assert page.status_code == 200 and "Möchten Sie sich abmelden?" in page.text
    assert done.status_code == 200 and "Sie sind abgemeldet" in done.text
    assert [e["event_type"] for e in events_of(engine, message.message_id)] == [
        "open",
        "click",
        "unsubscribe",
    ]
    assert counts(engine, message.contact_id) == {"consents": 1, "suppressions": 1, "events": 3}
