"""`router run`: everything in one process (sources, workers, HTTP)."""
from __future__ import annotations

from typing import Any

import click

from ..app import AppOptions, run_forever
from .common import engine_options, setup_logging


@click.command("run")
@engine_options
@click.option("--mllp-host", default=None, help="MLLP listen address (default from routes.yaml settings: 127.0.0.1)")
@click.option("--mllp-port", type=int, default=None, help="MLLP port (default 2575)")
@click.option("--http-host", default=None, help="HTTP listen address (default 127.0.0.1)")
@click.option("--http-port", type=int, default=None, help="HTTP port (default 8080)")
@click.option("--no-workers", is_flag=True, help="intake only: sources and HTTP, no workers")
def command(no_workers: bool, **kw: Any) -> None:
    """Run sources, workers and the HTTP server until SIGTERM or Ctrl-C."""
    setup_logging(kw)
    try:
        run_forever(AppOptions(run_workers=not no_workers, **kw))
    except OSError as exc:
        click.echo(f"router: cannot start: {exc}", err=True)
        raise SystemExit(1) from None
