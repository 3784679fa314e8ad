"""`router messages`: search the message journal."""
from __future__ import annotations

import datetime as dt
import time
from typing import Any

import click
import orjson

from .. import journal
from ..config.durations import parse_duration
from ..db import create_schema, database_url, make_engine


def parse_time(value: str | None) -> float | None:
    """ISO date/time (UTC if no zone) or a duration meaning that long ago (15m, 2h)."""
    if value is None:
        return None
    try:
        return time.time() - parse_duration(value)
    except ValueError:
        pass
    try:
        d = dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither an ISO date/time nor a duration like 15m") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.timezone.utc)
    return d.timestamp()


def fmt_time(ts: float | None) -> str:
    if ts is None:
        return ""
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


@click.command("messages")
@click.option("--id", "message_id", help="message id (or a prefix of it)")
@click.option("--control-id", help="sender's control id (HL7 MSH-10)")
@click.option("--route")
@click.option("--status", type=click.Choice(journal.STATUSES))
@click.option("--since", help="ISO time or duration ago (e.g. 2h)")
@click.option("--until", help="ISO time or duration ago")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@click.option("--database-url", envvar="ROUTER_DATABASE_URL", default=None)
@click.option("--data-dir", envvar="ROUTER_DATA_DIR", default="var", show_default=True)
def command(message_id: str | None, control_id: str | None, route: str | None, status: str | None,
            since: str | None, until: str | None, limit: int, as_json: bool, database_url: str | None,
            data_dir: str) -> None:
    """Find messages in the journal; with --id, also show each one's status history."""
    q = journal.Query(id=message_id, control_id=control_id, route=route, status=status,
                      since=parse_time(since), until=parse_time(until), limit=limit)
    engine = make_engine(_url(database_url, data_dir))
    create_schema(engine)
    with engine.connect() as conn:
        rows = journal.search(conn, q)
        histories = {r["id"]: journal.history(conn, r["id"]) for r in rows} if message_id else {}
    engine.dispose()
    if as_json:
        for r in rows:
            out: dict[str, Any] = dict(r)
            if r["id"] in histories:
                out["history"] = histories[r["id"]]
            click.echo(orjson.dumps(out).decode())
        return
    if not rows:
        click.echo("no messages found")
        return
    click.echo(f"{'id':36}  {'received':23}  {'route':16}  {'status':13}  {'att':>3}  {'type':10}  control id")
    for r in rows:
        click.echo(f"{r['id']:36}  {fmt_time(r['received_at']):23}  {r['route'][:16]:16}  {r['status']:13}  "
                   f"{r['attempts']:>3}  {r['message_type'][:10]:10}  {r['control_id']}")
        if r.get("error"):
            click.echo(f"    error: {r['error'][:200]}")
        if r.get("duplicate_of"):
            click.echo(f"    duplicate of {r['duplicate_of']}")
        for h in histories.get(r["id"], []):
            click.echo(f"    {fmt_time(h['at'])}  {h['status']}" + (f"  {h['detail'][:150]}" if h["detail"] else ""))


def _url(explicit: str | None, data_dir: str) -> str:
    return database_url(explicit, data_dir)
