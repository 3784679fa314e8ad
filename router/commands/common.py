"""Options shared by commands: routes file, broker and database URLs, logging."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from ..logging import configure


def engine_options(f: Callable[..., Any]) -> Callable[..., Any]:
    for opt in reversed([
        click.option("--routes", "routes_file", default="routes.yaml", show_default=True, envvar="ROUTER_ROUTES",
                     type=click.Path(dir_okay=False), help="routes file"),
        click.option("--broker-url", envvar="ROUTER_BROKER_URL", default=None,
                     help="RabbitMQ URL, e.g. amqp://guest:guest@127.0.0.1:5672/%2F; absent: embedded queue"),
        click.option("--database-url", envvar="ROUTER_DATABASE_URL", default=None,
                     help="SQLAlchemy URL, e.g. postgresql+psycopg://root@127.0.0.1:5432/test; absent: SQLite under ./var/"),
        click.option("--namespace", envvar="ROUTER_NAMESPACE", default="router", show_default=True,
                     help="prefix of queue names"),
        click.option("--data-dir", envvar="ROUTER_DATA_DIR", default="var", show_default=True,
                     help="folder for the embedded queue and SQLite database"),
        click.option("--log-format", type=click.Choice(["console", "json"]), default="console", show_default=True),
        click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
                     show_default=True),
    ]):
        f = opt(f)
    return f


def setup_logging(kw: dict[str, Any]) -> None:
    configure(kw.pop("log_format", "console"), kw.pop("log_level", "info"))
