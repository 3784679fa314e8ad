"""The embedded transport: durable queues in one SQLite file (single node, the default).

Layout: one table ``messages`` holding every queue's messages, one table ``queues``
holding the declared queue names. A message is *ready* when ``available_at <= now``
and ``locked_until <= now`` (not leased, or its lease has expired). Consumers claim
ready messages in order of ``available_at`` then ``seq`` by setting ``locked_until``
(the lease) and ``consumer``; ``deliveries`` counts claims, so a claim is identified by
``(seq, deliveries)`` and a stale handle can never touch a row someone else claimed
since.

Durability
----------
The file is in WAL mode and every connection uses ``synchronous=FULL``: in WAL mode
that fsyncs the WAL on every commit, so a committed publish survives a process crash
*and* an OS crash / power loss. (``NORMAL`` with WAL survives a process crash but may
roll back the last commits on power loss; since a resolved publish future is what lets
intake send an HL7 ACK, we do not accept that.) The cost of FULL is paid once per
*transaction*, not per message: publishes are group-committed by one writer thread,
which drains every pending publish (up to ``max_batch``) into one transaction and then
resolves all their futures.

Ownership and crashes
---------------------
A claimed message carries a lease (``lease`` seconds, default 60). While its consumer
is open, a keeper thread renews the leases of everything the consumer holds, so slow
processing never causes a second delivery; when the process dies the renewals stop,
the leases expire and the messages are delivered again with ``redelivered=True``.
``retry_later``/``dead_letter`` write the new copy and delete the original in one
transaction; if the original was meanwhile claimed by another consumer (our lease
expired, e.g. the process was suspended) nothing is written and TransportError is
raised. An ``ack`` of such a message is a logged no-op (the other consumer owns it now).

Several threads and several processes may use the same file: every write is a
``BEGIN IMMEDIATE`` transaction (SQLite serialises writers, ``busy_timeout`` waits
for the lock), readers never block in WAL mode. In-process publishes wake waiting
consumers through a Condition; messages published by other processes, delayed
retries and expired leases are found by polling every ``poll_interval`` seconds
(a read-only probe, the write lock is only taken when something is ready).
Times are wall-clock (``time.time()``) because they are shared between processes.
"""
from __future__ import annotations

import contextlib
import os
import queue as queue_mod
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from ..envelope import Envelope
from ..errors import InputError, TransportError
from ..logging import get as get_logger
from .base import Consumer, Delivery, RouteQueues, Transport

log = get_logger("router.transport.embedded")

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS messages (
        seq          INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: stale handles stay stale
        queue        TEXT    NOT NULL,
        msg_id       TEXT    NOT NULL,
        body         BLOB    NOT NULL,                   -- Envelope.to_bytes()
        available_at REAL    NOT NULL,
        enqueued_at  REAL    NOT NULL,
        locked_until REAL    NOT NULL DEFAULT 0,
        consumer     TEXT,
        deliveries   INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX IF NOT EXISTS messages_by_queue ON messages (queue, available_at, seq)",
    """CREATE TABLE IF NOT EXISTS queues (
        name  TEXT PRIMARY KEY,
        route TEXT NOT NULL,
        kind  TEXT NOT NULL
    )""",
)

_INSERT = "INSERT INTO messages (queue, msg_id, body, available_at, enqueued_at) VALUES (?, ?, ?, ?, ?)"
_DELETE_OWNED = "DELETE FROM messages WHERE seq = ? AND consumer = ? AND deliveries = ?"
_RELEASE_OWNED = "UPDATE messages SET locked_until = 0, consumer = NULL WHERE seq = ? AND consumer = ? AND deliveries = ?"
_RENEW_OWNED = "UPDATE messages SET locked_until = ? WHERE seq = ? AND consumer = ? AND deliveries = ?"
_PROBE = "SELECT 1 FROM messages WHERE queue = ? AND available_at <= ? AND locked_until <= ? LIMIT 1"
_CANDIDATES = (
    "SELECT seq, available_at FROM messages WHERE queue = ? AND available_at <= ? AND locked_until <= ? "
    "ORDER BY available_at, seq LIMIT ?"
)


