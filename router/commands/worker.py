"""`router worker`: workers only; start any number against the same broker and database."""
from __future__ import annotations

from typing import Any

import click

from ..app import AppOptions, run_forever
from ..errors import ConfigError
from .common import engine_options, setup_logging


@click.command("worker")
@engine_options
def command(**kw: Any) -> None:
    """Consume the routes' queues and deliver, until SIGTERM or Ctrl-C."""
    setup_logging(kw)
    try:
        run_forever(AppOptions(run_sources=False, run_http=False, **kw))
    except ConfigError as exc:
        for p in exc.problems:
            click.echo(str(p), err=True)
        raise SystemExit(2) from None
