"""The message journal: one row per accepted message, its status transitions, and resend detection.

Statuses: queued -> processed | filtered | duplicate | retrying -> ... | dead-lettered; or refused
at intake (not HL7, no route accepts it, too large: answered AR / 4xx, never queued).
Writes are upserts keyed by message id that never move a message back to an earlier
status (intake's "queued" may arrive after a worker's "processed"), except an explicit
replay. Resends: a message whose (route, sender, control id) was already processed is
recorded as `duplicate` and not processed again; the `processed_keys` row is written in
the same transaction as the message's effects, so a crash can never record one without
the other.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from .db import insert_rows, metadata
from .envelope import Envelope

RANK = {"refused": 3, "queued": 1, "retrying": 2, "processed": 3, "filtered": 3, "duplicate": 3, "dead-lettered": 3}
STATUSES = tuple(RANK)

messages = sa.Table(
    "journal_messages", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("route", sa.String(64), nullable=False),
    sa.Column("source", sa.String(128), nullable=False, default=""),
    sa.Column("sender", sa.String(256), nullable=False, default=""),
    sa.Column("control_id", sa.String(128), nullable=False, default=""),
    sa.Column("message_type", sa.String(64), nullable=False, default=""),
    sa.Column("content_type", sa.String(128), nullable=False, default=""),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("status_rank", sa.Integer, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("received_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("duplicate_of", sa.String(36), nullable=True),
    sa.Index("ix_journal_control", "sender", "control_id"),
    sa.Index("ix_journal_route_status", "route", "status"),
    sa.Index("ix_journal_received", "received_at"),
)

events = sa.Table(
    "journal_events", metadata,
    sa.Column("seq", sa.Integer, sa.Identity(), primary_key=True),
    sa.Column("message_id", sa.String(36), nullable=False, index=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("detail", sa.Text, nullable=True),
)

processed_keys = sa.Table(
    "journal_processed_keys", metadata,
    sa.Column("route", sa.String(64), primary_key=True),
    sa.Column("sender", sa.String(256), primary_key=True),
    sa.Column("control_id", sa.String(128), primary_key=True),
    sa.Column("message_id", sa.String(36), nullable=False),
)


# never move a message back to an earlier status; keep a known message type
_UPSERT = """ON CONFLICT (id) DO UPDATE SET status = excluded.status, status_rank = excluded.status_rank,
 attempts = excluded.attempts, updated_at = excluded.updated_at, error = excluded.error,
 duplicate_of = excluded.duplicate_of,
 message_type = CASE WHEN excluded.message_type = '' THEN journal_messages.message_type ELSE excluded.message_type END
 WHERE excluded.status_rank >= journal_messages.status_rank"""


@dataclass(frozen=True)
class Entry:
    """A status change of one message."""

    envelope: Envelope
    status: str
    at: float
    error: str | None = None
    message_type: str = ""
    duplicate_of: str | None = None


def entry(envelope: Envelope, status: str, error: str | None = None, message_type: str = "",
          duplicate_of: str | None = None) -> Entry:
    return Entry(envelope, status, time.time(), error, message_type, duplicate_of)


def _message_rows(entries: Sequence[Entry]) -> list[dict[str, Any]]:
    """One journal_messages row per message id (the highest status of the batch wins)."""
    latest: dict[str, Entry] = {}
    for e in entries:
        prev = latest.get(e.envelope.id)
        if prev is None or RANK[e.status] >= RANK[prev.status]:
            latest[e.envelope.id] = e
    return [{
        "id": e.envelope.id, "route": e.envelope.route, "source": e.envelope.source[:128],
        "sender": e.envelope.sender[:256], "control_id": e.envelope.control_id[:128],
        "message_type": e.message_type[:64], "content_type": e.envelope.content_type[:128],
        "status": e.status, "status_rank": RANK[e.status], "attempts": e.envelope.attempts,
        "received_at": e.envelope.received_at, "updated_at": e.at, "error": e.error, "duplicate_of": e.duplicate_of,
    } for e in latest.values()]


def record(conn: sa.Connection, entries: Sequence[Entry]) -> None:
    """Upsert message rows and append events, inside the caller's transaction."""
    if not entries:
        return
    insert_rows(conn, messages, _message_rows(entries), conflict=_UPSERT)
    insert_rows(conn, events, [{"message_id": e.envelope.id, "at": e.at, "status": e.status, "detail": e.error}
                               for e in entries])


