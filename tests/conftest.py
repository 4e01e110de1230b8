"""Test set-up: real PostgreSQL, and Airflow pointed at databases of the tests' own.

Before any test module imports Airflow, this file starts (or reuses) the embedded
PostgreSQL of the checkout, or uses KMS_DATABASE_URL's server, and creates two
databases for this pytest process only: `kms_test_<pid>` (the campaign schema,
migrated) and `airflow_test_<pid>` (a copy of a migrated Airflow metadata template,
0.1 s instead of the 6 s of `airflow db migrate`). The demo's databases are never
touched. Databases of test processes that died are dropped at the next start.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL, Engine

from campaign_lib.airflow_runtime import airflow_command, airflow_environment
from campaign_lib.config import load_settings
from campaign_lib.db import Databases, admin_connection, make_engine, open_databases
from campaign_lib.db.migrate import upgrade

pytest_plugins = ("outbox_runs", "servers_airflow", "servers_providers", "servers_smtp", "servers_tracking")

PID = os.getpid()
_TEMPLATE_LOCK_KEY = 0x6B6D7302


def _database_exists(cur, name: str) -> bool:
    cur.execute("select 1 from pg_database where datname = %s", (name,))
    return cur.fetchone() is not None


def _drop_stale_test_databases(cur) -> None:
    cur.execute("select datname from pg_database where datname ~ '^(kms|airflow)_test_[0-9]+$'")
    for (name,) in cur.fetchall():
        pid = int(name.rsplit("_", 1)[1])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            cur.execute(f'drop database if exists "{name}" with (force)')


def _airflow_template(cur, server: Databases, env: dict[str, str]) -> str:
    """A migrated Airflow metadata database to copy, built once per Airflow version."""
    from importlib.metadata import version

    name = "airflow_test_template_" + version("apache-airflow").replace(".", "_")
    cur.execute("select pg_advisory_lock(%s)", (_TEMPLATE_LOCK_KEY,))
    try:
        if not _database_exists(cur, name):
            cur.execute(f'create database "{name}_building"')
            build_env = dict(env)
            build_env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = server.kms.set(
                database=f"{name}_building"
            ).render_as_string(hide_password=False)
            result = subprocess.run(
                airflow_command("db", "migrate"), env=build_env, capture_output=True, text=True
            )
            if result.returncode != 0:
                cur.execute(f'drop database "{name}_building" with (force)')
                raise RuntimeError(
                    f"airflow db migrate of the test template failed:\n{result.stdout[-3000:]}"
                )
            cur.execute(f'alter database "{name}_building" rename to "{name}"')
    finally:
        cur.execute("select pg_advisory_unlock(%s)", (_TEMPLATE_LOCK_KEY,))
    return name


def _prepare_test_databases() -> tuple[Databases, Path]:
    settings = load_settings()
    server = open_databases(settings)
    test = Databases(
        kms=server.kms.set(database=f"kms_test_{PID}"), airflow=server.kms.set(database=f"airflow_test_{PID}")
    )
    home = Path(tempfile.mkdtemp(prefix="kms-test-home-"))
    test_settings = replace(settings, home=home, database_url=test.kms, airflow_database_url=test.airflow)
    env = airflow_environment(test_settings, test)

    conn = admin_connection(server.kms)
    try:
        with conn.cursor() as cur:
            _drop_stale_test_databases(cur)
            template = _airflow_template(cur, server, env)
            cur.execute(f'drop database if exists "kms_test_{PID}" with (force)')
            cur.execute(f'drop database if exists "airflow_test_{PID}" with (force)')
            cur.execute(f'create database "kms_test_{PID}"')
            cur.execute(f'create database "airflow_test_{PID}" template "{template}"')
    finally:
        conn.close()

    engine = make_engine(test.kms)
    try:
        upgrade(engine)
    finally:
        engine.dispose()

    # Airflow reads its configuration when first imported: set it before any test does.
    for key in (
        "AIRFLOW_HOME",
        "AIRFLOW_CONFIG",
        "AIRFLOW__CORE__DAGS_FOLDER",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__API__SECRET_KEY",
        "AIRFLOW_CONN_KMS_DB",
        "GX_ANALYTICS_ENABLED",
    ):
        os.environ[key] = env[key]
    os.environ["KMS_HOME"] = str(home)
    os.environ["KMS_DATABASE_URL"] = test.kms.render_as_string(hide_password=False)
    os.environ["KMS_AIRFLOW_DATABASE_URL"] = test.airflow.render_as_string(hide_password=False)
    return server, home


SERVER, TEST_HOME = _prepare_test_databases()


def pytest_unconfigure(config: pytest.Config) -> None:
    if "airflow.settings" in sys.modules:
        # Close Airflow's pooled connections before their database is dropped.
        sys.modules["airflow.settings"].dispose_orm()
    conn = admin_connection(SERVER.kms)
    try:
        with conn.cursor() as cur:
            cur.execute(f'drop database if exists "kms_test_{PID}" with (force)')
            cur.execute(f'drop database if exists "airflow_test_{PID}" with (force)')
    finally:
        conn.close()


@pytest.fixture(scope="session")
def kms_url() -> URL:
    """URL of this test process's own campaign database (migrated to head)."""
    from sqlalchemy.engine import make_url

    return make_url(os.environ["KMS_DATABASE_URL"])


@pytest.fixture(scope="session")
def engine(kms_url: URL) -> Iterator[Engine]:
    """An engine on the test campaign database."""
    engine = make_engine(kms_url)
    yield engine
    engine.dispose()


@pytest.fixture
def clean_db(engine: Engine) -> Engine:
    """The test campaign database with every core and ingest row removed (lookups kept)."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "truncate core.account, core.location, core.contact, core.identifier, core.activity, "
                "core.inquiry, core.consent, core.product, ingest.file, ingest.quarantine, ingest.record, "
                "ingest.record_pending, ingest.record_contact, campaign.campaign, campaign.campaign_run, "
                "campaign.waterfall_step, campaign.audience, campaign.suppression, campaign.contact_history, "
                "privacy.erasure, privacy.erased_identifier restart identity cascade"
            )
        )
    return engine
