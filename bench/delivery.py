"""Benchmark of delivery: messages per second through the outbox next to raw sends, same run.

    python bench/delivery.py [--emails 3000] [--sms 4000] [--push 4000] [--workers 4]

Works on a scratch database `kms_bench_delivery` on the embedded server (dropped afterwards)
with one frozen run of the demo campaign whose audience has `--emails` members reachable by
email, `--sms` by SMS and `--push` by push, and the local servers in child processes (so
they do not share the benchmark's interpreter): the SMTP sink (`kms smtp serve`) and the
SMS/push provider emulators (`kms providers serve`).

Email, each a figure in messages/s:
- raw smtplib, one connection reused, pre-built messages (the baseline; the outbox's target
  is >= 0.8x of it and >= 500 msg/s), one connection per message, and `--workers` reused
  connections in threads;
- the outbox: campaign_lib.delivery.deliver_run with `--workers` sender threads: claim with
  the eligibility re-check, render (Jinja2, tracked links), build the MIME bytes, send, and
  commit each outcome with its contact history.
SMS and push: the connector alone on pre-built messages, then through the outbox (target
>= 1,500/s). The machine is shared: figures are "under load" and vary between runs.
"""

from __future__ import annotations

import argparse
import os
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Engine

from campaign_lib.campaign.definition import find_campaign
from campaign_lib.config import load_settings
from campaign_lib.db import make_engine, open_databases, scratch_database
from campaign_lib.db.migrate import upgrade
from campaign_lib.delivery import deliver_run, delivery_state, send_options
from campaign_lib.local_servers.provider_setup import local_providers
from campaign_lib.rendering import load_campaign_templates
from campaign_lib.tracking.tokens import TrackingLinks
from connectors.base import Outbound
from connectors.email import EmailConnector
from connectors.push import PushConnector
from connectors.sms import SmsConnector

CAMPAIGN = "water_park_for_hotel_guests"
SECRET = "bench-delivery-tracking-secret-0123456789"
LINKS = TrackingLinks("http://127.0.0.1:8790/kms", SECRET.encode())
SENDER = "newsletter@resort-example.de"

