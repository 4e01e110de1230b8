"""Benchmark: SMS and push messages/s through the connectors to the local provider emulators.

    .venv/bin/python bench/providers.py [--messages 5000] [--webpush 500] [--runs 3]

The emulators (campaign_lib/local_servers/providers.py) run in a child process, as a real
provider would. Each round measures, against that same server,

  baseline     raw HTTP with no connector: (a) httpx sync with one keep-alive connection, one
               request at a time (PERFORMANCE_NOTES: ~730 req/s), and (b) aiohttp with 16
               requests in flight (~1,900 req/s), posting the same Twilio form;
  SMS          `SmsConnector.send` with 16 in flight, whole batch in one call, and in chunks
               of 100 and of 1 message per call (how an outbox that commits each hand-over
               may call it);
  FCM          `PushConnector.send` to FCM HTTP v1 (OAuth2 token fetched once);
  Web Push     `PushConnector.send` to Web Push: aes128gcm encryption (an ECDH key pair per
               message) and a VAPID header, measured on fewer messages.

Figures are messages/s (median of the runs, best in brackets), the ratio to baseline (b),
and the CPU time per message of this client process and of the emulator process: on a busy
machine the rates follow the load, the CPU per message does not (two free cores would give
about 1 / max(client, server) messages/s). Every outcome is checked to be 'sent'; nothing is
asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import httpx
import psutil

from campaign_lib.local_servers.providers import make_service_account
from campaign_lib.local_servers.webpush_keys import emulator_webpush_subscription
from connectors.base import Outbound
from connectors.http_batch import basic_authorization
from connectors.push import PushConnector
from connectors.sms import SmsConnector

SID, TOKEN = "AC" + "b" * 32, "bench-token"
PROJECT = "kms-bench"

SERVER = """
import json, sys
from pathlib import Path
from campaign_lib.local_servers.providers import serve_forever
options = json.loads(sys.argv[1])
serve_forever(Path(options.pop("store")), port=options.pop("port"), **options)
"""


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(store: Path, account: dict, public_pem: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    options = {
        "store": str(store),
        "port": port,
        "sms_accounts": {SID: TOKEN},
        "fcm_accounts": {account["client_email"]: public_pem},
        "fcm_project_id": PROJECT,
    }
    server = subprocess.Popen([sys.executable, "-c", SERVER, json.dumps(options)])
    base_url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.get(f"{base_url}/_emulator/messages", timeout=1)
            return server, base_url
        except httpx.TransportError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("the emulator did not start")


def outbound(n: int, address: str, run: int) -> Outbound:
    return Outbound(n, f"{run:08x}{n:024x}", n, "sms", address, "Wasserwelt", f"Hallo Gast {n}!", None)


def raw_httpx(base_url: str, n: int, run: int) -> float:
    url = f"{base_url}/2010-04-01/Accounts/{SID}/Messages.json"
    headers = {"Authorization": basic_authorization(SID, TOKEN)}
    started = time.perf_counter()
    with httpx.Client(headers=headers) as client:
        for i in range(n):
            answer = client.post(url, data={"To": f"+49151{i:08d}", "From": "+4930", "Body": f"Hallo {i}"})
            assert answer.status_code == 201
    return n / (time.perf_counter() - started)


def raw_aiohttp(base_url: str, n: int, run: int) -> float:
    url = f"{base_url}/2010-04-01/Accounts/{SID}/Messages.json"
    headers = {"Authorization": basic_authorization(SID, TOKEN)}

    async def main() -> float:
        todo = iter(range(n))
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=16), headers=headers
        ) as session:

            async def worker() -> None:
                for i in todo:
                    form = {"To": f"+49151{i:08d}", "From": "+4930", "Body": f"Hallo {i}"}
                    async with session.post(url, data=form) as answer:
                        await answer.read()
                        assert answer.status == 201

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(16)))
            return n / (time.perf_counter() - started)

    return asyncio.run(main())


def through(connector_factory: Callable, addresses: Callable[[int], str], chunk: int | None):
    def measure(base_url: str, n: int, run: int) -> float:
        connector = connector_factory(base_url)
        batch = [outbound(i, addresses(i), run) for i in range(n)]
        try:
            # Warm up: the connection pool and (FCM) the access token.
            list(connector.send([outbound(n + 1, addresses(n + 1), run + 1000)]))
            started = time.perf_counter()
            step = chunk or n
            statuses = [o.status for i in range(0, n, step) for o in connector.send(batch[i : i + step])]
            rate = n / (time.perf_counter() - started)
        finally:
            connector.close()
        assert statuses.count("sent") == n, {s: statuses.count(s) for s in set(statuses)}
        return rate

    return measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--webpush", type=int, default=500)
    parser.add_argument("--single", type=int, default=1000, help="messages for the 1-per-call SMS case")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        account, public_pem = make_service_account(PROJECT, "http://placeholder/token")
        server, base_url = start_server(Path(tmp), account, public_pem)
        account["token_uri"] = f"{base_url}/token"
        try:
            vapid = run_vapid_key()
            sms = lambda url: SmsConnector.from_connection(  # noqa: E731
                {"host": url, "login": SID, "password": TOKEN, "extra": {"from": "+4930901820"}}
            )
            push = lambda url: PushConnector.from_connection(  # noqa: E731
                {"host": url, "extra": {"service_account": account}},
                {"password": vapid, "extra": {"subject": "mailto:bench@resort.example"}},
            )
            subscriptions = [
                "webpush:" + json.dumps(emulator_webpush_subscription(base_url, f"b{i}")) for i in range(50)
            ]
            cases: list[tuple[str, Callable, int]] = [
                ("baseline (a) httpx sync keep-alive", raw_httpx, args.single),
                ("baseline (b) aiohttp 16 in flight", raw_aiohttp, args.messages),
                ("SMS connector, one call", through(sms, lambda i: f"+49151{i:08d}", None), args.messages),
                (
                    "SMS connector, chunks of 100",
                    through(sms, lambda i: f"+49151{i:08d}", 100),
                    args.messages,
                ),
                (
                    "SMS connector, 1 message per call",
                    through(sms, lambda i: f"+49151{i:08d}", 1),
                    args.single,
                ),
                ("FCM connector, one call", through(push, lambda i: f"fcm-token-{i}", None), args.messages),
                (
                    "Web Push connector, one call",
                    through(push, lambda i: subscriptions[i % 50], None),
                    args.webpush,
                ),
            ]
            rates: dict[str, list[float]] = {label: [] for label, _, _ in cases}
            cpu: dict[str, list[tuple[float, float]]] = {label: [] for label, _, _ in cases}
            emulator = psutil.Process(server.pid)
            for run in range(args.runs):
                for label, measure, n in cases:
                    client_before, server_before = time.process_time(), sum(emulator.cpu_times()[:2])
                    rates[label].append(measure(base_url, n, run))
                    client = (time.process_time() - client_before) / n * 1e6
                    cpu[label].append((client, (sum(emulator.cpu_times()[:2]) - server_before) / n * 1e6))
        finally:
            server.terminate()
            server.wait(timeout=10)

    baseline = statistics.median(rates["baseline (b) aiohttp 16 in flight"])
    print(f"messages/s to the local provider emulators (child process), median of {args.runs} runs [best]")
    for label, values in rates.items():
        median = statistics.median(values)
        client = statistics.median(c for c, _ in cpu[label])
        emulated = statistics.median(e for _, e in cpu[label])
        print(
            f"  {label:<38} {median:8.0f} /s  [{max(values):7.0f}]  {median / baseline:5.2f}x baseline (b)"
            f"   CPU/message: client {client:5.0f} us, emulator {emulated:5.0f} us"
        )


def run_vapid_key() -> str:
    from py_vapid import Vapid02

    vapid = Vapid02()
    vapid.generate_keys()
    return vapid.private_pem().decode()


if __name__ == "__main__":
    main()
