"""`make demo`: the whole story on the embedded default, start to end.

generate the resort's exports → drop them on a local SFTP server → ingest every feed
through the real SFTP path (ledger, quality gate, quarantine) → resolve identities and
measure them against the generator's ground truth → run the demo campaign (water-park
tickets for hotel guests who never went; email, else SMS, else push; 10 % control) and
freeze its audience → deliver it through the outbox to the local SMTP server and the
SMS and push provider emulators → simulate the responses (opens and clicks on the real
tracking links, later bookings dropped on SFTP) → ingest and resolve the bookings →
render the ROI report.

The campaign run has a fixed key, so a second `make demo` on the same database finds the
frozen audience and the delivered messages and sends nothing again.
"""

from __future__ import annotations

import multiprocessing
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

from sqlalchemy.engine import URL, Engine

from campaign_lib.campaign.snapshot import RunKey
from campaign_lib.config import Settings
from campaign_lib.errors import KmsError
from campaign_lib.generator import GenerateSummary, generate
from campaign_lib.identity import resolve
from campaign_lib.identity.cli import evaluate_command
from campaign_lib.ingest.feeds import FeedSpec, load_feeds
from campaign_lib.ingest.sftp_ingest import FileOutcome, ingest_feed_in_process, waiting_bytes
from campaign_lib.local_servers.sftp import LocalSftpServer
from connectors.sftp import DONE_SUFFIX, PART_SUFFIX, SftpSettings

DEMO_SEED = 42
# The campaign of the demo's story: water-park tickets for hotel guests who never went.
DEMO_CAMPAIGN = "water_park_for_hotel_guests"
# A fixed key: a second demo on the same database reuses the frozen run and sends nothing twice.
DEMO_RUN = RunKey("kms_demo", f"demo_seed_{DEMO_SEED}")
SFTP_USER = "resort-drops"


def generate_data(home: Path, guests: int) -> tuple[Path, GenerateSummary]:
    """Regenerate the demo data set (a pure function of its seed) under `home`/demo."""
    out = home / "demo" / "generated"
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return out, generate(out, guests=guests, seed=DEMO_SEED, workers=2)


def drop_files(generated: Path, sftp_root: Path, feeds: dict[str, FeedSpec]) -> int:
    """Put every feed's files into the SFTP server's folders as each source system does,
    by the feed's completeness rule: written under a `.part` name and then renamed, or
    followed by a `.done` marker. A stable-size feed's file is simply written."""
    if sftp_root.exists():
        shutil.rmtree(sftp_root)
    dropped = 0
    for spec in feeds.values():
        target = sftp_root / spec.sftp.folder
        target.mkdir(parents=True, exist_ok=True)
        for path in sorted((generated / spec.sftp.folder).glob("*")):
            if not spec.matches(path.name):
                continue
            if spec.sftp.completeness == "part_rename":
                part = target / (path.name + PART_SUFFIX)
                shutil.copyfile(path, part)
                part.rename(target / path.name)
            else:
                shutil.copyfile(path, target / path.name)
            if spec.sftp.completeness == "done_marker":
                (target / (path.name + DONE_SUFFIX)).touch()
            dropped += 1
    return dropped


def ingest_all(url: URL, settings: SftpSettings, feeds: dict[str, FeedSpec]) -> list[FileOutcome]:
    """Ingest every feed over SFTP, two feeds at a time in two worker processes, largest first.

    Processes, as Airflow runs each feed's task in its own: in one process the feeds'
    parsers would share one interpreter lock, i.e. one of the machine's two cores. The
    largest feeds start first so that the last one to finish is a small one. Returns
    the outcomes in the order of `feeds`.
    """
    sizes = waiting_bytes(settings, feeds)
    order = sorted(feeds, key=lambda name: -sizes[name])
    # spawn, not fork: the caller has threads (a local SFTP server, connection pools).
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {name: pool.submit(ingest_feed_in_process, url, settings, feeds[name]) for name in order}
        return [outcome for name in feeds for outcome in futures[name].result()]


