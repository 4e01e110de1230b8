"""The sandbox that campaign managers' message templates compile and render in.

Templates are Jinja2, compiled by an `ImmutableSandboxedEnvironment` (no attribute starting
with `_`, no mutating method, limited ranges) with `StrictUndefined`, and checked when they
are loaded, before any message is rendered, so a broken or hostile template stops the
campaign at its first task with one clear error instead of failing per recipient:

- syntax errors (Jinja's own message and line);
- variables that are not in the documented set (`campaign_lib.rendering.variables`), also
  unknown fields of `offer`;
- attribute access other than `offer.<field>`, item access other than by number or slice,
  `include`/`import`/`extends` (a template is one self-contained file), `|safe` and
  `{% autoescape false %}` (personal data is always escaped in HTML), and filters outside
  a short list of text filters.

Every problem raises `TemplateError` reading `<file>:<line>: <problem>`. The sandbox stays
in force while rendering (defence in depth: the static check is the first wall, the sandbox
the second), and `*` and `**` are bounded so a template cannot build a gigabyte string.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from jinja2 import ChainableUndefined, StrictUndefined, TemplateSyntaxError, meta, nodes
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from campaign_lib.errors import ConfigError

# Text filters a message needs; everything else (attr, map, xmlattr, safe, pprint, and center and
# format, which pad to any width) is refused.
ALLOWED_FILTERS = frozenset(
    {
        "capitalize",
        "d",
        "default",
        "e",
        "escape",
        "first",
        "float",
        "int",
        "join",
        "last",
        "length",
        "lower",
        "replace",
        "round",
        "string",
        "striptags",
        "title",
        "trim",
        "truncate",
        "upper",
        "urlencode",
        "wordcount",
        "wordwrap",
    }
)
_NO_AUTOESCAPE = "{% autoescape %} is not allowed: personal data is always escaped in HTML"
_FORBIDDEN_NODES = {
    nodes.Extends: "{% extends %} is not allowed: a message template is one self-contained file",
    nodes.Include: "{% include %} is not allowed: a message template is one self-contained file",
    nodes.Import: "{% import %} is not allowed: a message template is one self-contained file",
    nodes.FromImport: "{% from ... import %} is not allowed: a message template is one self-contained file",
    nodes.EvalContextModifier: _NO_AUTOESCAPE,
    nodes.ScopedEvalContextModifier: _NO_AUTOESCAPE,
}
# The longest string or list a template may build with * (a whole message is far below).
MAX_PRODUCT = 100_000


class TemplateError(ConfigError):
    """A message template cannot be used: its file, line and the problem are in the message."""


class Missing(ChainableUndefined):
    """A documented variable without a value for this recipient (e.g. no first name): renders
    as nothing, is false in `{% if %}`, `|default('...')` replaces it, and `first_name[0]`
    of it is nothing again rather than an error in the middle of a campaign."""

    __slots__ = ()


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context, operator_name: str, left, right):  # type: ignore[no-untyped-def]
        if operator_name == "**":
            base = abs(left).bit_length() if isinstance(left, int) else 64
            if isinstance(right, int | float) and base * abs(right) > 4096:
                raise SecurityError("power too large in template")
            return operator.pow(left, right)
        sizes = [len(side) for side in (left, right) if isinstance(side, str | list | tuple)]
        counts = [side for side in (left, right) if isinstance(side, int) and not isinstance(side, bool)]
        if sizes and counts and sizes[0] * max(counts[0], 0) > MAX_PRODUCT:
            raise SecurityError("template builds a value that is too long")
        return operator.mul(left, right)


def make_environment(*, html: bool) -> _Sandbox:
    """A sandbox for HTML (autoescaped) or plain text (SMS, push, text part, subject)."""
    environment = _Sandbox(
        autoescape=html,
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        auto_reload=False,
    )
    # No globals at all: range, dict, lipsum, cycler, joiner, namespace are not for messages.
    environment.globals.clear()
    environment.filters = {name: environment.filters[name] for name in ALLOWED_FILTERS}
    return environment


@dataclass(frozen=True)
class Variables:
    """The names a template may use: plain names, and the fields of each object variable."""

    names: frozenset[str]
    fields: Mapping[str, frozenset[str]]
    # Documented names this campaign cannot fill, with the reason (e.g. no offer defined).
    unavailable: Mapping[str, str] = field(default_factory=dict)

    def without(self, name: str, reason: str) -> Variables:
        """The same set with `name` refused for `reason`."""
        return Variables(self.names - {name}, self.fields, {**self.unavailable, name: reason})


def check_template(environment: _Sandbox, source: str, shown: str, variables: Variables):
    """Compile `source` after checking it; returns the jinja2 Template.

    Raises TemplateError `<shown>:<line>: <problem>` for the first problem found (syntax first,
    then forbidden constructs in source order, then unknown variables)."""
    try:
        tree = environment.parse(source, name=shown)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"{shown}:{exc.lineno}: syntax error: {exc.message}") from None
    problems = sorted(_forbidden(tree, variables))
    if problems:
        line, _rank, problem = problems[0]
        raise TemplateError(f"{shown}:{line}: {problem}")
    unknown = meta.find_undeclared_variables(tree) - variables.names
    if unknown:
        name = min(unknown)
        line = _first_line(tree, name)
        if name in variables.unavailable:
            raise TemplateError(f"{shown}:{line}: {name!r} cannot be used: {variables.unavailable[name]}")
        known = ", ".join(sorted(variables.names))
        raise TemplateError(f"{shown}:{line}: unknown variable {name!r} (known: {known})")
    try:
        return environment.from_string(tree)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"{shown}:{exc.lineno}: {exc.message}") from None


def _forbidden(tree: nodes.Template, variables: Variables) -> Iterable[tuple[int, int, str]]:
    """(line, rank, problem) of each forbidden construct; rank 0 (a sandbox escape) is
    reported before rank 1 (a mere mistake) on the same line."""
    macros = {macro.name for macro in tree.find_all(nodes.Macro)}
    for node in tree.find_all(nodes.Node):
        refusal = _FORBIDDEN_NODES.get(type(node))
        if refusal:
            yield node.lineno, 1, refusal
        elif isinstance(node, nodes.Getattr):
            yield from _attribute(node, node.attr, variables)
        elif isinstance(node, nodes.Getitem):
            if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                yield from _attribute(node, node.arg.value, variables)
            elif not isinstance(node.arg, nodes.Slice | nodes.Const | nodes.Name):
                yield node.lineno, 1, "item access only by a number, a slice or a loop variable"
        elif isinstance(node, nodes.Filter) and node.name not in ALLOWED_FILTERS:
            if node.name == "safe":
                yield node.lineno, 1, "|safe is not allowed: personal data is always escaped in HTML"
            else:
                allowed = ", ".join(sorted(ALLOWED_FILTERS))
                yield node.lineno, 1, f"filter {node.name!r} is not allowed (allowed: {allowed})"
        elif isinstance(node, nodes.Call) and _calls_non_macro(node, macros, variables):
            yield node.lineno, 1, "only macros of the template itself can be called"


def _calls_non_macro(call: nodes.Call, macros: set[str], variables: Variables) -> bool:
    # A call of an unknown name is left to the unknown-variable check, whose message is clearer.
    callee = call.node
    return not isinstance(callee, nodes.Name) or (
        callee.name not in macros and callee.name in variables.names
    )


def _attribute(node: nodes.Getattr | nodes.Getitem, attribute: str, variables: Variables):
    owner = node.node.name if isinstance(node.node, nodes.Name) else None
    fields = variables.fields.get(owner or "")
    if attribute.startswith("_"):
        yield node.lineno, 0, f"attribute {attribute!r} is not allowed (no attribute starting with '_')"
    elif fields is None:
        yield (
            node.lineno,
            1,
            (
                f"attribute {attribute!r} is not allowed: only the fields of "
                f"{', '.join(sorted(variables.fields))} (e.g. offer.name); use filters like |upper for text"
            ),
        )
    elif attribute not in fields:
        yield node.lineno, 1, f"unknown field {owner}.{attribute} (known: {', '.join(sorted(fields))})"


def _first_line(tree: nodes.Template, name: str) -> int:
    lines = [node.lineno for node in tree.find_all(nodes.Name) if node.name == name and node.ctx == "load"]
    return min(lines, default=1)


def render_checked(template, context: Mapping[str, object], shown: str) -> str:
    """Render a checked template; a failure at render time (the sandbox refusing something the
    static check let through, a value of the wrong type) raises TemplateError naming the file."""
    try:
        return template.render(context)
    except (SecurityError, UndefinedError, TypeError, ValueError, ArithmeticError) as exc:
        raise TemplateError(f"{shown}: cannot render: {exc}") from None
