"""The selection language: a rules file's YAML, checked and turned into a tree of conditions.

Everything a campaign manager may write is listed here: the attribute fields per entity with
their types, the operators per type, the keys of an activity condition, the parameter types.
Anything else is refused with the place and the problem (`rules.all[1].activity.within_days:
must be a positive integer, not 'x'`). Values stay values: the compiler binds each one as a
parameter, so nothing written here is ever part of the SQL text. docs/selections.md is the
reference for campaign managers; keep both in step.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

import yaml

from campaign_lib.lookups import ACCOUNT_TYPES, ACTIVITY_TYPES, CHANNELS, FEEDS_DIR, SOURCE_SYSTEMS

ParamType = Literal["integer", "number", "string", "date", "boolean", "string_list"]
PARAM_TYPES: tuple[str, ...] = ("integer", "number", "string", "date", "boolean", "string_list")
NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class Problem(Exception):
    """A mistake at `path` of a selection file; the loader adds the file's name."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


def show(value: Any) -> str:
    """A value as a message quotes it: strings in quotes, short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _integer(value: Any, from_text: bool) -> int:
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int):
        return value
    if from_text and isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    raise ValueError


def _number(value: Any, from_text: bool) -> int | float:
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int | float):
        return value
    if from_text and isinstance(value, str):
        number = float(value)
        if number != number or number in (float("inf"), float("-inf")):
            raise ValueError
        return number
    raise ValueError


def _string(value: Any, from_text: bool) -> str:
    if isinstance(value, str):
        return value
    raise ValueError


def _date(value: Any, from_text: bool) -> dt.date:
    if isinstance(value, dt.datetime):
        raise ValueError
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        return dt.date.fromisoformat(value.strip())
    raise ValueError


def _boolean(value: Any, from_text: bool) -> bool:
    if isinstance(value, bool):
        return value
    if (
        from_text
        and isinstance(value, str)
        and value.strip().lower() in ("true", "false", "yes", "no", "1", "0")
    ):
        return value.strip().lower() in ("true", "yes", "1")
    raise ValueError


def _string_list(value: Any, from_text: bool) -> list[str]:
    if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        return list(value)
    if from_text and isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    raise ValueError


_COERCE: dict[str, Callable[[Any, bool], Any]] = {
    "integer": _integer,
    "number": _number,
    "string": _string,
    "date": _date,
    "boolean": _boolean,
    "string_list": _string_list,
}
_EXPECTED = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string (quote it in YAML if it looks like a number or a date)",
    "date": "a date (YYYY-MM-DD)",
    "boolean": "true or false",
    "string_list": "a list of strings",
}


def coerce(type_: str, value: Any, *, from_text: bool = False) -> Any:
    """`value` as a value of `type_`; with `from_text`, also parsed from a string (trigger forms
    and the command line pass strings). Raises ValueError with the expected form."""
    try:
        return _COERCE[type_](value, from_text)
    except (ValueError, TypeError):
        raise ValueError(f"must be {_EXPECTED[type_]}, not {show(value)}") from None


@dataclass(frozen=True)
class Slot:
    """What a place in a condition accepts: a type, and a check on the value (None when fine,
    else the problem)."""

    type: str
    check: Callable[[Any], str | None] | None = None
    # Types of parameters that fit besides `type` (an integer parameter where a number goes).
    also: tuple[str, ...] = ()


def _positive(value: Any) -> str | None:
    return None if value > 0 else f"must be a positive integer, not {show(value)}"


def _not_negative(value: Any) -> str | None:
    return None if value >= 0 else f"must not be negative, not {show(value)}"


def _one_of(allowed: tuple[str, ...]) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        wrong = [v for v in (value if isinstance(value, list) else [value]) if v not in allowed]
        return f"unknown value {show(wrong[0])} (expected one of: {', '.join(allowed)})" if wrong else None

    return check


def _not_empty(value: Any) -> str | None:
    return "must not be an empty list" if isinstance(value, list) and not value else None


@cache
def vocabulary() -> dict[str, tuple[str, ...]]:
    """The values of the schema's lookups a selection may name: account types, channels, and the activity
    types and source systems of the schema plus those the feed files declare (a feed registers
    them when it first loads)."""
    types, systems = list(ACTIVITY_TYPES), [*SOURCE_SYSTEMS, "kms"]
    for path in sorted(FEEDS_DIR.rglob("*.yaml")):
        try:
            # libyaml's loader: ten feed files take 45 ms with the pure-Python one, 5 ms with it.
            raw = yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue  # a broken feed file is the feed loader's to report
        if isinstance(raw, dict):
            if isinstance(raw.get("source_system"), str):
                systems.append(raw["source_system"])
            if isinstance(raw.get("activity_types"), dict):
                types.extend(name for name in raw["activity_types"] if isinstance(name, str))
    return {
        "account_type": ACCOUNT_TYPES,
        "channel": CHANNELS,
        "activity_type": tuple(dict.fromkeys(types)),
        "source_system": tuple(dict.fromkeys(systems)),
    }


def _known(lookup: str) -> Callable[[Any], str | None]:
    """A check that every value is one `vocabulary()[lookup]` lists (and a list is not empty)."""

    def check(value: Any) -> str | None:
        return _not_empty(value) or _one_of(vocabulary()[lookup])(value)

    return check


@dataclass(frozen=True)
class Value:
    """A value in a selection: a literal (already checked) or a reference to a parameter
    (checked when the value is bound). `path` names its place for messages."""

    path: str
    slot: Slot
    literal: Any = None
    param: str | None = None

    def resolve(self, bound: Mapping[str, Any]) -> Any:
        """The value itself, with a parameter's bound value checked against the slot."""
        if self.param is None:
            return self.literal
        value = bound[self.param]
        problem = self.slot.check(value) if self.slot.check is not None else None
        if problem:
            raise Problem(self.path, f"{problem} (from parameter {self.param!r})")
        return value