def run(engine: Engine, url: URL, settings: Settings, guests: int) -> None:
    """The whole demo; prints what it did."""
    started = time.perf_counter()
    generated, summary = generate_data(settings.home, guests)
    rows, seconds = summary.total_rows, summary.elapsed_seconds
    print(f"generated {summary.guests:,} guests ({rows:,} rows) in {seconds:.1f} s")

    feeds = load_feeds()
    dropped = drop_files(generated, settings.sftp_root, feeds)
    password = secrets.token_urlsafe(16)
    with LocalSftpServer(settings.sftp_root, username=SFTP_USER, password=password) as server:
        print(f"dropped {dropped} files on the local SFTP server sftp://{SFTP_USER}@127.0.0.1:{server.port}/")
        sftp = SftpSettings(
            host="127.0.0.1",
            port=server.port,
            username=SFTP_USER,
            password=password,
            known_hosts=server.known_hosts_line(),
        )
        ingest_and_resolve(engine, url, sftp, feeds)
        print(evaluate_command(engine, generated / "ground_truth" / "ground_truth.csv.gz"))
        campaign_run_id = deliver_demo_campaign(engine, url, settings)
        print("\nthe simulated bookings arrive on SFTP like any other ticketing export")
        ingest_and_resolve(engine, url, sftp, {"ticketing": feeds["ticketing"]})
    report_demo_campaign(engine, campaign_run_id)
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s")


def ingest_and_resolve(engine: Engine, url: URL, sftp: SftpSettings, feeds: dict[str, FeedSpec]) -> None:
    """Ingest what waits on the SFTP server for `feeds`, resolve identities; print both."""
    ingest_started = time.perf_counter()
    outcomes = ingest_all(url, sftp, feeds)
    print_ledger(outcomes, time.perf_counter() - ingest_started)
    resolve_started = time.perf_counter()
    resolution = resolve(engine)
    print(
        f"\nidentity resolution: {resolution.records_resolved:,} source records in "
        f"{time.perf_counter() - resolve_started:.1f} s -> {resolution.contacts_created:,} contacts "
        f"({resolution.contacts_merged:,} merged), {resolution.accounts_created:,} households and companies, "
        f"{resolution.activities_written:,} activities"
    )


@contextmanager
def local_channels(settings: Settings, environ: dict[str, str]) -> Iterator[tuple[dict, str]]:
    """The local SMTP server and the SMS and push provider emulators, running; yields the
    outbox's connectors per channel and a line telling where the messages can be read."""
    from campaign_lib.delivery import send_options
    from campaign_lib.local_servers.provider_setup import local_providers
    from campaign_lib.local_servers.providers import LocalProviderServer
    from campaign_lib.local_servers.smtp import LocalSmtpServer
    from connectors.email import EmailConnector, smtp_connection_from_env
    from connectors.push import PushConnector
    from connectors.sms import SmsConnector

    providers = local_providers(settings.home, environ)
    conns = providers.connections()
    with ExitStack() as running:
        try:
            running.enter_context(
                LocalProviderServer(providers.folder, port=providers.port, **providers.emulator_options())
            )
        except OSError as exc:
            raise KmsError(
                f"the SMS and push emulators need port {providers.port} (the generated web-push "
                "subscriptions point there): stop what uses it (kms down) or set KMS_PROVIDERS_PORT"
            ) from exc
        smtp = running.enter_context(LocalSmtpServer(settings.home / "mail"))
        smtp_conn = smtp_connection_from_env({"KMS_SMTP_PORT": str(smtp.port)})
        connectors = {
            "email": (lambda: EmailConnector.from_connection(smtp_conn), send_options(None, "email")),
            "sms": (lambda: SmsConnector.from_connection(conns["kms_sms"]), send_options(None, "sms")),
            "push": (
                lambda: PushConnector.from_connection(conns["kms_push_fcm"], conns["kms_push_webpush"]),
                send_options(None, "push"),
            ),
        }
        yield (
            connectors,
            (
                f"the emails are .eml files in {smtp.mail_dir}/ (open them with any mail program); "
                f"SMS and push messages as the providers received them in {providers.folder}/*.jsonl"
            ),
        )


