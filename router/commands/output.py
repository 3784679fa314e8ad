"""What the journal, audit and key commands share: database options, time arguments, row output."""
from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import click
import orjson
import sqlalchemy as sa

from ..config.durations import parse_duration
from ..db import create_schema, database_url, make_engine

F = TypeVar("F", bound=Callable[..., Any])


def database_options(f: F) -> F:
    """--database-url and --data-dir, as `router run` takes them."""
    f = click.option("--data-dir", envvar="ROUTER_DATA_DIR", default="var", show_default=True)(f)
    return click.option("--database-url", envvar="ROUTER_DATABASE_URL", default=None)(f)  # type: ignore[return-value]


def open_engine(url: str | None, data_dir: str) -> sa.Engine:
    """The store's engine with its schema up to date."""
    engine = make_engine(database_url(url, data_dir))
    create_schema(engine)
    return engine


def parse_time(value: str | None) -> float | None:
    """ISO date/time (UTC if no zone) or a duration meaning that long ago (15m, 2h)."""
    if value is None:
        return None
    try:
        return time.time() - parse_duration(value)
    except ValueError:
        pass
    try:
        d = dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither an ISO date/time nor a duration like 15m") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.timezone.utc)
    return d.timestamp()


def fmt_time(ts: float | None) -> str:
    if ts is None:
        return ""
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def echo_rows(rows: Iterable[Mapping[str, Any]], *, as_json: bool, empty: str, header: str,
              line: Callable[[Mapping[str, Any]], str]) -> None:
    """Rows as JSON lines, or a header and one `line(row)` each (which may span lines), or `empty`."""
    rows = list(rows)
    if as_json:
        for r in rows:
            click.echo(orjson.dumps(dict(r)).decode())
        return
    if not rows:
        click.echo(empty)
        return
    click.echo(header)
    for r in rows:
        click.echo(line(r))
