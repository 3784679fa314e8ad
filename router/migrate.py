"""Schema migrations (alembic) behind `router db upgrade`; every command that opens the database
brings it to the latest revision first, so a fresh SQLite file just works."""
from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

HERE = Path(__file__).resolve().parent / "migrations"


def import_models() -> None:
    """Import every module that defines tables, so they are in router.db.metadata."""
    from . import journal  # noqa: F401
    from .store import tables  # noqa: F401


def _config(conn: sa.Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    if conn is not None:
        cfg.attributes["connection"] = conn
    return cfg


def head() -> str:
    return str(ScriptDirectory.from_config(_config()).get_current_head())


def current(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    """Processes starting together on a fresh PostgreSQL schema (a listener and its workers) take
    turns: a transaction-level advisory lock per schema, so the second finds the schema at head."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext('router-migrate:' || current_schema()))")
        command.upgrade(_config(conn), revision)


def revision(engine: sa.Engine, message: str) -> None:
    """Developers: autogenerate a new migration from the difference between models and database."""
    with engine.begin() as conn:
        command.revision(_config(conn), message=message, autogenerate=True)
