"""The campaign database: which server, which URLs, engines and migrations."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg2
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


def admin_connection(url: URL):
    """An autocommit psycopg2 connection to the `postgres` database of `url`'s server, for
    creating and dropping databases (which cannot run inside a transaction)."""
    conn = psycopg2.connect(
        dbname="postgres",
        user=url.username,
        password=url.password,
        host=url.query.get("host") or url.host,
        port=url.port,
    )
    conn.autocommit = True
    return conn


@contextmanager
def scratch_database(server: URL, name: str, *, keep: bool = False) -> Iterator[URL]:
    """A new, empty database `name` on `server`'s server (replacing one of that name), dropped
    again afterwards unless `keep`. For benchmarks; `name` is the caller's constant."""
    conn = admin_connection(server)
    try:
        with conn.cursor() as cur:
            cur.execute(f'drop database if exists "{name}" with (force)')
            cur.execute(f'create database "{name}"')
        yield server.set(database=name)
    finally:
        if not keep:
            with conn.cursor() as cur:
                cur.execute(f'drop database if exists "{name}" with (force)')
        conn.close()
