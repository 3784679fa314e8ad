"""RabbitMQ transport (pika): durable queues on a broker, competing consumers on any number of hosts.

URL
    ``amqp://user:password@host:5672/vhost`` (``%2F`` is the default vhost ``/``), or ``amqps://``
    for TLS. pika's query options are honoured, e.g. ``?heartbeat=30&connection_attempts=3
    &socket_timeout=5&blocked_connection_timeout=60``. Passwords never appear in errors or logs.

Queues (all on the default exchange, all durable, every message persistent)
    * ``<ns>.<route>``: the work queue, ``x-queue-type: quorum`` when the route asks for quorum
      queues, else ``classic``;
    * ``<ns>.<route>.dlq`` (or the route's dead-letter queue name): same queue type;
    * ``<ns>.<route>.retry.<k>``: one delay queue per retry tier. ``x-message-ttl`` is the tier's
      longest delay (``delays[k] * (1 + jitter)``, ms), ``x-dead-letter-exchange: ""`` and
      ``x-dead-letter-routing-key: <ns>.<route>`` send an expired message back to the work queue.
      ``retry_later`` sets the per-message ``expiration`` to the (jittered) delay actually wanted,
      capped by the tier's TTL. RabbitMQ only expires messages at the head of a queue; because every
      delay in a tier is close to the others, the tier is roughly FIFO and no message waits much
      longer than asked. Quorum delay queues use ``x-dead-letter-strategy: at-least-once``
      (with ``x-overflow: reject-publish``, which that strategy requires) so dead-lettering
      back to the work queue cannot lose a message.
    ``setup`` is idempotent; a queue that already exists with other arguments is reported as a
    TransportError naming the queue (RabbitMQ cannot change a queue's arguments in place).

Messages
    body = ``Envelope.to_bytes()``; properties: ``delivery_mode=2`` (persistent),
    ``message_id`` = envelope id, ``correlation_id``, ``content_type`` =
    ``application/x-router-envelope`` (the body is the envelope wire format, not the payload; the
    payload's own type is inside the envelope header). Publishes are ``mandatory``: a message
    the broker cannot route (no such queue) fails its future instead of vanishing.

Threads and connections
    * Publishing: one dedicated thread per transport runs a pika ``SelectConnection`` in publisher
      confirm mode. ``publish`` (any thread) serialises the envelope, queues it and wakes the
      I/O thread (``add_callback_threadsafe``, coalesced); the I/O thread publishes pipelined
      (at most ``MAX_IN_FLIGHT`` unconfirmed) and resolves futures on Basic.Ack (``multiple``
      honoured); Basic.Nack or a Basic.Return (unroutable) fails them with TransportError.
      Future callbacks run on that I/O thread: keep them short and non-blocking.
    * Intake's event loop (``attach_loop``, called by intake on its loop): publishes made inside that
      loop go through a second publisher connection driven by the loop itself (pika's
      ``AsyncioConnection``, the same publisher logic), with no hand-off to the I/O thread and back;
      their futures complete on the loop. Publishes from any other thread use the I/O thread.
    * On connection loss the I/O thread reconnects with exponential backoff (0.1 s doubling, capped
      at ``reconnect_max_delay``, jittered) and publishes every unconfirmed message again on the new
      connection, in the original order. Duplicates are possible (and removed downstream by the
      journal); losses are not. A future not confirmed within ``publish_timeout`` fails with
      TransportError (the message may still arrive: at least once, never "maybe zero").
    * Consumers: one ``BlockingConnection`` + one channel per consumer (consumers are used by a single
      thread); ``prefetch`` is per work queue (per-consumer QoS: quorum queues have no channel-wide QoS). Heartbeats are only answered while the consumer is inside a method: call ``fetch``
      more often than the negotiated heartbeat timeout.
    * Operator tools (``setup``, ``depth``, ``dlq_*``) share one lazily opened BlockingConnection,
      serialised by a lock, with a fresh channel per operation.
    * ``close`` waits up to ``CLOSE_FLUSH_TIMEOUT`` seconds for outstanding confirms, stops the
      publisher thread, and disconnects consumers still open (closed directly when they belong to
      the calling thread, else their socket is shut down: pika connections are not thread-safe).
    * Prefetch is RabbitMQ's push prefetch: a subscribed consumer holds up to ``prefetch`` unacked
      messages even between ``fetch`` calls, and those do not count in ``depth`` (ready only).

Consumer connection loss (the choice made here)
    The consumer reconnects transparently: ``fetch`` notices the loss, reconnects with backoff and
    subscribes again, returning ``[]`` while the broker is unreachable (it never blocks longer than
    its timeout). Deliveries received on the dead connection are *void*: the broker has already
    put them back in their queue and delivers them again (at least once). ``ack`` and ``requeue`` of
    void deliveries are silent no-ops. ``retry_later`` and ``dead_letter`` of a void delivery (or
    when the connection breaks during their confirm) raise TransportError, because they could not
    make the new copy durable; the original is safe in its queue. ``fetch`` raises TransportError
    only when reconnecting cannot help (a work queue is missing, access refused).
"""
from __future__ import annotations

import asyncio
import math
import random
import socket
import threading
import weakref
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import pika
import pika.exceptions as pex
from pika.adapters.asyncio_connection import AsyncioConnection
from pika.adapters.select_connection import IOLoop
from pika.spec import Basic

