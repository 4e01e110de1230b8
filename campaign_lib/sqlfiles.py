"""Named SQL statements kept in files under sql/.

A file holds one or more blocks, each opened by a line `-- name: <name>`; the
comment lines that follow say what the statement returns and why. Values are
always bound parameters (`:name`), never formatted in.
"""

from __future__ import annotations

import re
from functools import cache

from sqlalchemy import TextClause, text

from campaign_lib.config import PROJECT_ROOT
from campaign_lib.errors import ConfigError

SQL_DIR = PROJECT_ROOT / "sql"
_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


@cache
def queries(file_name: str) -> dict[str, TextClause]:
    """The named statements of sql/`file_name`, compiled once per process."""
    source = (SQL_DIR / file_name).read_text(encoding="utf-8")
    parts = _NAME.split(source)
    named = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in named:
            raise ConfigError(f"sql/{file_name}: statement {name!r} is defined twice")
        named[name] = text(body.strip())
    if not named:
        raise ConfigError(f"sql/{file_name} has no '-- name:' block")
    return named
