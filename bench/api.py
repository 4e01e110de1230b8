"""Benchmark of the ingest API over HTTP against the same batches loaded in-process.

Builds `--batches` batches of `--size` website events shaped like the generator's (mostly
page views under a cookie, some registrations, logins, sign-ups, comments and ratings),
then, in a throw-away database on the configured server (KMS_DATABASE_URL or the embedded
one):

1. baseline: half of the batches passed straight to the loader in-process
   (`load_batch`: check, parse, ledger, stage, quality gate, merge), no HTTP, no auth;
2. HTTP: the other half POSTed by `--clients` keep-alive httpx clients to the app
   served by uvicorn on 127.0.0.1, with an API key;
3. latency: `--probes` single page views, each timed from the POST until its activity
   is in core.activity (identity resolution runs after the response).

Prints events/s and p50/p95 batch latency of both paths, their ratio, and the time
until every record of the HTTP half was in the core tables.

    python bench/api.py --batches 200 --size 500
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import httpx  # noqa: E402
from sqlalchemy import text  # noqa: E402

from campaign_lib.api.batches import EVENTS, CorePublisher, load_batch  # noqa: E402
from campaign_lib.api.keys import EVENTS_WRITE, create_key  # noqa: E402
from campaign_lib.api.server import start_in_thread  # noqa: E402
from campaign_lib.config import load_settings  # noqa: E402
from campaign_lib.db import admin_connection, make_engine, open_databases  # noqa: E402
from campaign_lib.db.migrate import upgrade  # noqa: E402

URLS = ("/de/hotel/zimmer", "/en/water-park", "/de/restaurants", "/en/offers/summer", "/nl/dolfinarium", "/")
REFERRERS = ("", "https://www.google.com/", "https://www.facebook.com/", "newsletter")


class Website:
    """Website events with the generator's shapes and mix, from a seeded random stream."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.customers = 0

    def stamp(self) -> str:
        r = self.rng
        day, clock = (
            f"2026-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}",
            f"{r.randint(8, 22):02d}:{r.randint(0, 59):02d}",
        )
        return f"{day}T{clock}:00+02:00"

    def page_view(self) -> dict:
        r = self.rng
        return {
            "event_id": str(uuid.UUID(int=r.getrandbits(128), version=4)),
            "event_type": "page_view",
            "occurred_at": self.stamp(),
            "cookie_id": f"{r.getrandbits(64):016x}",
            "url": r.choice(URLS),
            "referrer": r.choice(REFERRERS),
        }

    def event(self) -> dict:
        r = self.rng
        cookie = f"{r.getrandbits(64):016x}"
        base = {"event_id": str(uuid.UUID(int=r.getrandbits(128), version=4)), "occurred_at": self.stamp()}
        roll = r.random()
        if roll < 0.80:
            return self.page_view()
        self.customers += 1
        customer = f"W{self.customers + 10_000 * r.randint(0, 99_999):09d}"
        if roll < 0.88:
            method = "password" if r.random() < 0.85 else "google"
            return {
                **base,
                "event_type": "login",
                "customer_id": customer,
                "cookie_id": cookie,
                "method": method,
            }
        if roll < 0.95:
            first = r.choice(("Anna", "Lukas", "Marie", "Jonas", "Sophie", "Finn"))
            last = r.choice(("Müller", "Schmidt", "Schneider", "Fischer", "Weber"))
            return {
                **base,
                "event_type": "registration",
                "customer_id": customer,
                "cookie_id": cookie,
                "email": f"{first}.{last}{r.randint(1, 999)}@example.org".lower(),
                "first_name": first,
                "last_name": last,
                "birth_date": f"19{r.randint(50, 99)}-0{r.randint(1, 9)}-1{r.randint(0, 9)}"
                if r.random() < 0.5
                else None,
                "phone": f"+49 170 {r.randint(1_000_000, 9_999_999)}" if r.random() < 0.4 else None,
                "language": "de",
            }
        if roll < 0.98:
            return {
                **base,
                "event_type": "newsletter_signup",
                "email": f"fan{r.getrandbits(32)}@example.org",
                "cookie_id": cookie,
                "customer_id": None,
                "consent": {
                    "channel": "email",
                    "purpose": "newsletter",
                    "opt_in_at": base["occurred_at"],
                    "double_opt_in_at": None,
                    "source": "website_form",
                },
            }
        return {
            **base,
            "event_type": "rating",
            "customer_id": customer,
            "cookie_id": cookie,
            "subject": "hotel",
            "stars": r.randint(1, 5),
        }

    def batches(self, count: int, size: int) -> list[dict]:
        return [{"events": [self.event() for _ in range(size)]} for _ in range(count)]


def _percentiles(seconds: list[float]) -> tuple[float, float]:
    if len(seconds) < 2:
        return seconds[0], seconds[0]
    cuts = statistics.quantiles(seconds, n=20, method="inclusive")
    return statistics.median(seconds), cuts[18]