def reset_for_replay(conn: sa.Connection, ids: Iterable[str]) -> None:
    """Mark dead-lettered messages queued again. Call it before moving them back to their
    queue: a worker may process them at once, and its status must win."""
    now = time.time()
    ids = list(ids)
    if not ids:
        return
    conn.execute(messages.update().where(messages.c.id.in_(ids), messages.c.status == "dead-lettered").values(
        status="queued", status_rank=RANK["queued"], updated_at=now, attempts=0))
    insert_rows(conn, events, [{"message_id": i, "at": now, "status": "queued", "detail": "replayed"} for i in ids])


def dedupe_key(env: Envelope) -> tuple[str, str, str]:
    """(route, sender, control id) for messages that carry one (a resend is recognised by it);
    else (route, "#id", message id), which still makes a redelivery after a crash a no-op."""
    if env.control_id:
        return (env.route, env.sender[:256], env.control_id[:128])
    return (env.route, "#id", env.id)


def already_processed(conn: sa.Connection, keys: Iterable[tuple[str, str, str]]) -> dict[tuple[str, str, str], str]:
    """Of these (route, sender, control_id) keys, those already processed -> the message id that did it."""
    keys = list(set(keys))
    if not keys:
        return {}
    found: dict[tuple[str, str, str], str] = {}
    if conn.dialect.name == "postgresql":  # one short statement, whatever the batch size
        sql = ('SELECT k.route, k.sender, k.control_id, k.message_id FROM journal_processed_keys k '
               'JOIN unnest(%(r)b::text[], %(s)b::text[], %(c)b::text[]) AS w(route, sender, control_id) '
               'USING (route, sender, control_id)')
        rows = conn.exec_driver_sql(sql, {"r": [k[0] for k in keys], "s": [k[1] for k in keys],
                                          "c": [k[2] for k in keys]})
        return {(r[0], r[1], r[2]): r[3] for r in rows}
    pk = processed_keys.c
    for i in range(0, len(keys), 300):
        chunk = keys[i:i + 300]
        cond = sa.tuple_(pk.route, pk.sender, pk.control_id).in_(chunk)
        for row in conn.execute(sa.select(pk.route, pk.sender, pk.control_id, pk.message_id).where(cond)):
            found[(row[0], row[1], row[2])] = row[3]
    return found


def mark_processed(conn: sa.Connection, envelopes: Iterable[Envelope]) -> None:
    """Remember (route, sender, control id) of these processed messages. A concurrent worker that
    processed the same key first makes this raise IntegrityError, rolling back the batch."""
    rows = [dict(zip(("route", "sender", "control_id"), dedupe_key(e)), message_id=e.id) for e in envelopes]
    insert_rows(conn, processed_keys, rows)


@dataclass(frozen=True)
class Query:
    id: str | None = None
    control_id: str | None = None
    route: str | None = None
    status: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 100


def search(conn: sa.Connection, q: Query) -> list[dict[str, Any]]:
    m = messages.c
    stmt = sa.select(messages)
    if q.id:
        stmt = stmt.where(m.id.startswith(q.id) if len(q.id) < 36 else m.id == q.id)
    if q.control_id:
        stmt = stmt.where(m.control_id == q.control_id)
    if q.route:
        stmt = stmt.where(m.route == q.route)
    if q.status:
        stmt = stmt.where(m.status == q.status)
    if q.since is not None:
        stmt = stmt.where(m.received_at >= q.since)
    if q.until is not None:
        stmt = stmt.where(m.received_at < q.until)
    stmt = stmt.order_by(m.received_at.desc()).limit(q.limit)
    return [{str(k): v for k, v in r._mapping.items()} for r in conn.execute(stmt)]


