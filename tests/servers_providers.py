"""Fixtures: the SMS and push provider emulators as real HTTP servers on 127.0.0.1, with faults.

`provider_server` is one `LocalProviderServer` per test session (a Twilio account, a
service account for FCM, Web Push endpoints); `providers` hands it to a test with its
faults and stored messages cleared. `sms_conn`, `fcm_conn` and `webpush_conn` are the
Airflow-connection-like dicts the connectors are built from, pointing at it.
`receipt_sink` is a second server that records the status callbacks the emulator posts.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from py_vapid import Vapid02

from campaign_lib.local_servers.providers import (
    LocalProviderServer,
    ThreadedAiohttpServer,
    make_service_account,
)

SMS_ACCOUNT_SID = "AC" + "0" * 31 + "1"
SMS_AUTH_TOKEN = "sms-auth-token-for-tests"
SMS_FROM = "+4930901820"
FCM_PROJECT = "kms-test"


@pytest.fixture(scope="session")
def fcm_service_account(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A service-account key (token_uri filled in once the server knows its port) and its public key."""
    account, public_pem = make_service_account(FCM_PROJECT, "http://placeholder/token")
    return {"account": account, "public_pem": public_pem}


@pytest.fixture(scope="session")
def provider_server(
    tmp_path_factory: pytest.TempPathFactory, fcm_service_account: dict[str, Any]
) -> Iterator[LocalProviderServer]:
    account = fcm_service_account["account"]
    with LocalProviderServer(
        tmp_path_factory.mktemp("providers"),
        sms_accounts={SMS_ACCOUNT_SID: SMS_AUTH_TOKEN},
        fcm_accounts={account["client_email"]: fcm_service_account["public_pem"]},
        fcm_project_id=FCM_PROJECT,
        callback_delay=0.01,
    ) as server:
        account["token_uri"] = f"{server.base_url}/token"
        yield server


@pytest.fixture
def providers(provider_server: LocalProviderServer) -> LocalProviderServer:
    """The emulator with no faults and no messages yet."""
    provider_server.emulator.clear()
    return provider_server


@pytest.fixture
def sms_conn(providers: LocalProviderServer) -> dict[str, Any]:
    return {
        "conn_type": "http",
        "host": providers.base_url,
        "login": SMS_ACCOUNT_SID,
        "password": SMS_AUTH_TOKEN,
        "extra": {"from": SMS_FROM, "timeout": 5, "max_retry_wait": 1.5},
    }


@pytest.fixture
def fcm_conn(providers: LocalProviderServer, fcm_service_account: dict[str, Any]) -> dict[str, Any]:
    return {
        "conn_type": "http",
        "host": providers.base_url,
        "extra": {"service_account": json.dumps(fcm_service_account["account"]), "timeout": 5},
    }


@pytest.fixture(scope="session")
def vapid_private_key() -> str:
    """A VAPID private key as PEM text, as a connection's password holds it."""
    vapid = Vapid02()
    vapid.generate_keys()
    return vapid.private_pem().decode()


@pytest.fixture
def webpush_conn(vapid_private_key: str) -> dict[str, Any]:
    return {
        "conn_type": "http",
        "password": vapid_private_key,
        "extra": {"subject": "mailto:ops@resort.example", "timeout": 5},
    }


class ReceiptSink(ThreadedAiohttpServer):
    """Records every POST to /t/webhooks/{sms,push} (the receipts), with its headers and body."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.arrived = threading.Condition()
        app = web.Application()
        app.router.add_post("/t/webhooks/{kind}", self._receive)
        super().__init__(app)

    @property
    def url(self) -> str:
        return f"{self.base_url}/t/webhooks/sms"

    @property
    def push_url(self) -> str:
        return f"{self.base_url}/t/webhooks/push"

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        form = await request.post() if request.content_type == "application/x-www-form-urlencoded" else {}
        with self.arrived:
            self.received.append(
                {
                    "kind": request.match_info["kind"],
                    "params": {k: str(v) for k, v in form.items()},
                    "body": body,
                    "headers": dict(request.headers),
                    "message_key": request.query.get("message_key"),
                }
            )
            self.arrived.notify_all()
        return web.Response(status=204)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The received receipts once there are at least `count` (or when the timeout ends)."""
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.received) >= count, timeout=timeout)
            return list(self.received)


@pytest.fixture
def receipt_sink() -> Iterator[ReceiptSink]:
    with ReceiptSink() as sink:
        yield sink


def stored_lines(server: LocalProviderServer, provider: str) -> list[dict[str, Any]]:
    """The emulator's JSON lines file of `provider`, parsed."""
    path = Path(server.emulator.store_dir) / f"{provider}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