from ..envelope import Envelope
from ..errors import ConfigError, InputError, TransportError
from ..logging import get as get_logger
from .base import Consumer, Delivery, RouteQueues, Transport

log = get_logger("router.transport.rabbitmq")

ENVELOPE_CONTENT_TYPE = "application/x-router-envelope"
MAX_IN_FLIGHT = 5000  # unconfirmed messages per publisher connection
CLOSE_FLUSH_TIMEOUT = 5.0  # close() waits this long for outstanding confirms
_TICK = 0.2  # publisher timer: publish timeouts, close progress
_FIRST_BACKOFF = 0.1
_CHANNEL_FAILURES = 5  # a message whose publish made the broker close the channel this often fails

T = TypeVar("T")


def redact(url: str) -> str:
    """The URL without its password."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = parts.username or ""
        return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
    except ValueError:
        return "<unparseable broker URL>"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, pex.ChannelClosedByBroker | pex.ConnectionClosedByBroker):
        return f"{type(exc).__name__}: {exc.reply_code} {exc.reply_text}"
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text}"[:300]


def _backoff(failures: int, cap: float) -> float:
    """Delay before reconnect attempt number failures+1 (failures >= 1): exponential, capped, jittered."""
    base = min(cap, _FIRST_BACKOFF * 2 ** max(0, failures - 1))
    return base * random.uniform(0.75, 1.0)


def tier_ttl_ms(route: RouteQueues, k: int) -> int:
    """x-message-ttl of delay tier k: the tier's longest (fully jittered) delay in milliseconds."""
    return int(math.ceil(route.delays[k] * (1.0 + route.jitter) * 1000.0))


def tier_queue(route: RouteQueues, k: int) -> str:
    return f"{route.work}.retry.{k}"


def queue_arguments(route: RouteQueues) -> dict[str, dict[str, Any]]:
    """Every queue of a route with its declare arguments."""
    qtype = "quorum" if route.quorum else "classic"
    out: dict[str, dict[str, Any]] = {route.work: {"x-queue-type": qtype}, route.dlq: {"x-queue-type": qtype}}
    for k in range(len(route.delays)):
        args: dict[str, Any] = {
            "x-queue-type": qtype,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": route.work,
            "x-message-ttl": tier_ttl_ms(route, k),
        }
        if route.quorum:
            args["x-dead-letter-strategy"] = "at-least-once"
            args["x-overflow"] = "reject-publish"
        out[tier_queue(route, k)] = args
    return out


def _properties(envelope: Envelope, expiration: str | None = None) -> pika.BasicProperties:
    return pika.BasicProperties(delivery_mode=2, message_id=envelope.id, correlation_id=envelope.correlation_id,
                                content_type=ENVELOPE_CONTENT_TYPE, expiration=expiration)


def _channel_error(exc: pex.ChannelClosedByBroker, queue: str) -> TransportError:
    if exc.reply_code == 404:
        return TransportError(f"queue {queue!r} does not exist (declare it with setup()): {exc.reply_text}")
    if exc.reply_code == 406:
        return TransportError(f"queue {queue!r} refused the operation: {exc.reply_text}")
    return TransportError(f"broker closed the channel while using queue {queue!r}: {_describe(exc)}")


# ======================================================================================
# publisher: one I/O thread, SelectConnection, pipelined confirms
# ======================================================================================
class _Pending:
    __slots__ = ("queue", "body", "props", "message_id", "future", "deadline", "channel_failures")

    def __init__(self, queue: str, body: bytes, props: pika.BasicProperties, message_id: str,
                 future: Future[None], deadline: float) -> None:
        self.queue, self.body, self.props, self.message_id = queue, body, props, message_id
        self.future, self.deadline, self.channel_failures = future, deadline, 0


def _fail(item: _Pending, exc: TransportError) -> None:
    if not item.future.done():
        item.future.set_exception(exc)


