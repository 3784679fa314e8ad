"""`router prune`: delete old entries of the message journal (a data pruner, run it from cron or a timer)."""
from __future__ import annotations

import time

import click

from .. import journal
from ..config.durations import parse_duration
from .output import database_options, open_engine


@click.command("prune")
@click.option("--older-than", "older_than", required=True,
              help="age of the last status change, e.g. 30d, 12h (a duration)")
@click.option("--resend-keys", is_flag=True,
              help="also forget the resend keys (sender + MSH-10) of the pruned messages; a resend of one is "
                   "then processed again (same resource ids: new versions, no new records)")
@click.option("--batch", type=click.IntRange(100, 100_000), default=5000, show_default=True,
              help="messages deleted per transaction")
@database_options
def command(older_than: str, resend_keys: bool, batch: int, database_url: str | None, data_dir: str) -> None:
    """Delete journal entries of finished messages (processed, filtered, duplicate, refused) whose
    last status change is older than --older-than, with their status histories. Queued, retrying
    and dead-lettered messages are kept whatever their age."""
    try:
        age = parse_duration(older_than)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from None
    before = time.time() - age
    engine = open_engine(database_url, data_dir)
    total = journal.Pruned()
    try:
        while True:
            with engine.begin() as conn:
                got = journal.prune(conn, before, resend_keys=resend_keys, limit=batch)
            total = journal.Pruned(total.messages + got.messages, total.events + got.events,
                                   total.resend_keys + got.resend_keys)
            if got.messages < batch:
                break
    finally:
        engine.dispose()
    click.echo(f"pruned {total.messages} messages, {total.events} status events"
               + (f", {total.resend_keys} resend keys" if resend_keys else ""))
