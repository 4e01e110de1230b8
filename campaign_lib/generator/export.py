"""Writes the generated records into the drop folders, one file per feed and month.

Two passes keep memory flat and the output independent of the number of workers:

1. Shards (contiguous runs of blocks) are generated, in parallel if asked, each into one
   part file. Each block's records of one (feed, month) become one contiguous byte range
   there, already encoded in the feed's encoding; an index notes where each range lies.
2. Export files are laid out from that index in block order: a file takes whole block
   ranges until the next would pass ``MAX_ROWS_PER_FILE`` (a CRM snapshot is never split:
   the loader compares a snapshot with the previous one, and half a snapshot looks
   shrunken). The layout depends on block sizes only, never on shards or workers, so
   any worker count yields identical bytes. The files are then written by copying
   ranges, again in parallel if asked.
"""

from __future__ import annotations

import codecs
import datetime as dt
import gzip
import hashlib
import multiprocessing
import shutil
from dataclasses import dataclass
from pathlib import Path

from campaign_lib.generator.feeds import FEEDS, GROUND_TRUTH_COLUMNS, LATIN1_FOLD, Feed
from campaign_lib.generator.resort import RunSpec, generate_block
from campaign_lib.generator.timeline import drop_time, timeline

MAX_ROWS_PER_FILE = 500_000
GROUND_TRUTH = len(FEEDS)
GROUND_TRUTH_PATH = "ground_truth/ground_truth.csv.gz"
SHARD_BLOCKS = 8
_PARTS_FOLDER = ".generator-parts"


@dataclass(frozen=True, slots=True)
class Extent:
    """Where one block's records of one (feed, month) lie in a part file."""

    feed: int
    month: int
    block: int
    part: str
    offset: int
    length: int
    rows: int


@dataclass(frozen=True, slots=True)
class ExportFile:
    """One file to write: its path, what it starts with and the block ranges it is made of."""

    feed: str
    path: str
    head: bytes
    extents: tuple[Extent, ...]

    @property
    def rows(self) -> int:
        """Rows of the file, header not counted."""
        return sum(extent.rows for extent in self.extents)


@dataclass(frozen=True, slots=True)
class WrittenFile:
    """A written file as the manifest lists it."""

    feed: str
    path: str
    rows: int
    bytes: int
    sha256: str


def _fold_for_latin1(error: UnicodeEncodeError) -> tuple[str, int]:
    """Encoding error handler: the PMS folds letters outside latin-1 (ł→l), else writes ``?``."""
    text = error.object[error.start : error.end]
    folded = text.translate(LATIN1_FOLD)
    return ("".join(ch if ord(ch) < 256 else "?" for ch in folded), error.end)


codecs.register_error("kms_latin1_fold", _fold_for_latin1)


def _encode(feed: Feed, lines: list[str]) -> bytes:
    errors = "kms_latin1_fold" if feed.encoding == "latin-1" else "strict"
    return "".join(lines).encode(feed.encoding, errors=errors)


def _encode_ground_truth(lines: list[str]) -> bytes:
    # Every block is its own gzip member; concatenated members form one valid gzip file.
    return gzip.compress("".join(lines).encode("utf-8"), compresslevel=1, mtime=0)


def write_shard(spec: RunSpec, first_block: int, end_block: int, part: Path) -> list[Extent]:
    """Generate blocks ``[first_block, end_block)`` into the part file ``part``; return the index."""
    extents = []
    offset = 0
    with part.open("wb") as stream:
        for block in range(first_block, end_block):
            records = generate_block(spec, block)
            for (feed, month), lines in sorted(records.lines.items()):
                data = _encode(FEEDS[feed], lines)
                stream.write(data)
                extents.append(Extent(feed, month, block, part.name, offset, len(data), len(lines)))
                offset += len(data)
            data = _encode_ground_truth(records.ground_truth)
            stream.write(data)
            extents.append(
                Extent(GROUND_TRUTH, 0, block, part.name, offset, len(data), len(records.ground_truth))
            )
            offset += len(data)
    return extents


def _write_shard_task(task: tuple[RunSpec, int, int, Path]) -> list[Extent]:
    return write_shard(*task)


