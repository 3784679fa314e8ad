"""Intake: the one path from a source into the engine.

A source hands over raw bytes; intake picks the route (by HL7 message type against
each route's ``accept``), wraps them in an Envelope and publishes to the route's work
queue, returning only once the transport says the message is durable. Sources answer
their sender (ACK, HTTP status) from what this returns or raises. The journal's
"queued" row is written in the background, off the acknowledgement path.
"""
from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from . import journal
from .envelope import Envelope
from .errors import InputError, RejectedError, TransportError
from .formats import hl7v2
from .logging import get
from .runtime import RouteRuntime
from .transport.aio import bridge_for
from .transport.base import Transport

log = get("router.intake")

HL7_CONTENT_TYPE = "x-application/hl7-v2+er7"


@dataclass(frozen=True)
class Accepted:
    envelope: Envelope
    route: RouteRuntime
    header: hl7v2.Header | None


class JournalWriter:
    """Writes intake's journal entries in batches on a background thread. Best effort: the
    transport already holds the message; the worker upserts the row again when it processes it.

    After the first entry of a batch it lingers ``linger`` seconds, then takes everything queued
    (at most ``max_batch``): under load the journal costs one transaction per batch, not one per
    few messages, and the thread wakes once per batch instead of once per message. One connection
    is kept across batches (no pool checkout and liveness ping per batch); a batch that fails on
    it is tried once more on a new connection, then dropped with a warning.
    """

    def __init__(self, engine: sa.Engine | None, *, linger: float = 0.1, max_batch: int = 2000) -> None:
        self.engine = engine
        self.linger = linger
        self.max_batch = max_batch
        self.q: queue.SimpleQueue[journal.Entry | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="journal-writer", daemon=True)
        self._conn: sa.Connection | None = None
        if engine is not None:
            self.thread.start()

    def put(self, e: journal.Entry) -> None:
        if self.engine is not None:
            self.q.put(e)

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self.q.get()
            batch = [first]
            if first is not None and self.linger > 0:
                time.sleep(self.linger)
            while len(batch) < self.max_batch and batch[-1] is not None:
                try:
                    batch.append(self.q.get_nowait())
                except queue.Empty:
                    break
            stop = batch[-1] is None
            entries = [e for e in batch if e is not None]
            if entries:
                self._write(entries)
        if self._conn is not None:
            self._drop()

    def _write(self, entries: list[journal.Entry]) -> None:
        assert self.engine is not None
        for attempt in (1, 2):
            fresh = self._conn is None
            try:
                if self._conn is None:
                    self._conn = self.engine.connect()
                with self._conn.begin():
                    journal.record_received(self._conn, entries)
                return
            except Exception as exc:  # noqa: BLE001 - the journal must not break intake
                self._drop()
                if fresh or attempt == 2:
                    log.warning("journal write failed", error=type(exc).__name__, count=len(entries))
                    return

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass

    def close(self) -> None:
        if self.engine is not None and self.thread.is_alive():
            self.q.put(None)
            self.thread.join(timeout=10)


class BacklogGate:
    """Intake backpressure on a backlog bound. While any of `queues` holds `limit` or more ready
    messages (accepted, not yet taken by a worker), ``wait()`` blocks; a source awaits it before
    reading its next message, so TCP flow control reaches the senders (their ACKs come later)
    and the workers get the CPU the listener would spend accepting more. It opens again below
    90% of `limit`. The depth is read every `interval` seconds on a thread; when it cannot be
    read (broker down), the gate stays as it was and publishing reports the trouble."""

    def __init__(self, transport: Transport, queues: Sequence[str], limit: int, interval: float = 0.5) -> None:
        self.transport, self.queues, self.limit, self.interval = transport, list(queues), limit, interval
        self.low = max(0, int(limit * 0.9))
        self.paused = False
        self.pauses = 0
        self._warned = -60.0
        self._open = asyncio.Event()
        self._open.set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        task, self._task = self._task, None
        self._open.set()  # nobody stays blocked on a stopped gate
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def wait(self) -> None:
        if self.paused:
            await self._open.wait()

    def _depth(self) -> int:
        return max(self.transport.depth(q) for q in self.queues)

    async def _watch(self) -> None:
        while True:
            try:
                depth = await asyncio.to_thread(self._depth)
            except Exception as exc:  # noqa: BLE001 - the gate is advisory; publish reports the trouble
                log.debug("backlog unknown", error=type(exc).__name__)
            else:
                if not self.paused and depth >= self.limit:
                    self.paused = True
                    self._open.clear()
                    self.pauses += 1
                    now = time.monotonic()
                    if now - self._warned >= 60.0:  # the gate may flap every second: one warning a minute
                        self._warned = now
                        log.warning("intake paused: backlog at its bound", backlog=depth, limit=self.limit,
                                    pauses=self.pauses)
                elif self.paused and depth < self.low:
                    self.paused = False
                    self._open.set()
                    log.debug("intake resumed", backlog=depth, limit=self.limit)
            await asyncio.sleep(self.interval)


