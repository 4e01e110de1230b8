"""Selections on disk: finding, loading and checking them, and binding parameter values.

A selection is a file in the selections folder (`KMS_SELECTIONS_DIR`, default `selections/`):
`<name>.yaml` (rules, see language.py) or `<name>.sql` (a read-only query, see sqlfile.py).
`load_selection` checks the whole file, and every selection it references, before anything
runs; a mistake raises SelectionError naming the file, the place and the problem.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import yaml
from sqlalchemy import Select

from campaign_lib.config import PROJECT_ROOT
from campaign_lib.errors import SelectionError
from campaign_lib.selection import language as lang
from campaign_lib.selection.sqlfile import AS_OF, SqlBody, parse_body, split_header

_TOP_LEVEL = ("description", "params", "rules", "union", "intersection", "exclusion")
_BODIES = ("rules", "union", "intersection", "exclusion")
_PARAM_KEYS = ("type", "default", "description")


def selections_folder() -> Path:
    """The folder of selection files: KMS_SELECTIONS_DIR, else selections/ of the project."""
    return Path(os.environ.get("KMS_SELECTIONS_DIR") or PROJECT_ROOT / "selections")


def list_selections(folder: Path | None = None) -> list[str]:
    """Names (file stems) of the selections in `folder`, sorted."""
    folder = folder or selections_folder()
    return sorted(
        {p.stem for p in folder.glob("*") if p.suffix in (".yaml", ".sql") and lang.NAME.match(p.stem)}
    )


@dataclass(frozen=True)
class ParamSpec:
    """A declared parameter of a selection; `default` None means a value must be given."""

    name: str
    type: lang.ParamType
    default: object | None
    description: str


@dataclass(frozen=True)
class Selection:
    """A loaded, checked selection. `query` compiles it; `version` changes whenever the file
    or a selection it references changes, so an audience records what chose it."""

    name: str
    path: Path
    kind: Literal["rules", "sql"]
    description: str
    version: str
    params: Mapping[str, ParamSpec]
    # Selections this one names (directly), loaded and checked.
    references: Mapping[str, Selection] = field(default_factory=dict, repr=False)
    condition: Any = field(default=None, repr=False)
    sql: SqlBody | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        """The file as messages name it: relative to the project when inside it."""
        return display_path(self.path)

    @property
    def runs_sql_file(self) -> bool:
        """Whether this selection or one it references is an SQL file (then its query must run
        inside read_only())."""
        return self.kind == "sql" or any(ref.runs_sql_file for ref in self.references.values())

    def bind(self, values: Mapping[str, object] | None = None) -> dict[str, object]:
        """Every parameter's value: given ones checked and converted (strings are parsed, dates
        from ISO text), defaults for the rest. SelectionError for an unknown name, a wrong type
        or a missing value."""
        values = dict(values or {})
        unknown = sorted(set(values) - set(self.params))
        if unknown:
            declared = ", ".join(sorted(self.params)) or "none"
            raise SelectionError(
                f"{self.label}: params.{unknown[0]}: unknown parameter (declared: {declared})"
            )
        bound: dict[str, object] = {}
        for name, spec in self.params.items():
            value = values.get(name)
            if value is None:
                if spec.default is None:
                    raise SelectionError(f"{self.label}: params.{name}: needs a value (it has no default)")
                bound[name] = spec.default
                continue
            try:
                bound[name] = lang.coerce(spec.type, value, from_text=True)
            except ValueError as exc:
                raise SelectionError(f"{self.label}: params.{name}: {exc}") from None
        return bound

    def query(
        self, values: Mapping[str, object] | None = None, *, as_of: dt.datetime | None = None
    ) -> Select:
        """SELECT of one column `contact_id`, each active contact of the selection once. Every value
        is a bound parameter; `as_of` (default: now) anchors relative windows and ages."""
        from campaign_lib.selection.compiler import compile_selection

        moment = as_of or dt.datetime.now(dt.UTC)
        if moment.tzinfo is None:
            raise SelectionError(f"{self.label}: as_of must carry a time zone, not {moment.isoformat()}")
        try:
            return compile_selection(self, self.bind(values), moment)
        except lang.Problem as problem:
            raise SelectionError(f"{self.label}: {problem}") from None


def display_path(path: Path) -> str:
    """`path` relative to the project folder when it lies inside, else as it is."""
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def load_selection(name: str, folder: Path | None = None) -> Selection:
    """The selection `name` of `folder`, checked with every selection it references.
    SelectionError ("<file>: <place>: <problem>") for a missing file, a mistake, or a cycle."""
    return _Loader(folder or selections_folder()).load(name, ())


class _Loader:
    """One load: each file read once, references followed depth first, cycles refused."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.loaded: dict[str, Selection] = {}

    def _file(self, name: str, label: str) -> Path:
        found = [p for p in (self.folder / f"{name}.yaml", self.folder / f"{name}.sql") if p.is_file()]
        if not found:
            raise SelectionError(
                f"{label}: no selection {name!r} ({name}.yaml or {name}.sql) in {display_path(self.folder)}"
            )
        if len(found) > 1:
            raise SelectionError(f"{display_path(found[0])}: {name}.yaml and {name}.sql both exist; keep one")
        return found[0]

    def load(self, name: str, chain: tuple[str, ...], referrer: str = "") -> Selection:
        if name in chain:
            cycle = " -> ".join((*chain[chain.index(name) :], name))
            raise SelectionError(f"{referrer}: selections reference each other in a cycle: {cycle}")
        if name in self.loaded:
            return self.loaded[name]
        if not lang.NAME.match(name):
            raise SelectionError(
                f"{referrer or 'selection'}: {name!r} is not a selection name (lower-case letters, digits, _)"
            )
        path = self._file(name, referrer or "selection")
        label = display_path(path)
        data = path.read_bytes()
        try:
            text = data.decode("utf-8")
            if path.suffix == ".sql":
                selection = self._sql(name, path, text, data)
            else:
                selection = self._rules(name, path, text, data, (*chain, name))
        except lang.Problem as problem:
            raise SelectionError(f"{label}: {problem}") from None
        except UnicodeDecodeError:
            raise SelectionError(f"{label}: is not UTF-8 text") from None
        self.loaded[name] = selection
        return selection

    def _version(self, data: bytes, references: Mapping[str, Selection]) -> str:
        digest = hashlib.sha256(data)
        for name in sorted(references):
            digest.update(f"\0{name}\0{references[name].version}".encode())
        return digest.hexdigest()[:16]

    def _sql(self, name: str, path: Path, text: str, data: bytes) -> Selection:
        meta, body = split_header(text)
        unknown = sorted(set(meta) - {"description", "params"})
        if unknown:
            raise lang.Problem(f"header.{unknown[0]}", "unknown key (expected: description, params)")
        description = _description(meta)
        params = _params(meta.get("params"), reserved=(AS_OF,))
        sql = parse_body(body)
        undeclared = sorted(sql.params - set(params) - {AS_OF})
        if undeclared:
            declared = ", ".join(sorted(params)) or "none"
            raise lang.Problem(
                "sql", f"uses :{undeclared[0]}, which the header does not declare (declared: {declared})"
            )
        unused = sorted(set(params) - sql.params)
        if unused:
            raise lang.Problem(f"params.{unused[0]}", "is declared but the query never uses it")
        return Selection(name, path, "sql", description, self._version(data, {}), params, sql=sql)

    def _rules(self, name: str, path: Path, text: str, data: bytes, chain: tuple[str, ...]) -> Selection:
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise lang.Problem("", f"is not valid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(raw, dict):
            raise lang.Problem(
                "", "must be a mapping with description and rules (or union, intersection, exclusion)"
            )
        unknown = [key for key in raw if key not in _TOP_LEVEL]
        if unknown:
            raise lang.Problem(str(unknown[0]), f"unknown key (expected: {', '.join(_TOP_LEVEL)})")
        bodies = [key for key in _BODIES if key in raw]
        if len(bodies) != 1:
            raise lang.Problem(
                "", f"needs exactly one of {', '.join(_BODIES)} (found {', '.join(bodies) or 'none'})"
            )
        description = _description(raw)
        params = _params(raw.get("params"))
        scope = lang.Scope(params)
        label = display_path(path)
        references: dict[str, Selection] = {}

        def resolve(reference: lang.Reference, arguments: Mapping[str, Any]) -> lang.Reference:
            target = self.load(reference.name, chain, f"{label}: {reference.path}")
            references[reference.name] = target
            return lang.read_arguments(reference, arguments, target.params, scope)

        (body_key,) = bodies
        if body_key == "rules":
            condition = lang.read_condition(raw["rules"], "rules", scope, resolve)
        else:
            condition = self._set_operation(body_key, raw[body_key], scope, resolve)
        unused = sorted(set(params) - scope.used)
        if unused:
            raise lang.Problem(f"params.{unused[0]}", "is declared but never used")
        return Selection(
            name,
            path,
            "rules",
            description,
            self._version(data, references),
            params,
            references=MappingProxyType(references),
            condition=condition,
        )

    @staticmethod
    def _set_operation(kind: str, raw: Any, scope: lang.Scope, resolve) -> lang.SetOperation:
        if kind == "exclusion":
            if not isinstance(raw, dict) or set(raw) != {"from", "minus"}:
                raise lang.Problem(kind, "must be {from: selection, minus: [selection, ...]}")
            minus = raw["minus"] if isinstance(raw["minus"], list) else [raw["minus"]]
            if not minus:
                raise lang.Problem(f"{kind}.minus", "must name at least one selection")
            items = [("from", raw["from"])] + [(f"minus[{i}]", item) for i, item in enumerate(minus)]
        else:
            if not isinstance(raw, list) or len(raw) < 2:
                raise lang.Problem(kind, "must be a list of at least two selections")
            items = [(f"[{i}]", item) for i, item in enumerate(raw)]
        references = []
        for place, item in items:
            path = f"{kind}.{place}" if not place.startswith("[") else f"{kind}{place}"
            references.append(resolve(*lang.read_reference(item, path, scope)))
        return lang.SetOperation(kind, tuple(references))


def _description(raw: Mapping[str, Any]) -> str:
    description = raw.get("description")
    if not isinstance(description, str) or not description.strip():
        raise lang.Problem("description", "is required: one line saying who the selection finds")
    return " ".join(description.split())


def _params(raw: Any, reserved: tuple[str, ...] = ()) -> Mapping[str, ParamSpec]:
    if raw is None:
        return MappingProxyType({})
    if not isinstance(raw, dict):
        raise lang.Problem(
            "params", f"must map parameter names to {{type, default, description}}, not {lang.show(raw)}"
        )
    params = {}
    for name, spec in raw.items():
        here = f"params.{name}"
        if not isinstance(name, str) or not lang.NAME.match(name):
            raise lang.Problem(here, "is not a parameter name (lower-case letters, digits, _)")
        if name in reserved:
            raise lang.Problem(here, f"{name!r} is given by every run; it cannot be declared")
        if not isinstance(spec, dict):
            raise lang.Problem(
                here, f"must be {{type: ..., default: ..., description: ...}}, not {lang.show(spec)}"
            )
        unknown = [key for key in spec if key not in _PARAM_KEYS]
        if unknown:
            raise lang.Problem(f"{here}.{unknown[0]}", f"unknown key (expected: {', '.join(_PARAM_KEYS)})")
        type_ = spec.get("type")
        if type_ not in lang.PARAM_TYPES:
            raise lang.Problem(
                f"{here}.type", f"must be one of {', '.join(lang.PARAM_TYPES)}, not {lang.show(type_)}"
            )
        default = spec.get("default")
        if default is not None:
            try:
                default = lang.coerce(type_, default)
            except ValueError as exc:
                raise lang.Problem(f"{here}.default", str(exc)) from None
        description = spec.get("description", "")
        if not isinstance(description, str):
            raise lang.Problem(f"{here}.description", f"must be text, not {lang.show(description)}")
        params[name] = ParamSpec(name, type_, default, description)
    return MappingProxyType(params)
