"""Benchmark of the resort data generator against the raw csv.writer ceiling.

Runs ``generate`` for ``--guests`` persons in a child process (so its peak RSS can be read
from ``RUSAGE_CHILDREN``) into a temporary folder, then, in the same run, writes as many
rows of one fixed, pre-built tuple with ``csv.writer`` as the generator wrote activities:
the rate of I/O and CSV quoting with no data to make up. Prints both and their ratio, and
the rate per CPU second of the generator's processes, which still tells the per-core speed
when other work shares the machine.

    python bench/generate.py --guests 1000000 --workers 2
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

_CHILD = """
import json, sys
from pathlib import Path
from campaign_lib.generator import generate
out_dir, guests, seed, workers = Path(sys.argv[1]), *map(int, sys.argv[2:5])
summary = generate(out_dir, guests=guests, seed=seed, workers=workers)
print(json.dumps(summary.as_dict()))
"""

# A typical restaurant receipt, as the generator writes them.
_FIXED_ROW = (
    "R11-8204337139",
    "Taverna Mykonos",
    "restaurant",
    "2025-03-04T19:20:14",
    "RC1234567890",
    "",
    "",
    "",
    "",
    2,
    "73.06",
    "EUR",
    "card",
)


def run_generator(out_dir: Path, guests: int, seed: int, workers: int) -> tuple[dict, float, float, int]:
    """Generate in a child process; return its summary, wall seconds, CPU seconds and peak RSS in KiB."""
    python_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=python_path)
    started = time.perf_counter()
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(out_dir), str(guests), str(seed), str(workers)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if child.returncode != 0:
        sys.exit(f"generator failed:\n{child.stderr}")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds tell the per-core rate even when other processes share the cores; they
    # include the worker processes, which the generator waits for.
    cpu_seconds = usage.ru_utime + usage.ru_stime
    # ru_maxrss of children is the largest single process among them (the generator or one worker), in KiB.
    return json.loads(child.stdout), elapsed, cpu_seconds, usage.ru_maxrss


def csv_ceiling(path: Path, rows: int) -> float:
    """Write ``rows`` copies of a fixed tuple with csv.writer; return rows per second."""
    batch = [_FIXED_ROW] * 10_000
    started = time.perf_counter()
    with path.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        for _ in range(rows // len(batch)):
            writer.writerows(batch)
        writer.writerows(batch[: rows % len(batch)])
    return rows / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guests", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kms-bench-generate-") as scratch:
        out_dir = Path(scratch) / "drops"
        summary, elapsed, cpu_seconds, peak_kib = run_generator(out_dir, args.guests, args.seed, args.workers)
        activities = summary["total_activities"]
        ceiling = csv_ceiling(Path(scratch) / "ceiling.csv", activities)
    rate = activities / elapsed
    figures = {
        "guests": args.guests,
        "workers": args.workers,
        "activity_rows": activities,
        "all_rows": summary["total_rows"],
        "activities_per_guest": round(activities / args.guests, 2),
        "seconds": round(elapsed, 2),
        "activity_rows_per_s": round(rate),
        "activity_rows_per_s_per_worker": round(rate / args.workers),
        "cpu_seconds": round(cpu_seconds, 1),
        "activity_rows_per_cpu_s": round(activities / cpu_seconds),
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "csv_writer_ceiling_rows_per_s": round(ceiling),
        "ratio_to_ceiling": round(rate / ceiling, 3),
        "ratio_per_cpu_s_to_ceiling": round(activities / cpu_seconds / ceiling, 3),
    }
    width = max(map(len, figures))
    for name, value in figures.items():
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