@dataclass
class Scope:
    """The declared parameters while a file is read, and which of them are used."""

    params: Mapping[str, Any]  # name -> ParamSpec
    used: set[str] = field(default_factory=set)


def read_value(raw: Any, path: str, slot: Slot, scope: Scope) -> Value:
    """A literal or `{param: name}` at `path`, checked against `slot`."""
    if isinstance(raw, dict) and "param" in raw:
        if set(raw) != {"param"}:
            raise Problem(path, "a parameter reference is written {param: name} and nothing else")
        name = raw["param"]
        spec = scope.params.get(name) if isinstance(name, str) else None
        if spec is None:
            declared = ", ".join(sorted(scope.params)) or "none"
            raise Problem(path, f"unknown parameter {show(name)} (declared: {declared})")
        if spec.type != slot.type and spec.type not in slot.also:
            raise Problem(
                path, f"parameter {name!r} is {spec.type}, but this place needs {_EXPECTED[slot.type]}"
            )
        scope.used.add(name)
        return Value(path, slot, param=name)
    try:
        literal = coerce(slot.type, raw)
    except ValueError as exc:
        raise Problem(path, str(exc)) from None
    problem = slot.check(literal) if slot.check is not None else None
    if problem:
        raise Problem(path, problem)
    return Value(path, slot, literal=literal)


@dataclass(frozen=True)
class AllOf:
    children: tuple


@dataclass(frozen=True)
class AnyOf:
    children: tuple


@dataclass(frozen=True)
class Not:
    child: Any


@dataclass(frozen=True)
class Attribute:
    """`field op value` on the contact, its account or its location."""

    entity: str
    field: str
    op: str
    value: Value | tuple[Value, Value] | None
    path: str


@dataclass(frozen=True)
class Activity:
    """The contact's activities that match `filters` and the window, counted and summed."""

    path: str
    filters: Mapping[str, Value]  # type, source_system, outlet, currency, sku, category
    within_days: Value | None
    since: Value | None
    until: Value | None
    count_min: Value | None
    count_max: Value | None
    amount_min: Value | None
    amount_max: Value | None
    count_given: bool


@dataclass(frozen=True)
class Consent:
    """The consent in force (the latest ledger entry) for a channel and purpose has `status`;
    with `double_opt_in`, the opt-in was also confirmed."""

    channel: Value
    purpose: Value
    status: str
    double_opt_in: bool


@dataclass(frozen=True)
class Household:
    """Another active contact of the same account meets `child`."""

    child: Any


@dataclass(frozen=True)
class Reference:
    """Another selection by name, with values for its parameters (`arguments`)."""

    name: str
    arguments: Mapping[str, Value]
    path: str


