"""`router worker`: workers only; start any number against the same broker and database."""
from __future__ import annotations

from typing import Any

import click

from ..app import AppOptions, run_forever
from .common import engine_options, setup_logging


@click.command("worker")
@engine_options
def command(**kw: Any) -> None:
    """Consume the routes' queues and deliver, until SIGTERM or Ctrl-C."""
    setup_logging(kw)
    run_forever(AppOptions(run_sources=False, run_http=False, **kw))