class Intake:
    def __init__(self, routes: Sequence[RouteRuntime], transport: Transport, journal_writer: JournalWriter,
                 *, publish_timeout: float = 30.0) -> None:
        self.routes = list(routes)
        self.transport = transport
        self.journal = journal_writer
        self.publish_timeout = publish_timeout

    def select(self, message_type: str | None) -> RouteRuntime:
        for r in self.routes:
            if message_type is None:
                if r.accept is None:
                    return r
            elif r.accepts(message_type):
                return r
        what = f"message type {message_type}" if message_type else "a message that is not HL7 v2"
        raise RejectedError(f"no route accepts {what} here")

    def prepare(self, raw: bytes, *, source: str, content_type: str | None = None,
                headers: dict[str, str] | None = None, header: hl7v2.Header | None = None) -> Accepted:
        """Parse just enough to route; raises InputError / RejectedError (journaled as refused).
        `header`: the message's MSH when the source has parsed it already."""
        try:
            return self._prepare(raw, source, content_type, headers, header)
        except InputError as exc:
            self.refused(raw, source, exc)
            raise

    def refused(self, raw: bytes, source: str, exc: BaseException) -> None:
        """Journal a message refused at the door (without its content)."""
        header = None
        if hl7v2.is_hl7(raw):
            try:
                header = hl7v2.parse_header(hl7v2.decode(raw))
            except InputError:
                header = None
        route = self.routes[0].name if len(self.routes) == 1 else "-"
        env = Envelope(route=route, raw=b"", source=source, sender=header.sender if header else "",
                       control_id=header.control_id if header else "")
        self.journal.put(journal.entry(env, "refused", error=f"{type(exc).__name__}: {exc}"[:2000],
                                       message_type=header.message_type if header else ""))
        log.info("refused", message_id=env.id, route=route, error=type(exc).__name__)

    def _prepare(self, raw: bytes, source: str, content_type: str | None,
                 headers: dict[str, str] | None, header: hl7v2.Header | None) -> Accepted:
        if header is not None or hl7v2.is_hl7(raw):
            if header is None:
                header = hl7v2.parse_header(hl7v2.decode(raw))
            content_type = content_type or HL7_CONTENT_TYPE
        elif content_type is None:
            raise InputError("message is not HL7 v2 (it must start with MSH)")
        route = self.select(header.message_type if header else None)
        env = Envelope(route=route.name, raw=raw, source=source, content_type=content_type or HL7_CONTENT_TYPE,
                       headers=dict(headers or {}), sender=header.sender if header else "",
                       control_id=header.control_id if header else "")
        if header is not None:
            env.headers.setdefault("message_type", header.message_type)
        return Accepted(env, route, header)

    async def enqueue(self, accepted: Accepted) -> None:
        """Publish and wait for durability; raises TransportError when it cannot be promised."""
        env = accepted.envelope
        try:
            fut = self.transport.publish(accepted.route.queues.work, env)
            await bridge_for(self).wait(fut, self.publish_timeout)
        except TransportError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise TransportError(f"enqueue failed: {type(exc).__name__}: {exc}") from None
        self.journal.put(self._queued(env))

    @staticmethod
    def _queued(env: Envelope) -> journal.Entry:
        # stamped with the arrival time: a worker may process the message before the confirm reaches
        # us, and the history must still read queued -> processed
        return journal.Entry(env, "queued", env.received_at, message_type=env.headers.get("message_type", ""))

    def enqueue_sync(self, accepted: Accepted) -> None:
        env = accepted.envelope
        try:
            self.transport.publish(accepted.route.queues.work, env).result(timeout=self.publish_timeout)
        except Exception as exc:  # noqa: BLE001
            raise TransportError(f"enqueue failed: {type(exc).__name__}: {exc}") from None
        self.journal.put(self._queued(env))
