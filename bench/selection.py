"""Benchmark of selections: each example selection compiled vs the same logic written by hand.

    python bench/selection.py [--contacts 1000000] [--per-contact 10] [--rebuild] [--runs 3]

Works on a database of its own on the embedded server, `kms_bench_selection_<size>` (e.g.
`kms_bench_selection_1m`), which is kept between runs: the first run (or `--rebuild`) builds it
with set-based SQL (generate_series; sql/selection_bench.sql): households of the generator's
kinds (singles, couples, families with children, companies), ages, addresses, email and SMS
consents, the shop products, and about `--per-contact` activities per contact of every type
(page views, restaurant and bar bills, shop purchases with products, hotel stays, water park
and dolphinarium tickets, ...) spread over two years. It prints how long the build took.

Then, for every selection in selections/ that has a hand-written twin in
sql/selection_bench.sql (`-- name: hand_<selection>`), it runs both in the same session, warm,
`--runs` times each (alternating which goes first), and prints the medians, the ratio compiled / hand-written
(target <= 1.2), the number of contacts (which must agree), whether PostgreSQL chose the same
plan for both ("same": any difference in time is then noise of the machine) and which indexes
of core.activity the compiled query's plan reads.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time

from sqlalchemy import text
from sqlalchemy.engine import URL, Engine

from campaign_lib.config import load_settings
from campaign_lib.db import admin_connection, make_engine, open_databases, scratch_database
from campaign_lib.db.migrate import upgrade
from campaign_lib.generator.people import ascii_fold
from campaign_lib.generator.reference import SHOPS
from campaign_lib.selection import list_selections, load_selection, read_only
from campaign_lib.sqlfiles import queries

# Members per account on average with the generator's household kinds (see `households`).
MEMBERS_PER_ACCOUNT = 0.34 * 1 + 0.30 * 2 + 0.28 * 4 + 0.08 * 2


def database_name(contacts: int) -> str:
    """The kept database of one size: kms_bench_selection_1m, kms_bench_selection_20k."""
    if contacts % 1_000_000 == 0:
        return f"kms_bench_selection_{contacts // 1_000_000}m"
    if contacts % 1000 == 0:
        return f"kms_bench_selection_{contacts // 1000}k"
    return f"kms_bench_selection_{contacts}"


def built(server: URL, name: str) -> bool:
    """Whether the database `name` exists and a build finished in it."""
    conn = admin_connection(server)
    try:
        with conn.cursor() as cur:
            cur.execute("select 1 from pg_database where datname = %s", (name,))
            if cur.fetchone() is None:
                return False
    finally:
        conn.close()
    engine = make_engine(server.set(database=name))
    try:
        with engine.connect() as conn:
            return conn.execute(queries("selection_bench.sql")["build_done"]).scalar_one()
    finally:
        engine.dispose()


def products() -> dict[str, list]:
    """The generator's shop products as arrays for the `products` statement; the category is
    the shop's first word (souvenirshop, bademoden, ...)."""
    rows = [
        (sku, name, ascii_fold(shop.split()[0]).lower().replace("-", "_"), price)
        for shop, items in SHOPS
        for sku, name, price in items
    ]
    return {
        "skus": [r[0] for r in rows],
        "names": [r[1] for r in rows],
        "categories": [r[2] for r in rows],
        "prices": [r[3] for r in rows],
    }


def build(engine: Engine, contacts: int, per_contact: float) -> float:
    """Fill the empty, migrated database with the benchmark's data; returns the seconds taken."""
    sql = queries("selection_bench.sql")
    catalogue = products()
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(text("set local synchronous_commit = off"))
        conn.execute(text("set local maintenance_work_mem = '512MB'"))
        # The build writes consistent data; checking 10M foreign keys row by row would
        # triple its time.
        conn.execute(text("set local session_replication_role = replica"))
        conn.execute(text("select setseed(0.42)"))
        indexes = conn.execute(sql["secondary_indexes"]).all()
        for index in indexes:
            conn.execute(text(f'drop index core."{index.indexname}"'))
        steps = [
            ("households", {"households": round(contacts / MEMBERS_PER_ACCOUNT)}),
            ("accounts", {}),
            ("locations", {}),
            ("contacts", {}),
            ("products", catalogue),
            ("activity_counts", {"per_contact": per_contact}),
            ("activities", {"products": len(catalogue["skus"])}),
            ("consents", {}),
            ("drop_scratch", {}),
        ]
        for step, params in steps:
            step_started = time.perf_counter()
            result = conn.execute(sql[step], params)
            rows = f"{result.rowcount:,} rows" if result.rowcount >= 0 else "done"
            print(f"  {step:<16} {rows:>16} in {time.perf_counter() - step_started:6.1f} s", flush=True)
        for index in indexes:
            step_started = time.perf_counter()
            conn.execute(text(index.indexdef))
            print(f"  index {index.indexname:<34} in {time.perf_counter() - step_started:6.1f} s", flush=True)
        conn.execute(sql["reset_identities"])
    step_started = time.perf_counter()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sql["vacuum"])
    print(f"  vacuum analyze                        in {time.perf_counter() - step_started:6.1f} s")
    seconds = time.perf_counter() - started
    with engine.begin() as conn:
        conn.execute(sql["record_build"], {"seconds": seconds})
    return seconds


