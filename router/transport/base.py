"""The transport interface: durable queues between intake and workers.

Two implementations pass the same contract suite (tests/contract/):
``router.transport.embedded`` (SQLite file, single node, the default) and
``router.transport.rabbitmq`` (pika; competing consumers on any number of hosts).

Queues per route (names prefixed with the transport's namespace, default ``router``):

* ``<ns>.<route>``            the work queue workers consume;
* ``<ns>.<route>.retry.<k>``  delay tier k (RabbitMQ: TTL + dead-lettering back to the work queue);
* ``<ns>.<route>.dlq``        the dead-letter queue (or the route's ``dead_letter_queue`` name).

Guarantees every implementation gives:

* ``publish`` returns a Future that completes only when the message is durable
  (publisher confirm / committed); it fails (TransportError) if that cannot be
  promised. Callers acknowledge senders only after it completes.
* A delivery stays owned by its consumer until ``ack``/``retry_later``/``dead_letter``/
  ``requeue``; if the consumer dies, the message is delivered again (at least once).
* ``retry_later`` and ``dead_letter`` make the new copy durable before removing the
  original, so a crash between the two duplicates a message but never loses one.
"""
from __future__ import annotations

import abc
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from ..envelope import Envelope


@dataclass(frozen=True)
class RouteQueues:
    """The queues of one route."""

    route: str
    work: str
    dlq: str
    delays: tuple[float, ...] = ()  # base delay of each retry tier, tier k = delays[k]
    jitter: float = 0.0
    quorum: bool = False

    def tier_for(self, attempt: int) -> int:
        """Retry tier after `attempt` failed attempts (1-based), clamped to the last tier."""
        return max(0, min(attempt - 1, len(self.delays) - 1))


def route_queues(namespace: str, route: str, delays: Iterable[float] = (), jitter: float = 0.0,
                 quorum: bool = False, dlq: str | None = None) -> RouteQueues:
    work = f"{namespace}.{route}"
    return RouteQueues(route=route, work=work, dlq=f"{namespace}.{dlq}" if dlq else f"{work}.dlq",
                       delays=tuple(delays), jitter=jitter, quorum=quorum)


@dataclass
class Delivery:
    """One message handed to a consumer."""

    envelope: Envelope
    queue: str  # the work queue it came from
    tag: Any = field(repr=False)  # implementation-specific handle
    redelivered: bool = False


class Consumer(abc.ABC):
    """Used by one thread. Every method that publishes waits for durability."""

    @abc.abstractmethod
    def fetch(self, max_messages: int, timeout: float) -> list[Delivery]:
        """Up to max_messages deliveries; waits at most timeout seconds for the first one, then
        returns what arrived (possibly nothing)."""

    @abc.abstractmethod
    def ack(self, deliveries: list[Delivery]) -> None:
        """Done with these: remove them for good."""

    @abc.abstractmethod
    def retry_later(self, delivery: Delivery, envelope: Envelope, delay: float, tier: int) -> None:
        """Durably schedule `envelope` (the updated copy) back onto delivery.queue after about
        `delay` seconds, then remove the original."""

    @abc.abstractmethod
    def dead_letter(self, delivery: Delivery, envelope: Envelope) -> None:
        """Durably put `envelope` (with its error history) on the route's DLQ, then remove the original."""

    @abc.abstractmethod
    def requeue(self, deliveries: list[Delivery]) -> None:
        """Give these back unprocessed (e.g. on shutdown); they will be delivered again."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop consuming; unacknowledged deliveries go back to their queue."""


class Transport(abc.ABC):
    namespace: str

    @abc.abstractmethod
    def setup(self, routes: Iterable[RouteQueues]) -> None:
        """Declare the queues of these routes (idempotent). Must be called before use."""

    @abc.abstractmethod
    def publish(self, queue: str, envelope: Envelope) -> Future[None]:
        """Thread-safe. The future completes when the message is durable, or fails with TransportError."""

    def publish_many(self, queue: str, envelopes: Iterable[Envelope], timeout: float = 30.0) -> None:
        """Publish and wait until all are durable, at most `timeout` seconds in all
        (raises TransportError/TimeoutError otherwise)."""
        import time

        futures = [self.publish(queue, e) for e in envelopes]
        deadline = time.monotonic() + timeout
        for f in futures:
            f.result(timeout=max(0.0, deadline - time.monotonic()))

    def attach_loop(self, loop: Any) -> None:
        """Called on the thread of an asyncio event loop that will publish (intake): a transport
        may then serve publishes made on that thread on the loop itself. Default: nothing."""

    @abc.abstractmethod
    def consumer(self, routes: Iterable[RouteQueues], prefetch: int) -> Consumer:
        """A consumer of the work queues of these routes."""

    # ---- operations on dead-letter queues (operator tools) --------------
    @abc.abstractmethod
    def dlq_browse(self, route: RouteQueues, limit: int = 1000) -> list[Envelope]:
        """The messages in the DLQ, oldest first, without removing them."""

    @abc.abstractmethod
    def dlq_replay(self, route: RouteQueues, ids: set[str] | None = None) -> list[str]:
        """Move messages (all, or those whose envelope id is in ids) from the DLQ back to the work
        queue with attempts reset (Envelope.for_replay). Durable before removal. Returns the ids moved."""

    @abc.abstractmethod
    def dlq_purge(self, route: RouteQueues) -> int:
        """Delete every message in the DLQ; returns how many."""

    @abc.abstractmethod
    def depth(self, queue: str) -> int:
        """Messages ready in a queue (for tests, metrics and `router dlq list`)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Flush pending publishes (waiting for their confirms), then disconnect."""
