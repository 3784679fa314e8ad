"""RabbitMQ transport against the real broker: throughput, broker restart under load, redelivery
after a consumer's connection dies, queue arguments (quorum, delay tiers), DLQ tools.

The shared behaviour (both transports) is in tests/contract/; this file covers what only a
broker can show. Every test cleans up its queues.
"""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import pika
import pytest

from router.envelope import Envelope
from router.errors import DestinationUnavailable, TransportError
from router.transport import Consumer, Delivery, RouteQueues, route_queues
from router.transport.rabbitmq import RabbitMQTransport, queue_arguments

pytestmark = pytest.mark.rabbitmq

HL7 = b"MSH|^~\\&|LAB|HOSP|ROUTER|HOSP|20260101120000||ORU^R01|MSG%06d|P|2.5.1\rPID|1||12345^^^HOSP^MR\r"

Factory = Callable[..., RabbitMQTransport]


def env(route: RouteQueues, i: int = 0) -> Envelope:
    return Envelope(route=route.route, raw=HL7 % i, source="test", content_type="x-application/hl7-v2+er7",
                    sender="LAB^HOSP", control_id=f"MSG{i:06d}")


def drain(consumer: Consumer, n: int, timeout: float = 10.0) -> list[Delivery]:
    out: list[Delivery] = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        out.extend(consumer.fetch(min(500, n - len(out)), timeout=0.5))
    return out


def rabbitmqctl(*args: str, timeout: float = 60.0) -> str:
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        pytest.skip("rabbitmqctl is not installed")
    return subprocess.run([ctl, *args], check=True, capture_output=True, text=True, timeout=timeout).stdout


def kill_socket(consumer: Consumer) -> None:
    """Simulate a crashed worker / network cut: the TCP connection dies without AMQP close."""
    consumer._conn._impl._transport._sock.shutdown(socket.SHUT_RDWR)  # type: ignore[attr-defined]


@pytest.fixture
def make(rabbitmq_url: str, namespace: str) -> Iterator[Factory]:
    """Transports on the test's namespace; at teardown closes them and deletes every queue they declared."""
    created: list[RabbitMQTransport] = []

    def factory(**kw: float) -> RabbitMQTransport:
        kw.setdefault("reconnect_max_delay", 1.0)
        t = RabbitMQTransport(rabbitmq_url, namespace=namespace, **kw)  # type: ignore[arg-type]
        created.append(t)
        return t

    yield factory
    names = {q for t in created for q in t._declared}
    for t in created:
        t.close()
    if names:
        try:
            conn = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
            for q in names:
                ch = conn.channel()
                try:
                    ch.queue_delete(q)
                    ch.close()
                except pika.exceptions.AMQPError:
                    pass
            conn.close()
        except pika.exceptions.AMQPError:
            pass


# ---- 1. throughput ---------------------------------------------------------------------

def test_publish_10000_from_4_threads_then_consume(make: Factory, namespace: str) -> None:
    t = make()
    route = route_queues(namespace, "bulk", delays=(1.0,))
    t.setup([route])
    threads_n, per_thread = 4, 2500
    errors: list[BaseException] = []
    start = threading.Barrier(threads_n + 1)

    def publisher(k: int) -> None:
        envs = [env(route, k * per_thread + i) for i in range(per_thread)]
        start.wait()
        futures = [t.publish(route.work, e) for e in envs]
        for f in futures:
            try:
                f.result(timeout=60)
            except BaseException as exc:  # noqa: BLE001 - asserted below
                errors.append(exc)

    threads = [threading.Thread(target=publisher, args=(k,)) for k in range(threads_n)]
    for th in threads:
        th.start()
    start.wait()
    t0 = time.perf_counter()
    for th in threads:
        th.join(timeout=120)
    elapsed = time.perf_counter() - t0
    assert errors == []
    total = threads_n * per_thread
    assert t.depth(route.work) == total
    print(f"\nrabbitmq publish (confirmed, persistent, 4 threads): {total / elapsed:,.0f} msg/s")

    consumer = t.consumer([route], prefetch=1000)
    t0 = time.perf_counter()
    seen: set[str] = set()
    while len(seen) < total:
        batch = consumer.fetch(500, timeout=2.0)
        assert batch, f"stalled after {len(seen)} messages"
        seen.update(d.envelope.id for d in batch)
        consumer.ack(batch)
    elapsed = time.perf_counter() - t0
    print(f"rabbitmq consume (fetch 500, one ack per batch): {total / elapsed:,.0f} msg/s")
    assert len(seen) == total
    consumer.close()
    assert t.depth(route.work) == 0


