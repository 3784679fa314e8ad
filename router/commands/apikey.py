"""`router apikey`: register, list and revoke the API keys of machine clients."""
from __future__ import annotations

import getpass

import click

from ..api.auth import CLIENT_ROLES, create_api_key, list_api_keys, revoke_api_key
from ..store import audit
from ..store.principal import Principal
from .output import database_options as _options
from .output import echo_rows, fmt_time
from .output import open_engine as _engine


def _operator() -> Principal:
    """Key management is an admin act; the audit log names the operating-system user."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name in this environment
        user = "unknown"
    return Principal(client_id=f"cli:{user}", role="admin")


@click.group("apikey")
def command() -> None:
    """API keys of machine clients (labs, insurers, pharmacies, ...)."""


@command.command("create")
@click.option("--client-id", required=True, help="the client's name, recorded in the audit log")
@click.option("--role", required=True, type=click.Choice(CLIENT_ROLES))
@click.option("--organization", help="Organization id the client acts for (lab, insurer, pharmacy, organization)")
@click.option("--patient", help="Patient id (citizen keys)")
@_options
def create(client_id: str, role: str, organization: str | None, patient: str | None, database_url: str | None,
           data_dir: str) -> None:
    """Register a client and print its key. The key is shown this once: only its hash is kept."""
    engine = _engine(database_url, data_dir)
    with engine.begin() as conn:
        key = create_api_key(conn, client_id, role, organization=organization, patient=patient)
        key_id = key.partition(".")[0]
        audit.record(conn, _operator(), "apikey-create", resource_type="ApiKey", resource_id=key_id,
                     detail=f"role {role}")
    engine.dispose()
    click.echo(key)
    click.echo(f"key id {key_id}: give the whole key to the client now, it cannot be shown again", err=True)


@command.command("list")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@_options
def list_(as_json: bool, database_url: str | None, data_dir: str) -> None:
    """Registered keys (ids and scope, never secrets)."""
    engine = _engine(database_url, data_dir)
    with engine.connect() as conn:
        rows = list_api_keys(conn)
    engine.dispose()
    echo_rows(rows, as_json=as_json, empty="no API keys",
              header=f"{'key id':18}  {'client':24}  {'role':12}  {'organization':36}  {'created':23}  state",
              line=lambda r: f"{r['key_id']:18}  {r['client_id'][:24]:24}  {r['role']:12}  "
                             f"{(r['organization'] or '')[:36]:36}  {fmt_time(r['created_at']):23}  "
                             f"{'revoked' if r['revoked'] else 'active'}")


@command.command("revoke")
@click.argument("key_id")
@_options
def revoke(key_id: str, database_url: str | None, data_dir: str) -> None:
    """Revoke a key for good (requests with it are refused from now on)."""
    key_id = key_id.partition(".")[0]  # a pasted whole key works too; its secret is never echoed
    engine = _engine(database_url, data_dir)
    with engine.begin() as conn:
        done = revoke_api_key(conn, key_id)
        if done:
            audit.record(conn, _operator(), "apikey-revoke", resource_type="ApiKey", resource_id=key_id)
    engine.dispose()
    if not done:
        raise click.ClickException(f"no active API key {key_id!r}")
    click.echo(f"revoked {key_id}")