class _LoopServices:
    """The part of pika's IOLoop that _Publisher uses, on an asyncio event loop (its own thread)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, done: threading.Event) -> None:
        self.loop, self.done = loop, done
        self.thread_id: int | None = None

    def call_later(self, delay: float, callback: Callable[[], Any]) -> Any:
        return self.loop.call_later(delay, callback)

    def add_callback_threadsafe(self, callback: Callable[[], Any]) -> None:
        if threading.get_ident() == self.thread_id:
            self.loop.call_soon(callback)  # no self-pipe write from the loop's own thread
        else:
            self.loop.call_soon_threadsafe(callback)  # RuntimeError once the loop is closed

    def stop(self) -> None:
        self.done.set()


class _Publisher:
    """Owns the publisher connection. Everything but publish()/close() runs on the I/O thread: its
    own thread with a pika IOLoop, or (``loop`` given) that asyncio event loop, where publishes
    made on the loop's thread need no thread hand-off (intake's path, see attach_loop)."""

    def __init__(self, params_factory: Callable[[str], pika.URLParameters], *, reconnect_max_delay: float,
                 publish_timeout: float, name: str, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._params_factory = params_factory
        self._max_delay = reconnect_max_delay
        self._timeout = publish_timeout
        self._done = threading.Event()  # loop mode: set once stopped
        self._loop_services = _LoopServices(loop, self._done) if loop is not None else None
        self._ioloop: Any = self._loop_services if self._loop_services is not None else IOLoop()
        # shared with publishing threads (under _lock)
        self._lock = threading.Lock()
        self._inbox: list[_Pending] = []
        self._wake_scheduled = False
        self._closed = False
        # I/O thread only
        self._outbox: deque[_Pending] = deque()
        self._unconfirmed: OrderedDict[int, _Pending] = OrderedDict()
        self._returned: dict[tuple[str, str], list[str]] = {}
        self._conn: pika.SelectConnection | None = None
        self._chan: Any = None
        self._ready = False
        self._next_tag = 0
        self._failures = 0
        self._connected_once = False
        self._last_error = "not connected yet"
        self._closing = False
        self._close_deadline = 0.0
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        if self._loop_services is None:
            self._thread.start()
        else:
            loop = self._loop_services.loop
            loop.call_soon_threadsafe(self._start_on_loop)

    # ---- any thread ------------------------------------------------------
    def publish(self, queue: str, body: bytes, props: pika.BasicProperties, message_id: str) -> Future[None]:
        fut: Future[None] = Future()
        fut.set_running_or_notify_cancel()  # once handed over it may be published: no cancelling
        if len(queue.encode()) > 255:
            fut.set_exception(TransportError(f"queue name too long (max 255 bytes): {queue[:60]!r}..."))
            return fut
        item = _Pending(queue, body, props, message_id, fut, time.monotonic() + self._timeout)
        with self._lock:
            if self._closed:
                fut.set_exception(TransportError("transport is closed"))
                return fut
            self._inbox.append(item)
            wake = not self._wake_scheduled
            self._wake_scheduled = True
        if wake:
            try:
                self._ioloop.add_callback_threadsafe(self._on_wake)
            except Exception:  # noqa: BLE001 - the loop closed meanwhile: close() already failed the inbox
                _fail(item, TransportError("transport is closed"))
        return fut

    def close(self, timeout: float) -> None:
        with self._lock:
            already = self._closed
            self._closed = True
        if self._loop_services is not None:
            self._close_on_loop(timeout, already)
            return
        if not already:
            self._ioloop.add_callback_threadsafe(partial(self._begin_close, timeout))
        self._thread.join(timeout + 5.0)
        if self._thread.is_alive():
            log.warning("rabbitmq publisher thread did not stop in time")

    def _close_on_loop(self, timeout: float, already: bool) -> None:
        services = self._loop_services
        assert services is not None
        if threading.get_ident() == services.thread_id:
            # on the loop itself nothing can be waited for: what is not confirmed yet fails now
            if not already:
                self._begin_close(0.0)
            return
        try:
            if not already:
                services.add_callback_threadsafe(partial(self._begin_close, timeout))
        except RuntimeError:  # the loop is closed: nothing runs any more
            self._done.set()
        if not self._done.wait(timeout + 5.0):
            log.warning("rabbitmq loop publisher did not stop in time")
        self._fail_all("transport closed before the broker confirmed the message")

    @property
    def connected(self) -> bool:
        return self._ready

    # ---- I/O thread --------------------------------------------------------
    def _run(self) -> None:
        self._connect()
        self._ioloop.call_later(_TICK, self._tick)
        while not self._stopped:
            try:
                self._ioloop.start()
            except Exception:  # noqa: BLE001 - a bug in a callback must not kill publishing
                log.exception("rabbitmq publisher I/O loop error; continuing")
                time.sleep(0.1)
        for item in list(self._outbox) + list(self._unconfirmed.values()) + self._take_inbox():
            _fail(item, TransportError("transport closed before the broker confirmed the message"))
        self._outbox.clear()
        self._unconfirmed.clear()
        try:
            self._ioloop.close()
        except Exception:  # noqa: BLE001
            pass

    def _start_on_loop(self) -> None:
        assert self._loop_services is not None
        self._loop_services.thread_id = threading.get_ident()
        self._connect()
        self._ioloop.call_later(_TICK, self._tick)

    def _fail_all(self, why: str) -> None:
        for item in list(self._outbox) + list(self._unconfirmed.values()) + self._take_inbox():
            _fail(item, TransportError(why))
        self._outbox.clear()
        self._unconfirmed.clear()

    def _take_inbox(self) -> list[_Pending]:
        with self._lock:
            items, self._inbox = self._inbox, []
            self._wake_scheduled = False
        return items

    def _on_wake(self) -> None:
        self._outbox.extend(self._take_inbox())
        self._flush()

    def _connect(self) -> None:
        if self._closing:
            self._finish()
            return
        try:
            if self._loop_services is not None:
                self._conn = AsyncioConnection(
                    self._params_factory("publisher"), on_open_callback=self._on_conn_open,
                    on_open_error_callback=self._on_conn_open_error, on_close_callback=self._on_conn_closed,
                    custom_ioloop=self._loop_services.loop)
            else:
                self._conn = pika.SelectConnection(
                    self._params_factory("publisher"), on_open_callback=self._on_conn_open,
                    on_open_error_callback=self._on_conn_open_error, on_close_callback=self._on_conn_closed,
                    custom_ioloop=self._ioloop)
        except Exception as exc:  # noqa: BLE001
            self._conn = None
            self._last_error = _describe(exc)
            self._schedule_reconnect()

    def _schedule_reconnect(self) -> None:
        if self._closing:
            self._finish()
            return
        self._failures += 1
        delay = _backoff(self._failures, self._max_delay)
        log.warning("rabbitmq publisher disconnected; reconnecting", error=self._last_error, delay=round(delay, 2))
        self._ioloop.call_later(delay, self._connect)

    def _on_conn_open(self, conn: pika.SelectConnection) -> None:
        if conn is not self._conn:
            return
        conn.channel(on_open_callback=self._on_chan_open)

    def _on_conn_open_error(self, conn: pika.SelectConnection, exc: BaseException) -> None:
        if conn is not self._conn:
            return
        self._conn = None
        self._last_error = _describe(exc)
        self._schedule_reconnect()

    def _on_conn_closed(self, conn: pika.SelectConnection, reason: BaseException) -> None:
        if conn is not self._conn:
            return
        self._conn = None
        self._ready = False
        self._chan = None
        self._requeue_unconfirmed(count_failure=False)
        if self._closing:
            self._finish()
            return
        self._last_error = _describe(reason)
        self._schedule_reconnect()

    def _on_chan_open(self, chan: Any) -> None:
        chan.add_on_close_callback(self._on_chan_closed)
        chan.add_on_return_callback(self._on_return)
        chan.confirm_delivery(self._on_confirm, callback=lambda _frame: self._on_chan_ready(chan))

    def _on_chan_ready(self, chan: Any) -> None:
        self._chan = chan
        self._next_tag = 0
        self._ready = True
        if self._failures or self._connected_once:
            log.warning("rabbitmq publisher connected again", republishing=len(self._outbox))
        self._failures = 0
        self._connected_once = True
        self._last_error = ""
        self._flush()
        if self._closing:
            self._maybe_finish()

    def _on_chan_closed(self, chan: Any, reason: BaseException) -> None:
        if chan is not self._chan and self._chan is not None:
            return
        self._ready = False
        self._chan = None
        conn = self._conn
        by_broker = isinstance(reason, pex.ChannelClosedByBroker) and conn is not None and conn.is_open
        self._requeue_unconfirmed(count_failure=by_broker)
        if by_broker and conn is not None:
            self._last_error = _describe(reason)
            log.warning("rabbitmq publisher channel closed by broker; reopening", error=self._last_error)
            self._ioloop.call_later(0.05, lambda: self._reopen_channel(conn))

    def _reopen_channel(self, conn: pika.SelectConnection) -> None:
        if conn is self._conn and conn.is_open and self._chan is None and not self._stopped:
            conn.channel(on_open_callback=self._on_chan_open)

    def _requeue_unconfirmed(self, count_failure: bool) -> None:
        """The channel is gone: its unconfirmed messages go to the front of the outbox, in order."""
        items = list(self._unconfirmed.values())
        self._unconfirmed.clear()
        self._returned.clear()
        keep: list[_Pending] = []
        for item in items:
            if item.future.done():
                continue
            if count_failure:
                item.channel_failures += 1
                if item.channel_failures >= _CHANNEL_FAILURES:
                    _fail(item, TransportError(f"the broker closed the publishing channel {item.channel_failures} "
                                               f"times while this message was in flight ({self._last_error})"))
                    continue
            keep.append(item)
        self._outbox.extendleft(reversed(keep))

    def _flush(self) -> None:
        chan = self._chan
        if not self._ready or chan is None:
            return
        outbox, unconfirmed = self._outbox, self._unconfirmed
        while outbox and len(unconfirmed) < MAX_IN_FLIGHT:
            item = outbox.popleft()
            if item.future.done():
                continue
            try:
                chan.basic_publish("", item.queue, item.body, item.props, mandatory=True)
            except Exception as exc:  # noqa: BLE001
                if chan.is_open and self._conn is not None and self._conn.is_open:
                    _fail(item, TransportError(f"cannot publish to {item.queue!r}: {_describe(exc)}"))
                    continue
                outbox.appendleft(item)  # the channel is going away: publish again on the next one
                return
            self._next_tag += 1
            unconfirmed[self._next_tag] = item

    def _on_return(self, _chan: Any, method: Basic.Return, props: pika.BasicProperties, _body: bytes) -> None:
        # the broker sends Basic.Return before the Basic.Ack of the same message
        key = (method.routing_key, props.message_id or "")
        self._returned.setdefault(key, []).append(f"{method.reply_code} {method.reply_text}")

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        ok = isinstance(method, Basic.Ack)
        tag, unconfirmed = method.delivery_tag, self._unconfirmed
        if method.multiple:
            while unconfirmed:
                first = next(iter(unconfirmed))
                if tag and first > tag:
                    break
                self._settle(unconfirmed.popitem(last=False)[1], ok)
        else:
            item = unconfirmed.pop(tag, None)
            if item is not None:
                self._settle(item, ok)
        if self._outbox:
            self._flush()
        if self._closing:
            self._maybe_finish()

    def _settle(self, item: _Pending, ok: bool) -> None:
        if self._returned:
            key = (item.queue, item.message_id)
            reasons = self._returned.get(key)
            if reasons:
                reason = reasons.pop(0)
                if not reasons:
                    del self._returned[key]
                _fail(item, TransportError(f"message {item.message_id} was returned unroutable ({reason}): "
                                           f"queue {item.queue!r} does not exist"))
                return
        if item.future.done():
            return
        if ok:
            item.future.set_result(None)
        else:
            item.future.set_exception(TransportError(f"the broker refused (nack) message {item.message_id} "
                                                     f"for queue {item.queue!r}"))

    def _timeout_error(self, item: _Pending) -> TransportError:
        state = f"last broker problem: {self._last_error}" if self._last_error else "connected, no confirm"
        return TransportError(f"publish to {item.queue!r} not confirmed within {self._timeout:g}s ({state})")

    def _tick(self) -> None:
        if self._stopped:
            return
        now = time.monotonic()
        outbox = self._outbox
        while outbox and (outbox[0].future.done() or outbox[0].deadline <= now):
            item = outbox.popleft()
            _fail(item, self._timeout_error(item))
        for item in self._unconfirmed.values():  # in publish order, so in deadline order
            if item.deadline > now:
                break
            _fail(item, self._timeout_error(item))
        if self._closing:
            self._maybe_finish()
        if not self._stopped:
            self._ioloop.call_later(_TICK, self._tick)

    # ---- closing ---------------------------------------------------------------
    def _begin_close(self, timeout: float) -> None:
        self._closing = True
        self._close_deadline = time.monotonic() + timeout
        self._on_wake()
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        if self._stopped:
            return
        waiting = any(not i.future.done() for i in self._outbox) or \
            any(not i.future.done() for i in self._unconfirmed.values())
        if waiting and time.monotonic() < self._close_deadline:
            return
        for item in list(self._outbox) + list(self._unconfirmed.values()):
            _fail(item, TransportError("transport closed before the broker confirmed the message"))
        self._outbox.clear()
        self._unconfirmed.clear()
        conn = self._conn
        if conn is not None and conn.is_open:
            try:
                conn.close()  # -> _on_conn_closed -> _finish
                self._ioloop.call_later(2.0, self._finish)  # in case the close handshake hangs
                return
            except Exception:  # noqa: BLE001
                pass
        self._finish()

    def _finish(self) -> None:
        if not self._stopped:
            self._stopped = True
            if self._loop_services is not None:
                self._fail_all("transport closed before the broker confirmed the message")
            self._ioloop.stop()


# ======================================================================================
# consumer: BlockingConnection, one per consumer thread
# ======================================================================================
class _RabbitConsumer(Consumer):
    def __init__(self, transport: RabbitMQTransport, routes: Iterable[RouteQueues], prefetch: int) -> None:
        self._t = transport
        self._routes = {r.work: r for r in routes}
        if not self._routes:
            raise ValueError("a consumer needs at least one route")
        self._prefetch = max(1, min(int(prefetch), 65535))
        self._conn: pika.BlockingConnection | None = None
        self._ch: Any = None
        self._gen = 0  # connection generation: deliveries of older generations are void
        self._buffer: deque[Delivery] = deque()
        self._outstanding: OrderedDict[int, None] = OrderedDict()  # unsettled delivery tags, ascending
        self._poison: list[tuple[RouteQueues, Any, pika.BasicProperties, bytes, InputError]] = []
        self._cancelled = False
        self._closed = False
        self._failures = 0
        self._next_attempt = 0.0
        self._owner = threading.get_ident()
        try:
            self._open()
        except (pex.AMQPError, OSError) as exc:
            raise TransportError(f"cannot connect consumer to RabbitMQ at {redact(transport.url)}: "
                                 f"{_describe(exc)}") from None

    # ---- connection ------------------------------------------------------
    def _open(self) -> None:
        conn = pika.BlockingConnection(self._t._params("consumer"))
        try:
            ch = conn.channel()
            ch.confirm_delivery()
            ch.basic_qos(prefetch_count=self._prefetch)
            ch.add_on_cancel_callback(self._on_cancel)
            gen = self._gen + 1
            for work in self._routes:
                try:
                    ch.basic_consume(work, partial(self._on_message, gen, work), auto_ack=False)
                except pex.ChannelClosedByBroker as exc:
                    raise _channel_error(exc, work) from None
        except BaseException:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass
            raise
        self._conn, self._ch, self._gen = conn, ch, gen
        self._cancelled = False
        self._failures = 0

    def _lost(self, exc: BaseException) -> None:
        """The connection (or channel) is broken: void every delivery of it and schedule a reconnect."""
        log.warning("rabbitmq consumer lost its connection; deliveries in hand are void and will be redelivered",
                    error=_describe(exc))
        conn = self._conn
        self._conn, self._ch = None, None
        self._gen += 1
        self._buffer.clear()
        self._outstanding.clear()
        self._poison.clear()
        self._failures = 0
        self._next_attempt = 0.0  # first reconnect at once
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass

    def _ensure_connected(self) -> bool:
        if self._ch is not None:
            return True
        if time.monotonic() < self._next_attempt:
            return False
        try:
            self._open()
        except TransportError:
            raise  # a work queue is missing: reconnecting cannot help
        except (pex.ProbableAuthenticationError, pex.ProbableAccessDeniedError, pex.AuthenticationError) as exc:
            raise TransportError(f"RabbitMQ refused the consumer: {_describe(exc)}") from None
        except (pex.AMQPError, OSError) as exc:
            self._failures += 1
            delay = _backoff(self._failures, self._t.reconnect_max_delay)
            self._next_attempt = time.monotonic() + delay
            log.warning("rabbitmq consumer reconnect failed", error=_describe(exc), retry_in=round(delay, 2))
            return False
        log.warning("rabbitmq consumer connected again")
        return True

    def _on_cancel(self, _frame: Any) -> None:
        self._cancelled = True  # queue deleted or moved: subscribe again (or fail) on the next fetch

    def _on_message(self, gen: int, work: str, _ch: Any, method: Basic.Deliver, props: pika.BasicProperties,
                    body: bytes) -> None:
        if gen != self._gen:
            return
        tag = method.delivery_tag
        self._outstanding[tag] = None
        try:
            env = Envelope.from_bytes(body)
        except InputError as exc:
            self._poison.append((self._routes[work], method, props, body, exc))
            return
        self._buffer.append(Delivery(envelope=env, queue=work, tag=(gen, tag), redelivered=bool(method.redelivered)))

    def _handle_poison(self) -> None:
        """A message that is not an envelope: wrap it, dead-letter it, ack it."""
        while self._poison and self._ch is not None:
            route, method, props, body, exc = self._poison.pop(0)
            env = Envelope(route=route.route, raw=body, source="rabbitmq", id=props.message_id or str(uuid.uuid4()),
                           headers={"undecodable": "true"})
            env.record_failure(exc, transient=False)
            log.error("undecodable message dead-lettered", queue=route.work, dlq=route.dlq, message_id=env.id)
            fake = Delivery(envelope=env, queue=route.work, tag=(self._gen, method.delivery_tag))
            try:
                self.dead_letter(fake, env)
            except TransportError:
                if self._ch is None:
                    return  # connection lost: it comes back and is handled then
                raise

    # ---- Consumer API --------------------------------------------------------
    def fetch(self, max_messages: int, timeout: float) -> list[Delivery]:
        if self._closed:
            raise TransportError("consumer is closed")
        if max_messages <= 0:
            return []
        self._owner = threading.get_ident()
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            if self._closed:
                raise TransportError("consumer is closed (its transport was closed)")
            if not self._ensure_connected():
                now = time.monotonic()
                if now >= deadline:
                    return []
                time.sleep(max(0.0, min(self._next_attempt, deadline) - now))
                continue
            conn = self._conn
            assert conn is not None
            try:
                if len(self._buffer) < max_messages:
                    wait = 0.0 if self._buffer else max(0.0, deadline - time.monotonic())
                    conn.process_data_events(time_limit=wait)
                if self._cancelled:
                    raise pex.ConsumerCancelled("the broker cancelled the subscription")
                if self._poison:
                    self._handle_poison()
            except pex.AMQPError as exc:
                self._lost(exc)
                continue
            if self._buffer or time.monotonic() >= deadline:
                n = min(max_messages, len(self._buffer))
                return [self._buffer.popleft() for _ in range(n)]

    def _live_tags(self, deliveries: Iterable[Delivery]) -> list[int]:
        tags = set()
        for d in deliveries:
            gen, tag = d.tag
            if gen == self._gen and tag in self._outstanding:
                tags.add(tag)
        return sorted(tags)

    def _settle(self, deliveries: Iterable[Delivery], requeue: bool | None) -> None:
        """requeue None: ack; True/False: nack. Contiguous tags from the oldest unsettled one go in one
        frame (multiple=True); the rest one by one. Void deliveries are skipped."""
        tags = self._live_tags(deliveries)
        if not tags or self._ch is None:
            return
        ch, outstanding = self._ch, self._outstanding
        wanted = set(tags)
        prefix_end = None
        for t in outstanding:
            if t not in wanted:
                break
            prefix_end = t
        try:
            if prefix_end is not None:
                if requeue is None:
                    ch.basic_ack(prefix_end, multiple=True)
                else:
                    ch.basic_nack(prefix_end, multiple=True, requeue=requeue)
                while outstanding and next(iter(outstanding)) <= prefix_end:
                    outstanding.popitem(last=False)
            for t in tags:
                if prefix_end is not None and t <= prefix_end:
                    continue
                if requeue is None:
                    ch.basic_ack(t)
                else:
                    ch.basic_nack(t, requeue=requeue)
                outstanding.pop(t, None)
        except pex.AMQPError as exc:
            self._lost(exc)  # unacked deliveries are redelivered by the broker: at least once

    def ack(self, deliveries: list[Delivery]) -> None:
        self._settle(deliveries, None)

    def requeue(self, deliveries: list[Delivery]) -> None:
        self._settle(deliveries, True)

    def _is_live(self, delivery: Delivery) -> bool:
        gen, tag = delivery.tag
        return self._ch is not None and gen == self._gen and tag in self._outstanding

    def _publish_then_ack(self, delivery: Delivery, queue: str, envelope: Envelope, expiration: str | None) -> None:
        if self._closed:
            raise TransportError("consumer is closed")
        if not self._is_live(delivery):
            raise TransportError(f"delivery {envelope.id} is void (its connection was lost or it was already "
                                 f"settled); the broker delivers the original again")
        try:
            self._ch.basic_publish("", queue, envelope.to_bytes(), _properties(envelope, expiration), mandatory=True)
        except pex.UnroutableError:
            raise TransportError(f"queue {queue!r} does not exist (message {envelope.id} returned unroutable); "
                                 f"the original stays with this consumer") from None
        except pex.NackError:
            raise TransportError(f"the broker refused (nack) message {envelope.id} for queue {queue!r}; "
                                 f"the original stays with this consumer") from None
        except pex.AMQPError as exc:
            self._lost(exc)
            raise TransportError(f"connection lost while publishing to {queue!r} ({_describe(exc)}); the "
                                 f"original {envelope.id} goes back to its queue") from None
        self._settle([delivery], None)

    def retry_later(self, delivery: Delivery, envelope: Envelope, delay: float, tier: int) -> None:
        route = self._routes[delivery.queue]
        if not route.delays:
            raise TransportError(f"route {route.route!r} has no retry tiers (RouteQueues.delays is empty)")
        k = max(0, min(int(tier), len(route.delays) - 1))
        expiration = max(0, min(tier_ttl_ms(route, k), int(round(delay * 1000.0))))
        self._publish_then_ack(delivery, tier_queue(route, k), envelope, str(expiration))

    def dead_letter(self, delivery: Delivery, envelope: Envelope) -> None:
        self._publish_then_ack(delivery, self._routes[delivery.queue].dlq, envelope, None)

    def abort(self) -> None:
        """Close from another thread (the transport is closing): pika connections are not thread-safe, so
        only mark the consumer closed and shut its socket down; the broker puts unacked deliveries back,
        and the owner thread's next call raises TransportError."""
        if self._closed:
            return
        self._closed = True
        conn = self._conn
        sock = getattr(getattr(getattr(conn, "_impl", None), "_transport", None), "_sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        if self._closed and self._conn is None:
            return
        self._closed = True
        conn, self._conn, self._ch = self._conn, None, None
        self._gen += 1
        self._buffer.clear()
        self._outstanding.clear()
        if conn is not None:
            try:
                conn.close()  # unacked deliveries go back to their queues
            except Exception:  # noqa: BLE001
                pass


# ======================================================================================
# the transport
# ======================================================================================
class RabbitMQTransport(Transport):
    def __init__(self, url: str, namespace: str = "router", *, reconnect_max_delay: float = 10.0,
                 publish_timeout: float = 30.0) -> None:
        try:
            pika.URLParameters(url)
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(f"invalid broker URL {redact(url)}: {exc}") from None
        self.url = url
        self.namespace = namespace
        self.reconnect_max_delay = max(0.1, float(reconnect_max_delay))
        self.publish_timeout = float(publish_timeout)
        self._declared: dict[str, dict[str, Any]] = {}
        self._admin_lock = threading.Lock()
        self._admin_conn: pika.BlockingConnection | None = None
        self._closed = False
        self._consumers: weakref.WeakSet[_RabbitConsumer] = weakref.WeakSet()
        self._publisher = _Publisher(self._params, reconnect_max_delay=self.reconnect_max_delay,
                                     publish_timeout=self.publish_timeout, name=f"rabbitmq-publisher-{namespace}")
        self._loop_lock = threading.Lock()
        self._loop_publisher: tuple[asyncio.AbstractEventLoop, int, _Publisher] | None = None

    def __repr__(self) -> str:
        return f"RabbitMQTransport({redact(self.url)!r}, namespace={self.namespace!r})"

    def _params(self, role: str) -> pika.URLParameters:
        params = pika.URLParameters(self.url)
        params.client_properties = {"connection_name": f"router-{self.namespace}-{role}"}
        if params.blocked_connection_timeout is None and role != "publisher":
            params.blocked_connection_timeout = max(self.publish_timeout, 1.0)
        return params

    # ---- operator connection -------------------------------------------------
    def _admin(self, op: Callable[[Any], T], *, retry: bool = True) -> T:
        """Run op(channel) on the shared operator connection with a fresh channel; the channel is closed
        afterwards (so unacked basic_get messages go back). A failure to open the channel is retried once
        on a new connection; a connection lost during op only when retry (op is idempotent)."""
        if self._closed:
            raise TransportError("transport is closed")
        with self._admin_lock:
            for attempt in (1, 2):
                try:
                    if self._admin_conn is None or not self._admin_conn.is_open:
                        self._admin_conn = pika.BlockingConnection(self._params("admin"))
                    ch = self._admin_conn.channel()
                except (pex.AMQPError, OSError) as exc:
                    self._drop_admin()  # e.g. an idle connection the broker dropped: nothing done yet, retry
                    if attempt == 2:
                        raise TransportError(f"cannot reach RabbitMQ at {redact(self.url)}: {_describe(exc)}") from None
                    continue
                try:
                    return op(ch)
                except (pex.AMQPConnectionError, pex.ChannelWrongStateError, OSError) as exc:
                    self._drop_admin()
                    if attempt == 2 or not retry:
                        raise TransportError(f"lost the connection to RabbitMQ: {_describe(exc)}") from None
                except pex.AMQPError as exc:
                    raise TransportError(f"RabbitMQ error: {_describe(exc)}") from None
                finally:
                    try:
                        if ch.is_open:
                            ch.close()
                    except Exception:  # noqa: BLE001
                        self._drop_admin()
        raise AssertionError("unreachable")

    def _drop_admin(self) -> None:
        conn, self._admin_conn = self._admin_conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass

    # ---- Transport API ---------------------------------------------------------
    def setup(self, routes: Iterable[RouteQueues]) -> None:
        wanted: dict[str, dict[str, Any]] = {}
        for route in routes:
            for name, args in queue_arguments(route).items():
                known = wanted.get(name, self._declared.get(name))
                if known is not None and known != args:
                    raise TransportError(f"queue {name!r} is declared twice with different arguments: "
                                         f"{known} vs {args}")
                wanted[name] = args

        def declare(ch: Any) -> None:
            for name, args in wanted.items():
                try:
                    ch.queue_declare(name, durable=True, arguments=args)
                except pex.ChannelClosedByBroker as exc:
                    if exc.reply_code == 406:
                        raise TransportError(
                            f"queue {name!r} already exists with different arguments ({exc.reply_text}); "
                            f"delete it (rabbitmqctl delete_queue {name}) or change the route's settings") from None
                    raise _channel_error(exc, name) from None

        self._admin(declare)
        self._declared.update(wanted)

    def attach_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Publishes made on `loop`'s thread from now on go through a second publisher connection
        driven by that loop (pika's AsyncioConnection): no hand-off to the publisher thread and
        back. Same guarantees (confirms, returns, reconnect and republish, timeouts); messages
        published on the loop keep their order. Idempotent for the same loop."""
        with self._loop_lock:
            if self._closed or (self._loop_publisher is not None and self._loop_publisher[0] is loop):
                return
            old = self._loop_publisher
            self._loop_publisher = (loop, threading.get_ident(), _Publisher(
                self._params, reconnect_max_delay=self.reconnect_max_delay, publish_timeout=self.publish_timeout,
                name=f"rabbitmq-loop-publisher-{self.namespace}", loop=loop))
        if old is not None:
            old[2].close(0.0)

    def publish(self, queue: str, envelope: Envelope) -> Future[None]:
        lp = self._loop_publisher
        # the loop's publisher only from inside that loop (a thread that ran a loop once, e.g. with
        # asyncio.run, and publishes after it ended goes through the publisher thread)
        pub = lp[2] if lp is not None and lp[1] == threading.get_ident() and lp[0].is_running() else self._publisher
        return pub.publish(queue, envelope.to_bytes(), _properties(envelope), envelope.id)

    def consumer(self, routes: Iterable[RouteQueues], prefetch: int) -> Consumer:
        if self._closed:
            raise TransportError("transport is closed")
        c = _RabbitConsumer(self, routes, prefetch)
        self._consumers.add(c)
        return c

    def dlq_browse(self, route: RouteQueues, limit: int = 1000) -> list[Envelope]:
        def browse(ch: Any) -> list[Envelope]:
            out: list[Envelope] = []
            while len(out) < limit:
                try:
                    method, props, body = ch.basic_get(route.dlq, auto_ack=False)
                except pex.ChannelClosedByBroker as exc:
                    raise _channel_error(exc, route.dlq) from None
                if method is None:
                    break
                out.append(self._decode_dlq(route, props, body))
            return out  # closing the channel puts them all back, in order

        return self._admin(browse)

    @staticmethod
    def _decode_dlq(route: RouteQueues, props: pika.BasicProperties, body: bytes) -> Envelope:
        try:
            return Envelope.from_bytes(body)
        except InputError:
            return Envelope(route=route.route, raw=body, source="rabbitmq", headers={"undecodable": "true"},
                            id=props.message_id or f"undecodable-{uuid.uuid4()}")

    def dlq_replay(self, route: RouteQueues, ids: set[str] | None = None) -> list[str]:
        def replay(ch: Any) -> list[str]:
            ch.confirm_delivery()
            moved: list[str] = []
            remaining: int | None = None  # only what was there at the start: no loop with a fast re-dead-letter
            while remaining is None or remaining > 0:
                try:
                    method, props, body = ch.basic_get(route.dlq, auto_ack=False)
                except pex.ChannelClosedByBroker as exc:
                    raise _channel_error(exc, route.dlq) from None
                if method is None:
                    break
                remaining = (method.message_count + 1 if remaining is None else remaining) - 1
                try:
                    env = Envelope.from_bytes(body)
                except InputError:
                    continue  # not an envelope: leave it for an operator
                if ids is not None and env.id not in ids:
                    continue  # stays unacked: goes back when the channel closes
                again = env.for_replay()
                try:
                    ch.basic_publish("", route.work, again.to_bytes(), _properties(again), mandatory=True)
                except pex.UnroutableError:
                    raise TransportError(f"work queue {route.work!r} does not exist; nothing more replayed") from None
                except pex.NackError:
                    raise TransportError(f"the broker refused (nack) replaying {env.id} to {route.work!r}") from None
                ch.basic_ack(method.delivery_tag)
                moved.append(env.id)
            return moved

        return self._admin(replay, retry=False)

    def dlq_purge(self, route: RouteQueues) -> int:
        def purge(ch: Any) -> int:
            try:
                return int(ch.queue_purge(route.dlq).method.message_count)
            except pex.ChannelClosedByBroker as exc:
                raise _channel_error(exc, route.dlq) from None

        return self._admin(purge, retry=False)

    def depth(self, queue: str) -> int:
        def count(ch: Any) -> int:
            try:
                return int(ch.queue_declare(queue, passive=True).method.message_count)
            except pex.ChannelClosedByBroker as exc:
                raise _channel_error(exc, queue) from None

        return self._admin(count)

    def close(self) -> None:
        if self._closed:
            return
        with self._loop_lock:
            lp, self._loop_publisher = self._loop_publisher, None
        if lp is not None:
            lp[2].close(CLOSE_FLUSH_TIMEOUT)
        self._publisher.close(CLOSE_FLUSH_TIMEOUT)
        self._closed = True
        me = threading.get_ident()
        for c in list(self._consumers):  # consumers still open: their unacked deliveries go back
            if c._owner == me:
                c.close()
            else:
                c.abort()
        with self._admin_lock:
            self._drop_admin()