# ---- 2. broker restart under load -----------------------------------------------------

@pytest.mark.chaos
def test_broker_restart_under_load_loses_nothing_and_recovers_alone(make: Factory, namespace: str) -> None:
    t = make(reconnect_max_delay=1.0, publish_timeout=30.0)
    route = route_queues(namespace, "load", delays=(1.0,))
    t.setup([route])

    published: list[tuple[str, object]] = []  # (id, future); list.append is atomic
    consumed: set[str] = set()
    consumed_lock = threading.Lock()
    deliveries = [0]
    stop_publishing, stop_consuming = threading.Event(), threading.Event()
    thread_errors: list[BaseException] = []

    def publisher(k: int) -> None:
        i = 0
        try:
            while not stop_publishing.is_set():
                for _ in range(20):
                    e = env(route, k * 1_000_000 + i)
                    i += 1
                    published.append((e.id, t.publish(route.work, e)))
                time.sleep(0.01)
        except BaseException as exc:  # noqa: BLE001
            thread_errors.append(exc)

    def consumer_loop() -> None:
        try:
            c = t.consumer([route], prefetch=300)
            try:
                while not stop_consuming.is_set():
                    batch = c.fetch(200, timeout=0.2)
                    with consumed_lock:
                        consumed.update(d.envelope.id for d in batch)
                        deliveries[0] += len(batch)
                    c.ack(batch)  # acks of deliveries from a dead connection are no-ops
            finally:
                c.close()
        except BaseException as exc:  # noqa: BLE001
            thread_errors.append(exc)

    threads = [threading.Thread(target=publisher, args=(k,), daemon=True) for k in range(2)]
    threads.append(threading.Thread(target=consumer_loop, daemon=True))
    for th in threads:
        th.start()

    app_stopped = False
    try:
        time.sleep(1.0)
        before = len(published)
        rabbitmqctl("stop_app")
        app_stopped = True
        time.sleep(1.0)
        rabbitmqctl("start_app")
        app_stopped = False
        rabbitmqctl("await_startup")
        time.sleep(2.0)  # keep publishing and consuming after the restart
    finally:
        if app_stopped:
            rabbitmqctl("start_app")
            rabbitmqctl("await_startup")
        stop_publishing.set()
    for th in threads[:2]:
        th.join(timeout=10)

    ok: set[str] = set()
    failed: list[BaseException] = []
    for mid, fut in published:
        exc = fut.exception(timeout=40)  # type: ignore[attr-defined]
        if exc is None:
            ok.add(mid)
        else:
            failed.append(exc)
    assert len(published) > before > 0
    assert ok, "no publish was confirmed"

    # publishing works again by itself (same transport object)
    after = [env(route, 9_000_000 + i) for i in range(100)]
    t.publish_many(route.work, after, timeout=30)
    ok.update(e.id for e in after)

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with consumed_lock:
            missing = ok - consumed
        if not missing:
            break
        time.sleep(0.2)
    stop_consuming.set()
    threads[2].join(timeout=10)
    print(f"\nrestart under load: published {len(published)}, confirmed {len(ok) - len(after)}, "
          f"failed {len(failed)}, delivered {deliveries[0]} ({deliveries[0] - len(consumed)} duplicates), "
          f"missing {len(missing)}")
    assert thread_errors == []
    assert not missing, f"{len(missing)} confirmed messages were never consumed, e.g. {sorted(missing)[:3]}"
    assert wait_for(lambda: t.depth(route.work) == 0, 10)


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# ---- 3. a consumer dies mid-batch --------------------------------------------------------

