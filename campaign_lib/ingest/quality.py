"""The data-quality gate: Great Expectations' expectations on a file's staged, standardised rows.

The parser already rejects bad rows one by one; this gate checks the contract of the
whole staged file before anything is merged: the staged schema, keys present and
unique within the file, formats and ranges of standardised values, and the row count
against the previous load of the same feed. A failed critical expectation quarantines
the whole file.

The suite is Great Expectations' (`_expectations`). `check_file` runs it the way the
setting KMS_QUALITY_GATE says:

- `great_expectations` (the default): through GX itself (`check_staged_file_gx`), which
  issues one or more queries per expectation and costs 0.2-0.4 s per file;
- `sql`: the same expectations with GX's names and semantics (regular expressions and
  ranges on non-null values, uniqueness counting every row of a repeated value) computed
  in one SQL pass over the staged rows (~10 ms), reported in the same form
  (`check_staged_file`). For bulk loads of ~1,000 files, where GX's per-file cost
  dominates. tests/test_load.py checks that both agree, failures included.

Great Expectations takes 5-7 s to import, so it is imported at call time, and never by
a DAG file.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from dataclasses import dataclass
from functools import cache

from sqlalchemy import text
from sqlalchemy.engine import URL, Engine

from campaign_lib.errors import ConfigError
from campaign_lib.ingest.record import RECORD_COLUMNS

STAGED_COLUMNS = (*RECORD_COLUMNS, "feed", "ingest_file_id")
# A row count this far below the previous load of a non-snapshot feed is reported,
# not refused: monthly exports vary with the season.
ROW_COUNT_WARNING_SHARE = 0.2
_GX_LOCK = threading.Lock()
QUALITY_GATES = ("great_expectations", "sql")


@dataclass(frozen=True)
class GateResult:
    """The gate's verdict: passed when every critical expectation held."""

    passed: bool
    failures: tuple[str, ...]
    report: dict

    def reason(self) -> str:
        return "quality gate failed: " + "; ".join(self.failures)


def _gx_url(url: URL) -> str:
    # GX insists on a host name; libpq still prefers the socket folder in `host=`.
    if url.host is None and "host" in url.query:
        url = url.set(host="localhost")
    return url.render_as_string(hide_password=False)


# The suite, shared by the GX run and the SQL pass: formats of non-null values...
REGEXES: dict[str, str] = {
    "email": r"^[^@\s]+@[^@\s]+\.[^@\s]+$",
    "phone_e164": r"^\+[1-9][0-9]{6,14}$",
    "country_code": r"^[A-Z]{2}$",
    "currency": r"^[A-Z]{3}$",
}


def ranges(today: dt.date) -> dict[str, tuple]:
    """...and ranges of non-null values (inclusive), as GX's kwargs."""
    return {
        "amount_cents": (0, 100_000_000),
        "birth_date": (dt.date(1900, 1, 2).isoformat(), today.isoformat()),
        "occurred_at": (
            "2000-01-01T00:00:00+00:00",
            (today + dt.timedelta(days=800)).isoformat() + "T00:00:00+00:00",
        ),
        "quantity": (1, 100_000),
    }


def _expectations(gxe, today: dt.date, previous_rows: int | None):
    critical = [
        gxe.ExpectTableColumnsToMatchSet(column_set=list(STAGED_COLUMNS), exact_match=True),
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectColumnValuesToNotBeNull(column="source_key"),
        gxe.ExpectColumnValuesToBeUnique(column="source_key"),
        gxe.ExpectColumnValuesToNotBeNull(column="record_kind"),
        *(
            gxe.ExpectColumnValuesToMatchRegex(column=column, regex=regex)
            for column, regex in REGEXES.items()
        ),
        *(
            gxe.ExpectColumnValuesToBeBetween(column=column, min_value=low, max_value=high)
            for column, (low, high) in ranges(today).items()
        ),
    ]
    informational = []
    if previous_rows:
        informational.append(
            gxe.ExpectTableRowCountToBeBetween(
                min_value=int(previous_rows * ROW_COUNT_WARNING_SHARE), meta={"critical": False}
            )
        )
    return critical, informational


@cache
def _data_source(gx_url: str):
    """One ephemeral GX context and data source per database and process: building them
    costs more than validating a file."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context.data_sources.add_postgres("kms", connection_string=gx_url)


def check_staged_file_gx(url: URL, file_id: int, previous_rows: int | None, today: dt.date) -> GateResult:
    """Validate the staged rows of one file with Great Expectations (the reference of
    `check_staged_file`); returns the verdict and a JSON report."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    import great_expectations.expectations as gxe

    asset_name = f"staged_file_{int(file_id)}"
    # GX's context is not safe to share between threads; a validation takes ~0.1 s.
    with _GX_LOCK:
        source = _data_source(_gx_url(url))
        # The file id is an integer from the ledger, never user text.
        asset = source.add_query_asset(
            asset_name, query=f"select * from ingest.stage_record where ingest_file_id = {int(file_id)}"
        )
        try:
            batch = asset.add_batch_definition_whole_table("file").get_batch()
            critical, informational = _expectations(gxe, today, previous_rows)
            suite = gx.ExpectationSuite(name=asset_name, expectations=critical + informational)
            validation = batch.validate(suite, result_format="SUMMARY")
        finally:
            source.delete_asset(asset_name)

    entries = []
    for result in validation.results:
        config = result.expectation_config
        column = config.kwargs.get("column")
        entries.append(
            _entry(
                config.type + (f"({column})" if column else ""),
                result.success,
                (config.meta or {}).get("critical", True),
                *(result.result.get(key) for key in ("unexpected_count", "observed_value", "element_count")),
            )
        )
    return _verdict(entries, previous_rows)


