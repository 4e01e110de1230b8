"""Parse a source file by its feed spec into SourceRecords and RejectedRows, streaming.

    parsed = parse_file(spec, path)
    for item in parsed:              # SourceRecord or RejectedRow, in file order
        ...
    parsed.stats                     # rows received, records, rejected, field issues by kind

A file is read twice, never held in memory. The first pass checks the file as a whole
(encoding, header, truncation) and notes which natural keys occur more than once; the
second converts the rows. So `FileRejected` is raised before the first row is yielded,
and of duplicate keys the last occurrence is kept while the earlier ones are rejected,
with only the keys' hashes held in between (~30 MB for 500,000 rows).

Line numbers are physical lines where a row starts (1 is the header), also when quoted
fields run over several lines.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import json
import re
import string
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from campaign_lib.errors import FileRejected
from campaign_lib.ingest import feeds as f
from campaign_lib.ingest.feeds import FeedSpec
from campaign_lib.ingest.record import RejectedRow, SourceRecord
from campaign_lib.ingest.standardise import (
    FieldIssue,
    RowProblem,
    check_birth_date,
    check_currency,
    clean_email,
    clean_name,
    clean_phone,
    country_code,
    datetime_parser,
    day_start,
    parse_amount,
    parse_date,
    parse_integer,
    split_name,
)

# The parser reads whole lines itself and checks field sizes against the feed's
# max_field_bytes; the csv module's own limit (128 KiB) would raise on a long field.
csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))

# A rejected row keeps its raw text for the quarantine, cut here (a 2 MB field stays out).
MAX_RAW_LINE = 1 << 20
# The longest push token (FCM ~160, APNs 64, a web push subscription's JSON ~400 characters)
# a record may carry.
MAX_PUSH_TOKEN = 1000
# A quoted field may run over several lines; one longer than this is a missing closing quote.
MAX_RECORD_LINES = 1000

_DELIMITER_NAMES = {",": "commas", ";": "semicolons", "\t": "tabs", "|": "pipes"}
_MOJIBAKE = re.compile("[\xc2-\xf4][\x80-\xbf]")
_LANGUAGE = re.compile(r"[a-z]{2}")
_PURPOSE = re.compile(r"[a-z][a-z0-9_]*")

Row = list[str] | dict[str, Any]
Convert = Callable[[Row], Any]


@dataclass
class ParseStats:
    """What one file held: rows received (blank lines not counted), records, rejected rows, field issues."""

    rows: int = 0
    records: int = 0
    rejected: int = 0
    blank_lines: int = 0
    duplicate_keys: int = 0
    issues: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        """The counts as plain JSON values, for the ingest ledger."""
        return {
            "rows": self.rows,
            "records": self.records,
            "rejected": self.rejected,
            "blank_lines": self.blank_lines,
            "duplicate_keys": self.duplicate_keys,
            "issues": dict(sorted(self.issues.items())),
        }


class ParsedFile:
    """An iterator over a file's SourceRecords and RejectedRows, with the counts in `.stats`.

    Iterating raises FileRejected(reason) when the file as a whole cannot be used; the
    counts are complete once the iterator is exhausted.
    """

    def __init__(self, spec: FeedSpec, path: Path, today: dt.date | None = None) -> None:
        self.spec = spec
        self.path = Path(path)
        self.stats = ParseStats()
        # The only SourceRecord fields the records can hold a value in: what the parser
        # fills and what the mapping maps (the amount converter fills currency). The
        # loader leaves the other columns out of its COPY (they stay null).
        self.record_fields: frozenset[str] = frozenset(
            {"source_system", "record_kind", "source_key", "line_number", "attributes", *spec.mapping}
            | ({"currency"} if "amount_cents" in spec.mapping else set())
        )
        # Where the loader merges the records: ingest.record, or core.product (FeedSpec.target).
        self.target = spec.target
        self._today = today or dt.date.today()
        self._items: Iterator[SourceRecord | RejectedRow] | None = None

    def __iter__(self) -> ParsedFile:
        return self

    def __next__(self) -> SourceRecord | RejectedRow:
        if self._items is None:
            self._items = self._parse()
        return next(self._items)

    def _parse(self) -> Iterator[SourceRecord | RejectedRow]:
        spec = self.spec
        _check_start(spec, self.path)
        superseded = _scan(spec, self.path)
        self.stats.duplicate_keys = sum(1 for _ in superseded)
        rows = _RowConverter(spec, self.stats, self._today, superseded)
        if spec.format.type == "csv":
            yield from rows.csv_rows(_open(spec, self.path))
        else:
            yield from rows.json_rows(_open(spec, self.path))


def parse_file(spec: FeedSpec, path: Path, *, today: dt.date | None = None) -> ParsedFile:
    """Return an iterator over the file's records and rejected rows; `.stats` holds the counts.

    `today` bounds birth dates (default: the current date).
    """
    return ParsedFile(spec, path, today)


def _open(spec: FeedSpec, path: Path):
    return path.open(encoding=spec.format.python_encoding, newline="", errors="strict")


def _check_start(spec: FeedSpec, path: Path) -> None:
    with path.open("rb") as file:
        start = file.read(4)
    if not start or start == codecs.BOM_UTF8:
        raise FileRejected(f"{path.name}: empty file")
    if start.startswith(codecs.BOM_UTF8) and spec.format.encoding != "utf-8":
        raise FileRejected(
            f"{path.name}: starts with a UTF-8 byte order mark, but feed {spec.name} is "
            f"{spec.format.encoding}: the file was exported as UTF-8"
        )


def _records(file, quotechar: str | None, path: Path) -> Iterator[tuple[int, str]]:
    """Yield (line number, raw record with its terminator); a quoted field may span lines."""
    line_no = 0
    lines = iter(file)
    for line in lines:
        line_no += 1
        if quotechar is not None and quotechar in line and line.count(quotechar) % 2:
            start, parts = line_no, [line]
            for more in lines:
                line_no += 1
                parts.append(more)
                if more.count(quotechar) % 2:
                    break
                if len(parts) > MAX_RECORD_LINES:
                    raise FileRejected(
                        f"{path.name}: a quoted field opened on line {start} is not closed "
                        f"within {MAX_RECORD_LINES} lines"
                    )
            else:
                raise FileRejected(
                    f"{path.name}: truncated: the quoted field opened on line {start} is not closed "
                    "at the end of the file"
                )
            yield start, "".join(parts)
        else:
            yield line_no, line


def _body(raw: str) -> str:
    """The record without its line terminator."""
    if raw.endswith("\n"):
        return raw[:-2] if raw.endswith("\r\n") else raw[:-1]
    return raw.removesuffix("\r")


def _splitter(spec: FeedSpec) -> Callable[[str], list[str]]:
    """Return body -> fields: str.split where no quote occurs, the csv module otherwise."""
    delimiter, quote = spec.format.delimiter, spec.format.quotechar
    all_quoted = f"{quote}{delimiter}{quote}"

    class Dialect(csv.Dialect):
        pass

    Dialect.delimiter = delimiter
    Dialect.quotechar = quote
    Dialect.doublequote = True
    Dialect.skipinitialspace = False
    Dialect.lineterminator = "\n"
    Dialect.quoting = csv.QUOTE_MINIMAL
    Dialect.strict = True

    def split(body: str) -> list[str]:
        if quote not in body:
            return body.split(delimiter)
        # Every field quoted, as ticketing writes it: cut between the quotes. A line holds
        # 2n quotes plus those inside fields, so 2n means no field has one and the cut is exact.
        if body[0] == quote and body[-1] == quote:
            fields = body[1:-1].split(all_quoted)
            if body.count(quote) == 2 * len(fields):
                return fields
        return next(csv.reader((body,), Dialect))

    return split


def _scan(spec: FeedSpec, path: Path) -> dict[str, int]:
    """First pass: check the file as a whole; return natural keys seen more than once → last line."""
    fmt = spec.format
    is_csv = fmt.type == "csv"
    split = _splitter(spec) if is_csv else None
    delimiter, quote = fmt.delimiter, fmt.quotechar
    key_index = [spec.header.index(name) for name in spec.natural_key] if is_csv else []
    # Where the key is the first column(s) of a quote-free line, one bounded split finds it.
    leading_key = key_index == list(range(len(key_index)))
    width = len(key_index)
    json_key = _json_key(spec.natural_key) if not is_csv else None
    check_mojibake = fmt.encoding != "utf-8"
    seen: set[int] = set()
    duplicates: dict[str, int] = {}
    data_rows = 0
    last: tuple[int, str] | None = None
    expect_header = is_csv
    try:
        with _open(spec, path) as file:
            for line_no, raw in _records(file, quote if is_csv else None, path):
                if check_mojibake and not raw.isascii():
                    _check_mojibake(spec, path, line_no, raw)
                if expect_header:
                    expect_header = False
                    _check_header(spec, path, split, _body(raw))
                    continue
                if raw == "\n" or raw == "\r\n":
                    continue
                data_rows += 1
                last = (line_no, raw)
                try:
                    if not is_csv:
                        key = json_key(raw)
                    elif leading_key and quote not in raw:
                        parts = raw.split(delimiter, width)
                        if len(parts) <= width:
                            continue
                        key = parts[0] if width == 1 else ":".join(parts[:width])
                    else:
                        fields = split(_body(raw))
                        key = ":".join([fields[i] for i in key_index])
                except (csv.Error, IndexError, ValueError, AttributeError):
                    continue
                if not key:
                    continue
                hashed = hash(key)
                if hashed in seen:
                    duplicates[key] = line_no
                else:
                    seen.add(hashed)
    except UnicodeDecodeError:
        raise FileRejected(_decode_problem(spec, path)) from None
    if expect_header:
        raise FileRejected(f"{path.name}: empty file")
    if last is None:
        raise FileRejected(f"{path.name}: no data rows")
    _check_end(spec, path, split, *last)
    return duplicates


def _json_key(names: tuple[str, ...]) -> Callable[[str], str]:
    """Return line -> natural key of a JSON line, by a regular expression where it is unambiguous."""
    # The string value as an unrolled loop (runs of plain characters between escapes): a
    # third of the time of an alternation tried at every character.
    patterns = [
        (f'"{name}"', re.compile(rf'"{re.escape(name)}"\s*:\s*"([^"\\]*(?:\\.[^"\\]*)*)"')) for name in names
    ]

    def key(line: str) -> str:
        values = []
        for quoted, pattern in patterns:
            found = pattern.search(line) if line.count(quoted) == 1 else None
            if found is None:
                value = json.loads(line).get(quoted[1:-1])
                values.append("" if value is None else str(value))
            else:
                value = found[1]
                values.append(json.loads(f'"{value}"') if "\\" in value else value)
        return ":".join(values)

    return key


def _check_header(spec: FeedSpec, path: Path, split, body: str) -> None:
    expected = list(spec.header)
    try:
        columns = split(body)
    except csv.Error as exc:
        raise FileRejected(f"{path.name}: the header line cannot be read: {exc}") from None
    if columns == expected:
        return
    delimiter = spec.format.delimiter
    if len(columns) == 1 and len(expected) > 1:
        for other, name in _DELIMITER_NAMES.items():
            if other != delimiter and len(body.split(other)) >= len(expected) // 2 + 1:
                raise FileRejected(
                    f"{path.name}: wrong delimiter: the header is separated by {name} instead of "
                    f"{_DELIMITER_NAMES.get(delimiter, repr(delimiter))}"
                )
    missing = [name for name in expected if name not in columns]
    unexpected = [name for name in columns if name not in expected]
    problems = []
    if missing:
        problems.append("missing columns " + ", ".join(missing))
    if unexpected:
        problems.append("unexpected columns " + ", ".join(repr(name) for name in unexpected))
    if not problems:
        problems.append(f"columns in another order: {', '.join(columns)}")
    raise FileRejected(f"{path.name}: header does not match feed {spec.name}: " + "; ".join(problems))


def _check_mojibake(spec: FeedSpec, path: Path, line_no: int, raw: str) -> None:
    """A single-byte feed that received UTF-8 shows `Ã¤` for `ä`: refuse it rather than load garbage."""
    found = _MOJIBAKE.search(raw)
    if found is None:
        return
    try:
        raw.encode(spec.format.python_encoding).decode("utf-8")
    except UnicodeError:
        return
    raise FileRejected(
        f"{path.name}: line {line_no} holds UTF-8 read as {spec.format.encoding} ({found[0]!r}): "
        f"the file was exported as UTF-8, but feed {spec.name} is {spec.format.encoding}"
    )


def _check_end(spec: FeedSpec, path: Path, split, line_no: int, raw: str) -> None:
    """A file cut off in transfer ends without its line terminator or in the middle of a row."""
    if spec.format.line_end != "any" and not raw.endswith(("\n", "\r")):
        raise FileRejected(f"{path.name}: truncated: the last line ({line_no}) has no line terminator")
    if split is None:
        return
    try:
        fields = split(_body(raw))
    except csv.Error as exc:
        raise FileRejected(
            f"{path.name}: truncated: the last line ({line_no}) cannot be read: {exc}"
        ) from None
    if len(fields) != len(spec.header):
        raise FileRejected(
            f"{path.name}: truncated: the last line ({line_no}) has {len(fields)} fields, "
            f"the header {len(spec.header)}"
        )


def _decode_problem(spec: FeedSpec, path: Path) -> str:
    """Find the first undecodable byte by reading the file again in binary."""
    decoder = codecs.getincrementaldecoder(spec.format.python_encoding)("strict")
    offset, lines = 0, 0
    with path.open("rb") as file:
        while chunk := file.read(1 << 16):
            pending = decoder.getstate()[0]
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                data = pending + chunk
                position = offset - len(pending) + exc.start
                lines += data[: exc.start].count(b"\n") - pending.count(b"\n")
                return (
                    f"{path.name}: not valid {spec.format.encoding}: byte 0x{data[exc.start]:02x} at offset "
                    f"{position} (line {lines + 1}): {exc.reason}"
                )
            offset += len(chunk)
            lines += chunk.count(b"\n")
    return f"{path.name}: not valid {spec.format.encoding}: the file ends inside a character"


class _RowConverter:
    """The second pass: rows become records, with every reason of a rejected row."""

    def __init__(self, spec: FeedSpec, stats: ParseStats, today: dt.date, superseded: dict[str, int]) -> None:
        self.spec = spec
        self.stats = stats
        self.superseded = superseded
        self.convert = _compile(spec, stats, today)

    def _reject(self, line_no: int, body: str, row: Row, reasons: list[str]) -> RejectedRow:
        self.stats.rejected += 1
        raw = row if isinstance(row, dict) else dict(zip(self.spec.header, row, strict=True))
        return RejectedRow(line_no, tuple(reasons), body[:MAX_RAW_LINE], raw)

    def _duplicate(self, key: str, line_no: int, reasons: list[str]) -> None:
        last = self.superseded.get(key)
        if last is not None and last > line_no:
            reasons.append(f"duplicate natural key {key}, superseded by line {last}")

    def csv_rows(self, file) -> Iterator[SourceRecord | RejectedRow]:
        spec, stats = self.spec, self.stats
        header = spec.header
        width = len(header)
        split = _splitter(spec)
        key_index = [header.index(name) for name in spec.natural_key]
        single_key = key_index[0] if len(key_index) == 1 else None
        required = [(header.index(name), name) for name in dict.fromkeys((*spec.natural_key, *spec.required))]
        limit = spec.format.max_field_bytes
        # A field cannot have more bytes than its line has characters times this.
        limit_chars = limit // (4 if spec.format.encoding == "utf-8" else 1)
        encoding = spec.format.encoding
        with file:
            records = _records(file, spec.format.quotechar, Path(file.name))
            next(records)
            for line_no, raw in records:
                body = raw.rstrip("\r\n")
                if not body:
                    stats.blank_lines += 1
                    continue
                stats.rows += 1
                try:
                    row = split(body)
                except csv.Error as exc:
                    stats.rejected += 1
                    yield RejectedRow(line_no, (f"malformed quoting: {exc}",), body[:MAX_RAW_LINE])
                    continue
                if len(row) != width:
                    stats.rejected += 1
                    yield RejectedRow(
                        line_no, (f"has {len(row)} fields, the header {width}",), body[:MAX_RAW_LINE]
                    )
                    continue
                reasons: list[str] = []
                if len(body) > limit_chars:
                    for name, value in zip(header, row, strict=True):
                        size = len(value.encode(encoding))
                        if size > limit:
                            reasons.append(
                                f"field {name} has {size} bytes, more than max_field_bytes {limit}"
                            )
                if "\x00" in body:
                    reasons.append("contains a NUL character")
                for index, name in required:
                    value = row[index]
                    if not value or value.isspace():
                        reasons.append(f"missing required field {name}")
                key = row[single_key] if single_key is not None else ":".join([row[i] for i in key_index])
                yield self._finish(key, line_no, body, row, reasons)

    def _finish(
        self, key: str, line_no: int, body: str, row: Any, reasons: list[str]
    ) -> SourceRecord | RejectedRow:
        """The common end of a CSV or JSON row: duplicate check, conversion, the verdict."""
        if self.superseded:
            self._duplicate(key, line_no, reasons)
        issues: list[str] = []
        record = self.convert(row, line_no, key, reasons, issues)
        if reasons:
            return self._reject(line_no, body, row, reasons)
        if issues:
            self.stats.issues.update(issues)
        self.stats.records += 1
        return record

    def json_rows(self, file) -> Iterator[SourceRecord | RejectedRow]:
        spec, stats = self.spec, self.stats
        required = list(dict.fromkeys((*spec.natural_key, *spec.required)))
        present = spec.header
        limit = spec.format.max_field_bytes
        loads = json.loads
        with file:
            for line_no, raw in enumerate(file, 1):
                body = raw.rstrip("\r\n")
                if not body:
                    stats.blank_lines += 1
                    continue
                stats.rows += 1
                try:
                    row = loads(body)
                except ValueError as exc:
                    stats.rejected += 1
                    yield RejectedRow(line_no, (f"invalid JSON: {exc}",), body[:MAX_RAW_LINE])
                    continue
                if type(row) is not dict:
                    stats.rejected += 1
                    yield RejectedRow(
                        line_no, (f"not a JSON object but {type(row).__name__}",), body[:MAX_RAW_LINE]
                    )
                    continue
                reasons: list[str] = []
                if len(body) > limit // 4:
                    reasons.extend(_long_values(row, limit))
                if "\\u0000" in body or "\x00" in body:
                    reasons.append("contains a NUL character")
                for name in present:
                    if name not in row:
                        reasons.append(f"missing key {name}")
                for name in required:
                    value = row.get(name)
                    if name in row and (
                        value is None or value == "" or (type(value) is str and value.isspace())
                    ):
                        reasons.append(f"missing required field {name}")
                try:
                    key = ":".join([_json_text(row.get(name)) for name in spec.natural_key])
                except RowProblem as problem:
                    reasons.append(f"natural key: {problem}")
                    key = ""
                yield self._finish(key, line_no, body, row, reasons)


def _long_values(value: Any, limit: int, path: str = "") -> Iterator[str]:
    if isinstance(value, dict):
        for name, item in value.items():
            yield from _long_values(item, limit, f"{path}.{name}" if path else name)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _long_values(item, limit, f"{path}.{index}")
    elif isinstance(value, str):
        size = len(value.encode("utf-8"))
        if size > limit:
            yield f"field {path} has {size} bytes, more than max_field_bytes {limit}"


def _json_text(value: Any) -> str:
    """A JSON value as the text a CSV column would hold: '' for null, numbers written out."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    raise RowProblem(f"expected a single value, got a JSON {type(value).__name__}")