def plan_files(spec: RunSpec, extents: list[Extent]) -> list[ExportFile]:
    """Lay the block ranges out into export files: by feed and month, split at whole blocks."""
    tl = timeline(spec.as_of)
    by_bucket: dict[tuple[int, int], list[Extent]] = {}
    for extent in extents:
        by_bucket.setdefault((extent.feed, extent.month), []).append(extent)
    files = []
    for (feed_number, month), bucket in sorted(by_bucket.items()):
        bucket.sort(key=lambda extent: extent.block)
        if feed_number == GROUND_TRUTH:
            header = ",".join(GROUND_TRUTH_COLUMNS) + "\n"
            head = gzip.compress(header.encode("utf-8"), mtime=0)
            files.append(ExportFile("ground_truth", GROUND_TRUTH_PATH, head, tuple(bucket)))
            continue
        feed = FEEDS[feed_number]
        if feed.monthly:
            year, month_of_year = tl.months[month]
            dropped = drop_time(spec.as_of, year, month_of_year, feed.drop_hour, feed.drop_minute)
        else:
            dropped = dt.datetime.combine(spec.as_of, dt.time(feed.drop_hour, feed.drop_minute))
        chunks: list[list[Extent]] = [[]]
        rows = 0
        for extent in bucket:
            if feed.monthly and chunks[-1] and rows + extent.rows > MAX_ROWS_PER_FILE:
                chunks.append([])
                rows = 0
            chunks[-1].append(extent)
            rows += extent.rows
        for number, chunk in enumerate(chunks):
            # A split export drops as further files, a minute apart, as the source would.
            name = feed.file_name(dropped + dt.timedelta(minutes=number))
            files.append(ExportFile(feed.name, f"{feed.folder}/{name}", feed.header(), tuple(chunk)))
    return files


def write_file(out_dir: Path, parts_dir: Path, export: ExportFile) -> WrittenFile:
    """Write one export file from its block ranges and return its size and sha256."""
    target = out_dir / export.path
    digest = hashlib.sha256(export.head)
    size = len(export.head)
    handles: dict[str, object] = {}
    try:
        with target.open("wb") as stream:
            stream.write(export.head)
            for extent in export.extents:
                source = handles.get(extent.part)
                if source is None:
                    source = handles[extent.part] = (parts_dir / extent.part).open("rb")
                source.seek(extent.offset)
                data = source.read(extent.length)
                digest.update(data)
                stream.write(data)
                size += len(data)
    finally:
        for handle in handles.values():
            handle.close()
    return WrittenFile(export.feed, export.path, export.rows, size, digest.hexdigest())


def _write_file_task(task: tuple[Path, Path, ExportFile]) -> WrittenFile:
    return write_file(*task)


def write_exports(spec: RunSpec, out_dir: Path, workers: int) -> list[WrittenFile]:
    """Generate all blocks of ``spec`` and write the drop folders and ground truth to ``out_dir``."""
    parts_dir = out_dir / _PARTS_FOLDER
    parts_dir.mkdir(parents=True)
    try:
        shards = [
            (spec, first, min(first + SHARD_BLOCKS, spec.blocks), parts_dir / f"shard-{first:06d}.part")
            for first in range(0, spec.blocks, SHARD_BLOCKS)
        ]
        folders = sorted({feed.folder for feed in FEEDS} | {Path(GROUND_TRUTH_PATH).parent.name})
        for folder in folders:
            (out_dir / folder).mkdir()
        if workers > 1:
            # spawn, not fork: the caller may be a threaded process such as an Airflow worker.
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                extents = [e for shard in pool.imap_unordered(_write_shard_task, shards) for e in shard]
                files = plan_files(spec, extents)
                written = pool.map(_write_file_task, [(out_dir, parts_dir, f) for f in files], chunksize=1)
        else:
            extents = [e for shard in shards for e in write_shard(*shard)]
            files = plan_files(spec, extents)
            written = [write_file(out_dir, parts_dir, f) for f in files]
    finally:
        shutil.rmtree(parts_dir, ignore_errors=True)
    return sorted(written, key=lambda w: w.path)
