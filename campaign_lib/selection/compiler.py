"""Selections compiled to SQLAlchemy Core: the shapes PostgreSQL plans well.

Every value is a bound parameter (literal() or an expanding IN), never SQL text. Windows and
ages are turned into constant bounds here (an `as_of` minus N days, a birth date cut-off), so
the planner compares plain columns with constants and can use the indexes:

- an activity condition that only asks "at least once" is `EXISTS (... where contact_id =
  c.contact_id and activity_type in (...) and occurred_at >= ...)`, an index-only probe of
  (contact_id, activity_type, occurred_at) include (amount_cents, product_id) per contact, or,
  when the planner prefers, a semi join over (activity_type, occurred_at) include (contact_id);
- counts and sums are one `GROUP BY contact_id HAVING ...` over the matching activities, joined
  back with EXISTS over the grouped rows (PostgreSQL turns EXISTS into a semi or anti join only
  when the subquery itself has no GROUP BY, hence the derived table);
- "not" of either is NOT EXISTS, an anti join, never NOT IN.
- `household: X` is EXISTS over the other active members of the account; `not X` beside
  `not household X` in one `all` is a single NOT EXISTS over all active members (_Compiler.all_of).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    Integer,
    Select,
    Text,
    and_,
    bindparam,
    column,
    except_,
    exists,
    func,
    intersect,
    literal,
    not_,
    or_,
    select,
    text,
    true,
    tuple_,
    union,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql.elements import ColumnElement

from campaign_lib.errors import SelectionError
from campaign_lib.selection import language as lang
from campaign_lib.selection.sqlfile import AS_OF
from campaign_lib.selection.tables import account, activity, consent, contact, location, product

_ACTIVITY_COLUMNS = {
    "type": "activity_type",
    "source_system": "source_system",
    "outlet": "outlet",
    "currency": "currency",
}
_BIND_TYPES = {
    "integer": BigInteger(),
    "number": Float(),
    "string": Text(),
    "date": Date(),
    "boolean": Boolean(),
    "string_list": ARRAY(Text()),
}


def compile_selection(selection: Any, bound: Mapping[str, Any], as_of: dt.datetime) -> Select:
    """The query of `selection` (a loader.Selection) with its parameters `bound`."""
    if selection.kind == "sql":
        return _sql_file(selection, bound, as_of)
    if isinstance(selection.condition, lang.SetOperation):
        return _set_operation(selection, selection.condition, bound, as_of)
    c = contact.alias("c")
    where = _Compiler(selection, bound, as_of).condition(selection.condition, c)
    return select(c.c.contact_id).where(c.c.status == "active", where)


def _sql_file(selection: Any, bound: Mapping[str, Any], as_of: dt.datetime) -> Select:
    values = {**bound, AS_OF: as_of}
    types = {name: spec.type for name, spec in selection.params.items()}
    params = [
        bindparam(
            name,
            values[name],
            type_=DateTime(timezone=True) if name == AS_OF else _BIND_TYPES[types[name]],
            # The same file may appear twice in one statement with other values.
            unique=True,
        )
        for name in sorted(selection.sql.params)
    ]
    chosen = (
        text(selection.sql.text)
        .bindparams(*params)
        .columns(column("contact_id", BigInteger))
        .subquery("sql_file")
    )
    c = contact.alias("c")
    return select(c.c.contact_id).where(
        c.c.status == "active",
        exists(select(1).select_from(chosen).where(chosen.c.contact_id == c.c.contact_id)),
    )


def _reference_query(
    reference: lang.Reference, selection: Any, bound: Mapping[str, Any], as_of: dt.datetime
) -> Select:
    target = selection.references[reference.name]
    values = {name: value.resolve(bound) for name, value in reference.arguments.items()}
    try:
        return compile_selection(target, target.bind(values), as_of)
    except lang.Problem as problem:
        # A value this selection passed does not fit there: name the file where it failed.
        raise SelectionError(f"{target.label}: {problem}") from None


def _set_operation(
    selection: Any, operation: lang.SetOperation, bound: Mapping[str, Any], as_of: dt.datetime
) -> Select:
    queries = [_reference_query(ref, selection, bound, as_of) for ref in operation.references]
    if operation.kind == "union":
        combined = union(*queries)
    elif operation.kind == "intersection":
        combined = intersect(*queries)
    else:
        rest = queries[1:]
        combined = except_(queries[0], rest[0] if len(rest) == 1 else union(*rest))
    chosen = combined.subquery(operation.kind)
    return select(chosen.c.contact_id)


# Conditions that compile to EXISTS or NOT EXISTS, so they are true or false, never NULL.
_NEVER_NULL = (lang.Activity, lang.Consent, lang.Member)


def _shape(node: Any) -> Any:
    """`node` as nested tuples without the `path` fields (where it was written): two conditions
    written in different places have the same shape when they ask the same."""
    if dataclasses.is_dataclass(node):
        return (
            type(node),
            *((f.name, _shape(getattr(node, f.name))) for f in dataclasses.fields(node) if f.name != "path"),
        )
    if isinstance(node, Mapping):
        return tuple((key, _shape(node[key])) for key in sorted(node))
    if isinstance(node, tuple | list):
        return tuple(_shape(item) for item in node)
    return node


def _years_before(day: dt.date, years: int) -> dt.date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February in a year without one
        return day.replace(year=day.year - years, day=28)


class _Compiler:
    def __init__(self, selection: Any, bound: Mapping[str, Any], as_of: dt.datetime) -> None:
        self.selection = selection
        self.bound = bound
        self.as_of = as_of

    def value(self, value: lang.Value) -> Any:
        return value.resolve(self.bound)

    def condition(self, node: Any, c) -> ColumnElement[bool]:
        if isinstance(node, lang.AllOf):
            return and_(*self.all_of(node.children, c))
        if isinstance(node, lang.AnyOf):
            return or_(*(self.condition(child, c) for child in node.children))
        if isinstance(node, lang.Not):
            return not_(self.condition(node.child, c))
        if isinstance(node, lang.Attribute):
            return self.attribute(node, c)
        if isinstance(node, lang.Activity):
            return self.activity(node, c)
        if isinstance(node, lang.Consent):
            return self.consent(node, c)
        if isinstance(node, lang.Household):
            return self.household(node.child, c, others_only=True)
        if isinstance(node, lang.Member):
            chosen = _reference_query(node.reference, self.selection, self.bound, self.as_of).subquery()
            return exists(select(1).select_from(chosen).where(chosen.c.contact_id == c.c.contact_id))
        raise TypeError(f"not a condition: {node!r}")

    def household(self, node: Any, c, *, others_only: bool) -> ColumnElement[bool]:
        """EXISTS an active member of c's account (other than c when `others_only`) for whom
        `node` holds."""
        member = contact.alias()
        wanted = [member.c.account_id == c.c.account_id, member.c.status == "active"]
        if others_only:
            wanted.append(member.c.contact_id != c.c.contact_id)
        return exists(select(1).select_from(member).where(*wanted, self.condition(node, member)))

    def all_of(self, children: tuple, c) -> list[ColumnElement[bool]]:
        """The conditions of an `all`, where `not X` next to `not household X` (X an activity,
        consent or member condition) become one `not (anyone of the household has X)`.

        c is always active (the selection's contacts and household members are), so "neither c
        nor another active member" is "no active member": one anti join over the accounts that
        have such a member, instead of reading X's rows twice and joining c's account with a
        filter `member <> c`. Only conditions that compile to EXISTS (never NULL) qualify: for
        one that can be NULL, `not X` drops c where "nobody has X" would keep it.
        """
        own = {
            i: _shape(child.child)
            for i, child in enumerate(children)
            if isinstance(child, lang.Not) and isinstance(child.child, _NEVER_NULL)
        }
        twins: dict[int, int] = {}  # position of `not household X` -> position of its `not X`
        for i, child in enumerate(children):
            if (
                isinstance(child, lang.Not)
                and isinstance(child.child, lang.Household)
                and isinstance(child.child.child, _NEVER_NULL)
            ):
                shape = _shape(child.child.child)
                twin = next((j for j, s in own.items() if s == shape and j not in twins.values()), None)
                if twin is not None:
                    twins[i] = twin
        return [
            not_(self.household(child.child.child, c, others_only=False))
            if i in twins
            else self.condition(child, c)
            for i, child in enumerate(children)
            if i not in twins.values()
        ]

    # The ledger's latest entry per contact, channel and purpose is the one no later entry
    # supersedes: an anti join over the index (contact_id, channel, purpose, recorded_at desc,
    # consent_id desc), instead of core.current_consent's DISTINCT ON over the whole ledger.
    def consent(self, node: lang.Consent, c) -> ColumnElement[bool]:
        entry, later = consent.alias(), consent.alias()
        superseded = exists(
            select(1)
            .select_from(later)
            .where(
                later.c.contact_id == entry.c.contact_id,
                later.c.channel == entry.c.channel,
                later.c.purpose == entry.c.purpose,
                tuple_(later.c.recorded_at, later.c.consent_id)
                > tuple_(entry.c.recorded_at, entry.c.consent_id),
            )
        )
        wanted = [
            entry.c.contact_id == c.c.contact_id,
            entry.c.channel == literal(self.value(node.channel), Text()),
            entry.c.purpose == literal(self.value(node.purpose), Text()),
            entry.c.status == literal(node.status, Text()),
            not_(superseded),
        ]
        if node.double_opt_in:
            wanted.append(entry.c.double_opt_in_at.is_not(None))
        return exists(select(1).select_from(entry).where(*wanted))

    # Attribute filters: the contact's own columns directly, the account's and location's
    # through EXISTS on their primary key (a join the planner makes itself).
    def attribute(self, node: lang.Attribute, c) -> ColumnElement[bool]:
        kind, column_name = lang.FIELDS[node.entity][node.field]
        if node.entity == "contact":
            return self.comparison(node, kind, c.c[column_name])
        table = account.alias() if node.entity == "account" else location.alias()
        key = "account_id" if node.entity == "account" else "location_id"
        return exists(
            select(1)
            .select_from(table)
            .where(table.c[key] == c.c[key], self.comparison(node, kind, table.c[column_name]))
        )

    def comparison(self, node: lang.Attribute, kind: str, col) -> ColumnElement[bool]:
        op = node.op
        if op in ("is_null", "is_not_null"):
            wanted = self.value(node.value) == (op == "is_null")
            return col.is_(None) if wanted else col.is_not(None)
        if kind == "age":
            return self.age(op, node.value, col)
        if kind == "timestamp":
            col = func.date(col)
        bind_type = (
            Date() if kind in ("date", "timestamp") else (BigInteger() if kind == "integer" else Text())
        )
        if op in ("in", "not_in"):
            items = self.value(node.value)
            values = [self.value(v) for v in items] if isinstance(items, tuple) else list(items)
            clause = col.in_(bindparam(None, values, expanding=True, type_=bind_type))
            return clause if op == "in" else not_(clause)
        if op == "between":
            low, high = (self.value(v) for v in node.value)
            return and_(col >= literal(low, bind_type), col <= literal(high, bind_type))
        if op == "contains":
            return col.icontains(self.value(node.value), autoescape=True)
        if op == "starts_with":
            return col.istartswith(self.value(node.value), autoescape=True)
        value = literal(self.value(node.value), bind_type)
        return {
            "eq": col == value,
            "ne": col != value,
            "lt": col < value,
            "le": col <= value,
            "gt": col > value,
            "ge": col >= value,
        }[op]

    def age(self, op: str, value, birth_date) -> ColumnElement[bool]:
        today = self.as_of.date()

        def at_least(years: int) -> ColumnElement[bool]:
            return birth_date <= literal(_years_before(today, years), Date())

        def below(years: int) -> ColumnElement[bool]:
            return birth_date > literal(_years_before(today, years), Date())

        if op == "between":
            low, high = (self.value(v) for v in value)
            return and_(at_least(low), below(high + 1))
        years = self.value(value)
        return {
            "eq": lambda: and_(at_least(years), below(years + 1)),
            "ne": lambda: or_(below(years), at_least(years + 1)),
            "lt": lambda: below(years),
            "le": lambda: below(years + 1),
            "gt": lambda: at_least(years + 1),
            "ge": lambda: at_least(years),
        }[op]()

    def activity(self, node: lang.Activity, c) -> ColumnElement[bool]:
        x = activity.alias()
        filters = []
        for key, value in node.filters.items():
            resolved = self.value(value)
            values = [resolved] if isinstance(resolved, str) else list(resolved)
            items = bindparam(None, values, expanding=True, type_=Text())
            if key in ("sku", "category"):
                wanted = select(product.c.product_id).where(product.c[key].in_(items))
                filters.append(x.c.product_id.in_(wanted))
            else:
                filters.append(x.c[_ACTIVITY_COLUMNS[key]].in_(items))
        if node.within_days is not None:
            since = self.as_of - dt.timedelta(days=self.value(node.within_days))
            filters.append(x.c.occurred_at >= literal(since, DateTime(timezone=True)))
            filters.append(x.c.occurred_at <= literal(self.as_of, DateTime(timezone=True)))
        if node.since is not None:
            filters.append(x.c.occurred_at >= literal(self.value(node.since), Date()))
        if node.until is not None:
            day_after = self.value(node.until) + dt.timedelta(days=1)
            filters.append(x.c.occurred_at < literal(day_after, Date()))

        count_min = (
            self.value(node.count_min) if node.count_min is not None else (0 if node.count_given else 1)
        )
        count_max = self.value(node.count_max) if node.count_max is not None else None
        amount_min = self.value(node.amount_min) if node.amount_min is not None else None
        amount_max = self.value(node.amount_max) if node.amount_max is not None else None
        if count_max is not None and count_min > count_max:
            raise lang.Problem(f"{node.path}.count", f"min {count_min} is above max {count_max}")

        if count_max is None and amount_min is None and amount_max is None:
            if count_min == 0:
                return true()
            if count_min == 1:
                return exists(select(1).select_from(x).where(x.c.contact_id == c.c.contact_id, *filters))

        n, total = func.count(), func.coalesce(func.sum(x.c.amount_cents), 0)
        bounds = []
        if count_min > 1:
            bounds.append(n >= literal(count_min, Integer()))
        if count_max is not None:
            bounds.append(n <= literal(count_max, Integer()))
        if amount_min is not None:
            bounds.append(total >= literal(round(amount_min * 100), BigInteger()))
        if amount_max is not None:
            bounds.append(total <= literal(round(amount_max * 100), BigInteger()))
        # A contact without matching activities counts 0 and sums 0: whether that passes
        # decides between "one of the groups that pass" and "none of the groups that fail".
        zero_passes = count_min == 0 and not amount_min
        having = and_(*bounds)
        groups = (
            select(x.c.contact_id)
            .where(*filters)
            .group_by(x.c.contact_id)
            .having(not_(having) if zero_passes else having)
            .subquery()
        )
        found = exists(select(1).select_from(groups).where(groups.c.contact_id == c.c.contact_id))
        return not_(found) if zero_passes else found
