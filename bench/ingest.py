"""Benchmark: the whole SFTP ingestion path against a raw COPY of the same rows.

    .venv/bin/python bench/ingest.py --guests 1000000

1. generates the resort's exports (cached under .kms/bench/ for the same guests and seed);
2. baseline: COPYs every file, as it is, into an unindexed table of text columns (the
   ceiling of getting these rows into PostgreSQL at all), measured in this run;
3. the real path: the files on a local SFTP server, every feed ingested (download,
   parse and standardise, stage, quality gate, merge into ingest.record), two feeds at a
   time in two worker processes, largest first, as the demo does (the DAG runs each feed
   as a task process of its own);
4. identity resolution of the loaded records into the single customer view, and its
   precision and recall against the generator's ground truth (`--skip-identity` stops
   after step 3).

Prints rows/s, seconds per stage, peak RSS and the ratio of the real path to the
baseline. Runs in its own database on the embedded server and drops it afterwards.

Wall times depend on what else runs on the machine, CPU times much less: so it also
reports the CPU both took per row, the Python worker processes' (rusage) and the
PostgreSQL processes' of the benchmark database (backends and autovacuum workers, read
from /proc twice a second by the process title, which names the database), and their
ratio, which holds on a shared machine where the wall-time ratio does not.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import threading
import time
from pathlib import Path

import psycopg2

from campaign_lib.config import load_settings
from campaign_lib.db import make_engine, open_databases, scratch_database
from campaign_lib.db.migrate import upgrade
from campaign_lib.demo import drop_files, ingest_all
from campaign_lib.generator import generate
from campaign_lib.ingest.feeds import FeedSpec, load_feeds
from campaign_lib.local_servers.sftp import LocalSftpServer
from connectors.sftp import SftpSettings

JSONL_COPY = "copy {table} from stdin with (format csv, delimiter e'\\x01', quote e'\\x02')"


def generated_data(home: Path, guests: int, seed: int) -> Path:
    out = home / "bench" / f"generated-{guests}-{seed}"
    if (out / "manifest.json").exists():
        print(f"reusing generated data in {out}")
        return out
    if out.exists():
        raise SystemExit(f"{out} is incomplete; remove it and run again")
    started = time.perf_counter()
    generate(out, guests=guests, seed=seed, workers=2)
    print(f"generated {guests:,} guests in {time.perf_counter() - started:.0f} s into {out}")
    return out


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) a process has used, None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


class DatabaseCpu:
    """CPU seconds used by the PostgreSQL processes that serve one database (their process
    title names it: backends, autovacuum workers), sampled from /proc while it runs. A
    process that ends between two samples loses at most its last half second."""

    def __init__(self, database: str, interval: float = 0.5) -> None:
        self._database = database.encode()
        self._interval = interval
        self._start: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._autovacuum: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> DatabaseCpu:
        self._sample(first=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def seconds(self) -> float:
        return sum(cpu - self._start.get(pid, 0.0) for pid, cpu in self._last.items())

    @property
    def autovacuum_seconds(self) -> float:
        """The part of `seconds` that autovacuum workers used."""
        return sum(self._last[pid] - self._start.get(pid, 0.0) for pid in self._autovacuum)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def _sample(self, first: bool = False) -> None:
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as handle:
                    title = handle.read()
            except OSError:
                continue
            # The server rewrites its title in place and pads it with NULs: a backend's is
            # "postgres: <user> <database> [local] COPY", an autovacuum worker's
            # "postgres: autovacuum worker <database>".
            words = title.replace(b"\0", b" ").split()
            if words[:1] != [b"postgres:"] or self._database not in words:
                continue
            pid = int(entry.name)
            cpu = process_cpu(pid)
            if cpu is None:
                continue
            if b"autovacuum" in words:
                self._autovacuum.add(pid)
            if first:
                self._start[pid] = cpu
            self._last[pid] = cpu


def raw_copy(url, generated: Path, feeds: dict[str, FeedSpec]) -> tuple[int, float, float]:
    """COPY every file into one unindexed text table per file layout; returns rows, seconds
    and the CPU seconds of the PostgreSQL backend."""
    conn = psycopg2.connect(
        dbname=url.database,
        user=url.username,
        password=url.password,
        host=url.query.get("host") or url.host,
        port=url.port,
    )
    rows, started = 0, time.perf_counter()
    try:
        with conn.cursor() as cur:
            cur.execute("select pg_backend_pid()")
            backend = cur.fetchone()[0]
            backend_cpu = process_cpu(backend) or 0.0
            for number, spec in enumerate(feeds.values()):
                width = 1 if spec.format.type == "jsonl" else len(spec.header)
                columns = ", ".join(f"c{i} text" for i in range(width))
                cur.execute(f"create unlogged table raw_{number} ({columns})")
                for path in sorted((generated / spec.sftp.folder).glob("*")):
                    if not spec.matches(path.name):
                        continue
                    with path.open("rb") as handle:
                        if spec.format.type == "jsonl":
                            # One JSON document per row, as text: no delimiter or quote can occur.
                            command = JSONL_COPY.format(table=f"raw_{number}")
                        else:
                            command = (
                                f"copy raw_{number} from stdin with (format csv, header true, "
                                f"delimiter '{spec.format.delimiter}', encoding '{_pg_encoding(spec)}')"
                            )
                            if spec.format.bom:
                                handle.read(3)
                        cur.copy_expert(command, handle, size=1 << 20)
                        rows += cur.rowcount
            backend_cpu = (process_cpu(backend) or 0.0) - backend_cpu
        conn.commit()
    finally:
        conn.close()
    return rows, time.perf_counter() - started, backend_cpu


def _pg_encoding(spec: FeedSpec) -> str:
    return (
        "LATIN1"
        if spec.format.encoding.lower() in ("iso-8859-1", "iso8859-1", "latin-1", "latin1")
        else "UTF8"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guests", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    parser.add_argument(
        "--gate",
        choices=("great_expectations", "sql"),
        default="sql",
        help="how the quality gate runs the suite (KMS_QUALITY_GATE; both give the same verdicts)",
    )
    parser.add_argument(
        "--skip-identity", action="store_true", help="stop after ingestion (when working on ingestion alone)"
    )
    args = parser.parse_args()
    os.environ["KMS_QUALITY_GATE"] = args.gate
    print(f"quality gate: {args.gate}")

    settings = load_settings()
    server = open_databases(settings).kms
    feeds = load_feeds()
    generated = generated_data(settings.home, args.guests, args.seed)
    manifest = json.loads((generated / "manifest.json").read_text())
    expected_rows = sum(f["rows"] for f in manifest["files"] if f["feed"] != "ground_truth")

    name = f"kms_bench_{args.guests}"
    with scratch_database(server, name, keep=args.keep) as url:
        run(url, generated, feeds, expected_rows, identity=not args.skip_identity)


def run(url, generated: Path, feeds: dict[str, FeedSpec], expected_rows: int, identity: bool = True) -> None:
    settings = load_settings()
    engine = make_engine(url, pool_size=4)
    try:
        upgrade(engine)
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (2 cores)")
        baseline_rows, baseline_seconds, baseline_cpu = raw_copy(url, generated, feeds)
        print(
            f"\nbaseline: raw COPY of {baseline_rows:,} rows into unindexed text tables: "
            f"{baseline_seconds:.1f} s, {baseline_rows / baseline_seconds:,.0f} rows/s, "
            f"backend CPU {baseline_cpu:.1f} s ({baseline_cpu / baseline_rows * 1e6:.1f} µs per row)"
        )

        sftp_root = settings.home / "bench" / "sftp"
        dropped = drop_files(generated, sftp_root, feeds)
        password = secrets.token_urlsafe(16)
        with LocalSftpServer(sftp_root, username="bench", password=password) as sftp:
            sftp_settings = SftpSettings(
                host="127.0.0.1",
                port=sftp.port,
                username="bench",
                password=password,
                known_hosts=sftp.known_hosts_line(),
            )
            children = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            with DatabaseCpu(url.database) as database_cpu:
                outcomes = ingest_all(url, sftp_settings, feeds)
            ingest_seconds = time.perf_counter() - started
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            worker_cpu = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
        loaded = sum(o.rows_loaded for o in outcomes)
        quarantined = sum(o.rows_quarantined for o in outcomes)
        received = sum(o.rows_received for o in outcomes)
        stages: dict[str, float] = {}
        for outcome in outcomes:
            for stage, seconds in outcome.seconds.items():
                stages[stage] = stages.get(stage, 0.0) + seconds
        rate = received / ingest_seconds
        print(
            f"\nreal path: {len(outcomes)} of {dropped} files, {received:,} rows received "
            f"({expected_rows:,} expected), {loaded:,} loaded, {quarantined:,} quarantined"
        )
        print(f"  {ingest_seconds:.1f} s wall, {rate:,.0f} rows/s")
        # CPU does not depend on what else runs on the machine, wall time does.
        print(
            f"  CPU of the two ingest worker processes (Python side, without PostgreSQL): "
            f"{worker_cpu:.1f} s, {worker_cpu / received * 1e6:.1f} µs per row"
        )
        path_cpu = worker_cpu + database_cpu.seconds
        print(
            f"  CPU of the benchmark database's PostgreSQL processes: {database_cpu.seconds:.1f} s, "
            f"{database_cpu.seconds / received * 1e6:.1f} µs per row "
            f"(autovacuum workers {database_cpu.autovacuum_seconds:.1f} s of it)"
        )
        # The database's share alone bounds the ratio: even a parser that cost nothing
        # leaves this work, spread over at best both cores. CPU against CPU: the raw COPY's
        # wall time sometimes waits on the disk, its CPU does not.
        print(
            f"  the best ratio the database side allows, were the Python side free: "
            f"{2 * (baseline_cpu / baseline_rows) / (database_cpu.seconds / received):.2f} "
            "(the raw COPY's backend CPU per row against the database CPU per row over two cores)"
        )
        print(
            f"  CPU per row, path (both sides) against raw COPY: {path_cpu / received * 1e6:.1f} µs "
            f"against {baseline_cpu / baseline_rows * 1e6:.1f} µs; CPU ratio "
            f"{(baseline_cpu / baseline_rows) / (path_cpu / received):.3f} (on two idle cores the path "
            "runs on two, so its wall-time ratio can reach twice this)"
        )
        print("  seconds per stage, summed over files (two feeds run side by side):")
        for stage, seconds in stages.items():
            print(f"    {stage:<16} {seconds:8.1f}")
        print(f"  ratio to raw COPY: {rate / (baseline_rows / baseline_seconds):.2f} (target >= 0.25)")
        print(f"  load average after it: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (2 cores)")

        if identity:
            resolve_identities(engine, generated, ingest_seconds)
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        worker_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(
            f"\npeak RSS: this process {peak_mib:,.0f} MiB, "
            f"largest ingest worker process {worker_mib:,.0f} MiB"
        )
    finally:
        engine.dispose()


def resolve_identities(engine, generated: Path, ingest_seconds: float) -> None:
    """Identity resolution of the loaded records, and its precision and recall; prints the figures."""
    from campaign_lib.identity import evaluate, resolve

    started = time.perf_counter()
    summary = resolve(engine)
    identity_seconds = time.perf_counter() - started
    print(
        f"\nidentity resolution: {summary.batch_records:,} records in {identity_seconds:.1f} s "
        f"({summary.batch_records / identity_seconds:,.0f} records/s); "
        f"{summary.contacts_created:,} contacts, {summary.activities_written:,} activities"
    )
    stages = ", ".join(f"{stage} {seconds:.1f}" for stage, seconds in summary.stage_seconds.items())
    print(f"  seconds per stage: {stages}")
    print(
        f"  files on the SFTP server to core tables: {ingest_seconds + identity_seconds:.1f} s "
        "(ingest wall + identity resolution)"
    )
    evaluation = evaluate(engine, generated / "ground_truth" / "ground_truth.csv.gz")
    print(f"  precision {evaluation.precision:.4f}, recall {evaluation.recall:.4f} (targets 0.99 / 0.97)")


if __name__ == "__main__":
    main()