# One statement builds the audience: households with one contact each, an address and an
# opt-in for the contact's channel, push tokens for push, all in cell 'main' of one frozen run.
BUILD_RUN = """
with account as (
    insert into core.account (account_type)
    select 'household' from generate_series(1, :total)
    returning account_id
),
contact as (
    insert into core.contact (account_id, salutation, first_name, last_name, email, phone_e164,
                              preferred_language)
    select account_id, 'Frau', 'Gast', 'Nr ' || account_id, 'guest' || account_id || '@example.org',
           '+49151' || lpad(account_id::text, 8, '0'), 'de'
    from account
    returning contact_id, account_id
),
assigned as (
    select contact_id, account_id,
           case when account_id <= :emails then 'email'
                when account_id <= :emails + :sms then 'sms'
                else 'push' end::core.channel as channel
    from contact
),
token as (
    insert into core.identifier (contact_id, kind, value, source_system)
    select contact_id, 'push_token', 'fcm-bench-' || contact_id, 'website'
    from assigned
    where channel = 'push'
),
consent as (
    insert into core.consent (contact_id, channel, purpose, status, recorded_at, source_system)
    select contact_id, channel, 'newsletter', 'opt_in', now() - interval '30 days', 'website' from assigned
)
insert into campaign.audience (campaign_run_id, contact_id, account_id, channel, cell, offer_sku,
                               selection_version)
select :run, contact_id, account_id, channel, 'main', 'WP-DAY-HOTEL', 'bench' from assigned
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def child_server(args: list[str], env: dict[str, str], port: int) -> subprocess.Popen:
    """A `kms` server command in a child process, once its port answers."""
    child = subprocess.Popen(
        [sys.executable, "-m", "campaign_lib.cli", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return child
        except OSError:
            if child.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the child server {args} did not start") from None
            time.sleep(0.1)


def build_run(engine: Engine, emails: int, sms: int, push: int) -> int:
    campaign = find_campaign(CAMPAIGN).campaign
    with engine.begin() as conn:
        conn.execute(
            text(
                "insert into campaign.campaign (campaign_name, origin, owner, description, "
                "definition_version, "
                "definition) values (:n, 'file', :o, :d, '0123456789abcdef', cast(:j as jsonb))"
            ),
            {
                "n": campaign.name,
                "o": campaign.owner,
                "d": campaign.description,
                "j": campaign.model_dump_json(),
            },
        )
        run_id = conn.execute(
            text(
                "insert into campaign.campaign_run (campaign_name, dag_id, run_id, status, "
                "definition_version, selection_name, selection_version, as_of, frozen_at) "
                "values (:n, 'bench', 'bench', 'frozen', "
                "'0123456789abcdef', :s, 'bench', now(), now()) returning campaign_run_id"
            ),
            {"n": campaign.name, "s": campaign.selection.name},
        ).scalar_one()
        conn.execute(
            text(BUILD_RUN), {"run": run_id, "total": emails + sms + push, "emails": emails, "sms": sms}
        )
        conn.execute(text("analyze"))
    return run_id


def outbound_messages(channel: str, count: int, address: Callable[[int], str]) -> list[Outbound]:
    """`count` messages rendered with the demo campaign's templates, as the outbox renders them."""
    templates = load_campaign_templates(find_campaign(CAMPAIGN).campaign)
    messages = []
    for number in range(1, count + 1):
        key = f"{number:032x}"
        recipient = {"salutation": "Frau", "first_name": "Gast", "last_name": f"Nr {number}", "cell": "main"}
        rendered = templates.render(channel, recipient, LINKS, key)
        messages.append(
            Outbound(
                number,
                key,
                number,
                channel,
                address(number),
                rendered.subject,
                rendered.text,
                rendered.html,
                rendered.headers,
            )
        )
    return messages


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def raw_smtp(port: int, messages: list[tuple[str, bytes]], *, reuse: bool, connections: int = 1) -> float:
    """msg/s of smtplib alone sending pre-built bytes."""

    def send(part: list[tuple[str, bytes]]) -> None:
        if reuse:
            with smtplib.SMTP("127.0.0.1", port) as smtp:
                for to, data in part:
                    smtp.sendmail(SENDER, [to], data)
            return
        for to, data in part:
            with smtplib.SMTP("127.0.0.1", port) as smtp:
                smtp.sendmail(SENDER, [to], data)

    parts = [messages[i::connections] for i in range(connections)]
    started = time.perf_counter()
    with ThreadPoolExecutor(connections) as pool:
        list(pool.map(send, parts))
    return rate(len(messages), time.perf_counter() - started)


