"""`router messages`: search the message journal."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from .. import journal
from .output import database_options, echo_rows, fmt_time, open_engine, parse_time


@click.command("messages")
@click.option("--id", "message_id", help="message id (or a prefix of it)")
@click.option("--control-id", help="sender's control id (HL7 MSH-10)")
@click.option("--route")
@click.option("--status", type=click.Choice(journal.STATUSES))
@click.option("--since", help="ISO time or duration ago (e.g. 2h)")
@click.option("--until", help="ISO time or duration ago")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@database_options
def command(message_id: str | None, control_id: str | None, route: str | None, status: str | None,
            since: str | None, until: str | None, limit: int, as_json: bool, database_url: str | None,
            data_dir: str) -> None:
    """Find messages in the journal; with --id, also show each one's status history."""
    q = journal.Query(id=message_id, control_id=control_id, route=route, status=status,
                      since=parse_time(since), until=parse_time(until), limit=limit)
    engine = open_engine(database_url, data_dir)
    with engine.connect() as conn:
        rows = journal.search(conn, q)
        histories = {r["id"]: journal.history(conn, r["id"]) for r in rows} if message_id else {}
    engine.dispose()

    def line(r: Mapping[str, Any]) -> str:
        out = [f"{r['id']:36}  {fmt_time(r['received_at']):23}  {r['route'][:16]:16}  {r['status']:13}  "
               f"{r['attempts']:>3}  {r['message_type'][:10]:10}  {r['control_id']}"]
        if r.get("error"):
            out.append(f"    error: {r['error'][:200]}")
        if r.get("duplicate_of"):
            out.append(f"    duplicate of {r['duplicate_of']}")
        for h in histories.get(r["id"], []):
            out.append(f"    {fmt_time(h['at'])}  {h['status']}" + (f"  {h['detail'][:150]}" if h["detail"] else ""))
        return "\n".join(out)

    if as_json and histories:
        rows = [{**r, "history": histories[r["id"]]} if r["id"] in histories else r for r in rows]
    echo_rows(rows, as_json=as_json, empty="no messages found", line=line,
              header=f"{'id':36}  {'received':23}  {'route':16}  {'status':13}  {'att':>3}  {'type':10}  control id")
