"""The resort data generator: realistic exports of every source system, with ground truth.

``generate`` writes what the resort's hotel PMS, restaurant and shop tills, ticketing,
website and CRM would drop on the SFTP server over two years, for a guest base of a given
size, plus the truth of which person and household each record belongs to. The formats are
documented in docs/generator.md; identical seed and guests give byte-identical output.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from campaign_lib.generator.export import GROUND_TRUTH_PATH, WrittenFile, write_exports
from campaign_lib.generator.feeds import ACTIVITY_FEEDS, FEEDS
from campaign_lib.generator.resort import BLOCK_PERSONS, MAX_BLOCKS, RunSpec

GENERATOR_VERSION = "1.1.0"
MANIFEST = "manifest.json"

__all__ = ["GENERATOR_VERSION", "FeedCount", "GenerateSummary", "generate"]


@dataclass(frozen=True, slots=True)
class FeedCount:
    """Files and rows written for one feed."""

    feed: str
    files: int
    rows: int


@dataclass(frozen=True, slots=True)
class GenerateSummary:
    """What one ``generate`` call wrote."""

    out_dir: str
    guests: int
    seed: int
    as_of: str
    feeds: tuple[FeedCount, ...]
    total_rows: int
    total_activities: int
    ground_truth_rows: int
    elapsed_seconds: float

    def as_dict(self) -> dict:
        """Return the summary as plain JSON-serialisable values."""
        return asdict(self)


def _check_arguments(out_dir: Path, guests: int, workers: int) -> None:
    if guests < 1:
        raise ValueError(f"guests must be at least 1, got {guests}")
    if guests > MAX_BLOCKS * BLOCK_PERSONS:
        raise ValueError(f"guests must be at most {MAX_BLOCKS * BLOCK_PERSONS:,}, got {guests:,}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ValueError(f"output folder {out_dir} exists and is not empty; choose a new or empty folder")


def _write_manifest(out_dir: Path, spec: RunSpec, written: list[WrittenFile]) -> None:
    manifest = {
        "generator_version": GENERATOR_VERSION,
        "seed": spec.seed,
        "guests": spec.guests,
        "as_of": spec.as_of.isoformat(),
        "files": [
            {"feed": w.feed, "path": w.path, "rows": w.rows, "bytes": w.bytes, "sha256": w.sha256}
            for w in written
        ],
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def generate(
    out_dir: Path, guests: int, seed: int, as_of: dt.date = dt.date(2026, 11, 1), workers: int = 1
) -> GenerateSummary:
    """Write the resort's source exports for ``guests`` persons into ``out_dir``.

    Activities span the two years before ``as_of``. ``workers`` processes share the work;
    the output is byte-identical for any worker count. Raises ``ValueError`` for fewer than
    one guest or worker, or when ``out_dir`` exists and is not empty. Returns per-feed file
    and row counts and the time taken.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    _check_arguments(out_dir, guests, workers)
    spec = RunSpec(seed=seed, guests=guests, as_of=as_of)
    written = write_exports(spec, out_dir, workers)
    _write_manifest(out_dir, spec, written)
    counts = []
    for feed in FEEDS:
        files = [w for w in written if w.feed == feed.name]
        counts.append(FeedCount(feed.name, len(files), sum(w.rows for w in files)))
    activity_feeds = {FEEDS[number].name for number in ACTIVITY_FEEDS}
    return GenerateSummary(
        out_dir=str(out_dir),
        guests=guests,
        seed=seed,
        as_of=as_of.isoformat(),
        feeds=tuple(counts),
        total_rows=sum(c.rows for c in counts),
        total_activities=sum(c.rows for c in counts if c.feed in activity_feeds),
        ground_truth_rows=next(w.rows for w in written if w.path == GROUND_TRUTH_PATH),
        elapsed_seconds=round(time.perf_counter() - started, 3),
    )