@dataclass(frozen=True)
class Member:
    """The contact is in the referenced selection."""

    reference: Reference


@dataclass(frozen=True)
class SetOperation:
    """union, intersection or exclusion (the first minus all others) of selections."""

    kind: Literal["union", "intersection", "exclusion"]
    references: tuple[Reference, ...]


# field -> (kind, column); kinds decide the operators and the value's type.
FIELDS: dict[str, dict[str, tuple[str, str]]] = {
    "contact": {
        "contact_id": ("integer", "contact_id"),
        "salutation": ("text", "salutation"),
        "first_name": ("text", "first_name"),
        "last_name": ("text", "last_name"),
        "birth_date": ("date", "birth_date"),
        "age": ("age", "birth_date"),
        "email": ("text", "email"),
        "phone": ("text", "phone_e164"),
        "language": ("text", "preferred_language"),
        "created_at": ("timestamp", "created_at"),
    },
    "account": {
        "type": ("account_type", "account_type"),
        "name": ("text", "name"),
        "created_at": ("timestamp", "created_at"),
    },
    "location": {
        "country_code": ("text", "country_code"),
        "postal_code": ("text", "postal_code"),
        "city": ("text", "city"),
        "street": ("text", "street"),
    },
}
_COMPARE = ("eq", "ne", "in", "not_in", "lt", "le", "gt", "ge", "between", "is_null", "is_not_null")
OPERATORS: dict[str, tuple[str, ...]] = {
    "text": ("eq", "ne", "in", "not_in", "contains", "starts_with", "is_null", "is_not_null"),
    "account_type": ("eq", "ne", "in", "not_in"),
    "integer": _COMPARE,
    "date": _COMPARE,
    "timestamp": ("lt", "le", "gt", "ge", "between", "is_null", "is_not_null"),
    "age": ("eq", "ne", "lt", "le", "gt", "ge", "between", "is_null", "is_not_null"),
}
_VALUE_SLOT = {
    "text": Slot("string"),
    "account_type": Slot("string", _known("account_type")),
    "integer": Slot("integer"),
    "date": Slot("date"),
    "timestamp": Slot("date"),
    "age": Slot("integer", _not_negative),
}


def _list_slot(kind: str) -> Slot:
    item = _VALUE_SLOT[kind]
    if item.type == "string":
        check = item.check

        def both(value: Any) -> str | None:
            return _not_empty(value) or (check(value) if check else None)

        return Slot("string_list", both)
    return Slot(item.type)


def _read_attribute(entity: str, raw: Any, path: str, scope: Scope) -> Any:
    if not isinstance(raw, dict) or not raw:
        raise Problem(path, f"must map fields of the {entity} to conditions, e.g. {{language: {{eq: de}}}}")
    nodes = []
    for name, spec in raw.items():
        here = f"{path}.{name}"
        if name not in FIELDS[entity]:
            raise Problem(here, f"unknown {entity} field {show(name)} (fields: {', '.join(FIELDS[entity])})")
        kind = FIELDS[entity][name][0]
        if isinstance(spec, dict) and "param" not in spec:
            operations = spec
        else:
            # `language: de` means eq, `language: [de, en]` means in.
            operations = {"in" if isinstance(spec, list) else "eq": spec}
        if not operations:
            raise Problem(here, "needs an operator, e.g. {eq: ...}")
        for op, value in operations.items():
            nodes.append(_read_operation(entity, name, kind, op, value, f"{here}.{op}", scope))
    return nodes[0] if len(nodes) == 1 else AllOf(tuple(nodes))


def _read_operation(
    entity: str, name: str, kind: str, op: Any, raw: Any, path: str, scope: Scope
) -> Attribute:
    if op not in OPERATORS[kind]:
        raise Problem(
            path, f"unknown operator {show(op)} for {entity}.{name} (operators: {', '.join(OPERATORS[kind])})"
        )
    if op in ("is_null", "is_not_null"):
        value: Value | tuple[Value, Value] | None = read_value(raw, path, Slot("boolean"), scope)
    elif op in ("in", "not_in"):
        slot = _list_slot(kind)
        if slot.type == "string_list":
            value = read_value(raw, path, slot, scope)
        else:
            if not isinstance(raw, list) or not raw:
                raise Problem(path, f"must be a non-empty list, not {show(raw)}")
            items = tuple(read_value(item, f"{path}[{i}]", slot, scope) for i, item in enumerate(raw))
            value = Value(path, slot, literal=items)
    elif op == "between":
        if not isinstance(raw, list) or len(raw) != 2:
            raise Problem(path, f"must be a list of two values [low, high], not {show(raw)}")
        slot = _VALUE_SLOT[kind]
        value = (read_value(raw[0], f"{path}[0]", slot, scope), read_value(raw[1], f"{path}[1]", slot, scope))
    else:
        value = read_value(raw, path, _VALUE_SLOT[kind], scope)
    return Attribute(entity, name, op, value, path)


