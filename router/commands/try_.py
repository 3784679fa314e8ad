"""`router try ROUTE FILE`: one message through a route's filter and mapping, not delivered."""
from __future__ import annotations

import sys

import click
import orjson

from ..config.loader import load_config
from ..dryrun import DryRun, dry_run_all, route_runtime


@click.command("try")
@click.argument("route")
@click.argument("file", type=click.File("rb"))
@click.option("--routes", "routes_file", default="routes.yaml", show_default=True, envvar="ROUTER_ROUTES",
              type=click.Path(dir_okay=False))
@click.option("--no-validate", is_flag=True, help="skip FHIR validation of the output")
def command(route: str, file: click.utils.LazyFile, routes_file: str, no_validate: bool) -> None:
    """Run FILE (- for stdin) through ROUTE's accept check, filter and mapping without delivering it.

    The Bundle goes to stdout as JSON; what each step decided, and warnings, to stderr. An HL7
    batch (FHS/BHS or several messages in a row) runs message by message and prints a JSON array
    of the Bundles. Exit 1 when a message is rejected or filtered out."""
    config = load_config(routes_file)
    rt = route_runtime(config, route)
    results = dry_run_all(rt, file.read(), validate=not no_validate)
    batch = len(results) > 1
    documents: list[object] = []
    failed = 0
    for n, result in enumerate(results, 1):
        prefix = f"message {n}: " if batch else ""
        if not _report(result, prefix):
            failed += 1
        elif result.document is not None:
            documents.append(result.document)
        elif not batch:
            sys.stdout.buffer.write(result.body or b"")
    if batch:
        click.echo(f"router try: {len(results)} messages in the batch, {len(results) - failed} mapped, "
                   f"{failed} rejected or filtered", err=True)
    if documents:  # a batch prints a JSON array of its Bundles, one message its Bundle
        click.echo(orjson.dumps(documents if batch else documents[0], option=orjson.OPT_INDENT_2).decode())
    if failed:
        raise SystemExit(1)


def _report(result: DryRun, prefix: str) -> bool:
    """Trace and warnings to stderr; False when the message was rejected or filtered out."""
    for line in result.trace:
        click.echo(prefix + line, err=True)
    for w in result.warnings:
        click.echo(f"{prefix}warning: {w}", err=True)
    if result.error is not None:
        click.echo(f"router try: {prefix}rejected ({result.error.code}): {result.error}", err=True)
        return False
    if result.filtered:
        click.echo(f"router try: {prefix}filtered out", err=True)
        return False
    return True
