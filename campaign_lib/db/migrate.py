"""Schema migrations of the campaign database (Alembic scripts under sql/migrations)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from campaign_lib.config import PROJECT_ROOT
from campaign_lib.errors import DatabaseError

MIGRATIONS = PROJECT_ROOT / "sql" / "migrations"
# Any constant key serialises concurrent upgrades (two workers starting at once).
_UPGRADE_LOCK_KEY = 0x6B6D7301


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    """The newest revision in the migration scripts."""
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None for a database never migrated."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Bring the database to the newest revision; returns (revision before, after).

    Idempotent: on an up-to-date database it changes nothing.
    """
    config = _alembic_config()
    try:
        with engine.begin() as conn:
            conn.execute(text("select pg_advisory_xact_lock(:key)"), {"key": _UPGRADE_LOCK_KEY})
            before = MigrationContext.configure(conn).get_current_revision()
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
    except DBAPIError as exc:
        raise DatabaseError(f"schema migration failed: {str(exc.orig).strip().splitlines()[0]}") from exc
    return before, head_revision()