@dataclass(frozen=True)
class _Tag:
    """Delivery.tag of the embedded transport: one claim of one row."""

    seq: int
    token: int  # the row's `deliveries` after our claim
    consumer: str


@dataclass
class _Pending:
    queue: str
    msg_id: str
    body: bytes
    future: Future[None]


@dataclass
class PublishStats:
    """Counters of the group-commit writer (for tests and metrics)."""

    messages: int = 0
    commits: int = 0
    largest_batch: int = 0
    failed: int = 0


_STOP = object()


class _LeaseLost(Exception):
    pass


@contextlib.contextmanager
def _write_tx(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction, taking the write lock up front (no deadlocking lock upgrade)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


def _placeholders(n: int) -> str:
    return ",".join("?" * n)


class EmbeddedTransport(Transport):
    def __init__(self, path: str, namespace: str = "router", *, lease: float = 60.0,
                 renew_leases: bool = True, poll_interval: float = 0.05, max_batch: int = 500,
                 busy_timeout: float = 30.0, synchronous: str = "FULL") -> None:
        if lease <= 0:
            raise ValueError("lease must be positive")
        if synchronous.upper() not in ("FULL", "EXTRA", "NORMAL"):
            raise ValueError("synchronous must be FULL, EXTRA or NORMAL")
        self.path = os.path.abspath(path)
        self.namespace = namespace
        self.lease = float(lease)
        self.renew_leases = renew_leases
        self.poll_interval = float(poll_interval)
        self.max_batch = int(max_batch)
        self.busy_timeout = float(busy_timeout)
        self.synchronous = synchronous.upper()
        self.stats = PublishStats()

        parent = os.path.dirname(self.path)
        if parent:
            os.makedirs(parent, exist_ok=True)

        self._lock = threading.Lock()  # guards _closed, the pending queue's end, _conns, _declared
        self._closed = False
        self._conns: list[sqlite3.Connection] = []
        self._local = threading.local()
        self._thread_conns: dict[threading.Thread, sqlite3.Connection] = {}
        self._declared: set[str] = set()
        # publishes (and releases) bump the generation and notify waiting fetches
        self._cond = threading.Condition()
        self._generation = 0
        self._consumers: set[EmbeddedConsumer] = set()  # open consumers (closed on close())

        try:
            conn = self._conn()
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise TransportError(f"could not put {self.path} in WAL mode (got {mode!r})")
            with _write_tx(conn):
                for stmt in _SCHEMA:
                    conn.execute(stmt)
        except sqlite3.Error as exc:
            self._close_connections()
            raise TransportError(f"cannot open queue file {self.path}: {exc}") from exc

        self._pending: queue_mod.SimpleQueue[Any] = queue_mod.SimpleQueue()
        self._writer = threading.Thread(target=self._writer_main, name="embedded-transport-writer", daemon=True)
        self._writer.start()
        self._keeper_stop = threading.Event()
        self._keeper: threading.Thread | None = None

    # ---- connections --------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                               check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA journal_size_limit=67108864")  # truncate a grown WAL back to 64 MiB
        with self._lock:
            self._conns.append(conn)
        return conn

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection for transport-level operations (publish look-ups, DLQ tools, depth)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            self._check_open()
            conn = self._local.conn = self._connect()
            with self._lock:
                # close the connections of threads that have ended (e.g. per-client intake threads)
                gone = [th for th in self._thread_conns if not th.is_alive()]
                for th in gone:
                    old = self._thread_conns.pop(th)
                    self._conns.remove(old)
                    with contextlib.suppress(sqlite3.Error):
                        old.close()
                self._thread_conns[threading.current_thread()] = conn
        return conn

    def _close_connections(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
            self._thread_conns.clear()
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def _check_open(self) -> None:
        if self._closed:
            raise TransportError("transport is closed")

    def _notify(self) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    # ---- queues -------------------------------------------------------------
    def setup(self, routes: Iterable[RouteQueues]) -> None:
        self._check_open()
        rows = []
        for r in routes:
            rows.append((r.work, r.route, "work"))
            rows.append((r.dlq, r.route, "dlq"))
        try:
            conn = self._conn()
            with _write_tx(conn):
                conn.executemany("INSERT OR IGNORE INTO queues (name, route, kind) VALUES (?, ?, ?)", rows)
        except sqlite3.Error as exc:
            raise TransportError(f"cannot declare queues: {exc}") from exc
        with self._lock:
            self._declared.update(name for name, _, _ in rows)

    def _is_declared(self, queue: str) -> bool:
        if queue in self._declared:
            return True
        # maybe declared by another process or another instance on the same file
        row = self._conn().execute("SELECT 1 FROM queues WHERE name = ?", (queue,)).fetchone()
        if row:
            with self._lock:
                self._declared.add(queue)
        return row is not None

    # ---- publishing (group commit) -------------------------------------------
    def publish(self, queue: str, envelope: Envelope) -> Future[None]:
        future: Future[None] = Future()
        try:
            self._check_open()
            if not self._is_declared(queue):
                raise TransportError(f"queue {queue!r} is not declared (call setup() first)")
            item = _Pending(queue, envelope.id, envelope.to_bytes(), future)
        except TransportError as exc:
            future.set_exception(exc)
            return future
        except sqlite3.Error as exc:
            future.set_exception(TransportError(f"publish to {queue!r} failed: {exc}"))
            return future
        with self._lock:
            if self._closed:
                future.set_exception(TransportError("transport is closed"))
                return future
            self._pending.put(item)
        return future

    def _writer_main(self) -> None:
        conn: sqlite3.Connection | None = None
        stop = False
        while not stop:
            first = self._pending.get()
            batch: list[_Pending] = []
            if first is _STOP:
                stop = True
            else:
                batch.append(first)
                # Let publishers that were just woken by the last commit enqueue their next
                # message (they need the GIL for it) before we take the batch: cheap, and it
                # makes batches of concurrent synchronous publishers much larger.
                time.sleep(0)
                while len(batch) < self.max_batch:
                    try:
                        item = self._pending.get_nowait()
                    except queue_mod.Empty:
                        break
                    if item is _STOP:  # nothing can follow the stop marker
                        stop = True
                        break
                    batch.append(item)
            live = [p for p in batch if p.future.set_running_or_notify_cancel()]
            if not live:
                continue
            try:
                if conn is None:
                    conn = self._connect()
                now = time.time()
                with _write_tx(conn):
                    conn.executemany(_INSERT, [(p.queue, p.msg_id, p.body, now, now) for p in live])
            except BaseException as exc:  # noqa: BLE001 - every failure must reach the futures
                self.stats.failed += len(live)
                log.error("publish batch failed", messages=len(live), error=type(exc).__name__, text=str(exc))
                for p in live:
                    p.future.set_exception(TransportError(f"publish failed: {type(exc).__name__}: {exc}"))
                if not isinstance(exc, Exception):
                    raise
                continue
            self.stats.messages += len(live)
            self.stats.commits += 1
            self.stats.largest_batch = max(self.stats.largest_batch, len(live))
            for p in live:
                p.future.set_result(None)
            self._notify()

    # ---- consuming ----------------------------------------------------------
    def consumer(self, routes: Iterable[RouteQueues], prefetch: int) -> Consumer:
        self._check_open()
        routes = list(routes)
        if not routes:
            raise ValueError("a consumer needs at least one route")
        if prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        for r in routes:
            for name in (r.work, r.dlq):
                if not self._is_declared(name):
                    raise TransportError(f"queue {name!r} is not declared (call setup() first)")
        c = EmbeddedConsumer(self, routes, prefetch)
        with self._lock:
            self._consumers.add(c)
            if self.renew_leases and self._keeper is None:
                self._keeper = threading.Thread(target=self._keeper_main, name="embedded-transport-leases",
                                                daemon=True)
                self._keeper.start()
        return c

    def _keeper_main(self) -> None:
        """Renew the leases of every open consumer's unfinished deliveries (at a third of the lease)."""
        conn: sqlite3.Connection | None = None
        interval = max(self.lease / 3.0, 0.01)
        while not self._keeper_stop.wait(interval):
            with self._lock:
                consumers = list(self._consumers)
            rows: list[tuple[float, int, str, int]] = []
            until = time.time() + self.lease
            for c in consumers:
                rows.extend((until, seq, c.id, token) for seq, token in c._held_snapshot())
            if not rows:
                continue
            try:
                if conn is None:
                    conn = self._connect()
                with _write_tx(conn):
                    conn.executemany(_RENEW_OWNED, rows)
            except sqlite3.Error as exc:
                log.warning("lease renewal failed", leases=len(rows), error=type(exc).__name__, text=str(exc))

    def _forget_consumer(self, c: EmbeddedConsumer) -> None:
        with self._lock:
            self._consumers.discard(c)

    # ---- dead-letter queues -------------------------------------------------
    def dlq_browse(self, route: RouteQueues, limit: int = 1000) -> list[Envelope]:
        self._check_open()
        try:
            rows = self._conn().execute(
                "SELECT seq, body FROM messages WHERE queue = ? ORDER BY available_at, seq LIMIT ?",
                (route.dlq, limit)).fetchall()
        except sqlite3.Error as exc:
            raise TransportError(f"cannot browse {route.dlq!r}: {exc}") from exc
        out = []
        for seq, body in rows:
            try:
                out.append(Envelope.from_bytes(body))
            except InputError as exc:
                log.error("undecodable message in dead-letter queue", queue=route.dlq, seq=seq, text=str(exc))
        return out

    def dlq_replay(self, route: RouteQueues, ids: set[str] | None = None) -> list[str]:
        self._check_open()
        moved: list[str] = []
        last = 0
        conn = self._conn()
        try:
            while True:  # in chunks, so the write lock is never held for long
                with _write_tx(conn):
                    rows = conn.execute(
                        "SELECT seq, msg_id, body FROM messages WHERE queue = ? AND seq > ? ORDER BY seq LIMIT 500",
                        (route.dlq, last)).fetchall()
                    if not rows:
                        break
                    last = rows[-1][0]
                    now = time.time()
                    for seq, msg_id, body in rows:
                        if ids is not None and msg_id not in ids:
                            continue
                        try:
                            env = Envelope.from_bytes(body).for_replay()
                        except InputError as exc:
                            log.error("undecodable message in dead-letter queue not replayed",
                                      queue=route.dlq, seq=seq, text=str(exc))
                            continue
                        conn.execute(_INSERT, (route.work, env.id, env.to_bytes(), now, now))
                        conn.execute("DELETE FROM messages WHERE seq = ?", (seq,))
                        moved.append(env.id)
        except sqlite3.Error as exc:
            raise TransportError(f"replay of {route.dlq!r} failed after {len(moved)} messages: {exc}") from exc
        if moved:
            self._notify()
        return moved

    def dlq_purge(self, route: RouteQueues) -> int:
        self._check_open()
        conn = self._conn()
        try:
            with _write_tx(conn):
                return conn.execute("DELETE FROM messages WHERE queue = ?", (route.dlq,)).rowcount
        except sqlite3.Error as exc:
            raise TransportError(f"cannot purge {route.dlq!r}: {exc}") from exc

    def depth(self, queue: str) -> int:
        self._check_open()
        now = time.time()
        try:
            return int(self._conn().execute(
                "SELECT COUNT(*) FROM messages WHERE queue = ? AND available_at <= ? AND locked_until <= ?",
                (queue, now, now)).fetchone()[0])
        except sqlite3.Error as exc:
            raise TransportError(f"cannot count {queue!r}: {exc}") from exc

    # ---- shutdown ------------------------------------------------------------
    def close(self) -> None:
        """Commit every publish accepted so far, release open consumers' leases, close the file."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._pending.put(_STOP)
            consumers = list(self._consumers)
        self._writer.join()
        self._keeper_stop.set()
        if self._keeper is not None:
            self._keeper.join()
        for c in consumers:
            try:
                c.close()
            except TransportError as exc:
                log.warning("could not release a consumer's leases on close", text=str(exc))
        self._notify()
        self._close_connections()


class EmbeddedConsumer(Consumer):
    """Claims messages of some routes' work queues with a lease. Used by one thread."""

    def __init__(self, transport: EmbeddedTransport, routes: list[RouteQueues], prefetch: int) -> None:
        self.id = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._t = transport
        self._routes = {r.work: r for r in routes}
        self._queues = list(self._routes)
        self.prefetch = prefetch
        self._held: dict[int, int] = {}  # seq -> token of deliveries not yet finished
        self._held_lock = threading.Lock()  # the keeper thread reads _held
        self._closed = False
        self._conn = transport._connect()

    # ---- bookkeeping ---------------------------------------------------------
    def _held_snapshot(self) -> list[tuple[int, int]]:
        with self._held_lock:
            return list(self._held.items())

    def _tag(self, delivery: Delivery) -> _Tag:
        tag = delivery.tag
        if not isinstance(tag, _Tag) or tag.consumer != self.id:
            raise TransportError("this delivery was not fetched by this consumer")
        return tag

    def _finish(self, tags: Iterable[_Tag]) -> None:
        with self._held_lock:
            for tag in tags:
                self._held.pop(tag.seq, None)

    def _check_open(self) -> None:
        if self._closed:
            raise TransportError("consumer is closed")
        self._t._check_open()

    # ---- fetching --------------------------------------------------------------
    def fetch(self, max_messages: int, timeout: float) -> list[Delivery]:
        self._check_open()
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            with self._t._cond:
                generation = self._t._generation
            with self._held_lock:
                room = min(max_messages, self.prefetch - len(self._held))
            if room > 0:
                got = self._claim(room)
                if got:
                    return got
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            with self._t._cond:
                if self._t._generation == generation:
                    self._t._cond.wait(min(remaining, self._t.poll_interval))
            if self._closed or self._t._closed:
                return []

    def _claim(self, n: int) -> list[Delivery]:
        conn = self._conn
        try:
            now = time.time()
            # read-only probe first: idle consumers never take the write lock
            if not any(conn.execute(_PROBE, (q, now, now)).fetchone() for q in self._queues):
                return []
            with _write_tx(conn):
                now = time.time()
                cands: list[tuple[int, float]] = []
                for q in self._queues:
                    cands.extend(conn.execute(_CANDIDATES, (q, now, now, n)).fetchall())
                if not cands:
                    return []
                cands.sort(key=lambda r: (r[1], r[0]))
                seqs = [seq for seq, _ in cands[:n]]
                rows = conn.execute(
                    "UPDATE messages SET locked_until = ?, consumer = ?, deliveries = deliveries + 1 "
                    f"WHERE seq IN ({_placeholders(len(seqs))}) "
                    "RETURNING seq, queue, body, deliveries, available_at",
                    (now + self._t.lease, self.id, *seqs)).fetchall()
        except sqlite3.Error as exc:
            raise TransportError(f"fetch failed: {exc}") from exc
        rows.sort(key=lambda r: (r[4], r[0]))
        out: list[Delivery] = []
        bad: list[tuple[int, int, str]] = []
        with self._held_lock:
            for seq, queue, body, token, _ in rows:
                try:
                    env = Envelope.from_bytes(body)
                except InputError as exc:
                    log.error("undecodable message moved to the dead-letter queue", queue=queue, seq=seq,
                              text=str(exc))
                    bad.append((seq, token, self._routes[queue].dlq))
                    continue
                self._held[seq] = token
                out.append(Delivery(envelope=env, queue=queue, tag=_Tag(seq, token, self.id),
                                    redelivered=token > 1))
        if bad:
            self._quarantine(bad)
        return out

    def _quarantine(self, bad: list[tuple[int, int, str]]) -> None:
        """Move rows that are not envelopes to the DLQ untouched (never loop on them, never drop them)."""
        try:
            with _write_tx(self._conn):
                self._conn.executemany(
                    "UPDATE messages SET queue = ?, locked_until = 0, consumer = NULL, available_at = ? "
                    "WHERE seq = ? AND consumer = ? AND deliveries = ?",
                    [(dlq, time.time(), seq, self.id, token) for seq, token, dlq in bad])
        except sqlite3.Error as exc:
            log.error("could not move undecodable messages", error=type(exc).__name__, text=str(exc))

    # ---- settling -------------------------------------------------------------
    def ack(self, deliveries: list[Delivery]) -> None:
        self._check_open()
        tags = [self._tag(d) for d in deliveries]
        if not tags:
            return
        try:
            with _write_tx(self._conn):
                cur = self._conn.executemany(_DELETE_OWNED, [(t.seq, self.id, t.token) for t in tags])
                done = cur.rowcount
        except sqlite3.Error as exc:
            raise TransportError(f"ack failed: {exc}") from exc
        self._finish(tags)
        if done != len(tags):
            log.warning("ack of messages whose lease had passed to another consumer (they are processed again)",
                        lost=len(tags) - done)

    def _replace(self, delivery: Delivery, queue: str, envelope: Envelope, delay: float) -> None:
        tag = self._tag(delivery)
        body = envelope.to_bytes()
        try:
            with _write_tx(self._conn):
                now = time.time()
                self._conn.execute(_INSERT, (queue, envelope.id, body, now + max(delay, 0.0), now))
                if self._conn.execute(_DELETE_OWNED, (tag.seq, self.id, tag.token)).rowcount != 1:
                    raise _LeaseLost
        except _LeaseLost:
            self._finish([tag])
            raise TransportError(
                f"message {delivery.envelope.id} is no longer ours (lease expired and it was delivered again); "
                "nothing written") from None
        except sqlite3.Error as exc:
            raise TransportError(f"could not move message {delivery.envelope.id} to {queue!r}: {exc}") from exc
        self._finish([tag])
        if delay <= 0:
            self._t._notify()

    def retry_later(self, delivery: Delivery, envelope: Envelope, delay: float, tier: int) -> None:
        self._check_open()
        self._replace(delivery, delivery.queue, envelope, delay)

    def dead_letter(self, delivery: Delivery, envelope: Envelope) -> None:
        self._check_open()
        route = self._routes.get(delivery.queue)
        if route is None:
            raise TransportError(f"delivery from {delivery.queue!r}, which this consumer does not consume")
        self._replace(delivery, route.dlq, envelope, 0.0)

    def requeue(self, deliveries: list[Delivery]) -> None:
        self._check_open()
        self._release([self._tag(d) for d in deliveries])

    def _release(self, tags: list[_Tag]) -> None:
        if not tags:
            return
        try:
            with _write_tx(self._conn):
                self._conn.executemany(_RELEASE_OWNED, [(t.seq, self.id, t.token) for t in tags])
        except sqlite3.Error as exc:
            raise TransportError(f"requeue failed: {exc}") from exc
        self._finish(tags)
        self._t._notify()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            with self._held_lock:
                tags = [_Tag(seq, token, self.id) for seq, token in self._held.items()]
            self._release(tags)
        finally:
            self._t._forget_consumer(self)
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            with self._t._lock:
                if self._conn in self._t._conns:
                    self._t._conns.remove(self._conn)
