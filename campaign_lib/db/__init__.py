"""The campaign database: which server, which URLs, engines and migrations."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from campaign_lib.config import Settings
from campaign_lib.db.server import EmbeddedPostgres
from campaign_lib.errors import DatabaseError


@dataclass(frozen=True)
class Databases:
    """The two databases kms uses: the campaign database and Airflow's metadata."""

    kms: URL
    airflow: URL


def embedded_server(settings: Settings) -> EmbeddedPostgres:
    """The embedded server of these settings (whether or not it runs)."""
    return EmbeddedPostgres(settings.pgdata)


def open_databases(settings: Settings) -> Databases:
    """URLs of both databases, ready to connect to.

    With KMS_DATABASE_URL set, that server must answer; kms never starts one then.
    Otherwise the embedded server is started (or reused) with both databases created.
    Airflow's metadata lives in the database `airflow` of the same server unless
    KMS_AIRFLOW_DATABASE_URL names another.
    """
    if settings.database_url is not None:
        url = settings.database_url
        check_reachable(url)
        databases = Databases(kms=url, airflow=url.set(database="airflow"))
    else:
        server = embedded_server(settings)
        server.start()
        databases = Databases(kms=server.url("kms"), airflow=server.url("airflow"))
    if settings.airflow_database_url is not None:
        databases = Databases(kms=databases.kms, airflow=settings.airflow_database_url)
    return databases


def make_engine(url: URL, **kwargs) -> Engine:
    """A SQLAlchemy engine whose pooled connections are checked before use, so a
    restarted database costs a reconnect rather than a failed task."""
    return create_engine(url, pool_pre_ping=True, **kwargs)


def check_reachable(url: URL) -> None:
    """Raise DatabaseError with the server's own reason when `url` does not answer."""
    engine = make_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
    except DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseError(f"cannot connect to {display_url(url)}: {reason}") from exc
    finally:
        engine.dispose()


def display_url(url: URL) -> str:
    """The URL with its password masked, fit for messages and logs."""
    return url.render_as_string(hide_password=True)
