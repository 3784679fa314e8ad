"""`router dlq`: list, show, replay and purge dead-lettered messages."""
from __future__ import annotations

from typing import Any

import click

from .. import journal
from ..app import AppOptions, load
from ..db import create_schema, database_url, make_engine
from ..envelope import Envelope
from ..runtime import queues_for
from ..transport import Transport, open_transport
from ..transport.base import RouteQueues
from .common import engine_options, setup_logging
from .output import fmt_time


class Ctx:
    def __init__(self, kw: dict[str, Any]) -> None:
        setup_logging(kw)
        self.config = load(AppOptions(**kw))  # a ConfigError is reported by the CLI group
        self.kw = kw
        self.transport: Transport = open_transport(kw["broker_url"], namespace=kw["namespace"], data_dir=kw["data_dir"])
        self.queues = [queues_for(r, kw["namespace"]) for r in self.config.routes]
        self.transport.setup(self.queues)

    def selected(self, route: str | None) -> list[RouteQueues]:
        if route is None:
            return self.queues
        self.config.route(route)  # raises with a did-you-mean
        return [q for q in self.queues if q.route == route]

    def close(self) -> None:
        self.transport.close()


def _summary(env: Envelope) -> str:
    last = env.errors[-1] if env.errors else None
    why = f"{last.error}: {last.text}" if last else ""
    return (f"{env.id}  {env.route:16}  att={env.attempts}  first={fmt_time(env.first_failure_at)}  "
            f"last={fmt_time(env.last_failure_at)}  {env.control_id}\n    {why[:200]}")


@click.group("dlq")
def command() -> None:
    """Dead-letter queues: list, show, replay, purge."""


@command.command("list")
@engine_options
@click.option("--route", help="only this route")
@click.option("--limit", type=int, default=100, show_default=True)
def list_cmd(route: str | None, limit: int, **kw: Any) -> None:
    """Dead-lettered messages with their last error."""
    ctx = Ctx(kw)
    try:
        total = 0
        for q in ctx.selected(route):
            envs = ctx.transport.dlq_browse(q, limit=limit)
            total += len(envs)
            click.echo(f"{q.route}: {ctx.transport.depth(q.dlq)} message(s) in {q.dlq}")
            for env in envs:
                click.echo("  " + _summary(env))
        if total == 0:
            click.echo("no dead-lettered messages")
    finally:
        ctx.close()


def _find(ctx: Ctx, message_id: str) -> Envelope | None:
    for q in ctx.queues:
        for env in ctx.transport.dlq_browse(q, limit=100000):
            if env.id == message_id or env.id.startswith(message_id):
                return env
    return None


@command.command("show")
@engine_options
@click.argument("message_id")
@click.option("--raw", is_flag=True, help="print the original message bytes (contains patient data)")
def show_cmd(message_id: str, raw: bool, **kw: Any) -> None:
    """One dead-lettered message: headers, every failed attempt, and (with --raw) the message."""
    ctx = Ctx(kw)
    try:
        env = _find(ctx, message_id)
        if env is None:
            click.echo(f"no dead-lettered message {message_id}", err=True)
            raise SystemExit(1)
        click.echo(f"id:            {env.id}\nroute:         {env.route}\nsource:        {env.source}\n"
                   f"sender:        {env.sender}\ncontrol id:    {env.control_id}\ncontent type:  {env.content_type}\n"
                   f"received:      {fmt_time(env.received_at)}\nattempts:      {env.attempts}\n"
                   f"first failure: {fmt_time(env.first_failure_at)}\nlast failure:  {fmt_time(env.last_failure_at)}\n"
                   f"headers:       {env.headers}\nsize:          {len(env.raw)} bytes")
        for i, e in enumerate(env.errors, 1):
            kind = "transient" if e.transient else "permanent"
            click.echo(f"  attempt {i}: {fmt_time(e.at)}  {e.error} ({kind}): {e.text[:500]}")
        if raw:
            click.echo(env.raw.decode("utf-8", "replace").replace("\r", "\n"))
    finally:
        ctx.close()


@command.command("replay")
@engine_options
@click.argument("message_ids", nargs=-1)
@click.option("--all", "replay_all", is_flag=True, help="replay every dead-lettered message (of --route)")
@click.option("--route", help="with --all: only this route")
def replay_cmd(message_ids: tuple[str, ...], replay_all: bool, route: str | None, **kw: Any) -> None:
    """Put dead-lettered messages back on their route (attempts reset)."""
    if not message_ids and not replay_all:
        raise click.UsageError("give message ids, or --all")
    if message_ids and replay_all:
        raise click.UsageError("give message ids or --all, not both")
    if message_ids and route:
        raise click.UsageError("--route goes with --all")
    ctx = Ctx(kw)
    try:
        moved: list[str] = []
        engine = make_engine(database_url(kw["database_url"], kw["data_dir"]))
        create_schema(engine)
        for q in ctx.selected(route):
            ids = {e.id for e in ctx.transport.dlq_browse(q, limit=1_000_000)
                   if not message_ids or any(e.id == w or e.id.startswith(w) for w in message_ids)}
            if not ids:
                continue
            with engine.begin() as conn:  # before the move: a worker's status must win over "queued"
                journal.reset_for_replay(conn, ids)
            moved += ctx.transport.dlq_replay(q, ids)
        engine.dispose()
        missing = [w for w in (message_ids or ()) if not any(m == w or m.startswith(w) for m in moved)]
        click.echo(f"replayed {len(moved)} message(s)")
        for m in missing:
            click.echo(f"not found in any dead-letter queue: {m}", err=True)
        if missing:
            raise SystemExit(1)
    finally:
        ctx.close()


@command.command("purge")
@engine_options
@click.option("--route", help="only this route")
@click.option("--yes", is_flag=True, help="confirm: the messages are deleted for good")
def purge_cmd(route: str | None, yes: bool, **kw: Any) -> None:
    """Delete dead-lettered messages for good."""
    if not yes:
        raise click.UsageError("purge deletes messages for good; add --yes to confirm")
    ctx = Ctx(kw)
    try:
        n = sum(ctx.transport.dlq_purge(q) for q in ctx.selected(route))
        click.echo(f"purged {n} message(s)")
    finally:
        ctx.close()
