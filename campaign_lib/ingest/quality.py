"""The data-quality gate: Great Expectations on a file's staged, standardised rows.

The parser already rejects bad rows one by one; this gate checks the contract of the
whole staged file before anything is merged: the staged schema, keys present and
unique within the file, formats and ranges of standardised values, and the row count
against the previous load of the same feed. A failed critical expectation quarantines
the whole file. Great Expectations takes 5-7 s to import, so it is imported here, at
call time, and never by a DAG file.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from dataclasses import dataclass
from functools import cache

from sqlalchemy.engine import URL

from campaign_lib.ingest.record import RECORD_COLUMNS

STAGED_COLUMNS = (*RECORD_COLUMNS, "feed", "ingest_file_id")
# A row count this far below the previous load of a non-snapshot feed is reported,
# not refused: monthly exports vary with the season.
ROW_COUNT_WARNING_SHARE = 0.2
_GX_LOCK = threading.Lock()


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


def _expectations(gxe, today: dt.date, previous_rows: int | None):
    critical = [
        gxe.ExpectTableColumnsToMatchSet(column_set=list(STAGED_COLUMNS), exact_match=True),
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectColumnValuesToNotBeNull(column="source_key"),
        gxe.ExpectColumnValuesToBeUnique(column="source_key"),
        gxe.ExpectColumnValuesToNotBeNull(column="record_kind"),
        gxe.ExpectColumnValuesToMatchRegex(column="email", regex=r"^[^@\s]+@[^@\s]+\.[^@\s]+$"),
        gxe.ExpectColumnValuesToMatchRegex(column="phone_e164", regex=r"^\+[1-9][0-9]{6,14}$"),
        gxe.ExpectColumnValuesToMatchRegex(column="country_code", regex=r"^[A-Z]{2}$"),
        gxe.ExpectColumnValuesToMatchRegex(column="currency", regex=r"^[A-Z]{3}$"),
        gxe.ExpectColumnValuesToBeBetween(column="amount_cents", min_value=0, max_value=100_000_000),
        gxe.ExpectColumnValuesToBeBetween(
            column="birth_date", min_value=dt.date(1900, 1, 2).isoformat(), max_value=today.isoformat()
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="occurred_at",
            min_value="2000-01-01T00:00:00+00:00",
            max_value=(today + dt.timedelta(days=800)).isoformat() + "T00:00:00+00:00",
        ),
        gxe.ExpectColumnValuesToBeBetween(column="quantity", min_value=1, max_value=100_000),
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


def check_staged_file(url: URL, file_id: int, previous_rows: int | None, today: dt.date) -> GateResult:
    """Validate the staged rows of one file; returns the verdict and a JSON report."""
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

    failures, entries = [], []
    for result in validation.results:
        config = result.expectation_config
        column = config.kwargs.get("column")
        name = config.type + (f"({column})" if column else "")
        counts = {
            key: result.result.get(key) for key in ("unexpected_count", "observed_value", "element_count")
        }
        is_critical = (config.meta or {}).get("critical", True)
        entries.append({"expectation": name, "success": result.success, "critical": is_critical, **counts})
        if is_critical and not result.success:
            detail = counts["unexpected_count"]
            failures.append(f"{name}: {counts['observed_value'] if detail is None else detail}")
    report = {"expectations": entries, "previous_rows": previous_rows}
    return GateResult(passed=not failures, failures=tuple(failures), report=report)
