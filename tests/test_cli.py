"""The `kms` command line, run as a user runs it: a process with an environment."""

from __future__ import annotations

import json
import os
import smtplib
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from campaign_lib.airflow_runtime import LOCAL_SFTP_USER
from campaign_lib.db.migrate import head_revision
from campaign_lib.local_servers.sftp import known_hosts_line, persistent_host_key
from connectors.sftp import SftpSettings, SftpSource

KMS = str(Path(sys.executable).parent / "kms")


def kms(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([KMS, *args], env=env, capture_output=True, text=True, timeout=timeout)


def embedded_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a fresh checkout: no database URL, its own kms home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KMS_", "AIRFLOW"))}
    env.update(KMS_HOME=str(home), **extra)
    return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def assert_one_line_error(result: subprocess.CompletedProcess, exit_code: int, *fragments: str) -> None:
    assert result.returncode == exit_code, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        pytest.param(["frobnicate"], "invalid choice", id="unknown-command"),
        pytest.param(["db"], "required", id="db-without-subcommand"),
        pytest.param(["db", "drop"], "invalid choice", id="unknown-db-subcommand"),
        pytest.param(["generate", "--guests", "many", "--out", "x"], "invalid int", id="guests-not-a-number"),
        pytest.param(["generate", "--out", "x"], "--guests", id="guests-missing"),
    ],
)
def test_usage_errors_exit_2_with_one_line(args: list[str], fragment: str) -> None:
    assert_one_line_error(kms(*args), 2, fragment)


@pytest.mark.parametrize(
    ("command", "variables", "fragment"),
    [
        pytest.param(
            ["db", "status"],
            {"KMS_DATABASE_URL": "postgresql://kms@127.0.0.1:1/kms"},
            "cannot connect to postgresql+psycopg2://kms@127.0.0.1:1/kms",
            id="unreachable-database-url",
        ),
        pytest.param(
            ["db", "upgrade"],
            {"KMS_DATABASE_URL": "postgresql://kms:s3cret@127.0.0.1:1/kms"},
            "kms:***@127.0.0.1:1",
            id="password-masked-in-error",
        ),
        pytest.param(
            ["db", "start"],
            {"KMS_DATABASE_URL": "mysql://kms@localhost/kms"},
            "must point at PostgreSQL",
            id="database-url-not-postgresql",
        ),
        pytest.param(
            ["db", "start"],
            {"KMS_DATABASE_URL": "not a url"},
            "not a database URL",
            id="database-url-garbage",
        ),
        pytest.param(
            ["up"], {"KMS_AIRFLOW_PORT": "99999"}, "TCP port number", id="airflow-port-out-of-range"
        ),
    ],
)
def test_configuration_errors_exit_1_with_one_line(
    tmp_path: Path, command: list[str], variables: dict[str, str], fragment: str
) -> None:
    result = kms(*command, env=embedded_env(tmp_path, **variables))
    assert_one_line_error(result, 1, fragment)
    assert "s3cret" not in result.stderr


def test_data_directory_that_is_not_postgresql_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "not-pgdata"
    junk.mkdir()
    (junk / "holiday-photos.txt").write_text("not a database")
    result = kms("db", "start", env=embedded_env(tmp_path, KMS_PGDATA=str(junk)))
    assert_one_line_error(result, 1, "is not a PostgreSQL data directory")
    assert sorted(p.name for p in junk.iterdir()) == ["holiday-photos.txt"]


def test_airflow_port_in_use_is_refused(tmp_path: Path) -> None:
    with socket.socket() as occupant:
        occupant.bind(("127.0.0.1", 0))
        occupant.listen()
        port = occupant.getsockname()[1]
        result = kms("up", env=embedded_env(tmp_path, KMS_AIRFLOW_PORT=str(port)))
    assert_one_line_error(result, 1, f"port {port}", "in use", "KMS_AIRFLOW_PORT")


def test_generate_refuses_zero_guests(tmp_path: Path) -> None:
    result = kms("generate", "--guests", "0", "--out", str(tmp_path / "drop"))
    assert_one_line_error(result, 1, "guests")