def _report(label: str, events: int, elapsed: float, latencies: list[float]) -> float:
    p50, p95 = _percentiles(latencies)
    rate = events / elapsed
    print(
        f"{label:<28} {events:>8,} events in {elapsed:7.2f} s = {rate:>8,.0f} events/s   "
        f"batch p50 {p50 * 1000:6.0f} ms  p95 {p95 * 1000:6.0f} ms"
    )
    return rate


def _wait_resolved(engine, timeout: float = 600.0) -> float:
    started = time.perf_counter()
    with engine.connect() as conn:
        while time.perf_counter() - started < timeout:
            if not conn.execute(text("select exists (select from ingest.record_pending)")).scalar():
                return time.perf_counter() - started
            conn.commit()
            time.sleep(0.05)
    raise SystemExit("records were not resolved within the timeout")


def run(batches: int, size: int, clients: int, probes: int, seed: int) -> None:
    server_url = open_databases(load_settings()).kms
    name = f"kms_bench_api_{os.getpid()}"
    url = server_url.set(database=name)
    admin = admin_connection(server_url)
    with admin.cursor() as cur:
        cur.execute(f'create database "{name}"')
    engine = make_engine(url, pool_size=8, max_overflow=8)
    api = None
    try:
        upgrade(engine)
        website = Website(seed)
        half = max(1, batches // 2)
        baseline_batches, http_batches = website.batches(half, size), website.batches(half, size)
        warm = website.batches(2, size)
        print(
            f"{batches} batches of {size} events: {half} in-process, {half} over HTTP ({clients} client(s))"
        )

        # Warm both paths (imports of the parser, GX and identity resolution) outside the clocks.
        for batch in warm[:1]:
            load_batch(engine, EVENTS, batch["events"], batch, "bench")
        _, key = create_key(engine, "bench", [EVENTS_WRITE])
        api = start_in_thread(url)
        with httpx.Client(base_url=api.base_url, headers={"X-API-Key": key}, timeout=120) as http:
            http.post("/api/v1/events", json=warm[1]).raise_for_status()
        _wait_resolved(engine)

        publisher = CorePublisher(lambda: engine)
        resolver = ThreadPoolExecutor(1)
        latencies = []
        started = time.perf_counter()
        for batch in baseline_batches:
            began = time.perf_counter()
            outcome = load_batch(engine, EVENTS, batch["events"], batch, "bench")
            latencies.append(time.perf_counter() - began)
            assert outcome.refusal is None and outcome.result.accepted == size, outcome
            publisher.expect()
            resolver.submit(publisher.request)
        baseline_elapsed = time.perf_counter() - started
        publisher.wait_idle(600)
        baseline_core = _wait_resolved(engine) + time.perf_counter() - started
        resolver.shutdown()
        baseline_rate = _report("in-process load_batch", half * size, baseline_elapsed, latencies)

        latencies = []
        lock = threading.Lock()
        queue = list(reversed(http_batches))

        def client() -> None:
            with httpx.Client(base_url=api.base_url, headers={"X-API-Key": key}, timeout=120) as http:
                while True:
                    with lock:
                        if not queue:
                            return
                        batch = queue.pop()
                    began = time.perf_counter()
                    response = http.post("/api/v1/events", json=batch)
                    took = time.perf_counter() - began
                    response.raise_for_status()
                    assert response.json()["accepted"] == size, response.text
                    with lock:
                        latencies.append(took)

        started = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        http_elapsed = time.perf_counter() - started
        http_core = _wait_resolved(engine) + http_elapsed
        http_rate = _report("HTTP POST /api/v1/events", half * size, http_elapsed, latencies)
        print(f"ratio HTTP / in-process: {http_rate / baseline_rate:.2f}")
        print(
            f"all records in core after: in-process {baseline_core:.2f} s, HTTP {http_core:.2f} s "
            f"(includes identity resolution)"
        )

        visible = []
        with (
            httpx.Client(base_url=api.base_url, headers={"X-API-Key": key}, timeout=60) as http,
            engine.connect() as conn,
        ):
            for _ in range(probes):
                probe = website.page_view()
                began = time.perf_counter()
                http.post("/api/v1/events", json={"events": [probe]}).raise_for_status()
                while not conn.execute(
                    text("select exists (select from core.activity where source_ref = :ref)"),
                    {"ref": probe["event_id"]},
                ).scalar():
                    conn.commit()
                    time.sleep(0.005)
                conn.commit()
                visible.append(time.perf_counter() - began)
        if visible:
            p50, p95 = _percentiles(visible)
            print(
                f"POST of one event until its activity is in core.activity ({probes} probes): "
                f"p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, max {max(visible) * 1000:.0f} ms"
            )
    finally:
        if api is not None:
            api.stop()
        engine.dispose()
        with admin.cursor() as cur:
            cur.execute(f'drop database if exists "{name}" with (force)')
        admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--size", type=int, default=500)
    parser.add_argument("--clients", type=int, default=1, help="concurrent keep-alive HTTP clients")
    parser.add_argument(
        "--probes", type=int, default=20, help="single-event POSTs timed until visible in core"
    )
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    run(args.batches, args.size, args.clients, args.probes, args.seed)


if __name__ == "__main__":
    main()
