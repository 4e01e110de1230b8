"""Read-only SQL selections: a header of comments, then one SELECT returning `contact_id`.

    -- description: Guests who rated us at least twice
    -- params:
    --   min_ratings: {type: integer, default: 2, description: ratings at least}
    select contact_id from core.activity
    where activity_type = 'rating' and occurred_at < :as_of
    group by contact_id having count(*) >= :min_ratings

The header is YAML behind `--`. The body must be one statement that starts with `select` or
`with`; every `:name` in it must be a declared parameter (or `as_of`, the run's reference
time) and every declared parameter must be used. Values reach PostgreSQL only as bound
parameters. What the statement does is not trusted: it runs only inside `read_only()`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

from campaign_lib.selection.language import Problem

# As SQLAlchemy's text() finds bound parameters: `:name`, but not `::type` casts.
_BIND = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")
_DOLLAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
AS_OF = "as_of"


@dataclass(frozen=True)
class SqlBody:
    """The statement as text() gets it (comments dropped, colons inside strings escaped) and
    the parameters it uses."""

    text: str
    params: frozenset[str]


def split_header(source: str) -> tuple[dict[str, Any], str]:
    """The YAML header (leading `--` lines) as a mapping, and the rest of the file."""
    lines = source.splitlines(keepends=True)
    header = []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("--"):
            header.append(stripped[2:].removeprefix(" "))
        elif stripped:
            break
        else:
            header.append("")
    body = "".join(lines[len(header) :])
    try:
        meta = yaml.safe_load("\n".join(header)) if any(h.strip() for h in header) else None
    except yaml.YAMLError as exc:
        raise Problem("header", f"is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(meta, dict):
        raise Problem("header", "must start the file with comment lines such as '-- description: ...'")
    return meta, body


def _segments(body: str) -> list[tuple[str, str]]:
    """The body cut into ('code' | 'string' | 'comment', text) pieces: quoted strings and
    identifiers, dollar-quoted strings, -- and /* */ comments are told apart from code."""
    pieces: list[tuple[str, str]] = []
    code_start = i = 0
    n = len(body)

    def flush(upto: int) -> None:
        if upto > code_start:
            pieces.append(("code", body[code_start:upto]))

    while i < n:
        ch = body[i]
        end = None
        kind = ""
        if ch in ("'", '"'):
            kind, j = "string", i + 1
            while j < n:
                if body[j] == ch:
                    if j + 1 < n and body[j + 1] == ch:
                        j += 2
                        continue
                    break
                j += 1
            if j >= n:
                raise Problem("sql", "a quoted string or name is not closed")
            end = j + 1
        elif body.startswith("--", i):
            kind = "comment"
            newline = body.find("\n", i)
            end = n if newline < 0 else newline
        elif body.startswith("/*", i):
            kind, depth, j = "comment", 1, i + 2
            while j < n and depth:
                if body.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif body.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            if depth:
                raise Problem("sql", "a /* comment */ is not closed")
            end = j
        elif (
            ch == "$"
            and (match := _DOLLAR.match(body, i))
            and not (i and (body[i - 1].isalnum() or body[i - 1] == "_"))
        ):
            kind = "string"
            close = body.find(match.group(0), match.end())
            if close < 0:
                raise Problem("sql", "a $$ string is not closed")
            end = close + len(match.group(0))
        if end is None:
            i += 1
            continue
        flush(i)
        pieces.append((kind, body[i:end]))
        code_start = i = end
    flush(n)
    return pieces


def parse_body(body: str) -> SqlBody:
    """The checked statement; Problem when it is empty, several statements, not a query, or
    uses a parameter the header does not declare (checked by the caller against `params`)."""
    rebuilt = []
    code = []
    for kind, piece in _segments(body):
        if kind == "comment":
            rebuilt.append(" ")
            continue
        if kind == "string":
            # A colon inside a string is text, not a parameter: text() honours `\:`.
            rebuilt.append(piece.replace(":", "\\:"))
            continue
        code.append(piece)
        rebuilt.append(piece)
    statement = "".join(rebuilt).strip()
    code_text = "".join(code)
    if ";" in code_text.rstrip().rstrip(";"):
        raise Problem("sql", "must be one statement (found a ';' before the end)")
    statement = statement.rstrip().removesuffix(";").rstrip()
    if not statement:
        raise Problem("sql", "no statement after the header")
    first = re.match(r"[A-Za-z]+", statement)
    if first is None or first.group(0).lower() not in ("select", "with"):
        raise Problem("sql", "must be a query starting with 'select' or 'with'")
    return SqlBody(statement, frozenset(_BIND.findall(code_text)))
