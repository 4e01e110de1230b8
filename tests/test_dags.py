"""DAG integrity: every DAG file imports cleanly and fast, follows the house rules, and runs."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from campaign_lib.config import PROJECT_ROOT

DAG_FOLDER = PROJECT_ROOT / "dags"
DAG_FILES = sorted(path for path in DAG_FOLDER.glob("*.py") if not path.name.startswith("_"))
# Modules a DAG file must not pull in at parse time: they belong inside tasks.
HEAVY_MODULES = (
    "campaign_lib",
    "connectors",
    "sqlalchemy",
    "great_expectations",
    "pandas",
    "matplotlib",
    "paramiko",
    "psycopg2",
)

# The campaign definition module is built to be read at parse time (yaml and pydantic, both
# loaded by Airflow already): the factory and the ad-hoc form read the folders with it.
PARSE_TIME_MODULES = {
    "campaign_lib",
    "campaign_lib.airflow_delivery",  # the delivery tasks of the campaign DAGs: airflow.sdk only
    "campaign_lib.errors",
    "campaign_lib.campaign",
    "campaign_lib.campaign.definition",
    "campaign_lib.campaign.settings",
}
# Holds no DAG: it reports invalid campaign definitions as its import error (ADR 0009).
REPORTING_FILES = {"kms_campaign_definitions.py"}

# Runs in a fresh interpreter so that what each DAG file imports can be seen; Airflow's
# SDK is imported first, as the DAG processor has it loaded already.
_PROBE = """
import json, runpy, sys, time
import airflow.sdk, pendulum
report = {}
for path in sys.argv[1:]:
    before = set(sys.modules)
    started = time.perf_counter()
    runpy.run_path(path)
    report[path] = {"seconds": time.perf_counter() - started,
                    "new_modules": sorted(set(sys.modules) - before)}
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAG_FOLDER))


@pytest.fixture(scope="module")
def parse_report() -> dict[str, dict]:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, *map(str, DAG_FILES)], capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_every_dag_file_imports_without_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert {dag.fileloc for dag in dagbag.dags.values()} == {
        str(path) for path in DAG_FILES if path.name not in REPORTING_FILES
    }


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda path: path.name)
def test_dag_file_parses_in_under_a_second_without_heavy_imports(parse_report, path) -> None:
    report = parse_report[str(path)]
    heavy = [
        name
        for name in report["new_modules"]
        if name.split(".")[0] in HEAVY_MODULES and name not in PARSE_TIME_MODULES
    ]
    assert heavy == [], f"{path.name} imports at parse time: {heavy}"
    # A generous bound (thin files parse in ~0.02 s): it catches a DAG file doing real
    # work at the top level, not a slow machine.
    assert report["seconds"] < 1.0


def test_dags_follow_the_house_rules(dagbag) -> None:
    for dag_id, dag in dagbag.dags.items():
        assert dag_id.startswith("kms_"), dag_id
        assert "kms" in dag.tags, dag_id
        assert dag.catchup is False, dag_id
        assert dag.start_date.tzinfo is not None and dag.start_date.utcoffset() == timedelta(0), dag_id
        assert dag.doc_md, f"{dag_id} has no documentation for the UI"
        for task in dag.tasks:
            assert task.retries >= 1, f"{dag_id}.{task.task_id} has no retries"


def test_housekeeping_purges_only_expired_quarantine(dagbag, clean_db: Engine) -> None:
    with clean_db.begin() as conn:
        file_id = conn.execute(
            text(
                "insert into ingest.file (feed, channel, name, size_bytes, content_sha256) "
                "values ('hotel_pms', 'sftp', 'PMS.csv', 1, repeat('d', 64)) returning ingest_file_id"
            )
        ).scalar_one()
        conn.execute(
            text(
                "insert into ingest.quarantine (ingest_file_id, line_number, reasons, quarantined_at) values "
                "(:f, 2, array['negative amount'], now() - interval '100 days'), "
                "(:f, 3, array['birth date in the future'], now() - interval '10 days')"
            ),
            {"f": file_id},
        )

    run = dagbag.dags["kms_housekeeping"].test(run_conf={"quarantine_retention_days": 30})

    assert run.state == "success"
    with clean_db.connect() as conn:
        kept = conn.execute(text("select line_number from ingest.quarantine")).scalars().all()
    assert kept == [3]


def test_housekeeping_refuses_an_invalid_retention(dagbag) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError):
        dagbag.dags["kms_housekeeping"].test(run_conf={"quarantine_retention_days": 0})


def test_the_privacy_dag_erases_the_person_its_form_names(dagbag, clean_db: Engine) -> None:
    with clean_db.begin() as conn:
        account = conn.execute(
            text("insert into core.account (account_type) values ('household') returning account_id")
        ).scalar_one()
        conn.execute(
            text(
                "insert into core.contact (account_id, first_name, email) values (:a, 'Anna', 'anna@example.org'); "
                "insert into core.identifier (contact_id, kind, value, source_system) "
                "select contact_id, 'email', email, 'crm' from core.contact"
            ),
            {"a": account},
        )

    run = dagbag.dags["kms_privacy"].test(
        run_conf={"email": "Anna@Example.org", "requested_by": "dpo@resort.example", "reason": "T-4711"},
    )

    assert run.state == "success"
    with clean_db.connect() as conn:
        contact = conn.execute(text("select status::text, first_name, email from core.contact")).one()
        logged = conn.execute(text("select requested_by, reason from privacy.erasure")).one()
    assert tuple(contact) == ("erased", None, None)
    assert tuple(logged) == ("dpo@resort.example", "T-4711")


def test_the_privacy_dag_fails_without_retrying_a_request_that_names_nobody(dagbag, clean_db: Engine) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError):
        dagbag.dags["kms_privacy"].test(run_conf={"email": "anna@example.org"})

    # Every identifier given as null: dag.test() keeps an earlier test's run_conf in the DAG's params.
    nobody = {"email": None, "phone": None, "contact_id": None, "requested_by": "dpo"}
    run = dagbag.dags["kms_privacy"].test(run_conf=nobody)

    # Reading the task instances first refreshes the run's state.
    [instance] = run.get_task_instances()
    assert (instance.state, instance.try_number) == ("failed", 1)
    assert run.state == "failed"
    with clean_db.connect() as conn:
        assert conn.execute(text("select count(*) from privacy.erasure")).scalar_one() == 0