def _json_getter(column: str) -> Callable[[dict], str]:
    if "." not in column:

        def get(row: dict) -> str:
            value = row.get(column)
            return value if type(value) is str else _json_text(value)

        return get
    path = column.split(".")

    def get_nested(row: dict) -> str:
        value: Any = row
        for step in path:
            if not isinstance(value, dict):
                return ""
            value = value.get(step)
        return _json_text(value)

    return get_nested


def _csv_getter(spec: FeedSpec) -> Callable[[str], Callable[[list[str]], str]]:
    positions = {name: index for index, name in enumerate(spec.header)}

    def getter(column: str) -> Callable[[list[str]], str]:
        index = positions[column]
        return lambda row: row[index]

    return getter


@lru_cache(maxsize=4096)
def _day_start(day: dt.date, timezone: str) -> dt.datetime:
    return day_start(day, timezone)


class _Builder:
    """Turns mapping entries into functions row -> value (None for empty)."""

    def __init__(self, spec: FeedSpec, getter, stats: ParseStats, today: dt.date) -> None:
        self.fmt = spec.format
        self.get = getter
        self.stats = stats
        self.today = today
        self.date_formats = (spec.format.date_format,)
        self.parse_datetime = datetime_parser(spec.format.datetime_formats, spec.format.timezone)

    def _convert(self, entry) -> Convert:
        get, fmt = self.get, self.fmt
        if isinstance(entry, f.TextConverter):
            column = get(entry.text)
            return lambda row: column(row).strip() or None
        if isinstance(entry, f.NameConverter):
            column = get(entry.name)
            if entry.split is None:
                return lambda row: clean_name(value) if (value := column(row)) else None
            order, part = entry.split, 0 if entry.part == "first" else 1
            return lambda row: split_name(value, order)[part] if (value := column(row)) else None
        if isinstance(entry, f.EmailConverter):
            column = get(entry.email)
            return lambda row: clean_email(value) if (value := column(row)) else None
        if isinstance(entry, f.PhoneConverter):
            return self._phone(entry)
        if isinstance(entry, f.DateConverter):
            column, formats = get(entry.date), self.date_formats
            return lambda row: parse_date(value, formats) if (value := column(row)) else None
        if isinstance(entry, f.BirthDateConverter):
            return self._birth_date(entry)
        if isinstance(entry, f.DatetimeConverter):
            column = get(entry.datetime)
            if entry.date_only:
                formats, zone = self.date_formats, fmt.timezone
                return lambda row: (
                    _day_start(parse_date(value, formats), zone) if (value := column(row)) else None
                )
            parse = self.parse_datetime
            return lambda row: parse(value) if (value := column(row)) else None
        if isinstance(entry, f.AmountConverter):
            column, decimal, thousands = get(entry.amount), fmt.decimal_separator, fmt.thousands_separator
            return lambda row: (
                parse_amount(value, decimal, thousands) if (value := column(row).strip()) else None
            )
        if isinstance(entry, f.IntegerConverter):
            column = get(entry.integer)
            return lambda row: parse_integer(value) if (value := column(row)) else None
        if isinstance(entry, f.CountryConverter):
            column = get(entry.country)
            return lambda row: country_code(value) if (value := column(row)) else None
        if isinstance(entry, f.ConstantConverter):
            constant = entry.constant
            return lambda row: constant
        if isinstance(entry, f.TemplateConverter):
            return self._template(entry)
        if isinstance(entry, f.MapConverter):
            return self._map(entry)
        if isinstance(entry, f.JsonConverter):
            return self._json(entry)
        if isinstance(entry, f.JoinConverter):
            columns, separator = [get(name) for name in entry.join], entry.separator
            return lambda row: separator.join(v for c in columns if (v := c(row).strip())) or None
        raise TypeError(f"no converter for {type(entry).__name__}")

    def _phone(self, entry: f.PhoneConverter) -> Convert:
        column, default, others = self.get(entry.phone), self.fmt.default_region, self.fmt.other_regions
        if entry.region_from is None:
            return lambda row: clean_phone(value, default, others) if (value := column(row)) else None
        country = self.get(entry.region_from)

        def phone(row: Row) -> str | None:
            value = column(row)
            if not value:
                return None
            try:
                region = country_code(country(row)) or default
            except FieldIssue:
                region = default
            return clean_phone(value, region, others)

        return phone

    def _birth_date(self, entry: f.BirthDateConverter) -> Convert:
        column, formats, today, placeholder = (
            self.get(entry.birth_date),
            self.date_formats,
            self.today,
            entry.placeholder,
        )
        issues = self.stats.issues

        def birth_date(row: Row) -> dt.date | None:
            value = column(row)
            if not value:
                return None
            if value == placeholder:
                issues["birth_date_placeholder"] += 1
                return None
            return check_birth_date(parse_date(value, formats), today)

        return birth_date

    def _json(self, entry: f.JsonConverter) -> Convert:
        """The value as text: an object or list as compact JSON with sorted keys (the same
        subscription is always the same text), anything else as a column's text."""
        prefix = entry.prefix
        if self.fmt.type == "csv":
            column = self.get(entry.key)
            return lambda row: prefix + value if (value := column(row).strip()) else None
        path = entry.key.split(".")

        def json_value(row: Row) -> str | None:
            value: Any = row
            for step in path:
                value = value.get(step) if isinstance(value, dict) else None
            if isinstance(value, dict | list):
                text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
            else:
                text = _json_text(value).strip()
            return prefix + text if text else None

        return json_value

    def _template(self, entry: f.TemplateConverter) -> Convert:
        parts = list(string.Formatter().parse(entry.template))
        if len(parts) == 1 and parts[0][1] is not None and not parts[0][2] and not parts[0][3]:
            prefix, column = parts[0][0], self.get(parts[0][1])
            return lambda row: prefix + value if (value := column(row).strip()) else None
        pieces = [(literal, self.get(name) if name is not None else None) for literal, name, _, _ in parts]

        def template(row: Row) -> str | None:
            out = []
            for literal, column in pieces:
                out.append(literal)
                if column is not None:
                    value = column(row).strip()
                    if not value:
                        return None
                    out.append(value)
            return "".join(out)

        return template

    def _map(self, entry: f.MapConverter) -> Convert:
        column, values, default, name = self.get(entry.map), entry.values, entry.default, entry.map
        missing = object()

        def mapped(row: Row) -> str | None:
            value = column(row)
            if not value:
                return None
            result = values.get(value, missing)
            if result is missing:
                if default is None:
                    raise RowProblem(f"unknown {name} {value!r}")
                return default
            return result

        return mapped


