"""`router db`: schema migrations of the journal and record store."""
from __future__ import annotations

import click

from .. import migrate
from ..db import database_url as resolve_url
from ..db import make_engine

_url = click.option("--database-url", envvar="ROUTER_DATABASE_URL", default=None,
                    help="SQLAlchemy URL; absent: SQLite under --data-dir")
_dir = click.option("--data-dir", envvar="ROUTER_DATA_DIR", default="var", show_default=True)


@click.group("db")
def command() -> None:
    """Database schema: upgrade to the latest revision, show the current one."""


@command.command("upgrade")
@_url
@_dir
@click.option("--revision", default="head", show_default=True)
def upgrade_cmd(database_url: str | None, data_dir: str, revision: str) -> None:
    """Apply migrations up to REVISION (default: the latest)."""
    engine = make_engine(resolve_url(database_url, data_dir))
    before = migrate.current(engine)
    migrate.upgrade(engine, revision)
    after = migrate.current(engine)
    engine.dispose()
    click.echo(f"database at revision {after}" + (f" (was {before})" if before != after else " (up to date)"))


@command.command("current")
@_url
@_dir
def current_cmd(database_url: str | None, data_dir: str) -> None:
    """Show the database's revision and the latest one."""
    engine = make_engine(resolve_url(database_url, data_dir))
    cur = migrate.current(engine)
    engine.dispose()
    click.echo(f"current: {cur or '(empty database)'}\nlatest:  {migrate.head()}")
