"""Where kms keeps its state and which database it talks to.

Every setting comes from the environment, with a default that works on a fresh
clone: the embedded PostgreSQL under `.kms/` in the project folder. The settings are
listed in docs/configuration.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from campaign_lib.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    """The settings of one kms process, read once from the environment."""

    home: Path
    database_url: URL | None
    airflow_database_url: URL | None
    pgdata: Path
    airflow_port: int
    sftp_port: int

    @property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    @property
    def sftp_root(self) -> Path:
        """The drop folders served by the local SFTP server (`kms up`, `make demo`)."""
        return self.home / "sftp"

    @property
    def uses_embedded_database(self) -> bool:
        return self.database_url is None


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Read the settings from `environ` (default: the process environment)."""
    env = os.environ if environ is None else environ
    home = Path(env.get("KMS_HOME") or PROJECT_ROOT / ".kms").resolve()
    return Settings(
        home=home,
        database_url=_database_url(env.get("KMS_DATABASE_URL"), "KMS_DATABASE_URL"),
        airflow_database_url=_database_url(env.get("KMS_AIRFLOW_DATABASE_URL"), "KMS_AIRFLOW_DATABASE_URL"),
        pgdata=Path(env.get("KMS_PGDATA") or home / "pgdata").resolve(),
        airflow_port=_port(env.get("KMS_AIRFLOW_PORT", "8080"), "KMS_AIRFLOW_PORT"),
        sftp_port=_port(env.get("KMS_SFTP_PORT", "2222"), "KMS_SFTP_PORT"),
    )


def _database_url(raw: str | None, name: str) -> URL | None:
    if not raw:
        return None
    try:
        url = make_url(raw)
    except ArgumentError as exc:
        raise ConfigError(f"{name} is not a database URL: {exc}") from exc
    if url.get_backend_name() != "postgresql":
        raise ConfigError(f"{name} must point at PostgreSQL, not {url.get_backend_name()}")
    return url.set(drivername="postgresql+psycopg2")


def _port(raw: str, name: str) -> int:
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ConfigError(f"{name} must be a TCP port number between 1 and 65535, not {raw!r}")
    return int(raw)