def test_consumer_connection_dies_mid_batch_messages_go_to_another(make: Factory, namespace: str) -> None:
    t = make()
    route = route_queues(namespace, "crash", delays=(0.2,))
    t.setup([route])
    envs = [env(route, i) for i in range(20)]
    t.publish_many(route.work, envs)

    a = t.consumer([route], prefetch=50)
    held = drain(a, 20)
    assert sorted(d.envelope.id for d in held) == sorted(e.id for e in envs)
    assert not any(d.redelivered for d in held)
    b = t.consumer([route], prefetch=50)
    assert b.fetch(50, timeout=0.3) == []  # a holds them all

    kill_socket(a)  # a's process "crashes" before acking anything
    again = drain(b, 20)
    assert sorted(d.envelope.id for d in again) == sorted(e.id for e in envs)
    assert all(d.redelivered for d in again)
    assert [d.envelope.to_bytes() for d in sorted(again, key=lambda d: d.envelope.id)] == \
        [e.to_bytes() for e in sorted(envs, key=lambda e: e.id)]

    # the old deliveries are void: acking them is a no-op, scheduling a retry refuses
    a.ack(held)
    with pytest.raises(TransportError, match="void"):
        a.retry_later(held[0], held[0].envelope, 0.2, 0)
    b.ack(again)

    # a reconnects by itself and consumes again
    b.close()
    fresh = env(route, 100)
    t.publish(route.work, fresh).result(timeout=10)
    got = drain(a, 1)
    assert [d.envelope.id for d in got] == [fresh.id] and not got[0].redelivered
    a.ack(got)
    assert a.fetch(10, timeout=0.3) == []
    assert wait_for(lambda: t.depth(route.work) == 0)


def test_transport_close_returns_unacked_of_consumers_in_other_threads(make: Factory, namespace: str) -> None:
    first = make()
    route = route_queues(namespace, "owner", delays=(0.2,))
    first.setup([route])
    e = env(route)
    first.publish(route.work, e).result(timeout=10)
    got: list[Delivery] = []
    errors: list[BaseException] = []
    holding, closed = threading.Event(), threading.Event()

    def worker() -> None:
        c = first.consumer([route], prefetch=10)
        got.extend(drain(c, 1))
        holding.set()
        closed.wait(10)
        try:
            c.fetch(10, timeout=0.5)
        except TransportError as exc:
            errors.append(exc)

    th = threading.Thread(target=worker)
    th.start()
    assert holding.wait(10)
    first.close()
    closed.set()
    th.join(10)
    assert [d.envelope.id for d in got] == [e.id]
    assert len(errors) == 1 and "closed" in str(errors[0])

    second = make()
    second.setup([route])
    c = second.consumer([route], prefetch=10)
    back = drain(c, 1)
    assert [d.envelope.id for d in back] == [e.id] and back[0].redelivered
    c.ack(back)


# ---- 4. queue arguments ----------------------------------------------------------------

def test_quorum_route_queue_arguments_and_delay_tiers(make: Factory, namespace: str) -> None:
    t = make()
    route = route_queues(namespace, "q", delays=(0.3, 2.0), jitter=0.2, quorum=True)
    t.setup([route])
    t.setup([route])  # idempotent

    rows = json.loads(rabbitmqctl("list_queues", "-q", "--formatter", "json", "name", "type", "arguments",
                                  "durable"))
    by_name = {r["name"]: r for r in rows if r["name"].startswith(namespace + ".")}
    assert set(by_name) == {route.work, route.dlq, f"{route.work}.retry.0", f"{route.work}.retry.1"}
    assert all(r["type"] == "quorum" and r["durable"] for r in by_name.values())

    def args(name: str) -> dict[str, object]:
        raw = by_name[name]["arguments"]  # rabbitmqctl's JSON: [[key, type, value], ...]
        return {row[0]: row[-1] for row in raw} if isinstance(raw, list) else dict(raw)

    tier1 = args(f"{route.work}.retry.1")
    assert tier1["x-message-ttl"] == 2400  # 2.0 s * (1 + 0.2)
    assert tier1["x-dead-letter-exchange"] == ""
    assert tier1["x-dead-letter-routing-key"] == route.work
    assert args(f"{route.work}.retry.0")["x-message-ttl"] == 360
    assert queue_arguments(route)[route.work] == {"x-queue-type": "quorum"}

    # a message retried on tier 1 with a 0.5 s delay comes back after ~0.5 s, not the tier's 2.4 s TTL
    original = env(route)
    t.publish(route.work, original).result(timeout=10)
    consumer = t.consumer([route], prefetch=10)
    (d,) = drain(consumer, 1)
    updated = d.envelope
    updated.record_failure(DestinationUnavailable("down"), transient=True)
    t0 = time.monotonic()
    consumer.retry_later(d, updated, delay=0.5, tier=1)
    assert t.depth(route.work) == 0
    assert wait_for(lambda: t.depth(f"{route.work}.retry.1") == 1, 1)
    back = drain(consumer, 1, timeout=5)
    elapsed = time.monotonic() - t0
    assert [b.envelope.id for b in back] == [original.id]
    assert 0.45 <= elapsed < 1.8, elapsed
    assert back[0].envelope.attempts == 1 and back[0].queue == route.work
    consumer.ack(back)

    # the same queue names with other arguments: refused, naming the queue
    classic = route_queues(namespace, "q", delays=(0.3, 2.0), jitter=0.2, quorum=False)
    with pytest.raises(TransportError, match=route.work):
        t.setup([classic])  # this transport remembers what it declared
    with pytest.raises(TransportError, match=rf"{route.work}.*already exists with different arguments"):
        make().setup([classic])  # a fresh transport: the broker refuses (PRECONDITION_FAILED)


