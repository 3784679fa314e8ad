"""`router test [PATH]`: run the route tests (YAML cases) and print a pass/fail table."""
from __future__ import annotations

from pathlib import Path

import click

from ..config.loader import load_config
from ..routetests import find_test_files, run_file


@click.command("test")
@click.argument("path", required=False, type=click.Path(exists=True))
@click.option("--routes", "routes_file", default="routes.yaml", show_default=True, envvar="ROUTER_ROUTES",
              type=click.Path(dir_okay=False))
def command(path: str | None, routes_file: str) -> None:
    """Run route tests in PATH (a file or folder; default: route-tests/ beside the routes file).
    Exit 1 when any case fails."""
    config = load_config(routes_file)
    root = Path(path) if path else config.base_dir / "route-tests"
    files = find_test_files(root)
    if not files:
        click.echo(f"no route tests found in {root}", err=True)
        raise SystemExit(1)
    results = [r for f in files for r in run_file(config, f)]
    width = max(len(r.name) for r in results)
    for r in results:
        mark = "PASS" if r.ok else "FAIL"
        click.echo(f"{mark}  {Path(r.file).name}  {r.name:{width}}" + (f"  {r.detail}" if r.detail else ""))
    failed = sum(not r.ok for r in results)
    click.echo(f"{len(results) - failed} passed, {failed} failed")
    if failed:
        raise SystemExit(1)
