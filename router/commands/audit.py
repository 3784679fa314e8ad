"""`router audit`: search the append-only audit log of the record store."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from ..store import audit
from ..store.principal import ROLES
from .output import database_options, echo_rows, fmt_time, open_engine, parse_time


@click.command("audit")
@click.option("--client-id", help="the API client (JWT sub or API key client id; 'router' for the engine)")
@click.option("--role", help=f"{', '.join(ROLES)} (or anonymous: requests without valid credentials)")
@click.option("--patient", "patient_id", help="Patient id: everything read or written in that patient's record")
@click.option("--type", "resource_type", help="resource type, e.g. Observation")
@click.option("--resource-id", help="resource id (with --type)")
@click.option("--action", help="read, vread, search, history, create, update, delete, transaction, ...")
@click.option("--outcome", type=click.Choice(audit.OUTCOMES))
@click.option("--request-id", help="the API request id")
@click.option("--since", help="ISO time or duration ago (e.g. 2h)")
@click.option("--until", help="ISO time or duration ago")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@database_options
def command(client_id: str | None, role: str | None, patient_id: str | None, resource_type: str | None,
            resource_id: str | None, action: str | None, outcome: str | None, request_id: str | None,
            since: str | None, until: str | None, limit: int, as_json: bool, database_url: str | None,
            data_dir: str) -> None:
    """Who read or wrote what, newest first."""
    engine = open_engine(database_url, data_dir)
    with engine.connect() as conn:
        rows = audit.search(conn, client_id=client_id, role=role, patient_id=patient_id,
                            resource_type=resource_type, resource_id=resource_id, action=action, outcome=outcome,
                            request_id=request_id, since=parse_time(since), until=parse_time(until), limit=limit)
    engine.dispose()

    def line(r: Mapping[str, Any]) -> str:
        res = "/".join(x for x in (r["resource_type"], r["resource_id"]) if x)
        out = (f"{fmt_time(r['at']):23}  {r['client_id'][:20]:20}  {r['role'][:12]:12}  {r['action'][:11]:11}  "
               f"{r['outcome']:7}  {res[:40]:40}  {(r['patient_id'] or '')[:36]:36}  {r['request_id'] or ''}")
        return out + (f"\n    {r['detail'][:200]}" if r["detail"] else "")

    echo_rows(rows, as_json=as_json, empty="no audit records found", line=line,
              header=f"{'at':23}  {'client':20}  {'role':12}  {'action':11}  {'outcome':7}  {'resource':40}  "
                     f"{'patient':36}  request")
