"""Benchmark of identity resolution: the resort's source records resolved into the single customer view.

    python bench/identity.py [--guests 100000] [--seed 42] [--data DIR]
    python bench/identity.py --rerun [--ground-truth PATH]

`--rerun` iterates on resolution only, in the `kms` database as `kms demo` left it: it forgets
every resolution result (`reset_resolution`), resolves all records again and evaluates
against the demo's ground truth (.kms/demo/generated/ground_truth/ground_truth.csv.gz).

Generates resort data (about 11.8 source records per guest; cached under .kms/bench/ as
bench/ingest.py does) or reuses `--data`, and loads every file with the feeds' own parser and
loader (campaign_lib.ingest: parse_file, load_rows; no SFTP, one file after another) into a
database of its own on the embedded server, dropped at the end. Then it times, in the same
run:

- baseline: COPY of the same records into an unindexed copy of ingest.record, and one
  `select email, count(*) ... group by email` pass over them;
- resolve() of every record (the initial build of the single customer view), in a process
  of its own so that its peak RSS is resolution's alone, with its seconds per stage;
- resolve() again with nothing new (idempotence), and an incremental batch (1 % of the
  records marked changed);
- evaluate() against the ground truth: pairwise precision, recall, F1.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import resource
import time
from pathlib import Path

from ingest import generated_data  # bench/ingest.py: the same cached data
from sqlalchemy import make_url, text

from campaign_lib.config import load_settings
from campaign_lib.db import admin_connection, make_engine, open_databases
from campaign_lib.db.migrate import upgrade
from campaign_lib.identity import evaluate, reset_resolution, resolve
from campaign_lib.ingest.feeds import load_feeds
from campaign_lib.ingest.sftp_ingest import load_folder


def baseline(raw) -> tuple[int, float, float]:
    """COPY of ingest.record's rows into an unindexed copy of the table, and one group by
    email over them: (rows, seconds of the COPY, seconds of the group by)."""
    buffer = io.StringIO()
    with raw.cursor() as cursor:
        cursor.copy_expert("copy ingest.record to stdout", buffer)
        cursor.execute(
            "create unlogged table public.baseline_record as select * from ingest.record with no data"
        )
    raw.commit()
    buffer.seek(0)
    started = time.perf_counter()
    with raw.cursor() as cursor:
        cursor.copy_expert("copy public.baseline_record from stdin", buffer)
    raw.commit()
    copied = time.perf_counter() - started
    started = time.perf_counter()
    with raw.cursor() as cursor:
        cursor.execute("select count(*) from public.baseline_record")
        rows = cursor.fetchone()[0]
        cursor.execute(
            "select count(*) from (select email, count(*) from public.baseline_record group by email) as g"
        )
        cursor.fetchone()
        grouped = time.perf_counter() - started
        cursor.execute("drop table public.baseline_record")
    raw.commit()
    return rows, copied, grouped


def _resolve_and_measure(url: str) -> tuple[dict, float]:
    """resolve() on the database at `url`; returns its summary and this process's peak RSS
    in MiB. Runs in a spawned process, which holds nothing but resolution."""
    engine = make_engine(make_url(url))
    try:
        summary = resolve(engine).as_dict()
    finally:
        engine.dispose()
    return summary, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rerun(ground_truth: Path) -> None:
    """Reset, resolve and evaluate the `kms` database (loaded by `kms demo`)."""
    engine = make_engine(open_databases(load_settings()).kms)
    try:
        started = time.perf_counter()
        reset_resolution(engine)
        print(f"reset in {time.perf_counter() - started:.1f} s")
        summary = resolve(engine)
        print(f"resolve: {json.dumps(summary.as_dict())}")
        print(f"evaluate: {json.dumps(evaluate(engine, ground_truth).as_dict())}")
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--guests", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--data", type=Path, help="reuse generated data instead of generating")
    parser.add_argument("--rerun", action="store_true", help="reset, resolve and evaluate the kms database")
    parser.add_argument(
        "--ground-truth",
        type=Path,
        default=Path(".kms/demo/generated/ground_truth/ground_truth.csv.gz"),
        help="ground truth for --rerun",
    )
    args = parser.parse_args()
    if args.rerun:
        rerun(args.ground_truth)
        return
    # The gate's SQL engine gives the same verdicts as Great Expectations, in ~10 ms a file.
    os.environ.setdefault("KMS_QUALITY_GATE", "sql")

    settings = load_settings()
    server = open_databases(settings)
    data = args.data or generated_data(settings.home, args.guests, args.seed)
    name = f"kms_bench_identity_{os.getpid()}"
    url = server.kms
    admin = admin_connection(url)
    with admin.cursor() as cursor:
        cursor.execute(f'create database "{name}"')
    engine = make_engine(url.set(database=name))
    try:
        upgrade(engine)
        started = time.perf_counter()
        results = load_folder(engine, engine.url, data, load_feeds())
        count = sum(r.rows_loaded for r in results if r.status == "merged")
        loading = time.perf_counter() - started
        print(f"loaded {count:,} rows with the feeds' parser and loader in {loading:.1f} s")
        raw = engine.raw_connection()
        try:
            count, baseline_copy, baseline_group = baseline(raw)
        finally:
            raw.close()

        with multiprocessing.get_context("spawn").Pool(1) as child:
            initial, peak_rss = child.apply(
                _resolve_and_measure, (engine.url.render_as_string(hide_password=False),)
            )
        again = resolve(engine)
        with engine.begin() as conn:
            conn.execute(
                text(
                    "with changed as (update ingest.record set changed_at = now() "
                    "where record_id % 100 = 0 returning record_id) "
                    "insert into ingest.record_pending (record_id) select record_id from changed"
                )
            )
        incremental = resolve(engine)
        ground_truth = data / "ground_truth" / "ground_truth.csv.gz"
        evaluation = evaluate(engine, ground_truth)

        seconds = initial["elapsed_seconds"]
        rate = count / seconds
        print(
            f"baseline COPY of {count:,} rows (no indexes): {baseline_copy:.2f} s "
            f"= {count / baseline_copy:,.0f} rows/s"
        )
        print(f"baseline group by email over them:          {baseline_group:.2f} s")
        print(
            f"resolve, initial:     {seconds:.2f} s = {rate:,.0f} records/s "
            f"(bulk mode: {initial['bulk']}); ratio to COPY: {seconds / baseline_copy:.1f}x the time; "
            f"peak RSS {peak_rss:,.0f} MiB"
        )
        print(
            "  seconds per stage: " + ", ".join(f"{k} {v:.2f}" for k, v in initial["stage_seconds"].items())
        )
        print(f"  {json.dumps(initial)}")
        print(f"resolve, nothing new: {again.elapsed_seconds:.3f} s")
        print(
            f"resolve, 1 % changed: {incremental.elapsed_seconds:.2f} s "
            f"for {incremental.batch_records:,} records "
            f"({incremental.scope_records:,} in scope, {incremental.contacts_touched:,} contacts touched)"
        )
        print(
            f"evaluation: precision {evaluation.precision:.4f}, recall {evaluation.recall:.4f}, "
            f"F1 {evaluation.f1:.4f} over {evaluation.records_evaluated:,} records "
            f"({evaluation.records_unidentifiable:,} unidentifiable and "
            f"{evaluation.records_anonymous_cookie:,} anonymous-cookie records excluded, "
            f"{evaluation.records_missing:,} not loaded)"
        )
    finally:
        engine.dispose()
        with admin.cursor() as cursor:
            cursor.execute(f'drop database if exists "{name}" with (force)')
        admin.close()


if __name__ == "__main__":
    main()