def test_classic_delay_tier_dead_letters_back_after_the_delay(make: Factory, namespace: str) -> None:
    t = make()
    route = route_queues(namespace, "c", delays=(0.4,), jitter=0.0)
    t.setup([route])
    consumer = t.consumer([route], prefetch=10)
    envs = [env(route, i) for i in range(5)]
    t.publish_many(route.work, envs)
    first = drain(consumer, 5)
    t0 = time.monotonic()
    for d in first:
        d.envelope.record_failure(DestinationUnavailable("down"), transient=True)
        consumer.retry_later(d, d.envelope, delay=0.4, tier=3)  # tier clamped to the last one
    assert consumer.fetch(10, timeout=0.25) == []
    back = drain(consumer, 5)
    elapsed = time.monotonic() - t0
    assert sorted(b.envelope.id for b in back) == sorted(e.id for e in envs)
    assert 0.35 <= elapsed < 2.0, elapsed
    assert all(b.envelope.attempts == 1 for b in back)
    consumer.ack(back)


# ---- DLQ tools, unroutable publishes, foreign messages -------------------------------------

def test_publish_to_a_missing_queue_fails(make: Factory, namespace: str) -> None:
    t = make()
    with pytest.raises(TransportError, match="does not exist"):
        t.publish(f"{namespace}.nowhere", Envelope(route="x", raw=b"x")).result(timeout=10)
    with pytest.raises(TransportError, match="does not exist"):
        t.depth(f"{namespace}.nowhere")
    route = route_queues(namespace, "later", delays=(0.2,))
    t.setup([route])  # the transport still works after both refusals
    t.publish(route.work, env(route)).result(timeout=10)
    assert t.depth(route.work) == 1


def test_foreign_message_in_a_work_queue_is_dead_lettered_wrapped(make: Factory, namespace: str,
                                                                  rabbitmq_url: str) -> None:
    t = make()
    route = route_queues(namespace, "foreign", delays=(0.2,))
    t.setup([route])
    conn = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    conn.channel().basic_publish("", route.work, b"not an envelope", pika.BasicProperties(message_id="m-1"))
    conn.close()
    good = env(route, 1)
    t.publish(route.work, good).result(timeout=10)

    consumer = t.consumer([route], prefetch=10)
    got = drain(consumer, 1)
    assert [d.envelope.id for d in got] == [good.id]
    consumer.ack(got)
    (dead,) = t.dlq_browse(route)
    assert dead.id == "m-1" and dead.raw == b"not an envelope" and dead.headers["undecodable"] == "true"
    assert dead.errors[0].error == "InputError" and not dead.errors[0].transient


def test_dlq_replay_selected_keeps_the_rest_in_order(make: Factory, namespace: str) -> None:
    t = make()
    route = route_queues(namespace, "dl", delays=(0.2,))
    t.setup([route])
    envs = [env(route, i) for i in range(6)]
    t.publish_many(route.work, envs)
    consumer = t.consumer([route], prefetch=10)
    for d in sorted(drain(consumer, 6), key=lambda d: d.envelope.control_id):
        d.envelope.record_failure(ValueError("bad"), transient=False)
        consumer.dead_letter(d, d.envelope)
    consumer.close()
    assert [e.id for e in t.dlq_browse(route)] == [e.id for e in envs]

    pick = {envs[1].id, envs[4].id}
    assert sorted(t.dlq_replay(route, pick)) == sorted(pick)
    assert [e.id for e in t.dlq_browse(route)] == [e.id for i, e in enumerate(envs) if i not in (1, 4)]
    assert t.depth(route.work) == 2
    assert t.dlq_purge(route) == 4
    assert t.depth(route.dlq) == 0