def history(conn: sa.Connection, message_id: str) -> list[dict[str, Any]]:
    e = events.c
    stmt = sa.select(e.at, e.status, e.detail).where(e.message_id == message_id).order_by(e.at, e.seq)
    return [{str(k): v for k, v in r._mapping.items()} for r in conn.execute(stmt)]


# ---- received side (intake's journal writer) ----------------------------------------------
_RECEIVED_MESSAGES_PG = """INSERT INTO journal_messages (id, route, source, sender, control_id, message_type,
 content_type, status, status_rank, attempts, received_at, updated_at, error, duplicate_of)
SELECT id, route, source, sender, control_id, message_type, content_type, status, status_rank, attempts,
 received_at, updated_at, error, NULL FROM json_to_recordset(%(rows)s::json) AS r(id text, route text,
 source text, sender text, control_id text, message_type text, content_type text, status text,
 status_rank int, attempts int, received_at float8, updated_at float8, error text) """ + _UPSERT
_RECEIVED_EVENTS_PG = """INSERT INTO journal_events (message_id, at, status, detail)
SELECT id, at, status, detail FROM json_to_recordset(%(rows)s::json) AS r(id text, at float8, status text, detail text)"""


def record_received(conn: sa.Connection, entries: Sequence[Entry]) -> None:
    """`record` for intake's entries (queued, refused), inside the caller's transaction. On
    PostgreSQL the rows travel as one JSON document per table (serialised by orjson in C) instead
    of one array parameter per column, whose elements psycopg dumps one by one in Python: that
    array dumping was most of the listener's journal cost. Same upsert, same rows."""
    if conn.dialect.name != "postgresql":
        record(conn, entries)
        return
    if not entries:
        return
    import orjson

    rows = _message_rows(entries)  # duplicate_of is not among the columns the statement reads
    conn.exec_driver_sql(_RECEIVED_MESSAGES_PG, {"rows": orjson.dumps(rows).decode()})
    conn.exec_driver_sql(_RECEIVED_EVENTS_PG, {"rows": orjson.dumps(
        [{"id": e.envelope.id, "at": e.at, "status": e.status, "detail": e.error} for e in entries]).decode()})


FINISHED = ("processed", "filtered", "duplicate", "refused")  # nothing more will happen to them


@dataclass(frozen=True)
class Pruned:
    messages: int = 0
    events: int = 0
    resend_keys: int = 0


def prune(conn: sa.Connection, before: float, *, resend_keys: bool = False, limit: int = 5000) -> Pruned:
    """Delete up to `limit` finished messages (see FINISHED) last updated before `before`, with
    their events, inside the caller's transaction; call it again until it prunes none. Messages
    still queued, retrying or dead-lettered stay. With `resend_keys`, their resend keys go too: a
    resend of such a message is then processed again (its resources upsert to the same ids, so
    it makes new versions, not new records)."""
    m = messages.c
    ids = [r[0] for r in conn.execute(sa.select(m.id).where(m.status.in_(FINISHED), m.updated_at < before)
                                      .order_by(m.updated_at).limit(limit))]
    if not ids:
        return Pruned()
    n_events = conn.execute(events.delete().where(events.c.message_id.in_(ids))).rowcount
    n_keys = conn.execute(processed_keys.delete().where(processed_keys.c.message_id.in_(ids))).rowcount \
        if resend_keys else 0
    n_messages = conn.execute(messages.delete().where(m.id.in_(ids))).rowcount
    return Pruned(n_messages, n_events, n_keys)