def connector_alone(
    factory: Callable[[], object], messages: list[Outbound], chunk: int, workers: int
) -> float:
    """msg/s of a connector sending pre-built messages in chunks, without the outbox."""

    def send(part: list[Outbound]) -> None:
        connector = factory()
        try:
            for start in range(0, len(part), chunk):
                for _outcome in connector.send(part[start : start + chunk]):
                    pass
        finally:
            connector.close()

    parts = [messages[i::workers] for i in range(workers)]
    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(send, parts))
    return rate(len(messages), time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--emails", type=int, default=3000)
    parser.add_argument("--sms", type=int, default=4000)
    parser.add_argument("--push", type=int, default=4000)
    parser.add_argument("--workers", type=int, default=4, help="email sender threads / raw connections")
    parser.add_argument("--http-chunk", type=int, help="SMS/push chunk (default: the channel's default)")
    parser.add_argument("--http-workers", type=int, help="SMS/push threads (default: the channel's default)")
    args = parser.parse_args()
    print(
        f"delivery benchmark, {os.cpu_count()} CPUs, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )

    with tempfile.TemporaryDirectory(prefix="kms-bench-delivery-") as tmp:
        home = Path(tmp)
        smtp_port, providers_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env |= {
            "KMS_HOME": str(home),
            "KMS_PROVIDERS_PORT": str(providers_port),
            "KMS_TRACKING_SECRET": SECRET,
        }
        env.pop("KMS_DATABASE_URL", None)
        smtp = child_server(
            ["smtp", "serve", "--port", str(smtp_port), "--dir", str(home / "mail")], env, smtp_port
        )
        providers = local_providers(home, env)
        emulators = child_server(["providers", "serve"], env, providers_port)
        connections = providers.connections()
        connections["kms_sms"]["extra"].pop("status_callback_url")  # no receipts: measure sending only
        smtp_conn = {
            "conn_type": "smtp",
            "host": "127.0.0.1",
            "port": smtp_port,
            "extra": {"security": "none", "from": SENDER, "timeout": 30},
        }
        try:
            url = open_databases(load_settings()).kms
            with scratch_database(url, "kms_bench_delivery") as bench_url:
                engine = make_engine(bench_url, pool_size=args.workers + 2)
                try:
                    upgrade(engine)
                    run_email(engine, args, smtp_port, smtp_conn)
                    run_http(engine, args, connections)
                finally:
                    engine.dispose()
        finally:
            for child in (smtp, emulators):
                child.terminate()
                child.wait(timeout=30)


def run_email(engine: Engine, args: argparse.Namespace, port: int, smtp_conn: dict) -> None:
    n = args.emails
    prebuilt_with = EmailConnector.from_connection(smtp_conn)
    prebuilt = [
        (m.address, prebuilt_with.message_bytes(m))
        for m in outbound_messages("email", n, lambda i: f"raw{i}@example.org")
    ]
    reused = raw_smtp(port, prebuilt, reuse=True)
    per_message = raw_smtp(port, prebuilt, reuse=False)
    parallel = raw_smtp(port, prebuilt, reuse=True, connections=args.workers)
    run_id = build_run(engine, n, 0, 0)
    options = replace(send_options(None, "email"), workers=args.workers)
    started = time.perf_counter()
    deliver_run(
        engine,
        run_id,
        {"email": (lambda: EmailConnector.from_connection(smtp_conn), options)},
        LINKS,
        send_now=True,
    )
    outbox = rate(n, time.perf_counter() - started)
    sent = delivery_state(engine, run_id).counts["email"]
    print(f"\nemail, {n:,} messages to the local SMTP sink (aiosmtpd, child process):")
    figure("raw smtplib, one reused connection, pre-built", reused, "(baseline)")
    figure("raw smtplib, a connection per message", per_message)
    figure(f"raw smtplib, {args.workers} reused connections", parallel)
    figure(f"outbox, {args.workers} threads x chunks of {options.chunk}, render+MIME+DB", outbox, str(sent))
    print(
        f"  ratio outbox / raw reused: {outbox / reused:.2f} (target >= 0.8); "
        f"outbox >= 500 msg/s: {'yes' if outbox >= 500 else 'no'}; "
        f"outbox / raw {args.workers} connections: {outbox / parallel:.2f}"
    )


def figure(label: str, per_second: float, note: str = "") -> None:
    print(f"  {label:<58} {per_second:8.0f} msg/s  {note}")


def run_http(engine: Engine, args: argparse.Namespace, connections: dict[str, dict]) -> None:
    channels = {
        "sms": (
            args.sms,
            lambda: SmsConnector.from_connection(connections["kms_sms"]),
            lambda i: f"+49152{i:08d}",
        ),
        "push": (
            args.push,
            lambda: PushConnector.from_connection(connections["kms_push_fcm"]),
            lambda i: f"fcm-raw-{i}",
        ),
    }
    for channel, (n, factory, address) in channels.items():
        chosen = {"chunk": args.http_chunk, "workers": args.http_workers}
        options = send_options({k: v for k, v in chosen.items() if v}, channel)
        alone = connector_alone(
            factory, outbound_messages(channel, n, address), options.chunk, options.workers
        )
        run_id = build_run_http(engine, channel, n)
        started = time.perf_counter()
        deliver_run(engine, run_id, {channel: (factory, options)}, LINKS, send_now=True)
        outbox = rate(n, time.perf_counter() - started)
        counts = delivery_state(engine, run_id).counts[channel]
        print(f"\n{channel}, {n:,} messages to the local provider emulator (child process):")
        figure(
            f"connector alone, pre-built, {options.workers} x chunks of {options.chunk}", alone, "(baseline)"
        )
        figure(f"outbox, {options.workers} threads x chunks of {options.chunk}", outbox, str(counts))
        print(
            f"  ratio outbox / connector alone: {outbox / alone:.2f}; "
            f"outbox >= 1,500 msg/s: {'yes' if outbox >= 1500 else 'no'}"
        )


def build_run_http(engine: Engine, channel: str, n: int) -> int:
    with engine.begin() as conn:
        conn.execute(
            text(
                "truncate campaign.campaign, campaign.campaign_run, core.account, core.contact, "
                "core.identifier, core.consent, campaign.contact_history restart identity cascade"
            )
        )
    return build_run(engine, 0, n if channel == "sms" else 0, n if channel == "push" else 0)


if __name__ == "__main__":
    main()