def test_acks_out_of_order_partial_requeue_and_double_ack(make: Factory, namespace: str) -> None:
    """ack uses multiple=True only for a contiguous run from the oldest unsettled delivery: acking
    a later subset must never settle the deliveries in between."""
    t = make()
    route = route_queues(namespace, "acks", delays=(0.2,))
    t.setup([route])
    envs = [env(route, i) for i in range(10)]
    t.publish_many(route.work, envs)
    consumer = t.consumer([route], prefetch=10)
    got = sorted(drain(consumer, 10), key=lambda d: d.envelope.control_id)
    assert len(got) == 10
    done = [got[i] for i in (7, 0, 2, 1, 5)]
    consumer.ack(done)
    consumer.ack(done)  # twice: a no-op, must not kill the channel with an unknown delivery tag
    rest = [got[i] for i in (3, 4, 6, 8, 9)]
    consumer.requeue(rest)
    back = drain(consumer, 5)
    assert sorted(d.envelope.id for d in back) == sorted(d.envelope.id for d in rest)
    assert all(d.redelivered for d in back)
    consumer.ack(back)
    assert consumer.fetch(10, timeout=0.3) == []
    assert wait_for(lambda: t.depth(route.work) == 0)


def test_operator_connection_dropped_while_idle_is_reopened(make: Factory, namespace: str) -> None:
    t = make()
    route = route_queues(namespace, "idle", delays=(0.2,))
    t.setup([route])
    assert t.dlq_purge(route) == 0
    t._admin_conn._impl._transport._sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
    assert t.dlq_purge(route) == 0  # not idempotent, but nothing had started: retried on a new connection
    t._admin_conn._impl._transport._sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
    assert t.depth(route.work) == 0


def test_publishes_on_an_attached_asyncio_loop_confirm_in_order_and_survive_a_cut(make: Factory,
                                                                                  namespace: str) -> None:
    """attach_loop: intake's publishes run on its event loop (no publisher thread); same guarantees."""
    import asyncio

    t = make()
    route = route_queues(namespace, "lab")
    t.setup([route])
    missing = route_queues(namespace, "nowhere")

    async def main() -> tuple[list[int], int]:
        loop = asyncio.get_running_loop()
        t.attach_loop(loop)
        me = threading.get_ident()
        threads: set[int] = set()

        async def publish(e: Envelope, queue: str = route.work) -> None:
            fut = t.publish(queue, e)
            fut.add_done_callback(lambda _f: threads.add(threading.get_ident()))
            await asyncio.wrap_future(fut)

        await asyncio.gather(*(publish(env(route, i)) for i in range(1000)))
        assert threads == {me}  # confirmed on the loop itself
        with pytest.raises(TransportError, match="unroutable|does not exist"):
            await publish(env(missing, 0), missing.work)
        # the loop publisher's connection is cut while 1000 more are in flight: they are published
        # again on a new connection (duplicates allowed, losses not)
        pub = t._loop_publisher[2]  # type: ignore[index]
        second = [asyncio.ensure_future(publish(env(route, i))) for i in range(1000, 2000)]
        await asyncio.sleep(0)
        pub._conn._transport._sock.shutdown(socket.SHUT_RDWR)
        await asyncio.wait_for(asyncio.gather(*second), 30)
        return sorted(threads), len(second)

    asyncio.run(main())
    consumer = t.consumer([route], prefetch=5000)
    got = drain(consumer, 2000, timeout=20)
    got += consumer.fetch(500, timeout=1.0)  # duplicates, if any
    ids = [int(d.envelope.control_id[3:]) for d in got]
    assert set(ids) == set(range(2000))
    first = [i for i in ids if i < 1000]
    assert first == sorted(first)  # in publish order
    consumer.ack(got)
    consumer.close()


def test_publish_after_the_attached_loop_ended_goes_through_the_publisher_thread(make: Factory,
                                                                                 namespace: str) -> None:
    import asyncio

    t = make()
    route = route_queues(namespace, "after")
    t.setup([route])

    async def main() -> None:
        t.attach_loop(asyncio.get_running_loop())
        await asyncio.wrap_future(t.publish(route.work, env(route, 1)))

    asyncio.run(main())  # the loop is closed now; this thread publishes again
    t.publish(route.work, env(route, 2)).result(timeout=10)
    consumer = t.consumer([route], prefetch=10)
    got = drain(consumer, 2)
    assert sorted(d.envelope.control_id for d in got) == ["MSG000001", "MSG000002"]
    consumer.ack(got)
    consumer.close()