def test_embedded_database_lifecycle(tmp_path: Path) -> None:
    """start initialises and starts, a second start reuses, upgrade migrates, stop stops."""
    env = embedded_env(tmp_path)
    try:
        first = kms("db", "start", env=env)
        assert first.returncode == 0, first.stderr
        running = kms("db", "status", env=env)
        assert "running" in running.stdout
        assert "schema revision: none" in running.stdout
        pid = running.stdout.split("pid ")[1].split(",")[0]

        again = kms("db", "start", env=env)
        assert again.returncode == 0, again.stderr
        assert f"pid {pid}," in kms("db", "status", env=env).stdout

        head = head_revision()
        assert kms("db", "upgrade", env=env).stdout.strip() == f"schema at revision {head} (was empty)"
        assert kms("db", "upgrade", env=env).stdout.strip() == f"schema at revision {head}"
        assert "up to date" in kms("db", "status", env=env).stdout
    finally:
        stopped = kms("db", "stop", env=env)
    assert stopped.stdout.strip() == "stopped"
    assert "stopped" in kms("db", "status", env=env).stdout
    assert kms("db", "stop", env=env).stdout.strip() == "not running"


def test_db_commands_on_an_external_server() -> None:
    """With KMS_DATABASE_URL set (here: the tests' own database) kms migrates, never starts."""
    status = kms("db", "status")
    assert status.returncode == 0, status.stderr
    assert "external PostgreSQL: reachable" in status.stdout
    assert "up to date" in status.stdout
    assert kms("db", "stop").stdout.strip() == "KMS_DATABASE_URL is set: kms does not manage that server"


def _api_get(base: str, path: str, token: str) -> dict:
    request = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def _token(base: str, user: str, password: str) -> str:
    request = urllib.request.Request(
        base + "/auth/token",
        data=json.dumps({"username": user, "password": password}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["access_token"]


def test_up_serves_the_airflow_ui_with_the_project_dags(tmp_path: Path) -> None:
    """`kms up` on the tests' own databases: the UI answers, lists kms DAGs; `kms down` stops it."""
    port, sftp_port, smtp_port, providers_port = free_port(), free_port(), free_port(), free_port()
    env = dict(
        os.environ,
        KMS_HOME=str(tmp_path),
        KMS_AIRFLOW_PORT=str(port),
        KMS_SFTP_PORT=str(sftp_port),
        KMS_SMTP_PORT=str(smtp_port),
        KMS_PROVIDERS_PORT=str(providers_port),
        # The tests name their database (KMS_DATABASE_URL), as production does: then the
        # tracking secret must be given too.
        KMS_TRACKING_SECRET="t" * 32,
        KMS_TRACKING_SMS_AUTH_TOKEN="s" * 32,
    )
    try:
        up = kms("up", env=env, timeout=420)
        assert up.returncode == 0, up.stderr
        assert f"Airflow UI: http://127.0.0.1:{port}" in up.stdout
        password = up.stdout.split("login:")[1].split("/")[1].split()[0]
        base = f"http://127.0.0.1:{port}"
        token = _token(base, "admin", password)
        deadline = time.monotonic() + 180
        dag_ids: set[str] = set()
        while time.monotonic() < deadline and "kms_housekeeping" not in dag_ids:
            dag_ids = {dag["dag_id"] for dag in _api_get(base, "/api/v2/dags", token)["dags"]}
            time.sleep(2)
        assert "kms_housekeeping" in dag_ids
        assert _api_get(base, "/api/v2/importErrors", token)["total_entries"] == 0
        # The kms plugin mounts the ingest API inside Airflow's API server.
        with urllib.request.urlopen(base + "/kms/api/v1/health", timeout=10) as health:
            assert health.status == 200
        status = kms("status", env=env).stdout
        for component in ("api-server", "sftp-server", "smtp-server", "provider-emulators"):
            assert f"{component:18} running" in status
        # The delivery connections point at the local SMTP server and provider emulators.
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as smtp:
            assert smtp.noop()[0] == 250
        with urllib.request.urlopen(
            f"http://127.0.0.1:{providers_port}/_emulator/messages?provider=sms", timeout=10
        ) as listing:
            assert listing.status == 200
        # The local drop server answers with the host key the kms_sftp connection names.
        secrets_file = json.loads((tmp_path / "secrets.json").read_text())
        drop_server = SftpSettings(
            host="127.0.0.1",
            port=sftp_port,
            username=LOCAL_SFTP_USER,
            password=secrets_file["sftp_password"],
            known_hosts=known_hosts_line(persistent_host_key(tmp_path / "sftp_host_key"), sftp_port),
        )
        with SftpSource(drop_server) as source:
            assert source.list_complete(".", "*", "part_rename") == []
    finally:
        down = kms("down", env=env, timeout=120)
    assert down.returncode == 0, down.stderr
    assert "api-server" in down.stdout
    assert "sftp-server" in down.stdout
    assert "provider-emulators" in down.stdout
    assert "Airflow was not running" in kms("down", env=env).stdout
