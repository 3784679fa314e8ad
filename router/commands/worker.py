"""`router worker`: workers only; start any number against the same broker and database."""
from __future__ import annotations

from typing import Any

import click

from ..app import AppOptions, run_forever
from .common import engine_options, setup_logging


@click.command("worker")
@engine_options
@click.option("--http-host", default=None, help="address of --http-port (default from routes.yaml settings: 127.0.0.1)")
@click.option("--http-port", type=int, default=None,
              help="serve /health and /metrics (Prometheus) on this port; default: no HTTP server")
def command(http_port: int | None, **kw: Any) -> None:
    """Consume the routes' queues and deliver, until SIGTERM or Ctrl-C."""
    setup_logging(kw)
    run_forever(AppOptions(run_sources=False, run_http=http_port is not None, run_api=False, http_port=http_port,
                           **kw))
