"""Running selections safely: inside a READ ONLY transaction with a statement timeout.

A rules selection only ever compiles to a SELECT, but an SQL file is text a person wrote, so
every selection query runs the same way: `read_only()` makes the transaction read-only (an
INSERT, UPDATE, DELETE, DDL or nextval() is refused by PostgreSQL) and caps each statement.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import DBAPIError

from campaign_lib.errors import SelectionError
from campaign_lib.selection.loader import Selection
from campaign_lib.selection.tables import selected_contact
from campaign_lib.sqlfiles import queries


@contextmanager
def read_only(conn: Connection, *, timeout_s: float = 30) -> Iterator[Connection]:
    """`conn` in a READ ONLY transaction whose statements time out after `timeout_s` seconds.

    Without a transaction in progress, one is begun here and ended when the block ends
    (committed, so writes to temporary tables stay; rolled back on an error). Inside a
    transaction of the caller, that transaction becomes read-only until it ends.
    """
    sql = queries("selection.sql")
    own = None if conn.in_transaction() else conn.begin()
    try:
        conn.execute(sql["read_only"])
        conn.execute(sql["statement_timeout"], {"ms": max(1, round(timeout_s * 1000))})
        yield conn
    except BaseException:
        if own is not None:
            own.rollback()
        raise
    if own is not None:
        own.commit()


def _failed(selection: Selection, exc: DBAPIError, timeout_s: float) -> SelectionError:
    reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
    if "statement timeout" in reason:
        reason = f"ran longer than the statement timeout of {timeout_s:g} s"
    return SelectionError(f"{selection.label}: the query failed: {reason}")


def contact_ids(
    conn: Connection,
    selection: Selection,
    values: Mapping[str, object] | None = None,
    *,
    as_of: dt.datetime | None = None,
    timeout_s: float = 30,
) -> list[int]:
    """The contact ids the selection chooses, ascending, read in a read-only transaction of
    their own (`conn` must not be in a transaction). SelectionError when the query fails."""
    query = selection.query(values, as_of=as_of)
    try:
        with read_only(conn, timeout_s=timeout_s):
            return sorted(conn.execute(query).scalars())
    except DBAPIError as exc:
        raise _failed(selection, exc, timeout_s) from exc


def materialize(
    conn: Connection,
    selection: Selection,
    values: Mapping[str, object] | None = None,
    *,
    as_of: dt.datetime | None = None,
    timeout_s: float = 30,
) -> int:
    """Fill the session's temporary table `selected_contact (contact_id bigint primary key)` with
    the selection's contacts (replacing what it held) and return how many there are.

    The table is created in a transaction of its own, the query runs in a read-only one, so
    `conn` must not be in a transaction. Later statements on the same connection join it, e.g.
    the funnel's steps. SelectionError when the query fails or times out.
    """
    sql = queries("selection.sql")
    query = selection.query(values, as_of=as_of)
    with conn.begin():
        conn.execute(sql["create_selected_contact"])
        conn.execute(sql["empty_selected_contact"])
    try:
        with read_only(conn, timeout_s=timeout_s):
            conn.execute(insert(selected_contact).from_select(["contact_id"], query))
            return conn.execute(sql["count_selected_contact"]).scalar_one()
    except DBAPIError as exc:
        raise _failed(selection, exc, timeout_s) from exc


def check_selection(conn: Connection, selection: Selection, *, timeout_s: float = 30) -> None:
    """Let PostgreSQL parse and plan the selection with its default values (run with LIMIT 0, so
    no row is read): an SQL file naming a missing table or column, or not returning contact_id,
    fails here. SelectionError with the server's reason; `conn` must not be in a transaction."""
    query = selection.query()
    try:
        with read_only(conn, timeout_s=timeout_s):
            conn.execute(select(query.subquery().c.contact_id).limit(0))
    except DBAPIError as exc:
        raise _failed(selection, exc, timeout_s) from exc