_TEXT_OR_LIST = Slot("string_list", _not_empty, also=("string",))
_FILTER_SLOTS = {
    "type": Slot("string_list", _known("activity_type"), also=("string",)),
    "source_system": Slot("string_list", _known("source_system"), also=("string",)),
    "outlet": _TEXT_OR_LIST,
    "currency": _TEXT_OR_LIST,
    "sku": _TEXT_OR_LIST,
    "category": _TEXT_OR_LIST,
}
ACTIVITY_KEYS = (*_FILTER_SLOTS, "within_days", "since", "until", "count", "amount")


def _read_filter(raw: Any, path: str, slot: Slot, scope: Scope) -> Value:
    # A single string is a list of one; a string parameter is wrapped when bound.
    return read_value([raw] if isinstance(raw, str) else raw, path, slot, scope)


def _read_bounds(raw: Any, path: str, slot: Slot, scope: Scope) -> tuple[Value | None, Value | None]:
    if not isinstance(raw, dict) or not raw or set(raw) - {"min", "max"}:
        raise Problem(path, f"must be {{min: ..., max: ...}} (one or both), not {show(raw)}")
    low = read_value(raw["min"], f"{path}.min", slot, scope) if "min" in raw else None
    high = read_value(raw["max"], f"{path}.max", slot, scope) if "max" in raw else None
    if (
        low is not None
        and high is not None
        and low.param is None
        and high.param is None
        and low.literal > high.literal
    ):
        raise Problem(path, f"min {show(low.literal)} is above max {show(high.literal)}")
    return low, high


def _read_activity(raw: Any, path: str, scope: Scope, *, bought: bool) -> Activity:
    if not isinstance(raw, dict):
        raise Problem(path, f"must be a mapping of {', '.join(ACTIVITY_KEYS)}, not {show(raw)}")
    unknown = [key for key in raw if key not in ACTIVITY_KEYS]
    if unknown:
        raise Problem(f"{path}.{unknown[0]}", f"unknown key (expected one of: {', '.join(ACTIVITY_KEYS)})")
    if bought and not ({"sku", "category"} & set(raw)):
        raise Problem(path, "needs the product: sku or category")
    filters = {
        key: _read_filter(raw[key], f"{path}.{key}", slot, scope)
        for key, slot in _FILTER_SLOTS.items()
        if key in raw
    }

    def optional(key: str, slot: Slot) -> Value | None:
        return read_value(raw[key], f"{path}.{key}", slot, scope) if key in raw else None

    count = (
        _read_bounds(raw["count"], f"{path}.count", Slot("integer", _not_negative), scope)
        if "count" in raw
        else (None, None)
    )
    amount = (
        _read_bounds(raw["amount"], f"{path}.amount", Slot("number", _not_negative, also=("integer",)), scope)
        if "amount" in raw
        else (None, None)
    )
    return Activity(
        path=path,
        filters=filters,
        within_days=optional("within_days", Slot("integer", _positive)),
        since=optional("since", Slot("date")),
        until=optional("until", Slot("date")),
        count_min=count[0],
        count_max=count[1],
        amount_min=amount[0],
        amount_max=amount[1],
        count_given="count" in raw,
    )


CONSENT_KEYS = ("channel", "purpose", "status", "double_opt_in")


