"""`router bench`: the engine's benchmarks beside baselines (router/bench/), written as JSON, a
markdown report and a PNG plot. Needs RabbitMQ and PostgreSQL; see docs/benchmarks.md."""
from __future__ import annotations

import json
from pathlib import Path

import click

DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672/%2F"
DEFAULT_DB = "postgresql+psycopg://root@127.0.0.1:5432/test"


@click.command("bench")
@click.option("--quick", is_flag=True, help="short windows and small sizes (under a minute): a smoke test")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="folder for results.json and throughput.png; the report goes to <out>.md "
                   "[default: docs/benchmarks, or var/bench-quick with --quick]")
@click.option("--only", default="parse,mllp,e2e,store", show_default=True,
              help="comma-separated sections: parse, mllp, e2e, store (memory comes with e2e)")
@click.option("--broker-url", default=DEFAULT_BROKER, show_default=True, help="RabbitMQ used by the runs")
@click.option("--database-url", default=DEFAULT_DB, show_default=True,
              help="PostgreSQL used by the runs (fresh schemas, dropped afterwards)")
@click.option("--resume", is_flag=True,
              help="take the sections already measured from <out>/checkpoint.json (left by a run that stopped) "
                   "and run only the others")
def command(quick: bool, out: str | None, only: str, broker_url: str, database_url: str, resume: bool) -> None:
    """Measure parse+map, MLLP ingest, end to end, the store and memory; write the report."""
    from ..bench import report, runner

    sections = [s.strip() for s in only.split(",") if s.strip()]
    unknown = [s for s in sections if s not in runner.SECTIONS]
    if unknown or not sections:
        raise click.BadParameter(f"unknown section(s) {', '.join(unknown) or '(none)'}; "
                                 f"choose from {', '.join(runner.SECTIONS)}", param_hint="--only")
    folder = Path(out or ("var/bench-quick" if quick else "docs/benchmarks"))
    plan = runner.plan(quick, sections)
    checkpoint = folder / "checkpoint.json"
    previous = None
    if resume:
        if not checkpoint.is_file():
            raise click.UsageError(f"--resume: {checkpoint} not found")
        previous = json.loads(checkpoint.read_text())
    result = runner.run(plan, broker_url, database_url, log=lambda m: click.echo(m), checkpoint=checkpoint,
                        resume=previous)
    files = report.write(result, folder)
    checkpoint.unlink(missing_ok=True)
    click.echo("\ntargets:")
    for t in result["targets"]:
        met = {True: "met", False: "MISSED", None: "n/a"}[t["met"]]
        click.echo(f"  [{met:>6}] {t['target']}: {t['value']}{' (' + t['note'] + ')' if t['note'] else ''}")
    if result.get("plot_skipped"):
        click.echo(f"plot skipped: {result['plot_skipped']}")
    click.echo("wrote " + ", ".join(str(p) for p in files.values()))
