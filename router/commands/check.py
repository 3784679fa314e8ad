"""`router check [FILE]`: validate a routes file, report every problem, exit 1 if any."""
from __future__ import annotations

import click

from ..config.loader import load_config
from ..errors import ConfigError


@click.command("check")
@click.argument("file", default="routes.yaml", type=click.Path(dir_okay=False))
def command(file: str) -> None:
    """Check FILE (default routes.yaml): schema, components, mappings, listener conflicts."""
    try:
        config = load_config(file)
    except ConfigError as exc:
        for p in exc.problems:
            # a problem with no position (file not found, unreadable) has line 0: print no 0:0
            click.echo(str(p) if p.line else f"{p.file}: {p.message}" + (f" ({p.hint})" if p.hint else ""), err=True)
        n = len(exc.problems)
        click.echo(f"{file}: {n} problem{'s' if n != 1 else ''}", err=True)
        raise SystemExit(1) from None
    n = sum(r.acknowledges is None for r in config.routes)  # not the internal application-ACK routes
    click.echo(f"{file}: OK, {n} route{'s' if n != 1 else ''}")