def deliver_demo_campaign(engine: Engine, url: URL, settings: Settings) -> int:
    """Freeze the demo campaign's audience, deliver it to the local SMTP server and provider
    emulators, and simulate the responses against the tracking app; returns the run's id."""
    from campaign_lib.api.server import start_in_thread
    from campaign_lib.campaign.runs import run_campaign
    from campaign_lib.delivery import deliver_run, delivery_state
    from campaign_lib.generator.responses import ResponseTruth, simulate_responses
    from campaign_lib.reporting.report import reports_folder
    from campaign_lib.tracking.tokens import tracking_links_from_env

    result = run_campaign(engine, DEMO_CAMPAIGN, DEMO_RUN)
    run_id = result.campaign_run_id
    print(f"\ncampaign {DEMO_CAMPAIGN}, run {run_id} ({'found frozen' if result.reused else 'frozen now'})")
    print(result.waterfall.as_text())

    # The ingest and tracking API on a free port: the links in the messages point at it.
    api = start_in_thread(url)
    environ = {**os.environ, "KMS_TRACKING_BASE_URL": api.base_url}
    try:
        links = tracking_links_from_env(environ)
        with local_channels(settings, environ) as (connectors, where):
            delivery_started = time.perf_counter()
            # The demo delivers whenever it runs, also outside the campaign's send window.
            deliver_run(engine, run_id, connectors, links, send_now=True)
            print(f"\ndelivery in {time.perf_counter() - delivery_started:.1f} s")
            print(delivery_state(engine, run_id).as_text())
            print(where)
            truth_dir = reports_folder() / "truth"
            if (truth_dir / f"{run_id}.json").exists():
                print(f"\nthe responses to run {run_id} were simulated before: {truth_dir}/{run_id}.json")
                return run_id
            print("\nsimulating the responses (opens, clicks, unsubscribes, bookings) ...")
            simulated = simulate_responses(
                engine,
                run_id,
                truth=ResponseTruth(),
                links=links,
                drop_dir=settings.sftp_root,
                truth_dir=truth_dir,
                seed=DEMO_SEED,
            )
    finally:
        api.stop()
    print(
        f"tracking requests {simulated.requests}; bookings: {simulated.treated_conversions} of "
        f"{simulated.treated_members} treated and {simulated.control_conversions} of "
        f"{simulated.control_members} in control; the planted truth is in {simulated.truth_file}"
    )
    return run_id


def report_demo_campaign(engine: Engine, campaign_run_id: int) -> None:
    """Render the run's ROI report and the index of all reports; print where they are."""
    from campaign_lib.reporting import render_campaign_report, render_index

    report_started = time.perf_counter()
    report = render_campaign_report(engine, campaign_run_id, page_images=True)
    index = render_index(engine)
    print(f"\nthe ROI report, rendered in {time.perf_counter() - report_started:.1f} s:")
    print(f"  {report}\n  {report.with_suffix('.pdf')}\n  all campaigns: {index}")


def print_ledger(outcomes: list[FileOutcome], seconds: float) -> None:
    """The import ledger per feed: files, rows loaded and quarantined, records changed."""
    print(f"\nimport ledger ({len(outcomes)} files in {seconds:.1f} s)")
    print(f"  {'feed':<16} {'files':>5} {'loaded':>10} {'quarantined':>12} {'changed':>10}  status")
    for feed in sorted({o.feed for o in outcomes}):
        rows = [o for o in outcomes if o.feed == feed]
        statuses = sorted({o.status for o in rows})
        print(
            f"  {feed:<16} {len(rows):>5} {sum(o.rows_loaded for o in rows):>10,} "
            f"{sum(o.rows_quarantined for o in rows):>12,} {sum(o.records_changed for o in rows):>10,}  "
            + ", ".join(statuses)
        )
    for outcome in outcomes:
        if outcome.status == "quarantined":
            print(f"  quarantined {outcome.feed}/{outcome.name}: {outcome.error}")
