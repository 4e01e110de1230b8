"""`make demo`: the main job on the embedded default, start to end.

generate the resort's exports → drop them on a local SFTP server → ingest every feed
through the real SFTP path (ledger, quality gate, quarantine) → resolve identities →
print the import ledger, the identity figures and how well the single customer view
matches the generator's ground truth → preview the demo campaign's waterfall.
"""

from __future__ import annotations

import multiprocessing
import secrets
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from sqlalchemy.engine import URL, Engine

from campaign_lib.campaign.definition import find_campaign
from campaign_lib.campaign.runs import preview
from campaign_lib.config import Settings
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
    sftp_root = settings.sftp_root
    dropped = drop_files(generated, sftp_root, feeds)
    password = secrets.token_urlsafe(16)
    with LocalSftpServer(sftp_root, username=SFTP_USER, password=password) as server:
        print(f"dropped {dropped} files on the local SFTP server sftp://{SFTP_USER}@127.0.0.1:{server.port}/")
        settings = SftpSettings(
            host="127.0.0.1",
            port=server.port,
            username=SFTP_USER,
            password=password,
            known_hosts=server.known_hosts_line(),
        )
        ingest_started = time.perf_counter()
        outcomes = ingest_all(url, settings, feeds)
        ingest_seconds = time.perf_counter() - ingest_started
    print_ledger(outcomes, ingest_seconds)

    resolve_started = time.perf_counter()
    resolution = resolve(engine)
    print(
        f"\nidentity resolution: {resolution.records_resolved:,} source records in "
        f"{time.perf_counter() - resolve_started:.1f} s -> {resolution.contacts_created:,} contacts "
        f"({resolution.contacts_merged:,} merged), {resolution.accounts_created:,} households and companies, "
        f"{resolution.activities_written:,} activities"
    )
    print(evaluate_command(engine, generated / "ground_truth" / "ground_truth.csv.gz"))
    campaign = find_campaign(DEMO_CAMPAIGN).campaign
    print(f"\nthe waterfall of campaign {campaign.name} (a preview: nothing is frozen or sent)")
    print(preview(engine, campaign.selection.name, campaign_name=campaign.name).as_text())
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s")


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