def _record_checks(spec: FeedSpec) -> list[Callable[[SourceRecord, list[str], list[str]], None]]:
    """Checks across fields that ingest.record's constraints would otherwise fail in the load."""
    mapping = spec.mapping
    checks = []
    if any(
        not isinstance(entry, f.ConstantConverter | f.MapConverter)
        for entry in mapping.get("activity_type", ())
    ):
        # Constants and value maps were checked when the feed loaded; a column read as it is was not.
        checks.append(_enum_check("activity_type", spec.known_activity_types))
    if "activity_type" in mapping:

        def activity_time(record: SourceRecord, reasons: list[str], issues: list[str]) -> None:
            if (
                record.activity_type is not None
                and record.occurred_at is None
                and not any(reason.startswith("occurred_at") for reason in reasons)
            ):
                reasons.append("an activity without occurred_at")

        checks.append(activity_time)
    if "ended_at" in mapping:

        def ended_after(record: SourceRecord, reasons: list[str], issues: list[str]) -> None:
            end, start = record.ended_at, record.occurred_at
            if end is not None and start is not None and end < start:
                reasons.append(f"ended_at {end.isoformat()} is before occurred_at {start.isoformat()}")

        checks.append(ended_after)
    if "quantity" in mapping:

        def positive_quantity(record: SourceRecord, reasons: list[str], issues: list[str]) -> None:
            if record.quantity is not None and record.quantity <= 0:
                reasons.append(f"quantity {record.quantity} is not positive")

        checks.append(positive_quantity)
    if "push_token" in mapping:

        def push_token(record: SourceRecord, reasons: list[str], issues: list[str]) -> None:
            # core.identifier keeps it in a unique B-tree, whose entries must stay small.
            if record.push_token is not None and len(record.push_token) > MAX_PUSH_TOKEN:
                reasons.append(
                    f"push_token has {len(record.push_token)} characters, more than {MAX_PUSH_TOKEN}"
                )

        checks.append(push_token)
    if spec.target == "product":
        category = f.PRODUCT_ATTRIBUTES[0]
        pattern = re.compile(f.PRODUCT_CATEGORY_PATTERN)

        def product(record: SourceRecord, reasons: list[str], issues: list[str]) -> None:
            value = record.attributes.get(category)
            if value is None:
                reasons.append(f"missing {category}")
            elif not isinstance(value, str) or not pattern.fullmatch(value):
                reasons.append(f"{category} {value!r} is not a lower-case identifier such as water_park")

        checks.append(product)
    if "language" in mapping:

        def language(record: SourceRecord, reasons: list[str], issues: list[str]) -> None:
            code = record.language
            if code is not None and not _LANGUAGE.fullmatch(code):
                lower = code.lower()
                if _LANGUAGE.fullmatch(lower):
                    record.language = lower
                else:
                    record.attributes.setdefault("invalid", {})["language"] = code
                    record.language = None
                    issues.append("invalid_language")

        checks.append(language)
    for name in ("account_type", "consent_channel", "consent_status"):
        if name in mapping:
            checks.append(_enum_check(name, f.ENUM_FIELDS[name]))
    if "consent_channel" in mapping or "consent_status" in mapping:

        def consent(record: SourceRecord, reasons: list[str], issues: list[str]) -> None:
            if (record.consent_channel is None) != (record.consent_status is None):
                reasons.append("consent_channel and consent_status go together")
            purpose = record.consent_purpose
            if purpose is not None and not _PURPOSE.fullmatch(purpose):
                reasons.append(f"consent_purpose {purpose!r} is not a lower-case identifier")

        checks.append(consent)
    return checks


