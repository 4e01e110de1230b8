"""Benchmark: the least database work the ingest path's required steps take, against a raw COPY.

    .venv/bin/python bench/ingest_floor.py [--guests 100000] [--seed 42]

The issue asks for the whole ingest path at >= 0.25x the rate of a raw COPY of the same rows
into an unindexed table, on two cores. bench/ingest.py measures the real path; this one
measures a floor under any path that keeps the issue's steps (stage with COPY, check the
staged rows, merge by natural key into a durable table), with everything else stripped:

- baseline: the restaurant receipts (the largest CSV feed) as they are, COPY'd into an
  unlogged table of text columns, in one backend;
- bare path, per file and in one backend: the same COPY into an unlogged staging table, one
  pass of five checks over it (the quality gate's least), an INSERT ... SELECT of nine
  columns converted in SQL (timestamp, amount in cents, email lower-cased, attributes as
  JSON) into a logged table with nothing but a primary key and the natural key, TRUNCATE of
  the staging table, commit. No Python touches a row, no work queue, no other index.

It prints the backend CPU per row of both and the ratio the bare path could reach if two
backends ran two files side by side with nothing else on the machine: two cores' worth of
the bare path's CPU against the baseline's. That is an upper bound for the real path, which
also parses and standardises in Python, stages ~25 typed columns, queues records for identity
resolution and runs Great Expectations' suite.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ingest import generated_data, process_cpu  # bench/ingest.py: the same data and CPU reading

from campaign_lib.config import load_settings
from campaign_lib.db import make_engine, open_databases, scratch_database

COLUMNS = 13  # the receipt export's columns
STAGE_CHECKS = r"""
select count(*),
       count(*) filter (where c0 is null),
       count(*) filter (where c3 !~ '^\d{4}-\d\d-\d\dT'),
       count(*) filter (where c10 !~ '^-?\d+(\.\d+)?$'),
       count(*) filter (where c6 is not null and c6 !~ '^[^@\s]+@[^@\s]+$')
from stage
"""
MERGE = """
insert into target (source_system, source_key, outlet, occurred_at, loyalty_card, email, amount_cents,
                    currency, attributes)
select 'restaurant_pos', c0, c1, c3::timestamp at time zone 'Europe/Berlin', nullif(c4, ''),
       lower(btrim(nullif(c6, ''))), round(c10::numeric * 100)::bigint, c11,
       jsonb_build_object('covers', c9, 'payment', c12)
from stage
order by c0
"""


class Backend:
    """One connection and the CPU seconds its backend process has used."""

    def __init__(self, url) -> None:
        self.engine = make_engine(url)
        self.conn = self.engine.raw_connection()
        self.cursor = self.conn.cursor()
        self.cursor.execute("select pg_backend_pid()")
        self.pid = self.cursor.fetchone()[0]

    def cpu(self) -> float:
        return process_cpu(self.pid) or 0.0

    def copy(self, table: str, path: Path) -> int:
        with path.open("rb") as handle:
            handle.read(3)  # the export's UTF-8 byte order mark
            command = f"copy {table} from stdin with (format csv, header true)"
            self.cursor.copy_expert(command, handle, size=1 << 20)
        return self.cursor.rowcount


def measure(url, files: list[Path]) -> None:
    backend = Backend(url)
    text_columns = ", ".join(f"c{i} text" for i in range(COLUMNS))
    backend.cursor.execute(f"create unlogged table raw ({text_columns})")
    backend.cursor.execute(f"create unlogged table stage ({text_columns})")
    backend.cursor.execute(
        "create table target (id bigint generated always as identity primary key, "
        "source_system text not null, source_key text not null, outlet text, occurred_at timestamptz, "
        "loyalty_card text, email text, amount_cents bigint, currency char(3), attributes jsonb, "
        "unique (source_system, source_key))"
    )
    backend.conn.commit()

    started, cpu, rows = time.perf_counter(), backend.cpu(), 0
    for path in files:
        rows += backend.copy("raw", path)
    backend.conn.commit()
    baseline_wall, baseline_cpu = time.perf_counter() - started, backend.cpu() - cpu

    steps = dict.fromkeys(("copy", "checks", "merge", "truncate and commit"), 0.0)
    started = time.perf_counter()
    for path in files:
        cpu = backend.cpu()
        backend.copy("stage", path)
        steps["copy"] += backend.cpu() - cpu
        cpu = backend.cpu()
        backend.cursor.execute(STAGE_CHECKS)
        backend.cursor.fetchall()
        steps["checks"] += backend.cpu() - cpu
        cpu = backend.cpu()
        backend.cursor.execute(MERGE)
        steps["merge"] += backend.cpu() - cpu
        cpu = backend.cpu()
        backend.cursor.execute("truncate stage")
        backend.conn.commit()
        steps["truncate and commit"] += backend.cpu() - cpu
    path_wall, path_cpu = time.perf_counter() - started, sum(steps.values())
    backend.conn.close()
    backend.engine.dispose()

    print(
        f"baseline: raw COPY of {rows:,} receipt rows into an unlogged text table: {baseline_wall:.2f} s, "
        f"backend CPU {baseline_cpu / rows * 1e6:.2f} µs per row"
    )
    print(
        f"bare path (stage, check, merge, in SQL only): {path_wall:.2f} s, backend CPU "
        f"{path_cpu / rows * 1e6:.2f} µs per row: "
        + ", ".join(f"{step} {seconds / rows * 1e6:.2f}" for step, seconds in steps.items())
    )
    print(f"ratio to raw COPY, one backend: {baseline_wall / path_wall:.2f}")
    print(
        f"ratio to raw COPY, the bare path on two idle cores at best: {2 * baseline_cpu / path_cpu:.2f} "
        "(target of the real path >= 0.25)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guests", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    settings = load_settings()
    data = generated_data(settings.home, args.guests, args.seed)
    files = sorted((data / "restaurant_pos").glob("*.csv"))
    with scratch_database(open_databases(settings).kms, "kms_bench_ingest_floor") as url:
        measure(url, files)


if __name__ == "__main__":
    main()