def _entry(name: str, success: bool, critical: bool, unexpected, observed, elements) -> dict:
    return {
        "expectation": name,
        "success": success,
        "critical": critical,
        "unexpected_count": unexpected,
        "observed_value": observed,
        "element_count": elements,
    }


def _verdict(entries: list[dict], previous_rows: int | None) -> GateResult:
    failures = []
    for entry in entries:
        if entry["critical"] and not entry["success"]:
            detail = entry["unexpected_count"]
            failures.append(
                f"{entry['expectation']}: {entry['observed_value'] if detail is None else detail}"
            )
    report = {"expectations": entries, "previous_rows": previous_rows}
    return GateResult(passed=not failures, failures=tuple(failures), report=report)


_NOT_NULL = ("source_key", "record_kind")


def _gate_query() -> str:
    """One pass over the file's staged rows: the unexpected count of every column expectation."""
    counts = ["count(*) as element_count"]
    counts += [f"count(*) filter (where {column} is null) as null_{column}" for column in _NOT_NULL]
    counts += [
        f"count(*) filter (where {column} is not null and {column} !~ :regex_{column}) as regex_{column}"
        for column in REGEXES
    ]
    counts += [
        f"count(*) filter (where {column} < :low_{column} or {column} > :high_{column}) as range_{column}"
        for column in ranges(dt.date.today())
    ]
    # Two plain scans of the file's rows: materialising them once (a CTE of every column)
    # cost more than reading them twice.
    return f"""
        select {", ".join(counts)},
            (select coalesce(sum(repeats), 0)::bigint from (
                select count(*) as repeats from ingest.stage_record
                where ingest_file_id = :file_id and source_key is not null
                group by source_key having count(*) > 1
            ) as repeated) as unique_source_key
        from ingest.stage_record
        where ingest_file_id = :file_id
    """


_GATE_QUERY = _gate_query()


def check_staged_file(engine: Engine, file_id: int, previous_rows: int | None, today: dt.date) -> GateResult:
    """Validate the staged rows of one file: GX's suite in one SQL pass (see the module
    docstring); returns the verdict and the same JSON report as `check_staged_file_gx`."""
    params: dict = {"file_id": int(file_id)}
    params.update({f"regex_{column}": regex for column, regex in REGEXES.items()})
    for column, (low, high) in ranges(today).items():
        params[f"low_{column}"], params[f"high_{column}"] = low, high
    with engine.connect() as conn:
        columns = list(conn.execute(text("select * from ingest.stage_record limit 0")).keys())
        counts = conn.execute(text(_GATE_QUERY), params).one()._mapping
    rows = counts["element_count"]

    def column_entry(kind: str, name: str, column: str) -> dict:
        unexpected = counts[f"{kind}_{column}"]
        return _entry(f"{name}({column})", unexpected == 0, True, unexpected, None, rows)

    entries = [
        _entry(
            "expect_table_columns_to_match_set",
            set(columns) == set(STAGED_COLUMNS),
            True,
            None,
            columns,
            None,
        ),
        _entry("expect_table_row_count_to_be_between", rows >= 1, True, None, rows, None),
        column_entry("null", "expect_column_values_to_not_be_null", "source_key"),
        column_entry("unique", "expect_column_values_to_be_unique", "source_key"),
        column_entry("null", "expect_column_values_to_not_be_null", "record_kind"),
        *(column_entry("regex", "expect_column_values_to_match_regex", column) for column in REGEXES),
        *(column_entry("range", "expect_column_values_to_be_between", column) for column in ranges(today)),
    ]
    if previous_rows:
        # GX reports the table's expectations first.
        low = int(previous_rows * ROW_COUNT_WARNING_SHARE)
        entries.insert(
            2, _entry("expect_table_row_count_to_be_between", rows >= low, False, None, rows, None)
        )
    return _verdict(entries, previous_rows)


def check_file(
    engine: Engine, url: URL, file_id: int, previous_rows: int | None, today: dt.date
) -> GateResult:
    """The quality gate of one staged file, run by the engine KMS_QUALITY_GATE names."""
    gate = os.environ.get("KMS_QUALITY_GATE") or "great_expectations"
    if gate not in QUALITY_GATES:
        raise ConfigError(f"KMS_QUALITY_GATE must be one of {', '.join(QUALITY_GATES)}, not {gate!r}")
    if gate == "sql":
        return check_staged_file(engine, file_id, previous_rows, today)
    return check_staged_file_gx(url, file_id, previous_rows, today)
