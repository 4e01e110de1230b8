"""Fixtures: the kms API app with its tracking endpoints on a real local port, and messages to track.

`tracking_api` serves `create_app` with uvicorn on 127.0.0.1 (module scope), with settings
whose secrets are the constants below; `tracking_links` signs links for it. `make_message`
writes a sent message of a fresh contact, campaign run and key into the test database, as the
outbox would, so each test tracks its own message and reads back only its own rows.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
import uvicorn
from servers_providers import SMS_AUTH_TOKEN
from sqlalchemy import text
from sqlalchemy.engine import URL, Engine

from campaign_lib.api.app import create_app
from campaign_lib.api.server import RunningServer, free_port, run_in_thread
from campaign_lib.db import make_engine
from campaign_lib.tracking.settings import TrackingSettings
from campaign_lib.tracking.tokens import TrackingLinks

TRACKING_SECRET = b"tracking-secret-for-tests-0123456789abcdef"
PREVIOUS_SECRET = b"the-previous-tracking-secret-0123456789abcd"
# The SMS emulator's account signs its status callbacks with this token, as Twilio does.
SMS_WEBHOOK_TOKEN = SMS_AUTH_TOKEN
PUSH_WEBHOOK_SECRET = "push-webhook-secret-for-tests"
EMAIL_WEBHOOK_SECRET = "email-webhook-secret-for-tests"
BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0"
_numbers = itertools.count(1)


@dataclass(frozen=True)
class TrackedMessage:
    """A sent message in the test database."""

    message_id: int
    message_key: str
    contact_id: int
    campaign_run_id: int
    channel: str
    address: str


@pytest.fixture(scope="module")
def tracking_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def tracking_links(tracking_port: int) -> TrackingLinks:
    return TrackingLinks(f"http://127.0.0.1:{tracking_port}", TRACKING_SECRET, (PREVIOUS_SECRET,))


@pytest.fixture(scope="module")
def tracking_settings(tracking_links: TrackingLinks) -> TrackingSettings:
    return TrackingSettings(
        links=tracking_links,
        sms_auth_token=SMS_WEBHOOK_TOKEN,
        push_webhook_secret=PUSH_WEBHOOK_SECRET,
        email_webhook_secret=EMAIL_WEBHOOK_SECRET,
    )


@pytest.fixture(scope="module")
def tracking_api(
    kms_url: URL, tracking_port: int, tracking_settings: TrackingSettings
) -> Iterator[RunningServer]:
    app = create_app(lambda: make_engine(kms_url), tracking=lambda: tracking_settings)
    # proxy_headers as in production: tests present a client address through X-Forwarded-For.
    config = uvicorn.Config(
        app, host="127.0.0.1", port=tracking_port, log_level="warning", proxy_headers=True, access_log=False
    )
    server = run_in_thread(config)
    yield server
    server.stop()


@pytest.fixture
def tracking_client(tracking_api: RunningServer) -> Iterator[httpx.Client]:
    """A client without cookies that never follows redirects, with a browser's user agent."""
    with httpx.Client(base_url=tracking_api.base_url, timeout=30, headers={"User-Agent": BROWSER}) as http:
        yield http


@pytest.fixture(scope="module")
def tracked_campaign(engine: Engine) -> str:
    """A campaign of this test process (name unique per module and process)."""
    name = f"tracking_{os.getpid()}_{next(_numbers)}"
    with engine.begin() as conn:
        conn.execute(
            text(
                "insert into campaign.campaign (campaign_name, origin, definition_version, definition) "
                "values (:name, 'adhoc', '0123456789abcdef', cast(:definition as jsonb))"
            ),
            {"name": name, "definition": json.dumps({"purpose": "newsletter"})},
        )
    return name


@pytest.fixture
def make_message(engine: Engine, tracked_campaign: str) -> Callable[..., TrackedMessage]:
    def make(
        channel: str = "email",
        *,
        sent_seconds_ago: float = 3600,
        language: str | None = "de",
        address: str | None = None,
        provider_message_id: str | None = None,
    ) -> TrackedMessage:
        number = next(_numbers)
        run_key = f"{os.getpid()}-{number}"
        email = f"person{os.getpid()}x{number}@example.org"
        address = (
            address
            or {
                "email": email,
                "sms": f"+4917{os.getpid() % 100000:05d}{number:04d}",
                "push": f"fcm-token-{run_key}",
            }[channel]
        )
        sent_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=sent_seconds_ago)
        with engine.begin() as conn:
            account_id = conn.execute(
                text("insert into core.account (account_type) values ('household') returning account_id")
            ).scalar_one()
            contact_id = conn.execute(
                text(
                    "insert into core.contact (account_id, first_name, email, preferred_language) "
                    "values (:account_id, 'Ina', :email, :language) returning contact_id"
                ),
                {"account_id": account_id, "email": email, "language": language},
            ).scalar_one()
            run_id = conn.execute(
                text(
                    "insert into campaign.campaign_run (campaign_name, dag_id, run_id, status, "
                    "definition_version, selection_name, selection_version, as_of, frozen_at) "
                    "values (:name, 'kms_tracking_tests', :run_key, 'approved', '0123456789abcdef', "
                    "'tests', 'v1', now(), now()) returning campaign_run_id"
                ),
                {"name": tracked_campaign, "run_key": run_key},
            ).scalar_one()
            key = hashlib.md5(f"{run_id}:{contact_id}:{channel}".encode()).hexdigest()
            message_id = conn.execute(
                text(
                    "insert into campaign.message (message_key, campaign_run_id, contact_id, channel, cell, "
                    "batch_no, status, attempts, address, provider_message_id, sent_at) "
                    "values (:key, :run_id, :contact_id, cast(:channel as core.channel), 'treatment', 0, "
                    "'sent', 1, :address, :provider_message_id, :sent_at) returning message_id"
                ),
                {
                    "key": key,
                    "run_id": run_id,
                    "contact_id": contact_id,
                    "channel": channel,
                    "address": address,
                    "provider_message_id": provider_message_id,
                    "sent_at": sent_at,
                },
            ).scalar_one()
        return TrackedMessage(message_id, key, contact_id, run_id, channel, address)

    return make


def events_of(engine: Engine, message_id: int) -> list[dict]:
    """The events of a message, oldest first, as dicts."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "select event_type::text as event_type, url, is_bot, bot_reason, user_agent, source, "
                "provider_event_id, campaign_run_id, contact_id, channel::text as channel, detail "
                "from campaign.message_event where message_id = :id order by message_event_id"
            ),
            {"id": message_id},
        )
        return [dict(row._mapping) for row in rows]