def _enum_check(name: str, allowed: tuple[str, ...]):
    def enum(record: SourceRecord, reasons: list[str], issues: list[str]) -> None:
        value = getattr(record, name)
        if value is not None and value not in allowed:
            reasons.append(f"{name} {value!r} is not one of {', '.join(allowed)}")

    return enum


def _compile(spec: FeedSpec, stats: ParseStats, today: dt.date):
    """Compile the feed's mapping into one function (row, line, key, reasons, issues) -> SourceRecord.

    The mapping is declared per field; calling one small function per field and row cost
    three times the parser's budget. So the entries are written out as expressions of one
    generated function. Only field names of SourceRecord (a fixed set of identifiers) and
    column positions appear in its source; every value from the feed file (column names,
    constants, value maps, attribute names) is bound as a name of its namespace.
    """
    return _Compiler(spec, stats, today).compile()


class _Compiler:
    def __init__(self, spec: FeedSpec, stats: ParseStats, today: dt.date) -> None:
        self.spec = spec
        self.is_csv = spec.format.type == "csv"
        getter = _csv_getter(spec) if self.is_csv else _json_getter
        self.helpers = _Builder(spec, getter, stats, today)
        self.positions = {name: index for index, name in enumerate(spec.header)}
        fmt = spec.format
        # Amounts recur (prices, menu totals): a per-file cache keyed by the raw text.
        amounts: dict[str, int] = {}
        decimal, thousands = fmt.decimal_separator, fmt.thousands_separator

        def amount(raw: str) -> int | None:
            text = raw.strip()
            if not text:
                return None
            cents = parse_amount(text, decimal, thousands)
            if len(amounts) < 100_000:
                amounts[raw] = cents
            return cents

        self.names: dict[str, Any] = {
            "Record": SourceRecord,
            "RowProblem": RowProblem,
            "FieldIssue": FieldIssue,
            "clean_name": clean_name,
            "split_name": split_name,
            "clean_email": clean_email,
            "clean_phone": clean_phone,
            "parse_date": parse_date,
            "parse_amount": parse_amount,
            "parse_integer": parse_integer,
            "country_code": country_code,
            "check_currency": _cached_currency,
            "AMOUNTS": amounts,
            "amount": amount,
            "no_currency": _no_currency,
            "day_start": _day_start,
            "parse_datetime": datetime_parser(fmt.datetime_formats, fmt.timezone),
            "J": _json_text,
            "DATE_FORMATS": (fmt.date_format,),
            "ZONE": fmt.timezone,
            "DECIMAL": fmt.decimal_separator,
            "THOUSANDS": fmt.thousands_separator,
            "REGION": fmt.default_region,
            "OTHER_REGIONS": fmt.other_regions,
            "SOURCE_SYSTEM": spec.source_system,
            "RECORD_KIND": spec.record_kind,
        }

    def bind(self, value: Any) -> str:
        name = f"K{len(self.names)}"
        self.names[name] = value
        return name

    def column(self, name: str) -> str:
        if self.is_csv:
            return f"row[{self.positions[name]}]"
        if "." in name:
            return f"{self.bind(_json_getter(name))}(row)"
        return f"(_x if type(_x := row.get({self.bind(name)})) is str else '' if _x is None else J(_x))"

    def condition(self, when: dict) -> str:
        """An expression true when every column of `when` holds one of its values."""
        tests = []
        for column, allowed in when.items():
            values = frozenset([allowed] if isinstance(allowed, str) else allowed)
            tests.append(f"{self.column(column)} in {self.bind(values)}")
        return " and ".join(tests)

    def value(self, entry, for_json: bool) -> str:
        """A Python expression of the entry's value: None when empty or its condition fails."""
        expression = self._value(entry)
        if for_json and isinstance(entry, f.DateConverter | f.DatetimeConverter | f.BirthDateConverter):
            expression = f"(None if (_d := {expression}) is None else _d.isoformat())"
        if entry.when:
            expression = f"(({expression}) if {self.condition(entry.when)} else None)"
        return expression

    def _value(self, entry) -> str:
        col = self.column
        if isinstance(entry, f.TextConverter):
            return f"(_v.strip() or None if (_v := {col(entry.text)}) else None)"
        if isinstance(entry, f.NameConverter) and entry.split is None:
            return f"(clean_name(_v) if (_v := {col(entry.name)}) else None)"
        if isinstance(entry, f.NameConverter):
            part = 0 if entry.part == "first" else 1
            return (
                f"(split_name(_v, {self.bind(entry.split)})[{part}] if (_v := {col(entry.name)}) else None)"
            )
        if isinstance(entry, f.EmailConverter):
            return f"(clean_email(_v) if (_v := {col(entry.email)}) else None)"
        if isinstance(entry, f.PhoneConverter) and entry.region_from is None:
            return f"(clean_phone(_v, REGION, OTHER_REGIONS) if (_v := {col(entry.phone)}) else None)"
        if isinstance(entry, f.DateConverter):
            return f"(parse_date(_v, DATE_FORMATS) if (_v := {col(entry.date)}) else None)"
        if isinstance(entry, f.DatetimeConverter) and entry.date_only:
            return (
                f"(day_start(parse_date(_v, DATE_FORMATS), ZONE) if (_v := {col(entry.datetime)}) else None)"
            )
        if isinstance(entry, f.DatetimeConverter):
            return f"(parse_datetime(_v) if (_v := {col(entry.datetime)}) else None)"
        if isinstance(entry, f.AmountConverter):
            return (
                f"((AMOUNTS[_v] if _v in AMOUNTS else amount(_v)) if (_v := {col(entry.amount)}) else None)"
            )
        if isinstance(entry, f.IntegerConverter):
            return f"(parse_integer(_v) if (_v := {col(entry.integer)}) else None)"
        if isinstance(entry, f.CountryConverter):
            return f"(country_code(_v) if (_v := {col(entry.country)}) else None)"
        if isinstance(entry, f.ConstantConverter):
            return self.bind(entry.constant)
        if isinstance(entry, f.MapConverter):
            values = self.bind(entry.values)
            other = self.bind(_unmapped(entry))
            return (
                f"(({values}[_v] if _v in {values} else {other}(_v)) if (_v := {col(entry.map)}) else None)"
            )
        if isinstance(entry, f.TemplateConverter):
            parts = list(string.Formatter().parse(entry.template))
            if len(parts) == 1 and parts[0][1] is not None and not parts[0][2] and not parts[0][3]:
                prefix = self.bind(parts[0][0])
                return f"({prefix} + _v if (_v := {col(parts[0][1])}.strip()) else None)"
        # The rest (phones read by the row's country, birth dates, joins, templates) call a helper.
        return f"{self.bind(self.helpers._convert(entry))}(row)"

    def entries(self, entries: tuple, for_json: bool = False) -> str:
        expressions = [self.value(entry, for_json) for entry in entries]
        expression = expressions[-1]
        for depth, first in enumerate(reversed(expressions[:-1])):
            expression = f"(_t{depth} if (_t{depth} := {first}) is not None else {expression})"
        return expression

    def currency(self, entries: tuple) -> str:
        entry = next(entry for entry in entries if isinstance(entry, f.AmountConverter))
        if entry.currency is not None:
            expression = f"({self.bind(entry.currency)} if {self.column(entry.amount)}.strip() else None)"
        else:
            code = self.column(entry.currency_from)
            expression = (
                f"((check_currency(_c) if (_c := {code}).strip() else no_currency()) "
                f"if {self.column(entry.amount)}.strip() else None)"
            )
        if entry.when:
            expression = f"(({expression}) if {self.condition(entry.when)} else None)"
        return expression

    def compile(self):
        spec = self.spec
        lines = [
            "def convert(row, line_no, key, reasons, issues):",
            "    invalid = None",
            "    attributes = {}",
        ]
        fields = []
        targets = [(name, entries, False) for name, entries in spec.mapping.items()]
        if "amount_cents" in spec.mapping:
            targets.append(("currency", spec.mapping["amount_cents"], True))
        for index, (name, entries, is_currency) in enumerate(targets):
            if name not in (*f.MAPPABLE_FIELDS, "currency"):
                raise ValueError(f"not a SourceRecord field: {name!r}")
            expression = self.currency(entries) if is_currency else self.entries(entries)
            variable = f"f{index}"
            fields.append(f"{name}={variable}")
            lines += [
                "    try:",
                f"        {variable} = {expression}",
                "    except RowProblem as problem:",
                f"        {variable} = None",
                f"        reasons.append({self.bind(name + ': ')} + str(problem))",
                "    except FieldIssue as issue:",
                f"        {variable} = None",
                "        if invalid is None:",
                "            invalid = {}",
                f"        invalid[{self.bind(name)}] = issue.raw",
                "        issues.append(issue.kind)",
            ]
        for name, entries in spec.attributes.items():
            key = self.bind(name)
            lines += [
                "    try:",
                f"        if (_a := {self.entries(entries, for_json=True)}) is not None:",
                f"            attributes[{key}] = _a",
                "    except RowProblem as problem:",
                f"        reasons.append({self.bind(f'attributes.{name}: ')} + str(problem))",
                "    except FieldIssue as issue:",
                "        issues.append(issue.kind)",
            ]
        lines += [
            "    if invalid is not None:",
            '        attributes["invalid"] = invalid',
            f"    record = Record(SOURCE_SYSTEM, RECORD_KIND, key, line_no, {', '.join(fields)},",
            "                    attributes=attributes)",
        ]
        checks = _record_checks(spec)
        for check in checks:
            lines.append(f"    {self.bind(check)}(record, reasons, issues)")
        lines.append("    return record")
        source = "\n".join(lines) + "\n"
        namespace = dict(self.names)
        exec(compile(source, f"<feed {spec.name}>", "exec"), namespace)
        convert = namespace["convert"]
        convert.source = source
        return convert


def _unmapped(entry: f.MapConverter) -> Callable[[str], str]:
    default, column = entry.default, entry.map

    def unmapped(value: str) -> str:
        if default is None:
            raise RowProblem(f"unknown {column} {value!r}")
        return default

    return unmapped


@lru_cache(maxsize=256)
def _cached_currency(raw: str) -> str:
    return check_currency(raw)


def _no_currency() -> None:
    raise RowProblem("an amount without currency")