def _read_consent(raw: Any, path: str, scope: Scope) -> Consent:
    if not isinstance(raw, dict) or not {"channel", "purpose"} <= set(raw):
        raise Problem(
            path, "must name the channel and the purpose, e.g. {channel: email, purpose: newsletter}"
        )
    unknown = [key for key in raw if key not in CONSENT_KEYS]
    if unknown:
        raise Problem(f"{path}.{unknown[0]}", f"unknown key (expected one of: {', '.join(CONSENT_KEYS)})")
    status = raw.get("status", "opt_in")
    if status not in ("opt_in", "opt_out"):
        raise Problem(f"{path}.status", f"must be opt_in or opt_out, not {show(status)}")
    double_opt_in = raw.get("double_opt_in", False)
    if not isinstance(double_opt_in, bool) or (double_opt_in and status != "opt_in"):
        raise Problem(f"{path}.double_opt_in", "must be true or false, and true only with status opt_in")
    return Consent(
        channel=read_value(raw["channel"], f"{path}.channel", Slot("string", _known("channel")), scope),
        purpose=read_value(raw["purpose"], f"{path}.purpose", Slot("string", _purpose), scope),
        status=status,
        double_opt_in=double_opt_in,
    )


def _purpose(value: Any) -> str | None:
    return (
        None
        if re.fullmatch(r"[a-z][a-z0-9_]*", value)
        else f"is not a purpose (lower-case letters, digits, _): {show(value)}"
    )


CONDITIONS = (
    "all",
    "any",
    "not",
    "contact",
    "account",
    "location",
    "activity",
    "bought",
    "consent",
    "household",
    "selection",
)


def read_reference(raw: Any, path: str, scope: Scope) -> tuple[Reference, Mapping[str, Any]]:
    """`name` or `{name: x, params: {...}}`; returns the reference and the raw arguments, which
    the loader checks against the referenced selection's parameters (`read_arguments`)."""
    if isinstance(raw, str):
        name, arguments = raw, {}
    elif isinstance(raw, dict) and "name" in raw and not set(raw) - {"name", "params"}:
        name, arguments = raw["name"], raw.get("params") or {}
        if not isinstance(arguments, dict):
            raise Problem(f"{path}.params", f"must map parameter names to values, not {show(arguments)}")
    else:
        raise Problem(path, f"must be a selection name or {{name: ..., params: {{...}}}}, not {show(raw)}")
    if not isinstance(name, str) or not NAME.match(name):
        raise Problem(path, f"{show(name)} is not a selection name (lower-case letters, digits, _)")
    return Reference(name, {}, path), arguments


def read_arguments(
    reference: Reference, raw: Mapping[str, Any], params: Mapping[str, Any], scope: Scope
) -> Reference:
    """The reference with its arguments checked against the referenced selection's `params`."""
    arguments = {}
    for name, value in raw.items():
        here = f"{reference.path}.params.{name}"
        if name not in params:
            declared = ", ".join(sorted(params)) or "none"
            raise Problem(
                here, f"selection {reference.name!r} has no parameter {show(name)} (declared: {declared})"
            )
        spec = params[name]
        arguments[name] = read_value(
            value, here, Slot(spec.type, also=("integer",) if spec.type == "number" else ()), scope
        )
    return Reference(reference.name, arguments, reference.path)


def read_condition(
    raw: Any, path: str, scope: Scope, resolve: Callable[[Reference, Mapping[str, Any]], Reference]
) -> Any:
    """The condition at `path`; `resolve` loads a referenced selection (cycles refused there)."""
    if not isinstance(raw, dict) or len(raw) != 1:
        keys = f" (got {', '.join(map(str, raw))})" if isinstance(raw, dict) and raw else ""
        raise Problem(path, f"a condition is a mapping with exactly one of: {', '.join(CONDITIONS)}{keys}")
    ((key, body),) = raw.items()
    here = f"{path}.{key}" if path else key
    if key in ("all", "any"):
        if not isinstance(body, list) or not body:
            raise Problem(here, "must be a non-empty list of conditions")
        children = tuple(read_condition(item, f"{here}[{i}]", scope, resolve) for i, item in enumerate(body))
        return AllOf(children) if key == "all" else AnyOf(children)
    if key == "not":
        return Not(read_condition(body, here, scope, resolve))
    if key in FIELDS:
        return _read_attribute(key, body, here, scope)
    if key in ("activity", "bought"):
        return _read_activity(body, here, scope, bought=key == "bought")
    if key == "consent":
        return _read_consent(body, here, scope)
    if key == "household":
        return Household(read_condition(body, here, scope, resolve))
    if key == "selection":
        return Member(resolve(*read_reference(body, here, scope)))
    raise Problem(here, f"unknown condition (expected one of: {', '.join(CONDITIONS)})")
