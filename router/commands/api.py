"""`router api`: an API-only node: the HTTP server with /health and the FHIR API, nothing else
(no sources, no workers, no broker connection). Run any number behind a load balancer against
the same database."""
from __future__ import annotations

from typing import Any

import click

from ..app import AppOptions, load, run_forever
from ..errors import ConfigError
from .common import setup_logging


@click.command("api")
@click.option("--routes", "routes_file", default="routes.yaml", show_default=True, envvar="ROUTER_ROUTES",
              type=click.Path(dir_okay=False), help="routes file (its settings.api and settings.http apply)")
@click.option("--database-url", envvar="ROUTER_DATABASE_URL", default=None,
              help="SQLAlchemy URL, e.g. postgresql+psycopg://root@127.0.0.1:5432/test; absent: SQLite under ./var/")
@click.option("--data-dir", envvar="ROUTER_DATA_DIR", default="var", show_default=True,
              help="folder of the SQLite database")
@click.option("--http-host", default=None, help="listen address (default from routes.yaml settings: 127.0.0.1)")
@click.option("--http-port", type=int, default=None, help="port (default 8080)")
@click.option("--log-format", type=click.Choice(["console", "json"]), default="console", show_default=True)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True)
def command(**kw: Any) -> None:
    """Serve the FHIR API (and /health) until SIGTERM or Ctrl-C."""
    setup_logging(kw)
    options = AppOptions(run_sources=False, run_workers=False, run_routes=False, **kw)
    if not load(options).settings.api.enabled:
        raise ConfigError(f"{options.routes_file}: settings.api.enabled is false, so `router api` has nothing to serve")
    try:
        run_forever(options)
    except OSError as exc:
        click.echo(f"router: cannot start: {exc}", err=True)
        raise SystemExit(1) from None
