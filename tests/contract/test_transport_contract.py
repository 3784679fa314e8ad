"""The transport contract (router/transport/base.py), run against every implementation.

Each test runs once per transport (``transport_factory`` params: embedded, rabbitmq).
Queue names come from the per-test ``namespace``; route r1 has retry tiers of 0.2 s
and 0.5 s without jitter.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future

import pytest

from router.envelope import Envelope
from router.errors import DestinationUnavailable, MappingError
from router.transport import Consumer, Delivery, RouteQueues, Transport

from .conftest import TransportFactory

HL7 = (b"MSH|^~\\&|LAB|HOSP|ROUTER|HOSP|20260101120000||ORU^R01|MSG%05d|P|2.5.1\r"
       b"PID|1||12345^^^HOSP^MR||DOE^JOHN\r")


def make_envelope(route: RouteQueues, i: int = 0, **kw: object) -> Envelope:
    return Envelope(route=route.route, raw=HL7 % i, source="mllp:test", content_type="x-application/hl7-v2+er7",
                    sender="LAB^HOSP", control_id=f"MSG{i:05d}", **kw)  # type: ignore[arg-type]


def drain(consumer: Consumer, n: int, timeout: float = 10.0, batch: int = 100) -> list[Delivery]:
    """Fetch until n deliveries arrived or timeout passed (never asks for more than n)."""
    out: list[Delivery] = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        out.extend(consumer.fetch(min(batch, n - len(out)), timeout=min(1.0, remaining)))
    return out


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Brokers may update counters a moment after the operation returns."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def ids(deliveries: list[Delivery]) -> list[str]:
    return [d.envelope.id for d in deliveries]


# ---- publishing -----------------------------------------------------------------

def test_publish_future_resolves_and_envelope_arrives_byte_identical(transport: Transport, route: RouteQueues) -> None:
    env = make_envelope(route, 1, headers={"k": "v", "ü": "ß"})
    env.raw += b"\x00\xff\n\nOBX|1|TX|||line\nwith newlines\r"  # binary and newlines survive
    env.record_failure(DestinationUnavailable("earlier failure"), transient=True)
    future = transport.publish(route.work, env)
    assert isinstance(future, Future)
    assert future.result(timeout=10) is None

    consumer = transport.consumer([route], prefetch=10)
    got = drain(consumer, 1)
    assert len(got) == 1
    d = got[0]
    assert d.envelope.to_bytes() == env.to_bytes()
    assert d.envelope == env
    assert d.queue == route.work
    assert d.redelivered is False
    consumer.ack(got)
    assert consumer.fetch(10, timeout=0.2) == []


def test_publish_many_all_durable_and_consumable(transport: Transport, route: RouteQueues) -> None:
    envs = [make_envelope(route, i) for i in range(50)]
    transport.publish_many(route.work, envs)
    assert wait_for(lambda: transport.depth(route.work) == 50), transport.depth(route.work)

    consumer = transport.consumer([route], prefetch=100)
    got = drain(consumer, 50)
    assert sorted(ids(got)) == sorted(e.id for e in envs)
    assert {d.envelope.control_id for d in got} == {f"MSG{i:05d}" for i in range(50)}
    consumer.ack(got)
    assert wait_for(lambda: transport.depth(route.work) == 0)


def test_concurrent_publishers_each_message_delivered_exactly_once(transport: Transport, route: RouteQueues) -> None:
    threads_n, per_thread = 8, 200
    published: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(threads_n)

    def publisher(k: int) -> None:
        try:
            envs = [make_envelope(route, k * per_thread + i) for i in range(per_thread)]
            start.wait()
            futures = [transport.publish(route.work, e) for e in envs]
            for f in futures:
                f.result(timeout=30)
            with lock:
                published.extend(e.id for e in envs)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=publisher, args=(k,)) for k in range(threads_n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert errors == []
    assert len(published) == threads_n * per_thread

    consumer = transport.consumer([route], prefetch=200)
    seen: Counter[str] = Counter()
    deadline = time.monotonic() + 30
    while sum(seen.values()) < len(published) and time.monotonic() < deadline:
        batch = consumer.fetch(100, timeout=1.0)
        seen.update(ids(batch))
        if batch:
            consumer.ack(batch)
    assert set(seen) == set(published)
    assert max(seen.values()) == 1, [i for i, n in seen.items() if n > 1][:5]
    assert consumer.fetch(100, timeout=0.3) == []
    assert wait_for(lambda: transport.depth(route.work) == 0)


def test_close_flushes_pending_publishes(transport_factory: TransportFactory, route: RouteQueues) -> None:
    first = transport_factory()
    first.setup([route])
    envs = [make_envelope(route, i) for i in range(200)]
    futures = [first.publish(route.work, e) for e in envs]  # not waited for
    first.close()
    assert all(f.done() for f in futures)
    assert [f.result(timeout=0) for f in futures] == [None] * 200

    second = transport_factory()
    second.setup([route])
    assert wait_for(lambda: second.depth(route.work) == 200), second.depth(route.work)
    consumer = second.consumer([route], prefetch=200)
    got = drain(consumer, 200)
    assert sorted(ids(got)) == sorted(e.id for e in envs)
    consumer.ack(got)


# ---- fetching -------------------------------------------------------------------

def test_fetch_respects_max_messages(transport: Transport, route: RouteQueues) -> None:
    envs = [make_envelope(route, i) for i in range(10)]
    transport.publish_many(route.work, envs)
    consumer = transport.consumer([route], prefetch=10)
    batches: list[list[Delivery]] = []
    deadline = time.monotonic() + 10
    while sum(map(len, batches)) < 10 and time.monotonic() < deadline:
        batch = consumer.fetch(3, timeout=1.0)
        assert len(batch) <= 3
        batches.append(batch)
    got = [d for b in batches for d in b]
    assert sorted(ids(got)) == sorted(e.id for e in envs)
    assert max(map(len, batches)) == 3  # full batches are handed out when messages are waiting
    consumer.ack(got)


def test_fetch_on_empty_queue_returns_nothing_after_the_timeout(transport: Transport, route: RouteQueues) -> None:
    consumer = transport.consumer([route], prefetch=10)
    t0 = time.monotonic()
    assert consumer.fetch(10, timeout=0.5) == []
    elapsed = time.monotonic() - t0
    assert 0.45 <= elapsed < 2.0, elapsed


def test_fetch_returns_soon_after_a_message_is_published(transport: Transport, route: RouteQueues) -> None:
    consumer = transport.consumer([route], prefetch=10)
    env = make_envelope(route)
    timer = threading.Timer(0.3, lambda: transport.publish(route.work, env).result(timeout=10))
    t0 = time.monotonic()
    timer.start()
    try:
        got = consumer.fetch(10, timeout=10.0)
    finally:
        timer.join()
    elapsed = time.monotonic() - t0
    assert ids(got) == [env.id]
    assert 0.25 <= elapsed < 2.5, elapsed  # it waited for the publish, not for the full timeout
    consumer.ack(got)


# ---- settling ---------------------------------------------------------------------

def test_ack_removes_for_good(transport: Transport, route: RouteQueues) -> None:
    envs = [make_envelope(route, i) for i in range(2)]
    transport.publish_many(route.work, envs)
    consumer = transport.consumer([route], prefetch=10)
    got = drain(consumer, 2)
    assert len(got) == 2
    consumer.ack(got)
    consumer.close()

    again = transport.consumer([route], prefetch=10)
    assert again.fetch(10, timeout=0.5) == []
    assert wait_for(lambda: transport.depth(route.work) == 0)


def test_unacked_delivery_comes_back_after_consumer_close(transport: Transport, route: RouteQueues) -> None:
    env = make_envelope(route)
    transport.publish(route.work, env).result(timeout=10)
    first = transport.consumer([route], prefetch=10)
    got = drain(first, 1)
    assert ids(got) == [env.id] and got[0].redelivered is False
    first.close()

    second = transport.consumer([route], prefetch=10)
    back = drain(second, 1)
    assert ids(back) == [env.id]
    assert back[0].redelivered is True
    assert back[0].envelope.to_bytes() == env.to_bytes()
    second.ack(back)


def test_unacked_delivery_comes_back_after_transport_close(transport_factory: TransportFactory,
                                                           route: RouteQueues) -> None:
    """A worker whose connection goes away without acking: the message is delivered again."""
    first = transport_factory()
    first.setup([route])
    env = make_envelope(route)
    first.publish(route.work, env).result(timeout=10)
    got = drain(first.consumer([route], prefetch=10), 1)
    assert ids(got) == [env.id]
    first.close()

    second = transport_factory()
    second.setup([route])
    consumer = second.consumer([route], prefetch=10)
    back = drain(consumer, 1)
    assert ids(back) == [env.id] and back[0].redelivered is True
    consumer.ack(back)


def test_requeue_gives_messages_back(transport: Transport, route: RouteQueues) -> None:
    envs = [make_envelope(route, i) for i in range(3)]
    transport.publish_many(route.work, envs)
    consumer = transport.consumer([route], prefetch=10)
    got = drain(consumer, 3)
    assert sorted(ids(got)) == sorted(e.id for e in envs)
    assert not any(d.redelivered for d in got)
    consumer.requeue(got)

    back = drain(consumer, 3)
    assert sorted(ids(back)) == sorted(e.id for e in envs)
    assert all(d.redelivered for d in back)
    consumer.ack(back)
    assert consumer.fetch(10, timeout=0.2) == []


@pytest.mark.parametrize("tier", [0, 1])
def test_retry_later_delays_delivery_and_carries_the_updated_envelope(transport: Transport, route: RouteQueues,
                                                                       tier: int) -> None:
    env = make_envelope(route)
    transport.publish(route.work, env).result(timeout=10)
    consumer = transport.consumer([route], prefetch=10)
    (d,) = drain(consumer, 1)
    updated = d.envelope
    updated.record_failure(DestinationUnavailable("connection refused"), transient=True)
    delay = route.delays[tier]

    t0 = time.monotonic()
    consumer.retry_later(d, updated, delay=delay, tier=tier)
    assert transport.depth(route.work) == 0  # scheduled, not ready
    assert consumer.fetch(10, timeout=delay * 0.6) == []  # not before the delay
    back = drain(consumer, 1, timeout=10)
    elapsed = time.monotonic() - t0

    assert ids(back) == [env.id]
    assert elapsed >= delay - 0.05, elapsed
    assert elapsed < delay + 3.0, elapsed
    got = back[0].envelope
    assert got.attempts == 1
    assert [(e.error, e.text, e.transient) for e in got.errors] == [("DestinationUnavailable", "connection refused", True)]
    assert got.raw == env.raw and got.correlation_id == env.correlation_id
    assert back[0].queue == route.work
    consumer.ack(back)
    assert consumer.fetch(10, timeout=0.2) == []


def test_dead_letter_lands_in_dlq_with_history_and_browse_keeps_it(transport: Transport, route: RouteQueues) -> None:
    env = make_envelope(route)
    transport.publish(route.work, env).result(timeout=10)
    consumer = transport.consumer([route], prefetch=10)
    (d,) = drain(consumer, 1)
    updated = d.envelope
    updated.record_failure(DestinationUnavailable("timeout"), transient=True)
    updated.record_failure(MappingError("no PID-3"), transient=False)
    consumer.dead_letter(d, updated)

    assert consumer.fetch(10, timeout=0.3) == []
    assert wait_for(lambda: transport.depth(route.dlq) == 1), transport.depth(route.dlq)
    assert transport.depth(route.work) == 0
    for _ in range(2):  # browsing does not remove
        browsed = transport.dlq_browse(route)
        assert [e.id for e in browsed] == [env.id]
        assert browsed[0].attempts == 2
        assert [(e.error, e.text, e.transient) for e in browsed[0].errors] == [
            ("DestinationUnavailable", "timeout", True), ("MappingError", "no PID-3", False)]
        assert browsed[0].to_bytes() == updated.to_bytes()
    assert wait_for(lambda: transport.depth(route.dlq) == 1)


def _dead_letter_all(transport: Transport, route: RouteQueues, n: int) -> tuple[Consumer, list[Envelope]]:
    envs = [make_envelope(route, i) for i in range(n)]
    transport.publish_many(route.work, envs)
    consumer = transport.consumer([route], prefetch=100)
    for d in drain(consumer, n):
        e = d.envelope
        e.record_failure(MappingError(f"bad {e.control_id}"), transient=False)
        consumer.dead_letter(d, e)
    assert wait_for(lambda: len(transport.dlq_browse(route)) == n)
    return consumer, envs


def test_dlq_browse_oldest_first_and_limit(transport: Transport, route: RouteQueues) -> None:
    consumer, envs = _dead_letter_all(transport, route, 5)
    assert [e.id for e in transport.dlq_browse(route)] == [e.id for e in envs]  # single publisher, FIFO
    assert len(transport.dlq_browse(route, limit=2)) == 2


def test_dlq_replay_one_then_all_with_attempts_reset(transport: Transport, route: RouteQueues) -> None:
    consumer, envs = _dead_letter_all(transport, route, 3)
    first, *rest = envs

    assert transport.dlq_replay(route, {first.id}) == [first.id]
    assert sorted(e.id for e in transport.dlq_browse(route)) == sorted(e.id for e in rest)
    (d,) = drain(consumer, 1)
    assert d.envelope.id == first.id
    assert d.envelope.attempts == 0
    assert d.envelope.headers.get("replayed") == "true"
    assert [e.text for e in d.envelope.errors] == [f"bad {first.control_id}"]  # history kept
    assert d.envelope.raw == first.raw
    consumer.ack([d])

    assert sorted(transport.dlq_replay(route)) == sorted(e.id for e in rest)
    assert transport.dlq_browse(route) == []
    back = drain(consumer, 2)
    assert sorted(ids(back)) == sorted(e.id for e in rest)
    assert all(b.envelope.attempts == 0 and len(b.envelope.errors) == 1 for b in back)
    consumer.ack(back)
    assert transport.dlq_replay(route) == []
    assert transport.dlq_replay(route, {"no-such-id"}) == []


def test_dlq_purge(transport: Transport, route: RouteQueues) -> None:
    consumer, envs = _dead_letter_all(transport, route, 3)
    consumer.close()  # an open consumer may be handed (prefetch) the message below before we count it
    keep = make_envelope(route, 99)
    transport.publish(route.work, keep).result(timeout=10)

    assert transport.dlq_purge(route) == 3
    assert transport.dlq_browse(route) == []
    assert transport.dlq_purge(route) == 0
    assert wait_for(lambda: transport.depth(route.work) == 1)  # the work queue is untouched
    assert ids(drain(transport.consumer([route], prefetch=10), 1)) == [keep.id]


def test_depth_counts_ready_messages_only(transport: Transport, route: RouteQueues) -> None:
    assert transport.depth(route.work) == 0
    envs = [make_envelope(route, i) for i in range(3)]
    transport.publish_many(route.work, envs)
    assert wait_for(lambda: transport.depth(route.work) == 3), transport.depth(route.work)

    consumer = transport.consumer([route], prefetch=1)
    got = drain(consumer, 1)
    assert len(got) == 1
    assert wait_for(lambda: transport.depth(route.work) == 2), transport.depth(route.work)  # unacked is not ready
    consumer.ack(got)
    consumer.close()  # (after the ack a broker may push the next message to it; closing gives that back)
    assert wait_for(lambda: transport.depth(route.work) == 2), transport.depth(route.work)
    assert transport.depth(route.dlq) == 0


# ---- competing consumers and routes ---------------------------------------------------

def test_competing_consumers_never_share_a_leased_message(transport: Transport, route: RouteQueues) -> None:
    envs = [make_envelope(route, i) for i in range(20)]
    transport.publish_many(route.work, envs)
    first = transport.consumer([route], prefetch=10)
    second = transport.consumer([route], prefetch=10)
    a = drain(first, 10)
    b = drain(second, 10)
    assert len(a) == 10 and len(b) == 10
    assert set(ids(a)).isdisjoint(ids(b))
    assert sorted(ids(a) + ids(b)) == sorted(e.id for e in envs)
    # everything is held unacked: neither consumer gets anything more
    assert second.fetch(10, timeout=0.3) == []
    first.ack(a)
    second.ack(b)


def test_competing_consumer_threads_process_each_message_once(transport: Transport, route: RouteQueues) -> None:
    total, workers = 400, 4
    envs = [make_envelope(route, i) for i in range(total)]
    transport.publish_many(route.work, envs)
    seen: Counter[str] = Counter()
    lock = threading.Lock()
    errors: list[BaseException] = []
    done = threading.Event()

    def worker() -> None:
        try:
            consumer = transport.consumer([route], prefetch=20)
            try:
                deadline = time.monotonic() + 20
                while not done.is_set() and time.monotonic() < deadline:
                    batch = consumer.fetch(10, timeout=0.2)
                    with lock:
                        seen.update(ids(batch))
                        if sum(seen.values()) >= total:
                            done.set()
                    if batch:
                        consumer.ack(batch)
            finally:
                consumer.close()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert errors == []
    assert set(seen) == {e.id for e in envs}
    assert max(seen.values()) == 1
    assert wait_for(lambda: transport.depth(route.work) == 0)


def test_routes_are_kept_apart(transport: Transport, route: RouteQueues, other_route: RouteQueues) -> None:
    r1 = [make_envelope(route, i) for i in range(5)]
    r2 = [make_envelope(other_route, 100 + i) for i in range(3)]
    transport.publish_many(route.work, r1)
    transport.publish_many(other_route.work, r2)
    assert wait_for(lambda: transport.depth(route.work) == 5 and transport.depth(other_route.work) == 3)

    c1 = transport.consumer([route], prefetch=20)
    got1 = drain(c1, 5)
    assert sorted(ids(got1)) == sorted(e.id for e in r1)
    assert {d.queue for d in got1} == {route.work}
    assert c1.fetch(10, timeout=0.3) == []  # r2's messages never show up here
    c1.requeue(got1)
    c1.close()

    both = transport.consumer([route, other_route], prefetch=20)
    got = drain(both, 8)
    assert sorted(ids(got)) == sorted(e.id for e in r1 + r2)
    by_queue = {d.envelope.id: d.queue for d in got}
    assert all(by_queue[e.id] == route.work for e in r1)
    assert all(by_queue[e.id] == other_route.work for e in r2)

    # a dead-lettered r2 message goes to r2's DLQ, not r1's
    r2_delivery = next(d for d in got if d.queue == other_route.work)
    r2_delivery.envelope.record_failure(MappingError("x"), transient=False)
    both.dead_letter(r2_delivery, r2_delivery.envelope)
    assert [e.id for e in transport.dlq_browse(other_route)] == [r2_delivery.envelope.id]
    assert transport.dlq_browse(route) == []
    both.ack([d for d in got if d is not r2_delivery])