def open_bench_database(contacts: int, per_contact: float, rebuild: bool) -> URL:
    """The kept benchmark database of this size, built first when missing or on request."""
    server = open_databases(load_settings()).kms
    name = database_name(contacts)
    if rebuild or not built(server, name):
        print(f"building {name}: {contacts:,} contacts, ~{per_contact:g} activities each", flush=True)
        with scratch_database(server, name, keep=True) as url:
            engine = make_engine(url)
            try:
                upgrade(engine)
                seconds = build(engine, contacts, per_contact)
            finally:
                engine.dispose()
        print(f"built {name} in {seconds:.0f} s")
    url = server.set(database=name)
    engine = make_engine(url)
    try:
        # Later migrations (campaign tables) apply to the kept database too.
        upgrade(engine)
        with engine.connect() as conn:
            info = conn.execute(queries("selection_bench.sql")["build_info"]).one()
        print(
            f"{name}: {info.contacts:,} contacts, {info.activities:,} activities, "
            f"built {info.built_at:%Y-%m-%d %H:%M} in {info.build_seconds} s"
        )
    finally:
        engine.dispose()
    return url


def explain(conn, statement, values: dict | None = None) -> dict:
    """PostgreSQL's plan (EXPLAIN, JSON) of a compiled selection, or of a text statement with
    `values`."""
    if values is None:
        compiled = statement.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
        rows = conn.exec_driver_sql("explain (format json) " + str(compiled), compiled.params)
    else:
        rows = conn.execute(text("explain (format json) " + statement.text), values)
    return rows.scalar_one()[0]["Plan"]


def plan_shape(plan: dict) -> tuple:
    """The plan's tree of node types and the relations and indexes they read, without costs."""
    return (
        plan["Node Type"],
        plan.get("Join Type"),
        plan.get("Relation Name"),
        plan.get("Index Name"),
        tuple(plan_shape(child) for child in plan.get("Plans", ())),
    )


def activity_scans(plan: dict) -> str:
    """How the plan reads core.activity: "activity_contact_type_time_idx index-only x2, ..."."""
    found: dict[str, int] = {}

    def walk(node: dict) -> None:
        if node.get("Relation Name") == "activity":
            how = {"Index Only Scan": "index-only", "Index Scan": "index", "Seq Scan": "SEQ SCAN"}.get(
                node["Node Type"], node["Node Type"]
            )
            key = f"{node.get('Index Name', '')} {how}".strip()
            found[key] = found.get(key, 0) + 1
        for child in node.get("Plans", ()):
            walk(child)

    walk(plan)
    return ", ".join(f"{key} x{n}" if n > 1 else key for key, n in sorted(found.items())) or "-"


def timed(run) -> tuple[float, int]:
    """Seconds `run()` took, and how many rows it returned."""
    started = time.perf_counter()
    rows = run()
    return time.perf_counter() - started, len(rows)


def compare(url: URL, runs: int) -> None:
    """Each selection with a hand-written twin: compiled vs hand-written, same session, warm,
    alternating which goes first; prints the medians, the ratio and whether the plans agree."""
    hand = queries("selection_bench.sql")
    as_of = dt.datetime.now(dt.UTC)
    engine = make_engine(url)
    header = f"{'selection':<40} {'contacts':>9} {'compiled':>9} {'by hand':>9} {'ratio':>6}"
    print(f"\n{header}  plan  activity scans")
    ratios = []
    try:
        with engine.connect() as conn:
            for name in list_selections():
                twin = f"hand_{name}"
                if twin not in hand:
                    continue
                selection = load_selection(name)
                query = selection.query(as_of=as_of)
                values = {"as_of": as_of, **selection.bind()}

                def compiled(query=query):
                    with read_only(conn, timeout_s=300):
                        return conn.execute(query).all()

                def by_hand(twin=twin, values=values):
                    with read_only(conn, timeout_s=300):
                        return conn.execute(hand[twin], values).all()

                compiled()  # warm: both read the same tables and indexes
                by_hand()
                timings: dict = {compiled: [], by_hand: []}
                counts = set()
                for round_ in range(runs):
                    for run in (compiled, by_hand) if round_ % 2 == 0 else (by_hand, compiled):
                        seconds, count = timed(run)
                        timings[run].append(seconds)
                        counts.add(count)
                a, b = statistics.median(timings[compiled]), statistics.median(timings[by_hand])
                ratios.append(a / b)
                with read_only(conn):
                    plan = explain(conn, query)
                    same = plan_shape(plan) == plan_shape(explain(conn, hand[twin], values))
                agree = "" if len(counts) == 1 else f"  COUNTS DIFFER {sorted(counts)}"
                print(
                    f"{name:<40} {counts.pop():>9,} {a:>8.3f}s {b:>8.3f}s {a / b:>5.2f}x  "
                    f"{'same' if same else 'other':<5} {activity_scans(plan)}{agree}"
                )
    finally:
        engine.dispose()
    print(
        f"\nratio compiled / hand-written: median {statistics.median(ratios):.2f}x, worst {max(ratios):.2f}x "
        f"(target <= 1.2x; median of {runs} warm runs each)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--per-contact", type=float, default=10, help="activities per contact on average")
    parser.add_argument("--rebuild", action="store_true", help="build the kept database again")
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each query (median)")
    args = parser.parse_args()
    url = open_bench_database(args.contacts, args.per_contact, args.rebuild)
    compare(url, args.runs)


if __name__ == "__main__":
    main()
