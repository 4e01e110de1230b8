"""Benchmark: parse and standardise every file of a generated data set, per feed and overall.

    .venv/bin/python bench/parse.py [--guests 100000] [--seed 7] [--data DIR]

Generates the data set into a temporary folder first (unless --data names one), then
parses each feed's files with `parse_file` (both passes, every record built) and, as the
baseline measured in the same run, iterates the same files with plain `csv.reader`
(decoding included; `json.loads` per line for JSON Lines). Prints rows/s of both and
their ratio. The target is >= 150,000 rows/s on one core.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from campaign_lib.generator import generate
from campaign_lib.ingest.feeds import load_feeds
from campaign_lib.ingest.parse import parse_file
from campaign_lib.ingest.record import RejectedRow


def baseline(spec, path: Path) -> int:
    """Rows of the file read the plain way: csv.reader (or json.loads per line) over decoded text."""
    rows = 0
    with path.open(encoding=spec.format.python_encoding, newline="") as file:
        if spec.format.type == "jsonl":
            for line in file:
                json.loads(line)
                rows += 1
            return rows
        reader = csv.reader(file, delimiter=spec.format.delimiter, quotechar=spec.format.quotechar)
        next(reader)
        for _ in reader:
            rows += 1
    return rows


def parse(spec, path: Path) -> tuple[int, int]:
    parsed = parse_file(spec, path)
    rejected = sum(isinstance(item, RejectedRow) for item in parsed)
    return parsed.stats.rows, rejected


def run(data: Path) -> None:
    manifest = json.loads((data / "manifest.json").read_text())
    feeds = load_feeds()
    files = defaultdict(list)
    for entry in manifest["files"]:
        if entry["feed"] in feeds:
            files[entry["feed"]].append(data / entry["path"])
    print(
        f"{'feed':<16} {'rows':>10} {'parse rows/s':>14} {'csv.reader rows/s':>18} "
        f"{'ratio':>6} {'rejected':>9}"
    )
    totals = [0, 0.0, 0.0]
    for name, paths in files.items():
        spec = feeds[name]
        start = time.process_time()
        base_rows = sum(baseline(spec, path) for path in paths)
        base_time = time.process_time() - start
        start = time.process_time()
        rows = rejected = 0
        for path in paths:
            file_rows, file_rejected = parse(spec, path)
            rows += file_rows
            rejected += file_rejected
        parse_time = time.process_time() - start
        assert rows == base_rows, (name, rows, base_rows)
        totals[0] += rows
        totals[1] += parse_time
        totals[2] += base_time
        print(
            f"{name:<16} {rows:>10,} {rows / parse_time:>14,.0f} {rows / base_time:>18,.0f} "
            f"{base_time / parse_time:>6.2f} {rejected:>9,}"
        )
    rows, parse_time, base_time = totals
    print(
        f"{'all feeds':<16} {rows:>10,.0f} {rows / parse_time:>14,.0f} {rows / base_time:>18,.0f} "
        f"{base_time / parse_time:>6.2f}"
    )
    print("(rows/s per CPU second of this process; ratio = parse speed / csv.reader speed)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guests", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--data", type=Path, help="an existing generated data set (skips generating)")
    args = parser.parse_args()
    if args.data:
        run(args.data)
        return
    with tempfile.TemporaryDirectory(prefix="kms-bench-parse-") as tmp:
        out = Path(tmp) / "data"
        start = time.perf_counter()
        summary = generate(out, args.guests, args.seed)
        print(
            f"generated {summary.as_dict()['total_rows']:,} rows for {args.guests:,} guests "
            f"in {time.perf_counter() - start:.1f} s"
        )
        run(out)


if __name__ == "__main__":
    main()
