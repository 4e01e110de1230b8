"""Benchmark of the campaign report: a run with a million audience members renders in < 10 s.

    python bench/report.py [--people 1000000] [--rebuild] [--runs 3]

Works on a database of its own on the embedded server, `kms_bench_report_<size>` (e.g.
`kms_bench_report_1000000`), kept between runs: the first run (or `--rebuild`) builds it with
set-based SQL (campaign_lib.reporting.synthetic): the people, a frozen run with a 10 %
control group, one message each for the treated (sent, failed or skipped), tracking
events, contact history (30 % also touched by an earlier campaign), purchases of the offer
at 3 % (control) and 4 % (treated), and three background activities per person.

Then it renders the report (HTML, PDF, summary; default attribution, last touch) `--runs`
times and prints the median with its stages (queries, statistics, charts, HTML, PDF), then
once with the Markov model (which also reads every person's path), next to a baseline
measured in the same run: `count(*)` over the same rows (the run's audience, messages and
events, and the offer's purchases), i.e. what merely reading the data costs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import URL

from campaign_lib.config import load_settings
from campaign_lib.db import admin_connection, make_engine, open_databases, scratch_database
from campaign_lib.db.migrate import upgrade
from campaign_lib.reporting import render_campaign_report
from campaign_lib.reporting.synthetic import SYNTHETIC_SKU, Truth, build_synthetic_run

CAMPAIGN = "bench_report"
TARGET_SECONDS = 10.0
BASELINE = """
select (select count(*) from campaign.audience where campaign_run_id = :run)
     + (select count(*) from campaign.message where campaign_run_id = :run)
     + (select count(*) from campaign.message_event where campaign_run_id = :run)
     + (select count(*) from core.activity a join core.product p on p.product_id = a.product_id
        where p.sku = :sku)
"""


def database_name(people: int) -> str:
    """The kept database of one size, e.g. kms_bench_report_1000000."""
    return f"kms_bench_report_{people}"


def built_run(server: URL, name: str) -> int | None:
    """The benchmark run of database `name`, None when the database or the run is missing."""
    conn = admin_connection(server)
    try:
        with conn.cursor() as cur:
            cur.execute("select 1 from pg_database where datname = %s", (name,))
            if cur.fetchone() is None:
                return None
    finally:
        conn.close()
    engine = make_engine(server.set(database=name))
    try:
        with engine.connect() as conn:
            return conn.execute(
                text("select max(campaign_run_id) from campaign.campaign_run where campaign_name = :c"),
                {"c": CAMPAIGN},
            ).scalar_one()
    finally:
        engine.dispose()


def open_bench_database(people: int, rebuild: bool) -> tuple[URL, int]:
    """The kept database of this size and its run, built first when missing or on request."""
    server = open_databases(load_settings()).kms
    name = database_name(people)
    run = None if rebuild else built_run(server, name)
    if run is None:
        print(f"building {name}: {people:,} audience members", flush=True)
        started = time.perf_counter()
        with scratch_database(server, name, keep=True) as url:
            engine = make_engine(url)
            try:
                upgrade(engine)
                run = build_synthetic_run(
                    engine,
                    campaign_name=CAMPAIGN,
                    people=people,
                    truth=Truth(base_rate=0.03, uplift=0.01, price_cents=2500),
                    seed=1,
                    earlier_share=0.3,
                    background_per_person=3,
                )
            finally:
                engine.dispose()
        print(f"built {name} in {time.perf_counter() - started:.0f} s")
    url = server.set(database=name)
    engine = make_engine(url)
    try:
        upgrade(engine)  # later migrations apply to the kept database too
    finally:
        engine.dispose()
    return url, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=1_000_000)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    url, run = open_bench_database(args.people, args.rebuild)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            counted = conn.execute(text(BASELINE), {"run": run, "sku": SYNTHETIC_SKU}).scalar_one()
            baseline_times = []
            for _ in range(args.runs):
                started = time.perf_counter()
                conn.execute(text(BASELINE), {"run": run, "sku": SYNTHETIC_SKU}).scalar_one()
                baseline_times.append(time.perf_counter() - started)
        renders = []
        with tempfile.TemporaryDirectory(prefix="kms-bench-report-") as out:
            for _ in range(args.runs):
                stages: dict[str, float] = {}
                started = time.perf_counter()
                path = render_campaign_report(engine, run, Path(out), stage_seconds=stages)
                renders.append((time.perf_counter() - started, stages))
            sizes = {p.suffix: p.stat().st_size for p in path.parent.iterdir()}
            markov_stages: dict[str, float] = {}
            started = time.perf_counter()
            render_campaign_report(engine, run, Path(out), model="markov", stage_seconds=markov_stages)
            markov_seconds = time.perf_counter() - started
    finally:
        engine.dispose()

    median_seconds = statistics.median(seconds for seconds, _ in renders)
    _, stages = min(renders, key=lambda r: abs(r[0] - median_seconds))
    baseline = statistics.median(baseline_times)
    print(f"\nreport of campaign run {run} ({args.people:,} audience members), {args.runs} runs, median")
    print(f"  render (HTML + PDF + summary)  {median_seconds:6.2f} s   target < {TARGET_SECONDS:.0f} s")
    for stage, seconds in stages.items():
        print(f"    {stage:<28} {seconds:6.2f} s")
    print(f"  with the Markov model (reads every person's path, once)  {markov_seconds:6.2f} s")
    for stage, seconds in markov_stages.items():
        print(f"    {stage:<28} {seconds:6.2f} s")
    print(f"  baseline: count(*) over the same {counted:,} rows   {baseline:6.2f} s")
    print(f"  ratio render / baseline        {median_seconds / baseline:6.1f}x")
    print(f"  files: html {sizes['.html'] / 1024:.0f} KiB, pdf {sizes['.pdf'] / 1024:.0f} KiB")
    print("  verdict:", "OK" if median_seconds < TARGET_SECONDS else "TOO SLOW")


if __name__ == "__main__":
    main()
