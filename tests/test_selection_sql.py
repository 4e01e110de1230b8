"""SQL-file selections, the read-only transaction and statement timeout every selection runs in,
and injection attempts: in rule values, field names, operators, parameter names and values, and
SQL files. The database must look the same after each attempt."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from campaign_lib.selection import (
    SelectionError,
    check_selection,
    contact_ids,
    load_selection,
    materialize,
    read_only,
)

AS_OF = dt.datetime(2026, 6, 15, 12, 0, tzinfo=dt.UTC)
INJECTION = "x'); drop table core.contact; --"


@pytest.fixture
def guests(clean_db: Engine) -> Engine:
    """Contacts 1 (Anna, three ratings), 2 (O'Brien, one rating) and 3 (anonymous, three ratings)."""
    with clean_db.begin() as conn:
        conn.execute(
            text(
                "insert into core.account (account_id, account_type) overriding system value values (1, 'household')"
            )
        )
        conn.execute(
            text(
                "insert into core.contact (contact_id, account_id, status, first_name, last_name) "
                "overriding system value values (1, 1, 'active', 'Anna', 'Weber'), "
                "(2, 1, 'active', 'Liam', 'O''Brien'), (3, 1, 'anonymous', null, null)"
            )
        )
        conn.execute(
            text(
                "insert into core.activity (contact_id, activity_type, source_system, source_ref, occurred_at) "
                "select contact_id, 'rating', 'website', 'R-' || contact_id || '-' || n, "
                "cast(:as_of as timestamptz) - make_interval(days => 10 * n) "
                "from (values (1, 3), (2, 1), (3, 3)) as r (contact_id, ratings), generate_series(1, ratings) as n"
            ),
            {"as_of": AS_OF},
        )
    return clean_db


def write(folder: Path, name: str, content: str | dict, suffix: str = ".sql") -> Path:
    path = folder / f"{name}{suffix}"
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
    return path


def contacts_left(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("select count(*) from core.contact")).scalar_one()


RATERS = """\
-- description: >
--   Guests who rated us at least :min_ratings times before the run.
-- params:
--   min_ratings: {type: integer, default: 2, description: ratings at least}
--   names: {type: string_list, default: [Anna, Liam]}
select contact_id
from core.activity
join core.contact using (contact_id)  -- the anonymous contact is dropped by the wrapper anyway
where activity_type = 'rating' and occurred_at <= :as_of
    and (first_name = any(:names) or first_name is null)
group by contact_id
having count(*) >= :min_ratings;
"""


def test_an_sql_selection_takes_bound_parameters_and_returns_active_contacts(
    guests: Engine, tmp_path: Path
) -> None:
    write(tmp_path, "raters", RATERS)
    selection = load_selection("raters", tmp_path)
    assert selection.kind == "sql"
    assert selection.description == "Guests who rated us at least :min_ratings times before the run."
    assert list(selection.params) == ["min_ratings", "names"]
    with guests.connect() as conn:
        assert contact_ids(conn, selection, as_of=AS_OF) == [1]
        assert contact_ids(conn, selection, {"min_ratings": "1"}, as_of=AS_OF) == [1, 2]
        assert contact_ids(conn, selection, {"min_ratings": 1, "names": ["Liam"]}, as_of=AS_OF) == [2]
        # Ratings up to as_of only: 25 days before, one of Anna's three is still to come.
        assert contact_ids(conn, selection, {"min_ratings": 3}, as_of=AS_OF - dt.timedelta(days=15)) == []


def test_a_rules_selection_can_use_an_sql_selection(guests: Engine, tmp_path: Path) -> None:
    write(tmp_path, "raters", RATERS)
    write(
        tmp_path,
        "liam_or_raters",
        {
            "description": "x",
            "rules": {
                "any": [
                    {"selection": {"name": "raters", "params": {"min_ratings": 3}}},
                    {"contact": {"first_name": "Liam"}},
                ]
            },
        },
        ".yaml",
    )
    write(
        tmp_path,
        "raters_twice",
        {"description": "x", "union": [{"name": "raters", "params": {"min_ratings": 3}}, "raters"]},
        ".yaml",
    )
    with guests.connect() as conn:
        assert contact_ids(conn, load_selection("liam_or_raters", tmp_path), as_of=AS_OF) == [1, 2]
        assert contact_ids(conn, load_selection("raters_twice", tmp_path), as_of=AS_OF) == [1]
    assert load_selection("liam_or_raters", tmp_path).runs_sql_file


ACCEPTED = [
    ("trailing-semicolon-and-comment", "select contact_id from core.contact; -- done\n"),
    ("semicolon-in-a-string", "select contact_id from core.contact where last_name <> 'a;b'"),
    ("semicolon-in-a-comment", "select contact_id /* one; two */ from core.contact"),
    ("semicolon-in-dollar-quotes", "select contact_id from core.contact where last_name <> $q$a;b$q$"),
    (
        "colon-in-a-string-is-no-parameter",
        "select contact_id from core.contact where coalesce(last_name, '') <> ':who'",
    ),
    ("casts-are-no-parameters", "select contact_id::bigint from core.contact where 1::int = 1"),
    ("with-query", "with c as (select contact_id from core.contact) select contact_id from c"),
    ("upper-case", "SELECT contact_id FROM core.contact"),
]


@pytest.mark.parametrize("body", [a[1] for a in ACCEPTED], ids=[a[0] for a in ACCEPTED])
def test_an_sql_file_of_one_query_loads_and_runs(guests: Engine, tmp_path: Path, body: str) -> None:
    write(tmp_path, "everyone", "-- description: everyone\n" + body)
    with guests.connect() as conn:
        assert contact_ids(conn, load_selection("everyone", tmp_path), as_of=AS_OF) == [1, 2]


REFUSED = [
    ("no-header", "select contact_id from core.contact", "header: must start the file with comment lines such as '-- description: ...'"),
    ("no-description", "-- params: {}\nselect contact_id from core.contact", "description: is required: one line saying who the selection finds"),
    ("unknown-header-key", "-- description: x\n-- author: me\nselect 1", "header.author: unknown key (expected: description, params)"),
    ("header-not-yaml", "-- description: [x\nselect 1", "header: is not valid YAML"),
    ("two-statements", "-- description: x\nselect contact_id from core.contact; select 1", "sql: must be one statement (found a ';' before the end)"),
    ("query-then-drop", "-- description: x\nselect contact_id from core.contact; drop table core.contact", "sql: must be one statement (found a ';' before the end)"),
    ("hidden-after-a-string", "-- description: x\nselect 'a;b' as contact_id;delete from core.contact", "sql: must be one statement (found a ';' before the end)"),
    ("delete", "-- description: x\ndelete from core.contact returning contact_id", "sql: must be a query starting with 'select' or 'with'"),
    ("insert", "-- description: x\ninsert into core.account (account_type) values ('household')", "sql: must be a query starting with 'select' or 'with'"),
    ("do-block", "-- description: x\ndo $$ begin perform 1; end $$", "sql: must be a query starting with 'select' or 'with'"),
    ("parenthesised", "-- description: x\n(select contact_id from core.contact)", "sql: must be a query starting with 'select' or 'with'"),
    ("empty", "-- description: x\n  ;\n", "sql: no statement after the header"),
    ("open-string", "-- description: x\nselect contact_id from core.contact where last_name = 'x", "sql: a quoted string or name is not closed"),
    ("open-comment", "-- description: x\nselect contact_id /* from core.contact", "sql: a /* comment */ is not closed"),
    ("undeclared-parameter", "-- description: x\nselect contact_id from core.contact where last_name = :who", "sql: uses :who, which the header does not declare (declared: none)"),
    ("unused-parameter", "-- description: x\n-- params:\n--   who: {type: string, default: x}\nselect contact_id from core.contact", "params.who: is declared but the query never uses it"),
    ("as-of-declared", "-- description: x\n-- params:\n--   as_of: {type: date}\nselect contact_id from core.contact where created_at < :as_of", "params.as_of: 'as_of' is given by every run; it cannot be declared"),
]  # fmt: skip


@pytest.mark.parametrize(("source", "problem"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_an_sql_file_that_is_not_one_query_is_refused_when_loading(
    tmp_path: Path, source: str, problem: str
) -> None:
    path = write(tmp_path, "bad", source)
    with pytest.raises(SelectionError) as error:
        load_selection("bad", tmp_path)
    assert str(error.value).startswith(f"{path}: {problem}")


# A write is stopped twice: the file's statement runs as a subquery (where PostgreSQL allows no
# data-modifying WITH and no SELECT INTO), and the transaction is read-only (functions that write).
WRITES = [
    ("data-modifying-cte", "with gone as (delete from core.contact returning contact_id) select contact_id from gone", "WITH clause containing a data-modifying statement must be at the top level"),
    ("update-in-cte", "with u as (update core.contact set first_name = 'X' returning contact_id) select contact_id from u", "WITH clause containing a data-modifying statement must be at the top level"),
    ("select-into", "select contact_id into public.stolen from core.contact", "SELECT ... INTO is not allowed here"),
    ("sequence", "select contact_id from core.contact where nextval('core.account_account_id_seq') > 0", "cannot execute nextval() in a read-only transaction"),
    ("large-object", "select contact_id from core.contact where lo_create(0) > 0", "cannot execute lo_create() in a read-only transaction"),
    ("lock-rows", "select contact_id from core.contact for update", "cannot execute SELECT FOR UPDATE in a read-only transaction"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "reason"), [w[1:] for w in WRITES], ids=[w[0] for w in WRITES])
def test_an_sql_file_that_writes_fails_in_its_read_only_transaction(
    guests: Engine, tmp_path: Path, body: str, reason: str
) -> None:
    path = write(tmp_path, "sneaky", "-- description: looks harmless\n" + body)
    selection = load_selection("sneaky", tmp_path)
    with guests.connect() as conn, pytest.raises(SelectionError) as error:
        contact_ids(conn, selection, as_of=AS_OF)
    assert str(error.value) == f"{path}: the query failed: {reason}"
    with guests.connect() as conn:
        assert conn.execute(text("select count(*), min(first_name) from core.contact")).one() == (3, "Anna")
        assert conn.execute(text("select to_regclass('public.stolen')")).scalar() is None


def test_a_slow_selection_is_stopped_by_the_statement_timeout(guests: Engine, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "slow",
        "-- description: x\nselect contact_id from core.contact where pg_sleep(2) is not null",
    )
    with guests.connect() as conn, pytest.raises(SelectionError) as error:
        contact_ids(conn, load_selection("slow", tmp_path), timeout_s=0.2)
    assert str(error.value) == f"{path}: the query failed: ran longer than the statement timeout of 0.2 s"


def test_read_only_refuses_writes_and_ends_its_own_transaction(guests: Engine) -> None:
    with guests.connect() as conn:
        with pytest.raises(DBAPIError, match="read-only transaction"), read_only(conn):
            conn.execute(text("update core.contact set first_name = 'X'"))
        assert not conn.in_transaction()
        with read_only(conn, timeout_s=1.5):
            timeout = conn.execute(text("show statement_timeout")).scalar()
            mode = conn.execute(text("show transaction_read_only")).scalar()
        assert (timeout, mode) == ("1500ms", "on")
        assert not conn.in_transaction()
        # The caller's transaction turns read-only until it ends.
        conn.execute(text("select 1"))
        with read_only(conn):
            pass
        assert conn.in_transaction()
        with pytest.raises(DBAPIError, match="read-only transaction"):
            conn.execute(text("delete from core.activity"))
        conn.rollback()
        assert conn.execute(text("show statement_timeout")).scalar() == "0"
    assert contacts_left(guests) == 3


def test_materialize_fills_the_session_s_table_and_replaces_its_rows(guests: Engine, tmp_path: Path) -> None:
    write(tmp_path, "raters", RATERS)
    selection = load_selection("raters", tmp_path)
    with guests.connect() as conn:
        assert materialize(conn, selection, {"min_ratings": 1}, as_of=AS_OF) == 2
        assert conn.execute(
            text("select array_agg(contact_id order by contact_id) from selected_contact")
        ).scalar() == [1, 2]
        conn.commit()
        assert materialize(conn, selection, as_of=AS_OF) == 1
        assert conn.execute(text("select array_agg(contact_id) from selected_contact")).scalar() == [1]


def test_check_selection_reports_what_postgresql_refuses(guests: Engine, tmp_path: Path) -> None:
    write(tmp_path, "raters", RATERS)
    path = write(tmp_path, "no_id", "-- description: x\nselect account_id from core.account")
    missing = write(tmp_path, "missing", "-- description: x\nselect contact_id from core.guest")
    with guests.connect() as conn:
        check_selection(conn, load_selection("raters", tmp_path))
        with pytest.raises(
            SelectionError, match=f"^{path}: the query failed: column sql_file.contact_id does not exist"
        ):
            check_selection(conn, load_selection("no_id", tmp_path))
        with pytest.raises(
            SelectionError, match=f'^{missing}: the query failed: relation "core.guest" does not exist'
        ):
            check_selection(conn, load_selection("missing", tmp_path))


def rules_file(folder: Path, condition: dict, params: dict | None = None) -> None:
    write(folder, "attempt", {"description": "x", "params": params or {}, "rules": condition}, ".yaml")


VALUE_INJECTIONS = [
    ("text-value", {"contact": {"last_name": INJECTION}}),
    ("quote-value", {"contact": {"last_name": {"in": ["Weber' or '1'='1", "O'Brien' --"]}}}),
    ("like-value", {"contact": {"last_name": {"contains": "%' or 1=1 --"}}}),
    ("outlet", {"activity": {"outlet": "x' or '1'='1"}}),
    ("sku", {"bought": {"sku": "x') or true or ('"}}),
]


@pytest.mark.parametrize("condition", [v[1] for v in VALUE_INJECTIONS], ids=[v[0] for v in VALUE_INJECTIONS])
def test_sql_in_a_rule_value_is_only_ever_a_value(guests: Engine, tmp_path: Path, condition: dict) -> None:
    rules_file(tmp_path, condition)
    selection = load_selection("attempt", tmp_path)
    with guests.connect() as conn:
        assert contact_ids(conn, selection, as_of=AS_OF) == []
    assert "drop table" not in str(selection.query(as_of=AS_OF).compile())
    assert contacts_left(guests) == 3


NAME_INJECTIONS = [
    ("field", {"contact": {"last_name = last_name or 1=1 --": {"eq": "x"}}}, None, "unknown contact field"),
    ("operator", {"contact": {"last_name": {"eq) or (1=1": "x"}}}, None, "unknown operator"),
    ("condition", {"contact; drop table core.contact": {"x": 1}}, None, "unknown condition"),
    ("activity-key", {"activity": {"type = type or 1=1 --": "x"}}, None, "unknown key"),
    ("activity-type", {"activity": {"type": "hotel_stay') or ('1'='1"}}, None, "unknown value"),
    ("parameter-name", {"contact": {"last_name": {"param": "x; drop table core.contact"}}}, None, "unknown parameter"),
    ("declared-parameter-name", {"contact": {"last_name": {"param": "x"}}}, {"x; drop": {"type": "string"}}, "is not a parameter name"),
    ("selection-name", {"selection": "x; drop table core.contact"}, None, "is not a selection name"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("condition", "params", "problem"), [n[1:] for n in NAME_INJECTIONS], ids=[n[0] for n in NAME_INJECTIONS]
)
def test_sql_in_a_name_is_refused_when_loading(
    tmp_path: Path, condition: dict, params: dict | None, problem: str
) -> None:
    rules_file(tmp_path, condition, params)
    with pytest.raises(SelectionError, match=problem):
        load_selection("attempt", tmp_path)


def test_sql_in_a_parameter_value_is_only_ever_a_value(guests: Engine, tmp_path: Path) -> None:
    rules_file(
        tmp_path,
        {
            "any": [
                {"contact": {"last_name": {"param": "name"}}},
                {"activity": {"outlet": {"param": "outlets"}}},
            ]
        },
        {
            "name": {"type": "string", "default": "Weber"},
            "outlets": {"type": "string_list", "default": ["x"]},
        },
    )
    write(
        tmp_path,
        "by_name",
        "-- description: x\n-- params:\n--   name: {type: string, default: x}\n"
        "select contact_id from core.contact where last_name = :name",
    )
    values = {"name": INJECTION, "outlets": f"a,{INJECTION}"}
    with guests.connect() as conn:
        assert contact_ids(conn, load_selection("attempt", tmp_path), values, as_of=AS_OF) == []
        assert (
            contact_ids(conn, load_selection("by_name", tmp_path), {"name": "x' or '1'='1"}, as_of=AS_OF)
            == []
        )
        assert contact_ids(conn, load_selection("by_name", tmp_path), {"name": "O'Brien"}, as_of=AS_OF) == [2]
    with pytest.raises(SelectionError, match=r"params\.x; drop table core\.contact: unknown parameter"):
        load_selection("by_name", tmp_path).bind({"x; drop table core.contact": 1})
    assert contacts_left(guests) == 3
