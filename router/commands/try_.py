"""`router try ROUTE FILE`: one message through a route's filter and mapping, not delivered."""
from __future__ import annotations

import sys

import click
import orjson

from ..config.loader import load_config
from ..dryrun import dry_run, route_runtime


@click.command("try")
@click.argument("route")
@click.argument("file", type=click.File("rb"))
@click.option("--routes", "routes_file", default="routes.yaml", show_default=True, envvar="ROUTER_ROUTES",
              type=click.Path(dir_okay=False))
@click.option("--no-validate", is_flag=True, help="skip FHIR validation of the output")
def command(route: str, file: click.utils.LazyFile, routes_file: str, no_validate: bool) -> None:
    """Run FILE (- for stdin) through ROUTE's accept check, filter and mapping without delivering it.

    The Bundle goes to stdout as JSON; what each step decided, and warnings, to stderr. Exit 1
    when the message is rejected or filtered out."""
    config = load_config(routes_file)
    rt = route_runtime(config, route)
    result = dry_run(rt, file.read(), validate=not no_validate)
    for line in result.trace:
        click.echo(line, err=True)
    for w in result.warnings:
        click.echo(f"warning: {w}", err=True)
    if result.error is not None:
        click.echo(f"router try: rejected ({result.error.code}): {result.error}", err=True)
        raise SystemExit(1)
    if result.filtered:
        click.echo("router try: filtered out", err=True)
        raise SystemExit(1)
    if result.document is not None:
        click.echo(orjson.dumps(result.document, option=orjson.OPT_INDENT_2).decode())
    else:
        sys.stdout.buffer.write(result.body or b"")
