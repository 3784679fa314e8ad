"""Embedded (SQLite) transport beyond the shared contract: crash durability, leases, group commit.

The contract itself is tested in tests/contract/ against every transport.
"""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from router.envelope import Envelope
from router.errors import DestinationUnavailable, TransportError
from router.transport import RouteQueues, route_queues
from router.transport.embedded import EmbeddedTransport

ROOT = Path(__file__).resolve().parent.parent

# A child process that publishes from 4 threads forever, printing each id once its future resolved.
PUBLISHER = textwrap.dedent("""
    import sys, threading
    from router.envelope import Envelope
    from router.transport import route_queues
    from router.transport.embedded import EmbeddedTransport

    path, ns = sys.argv[1], sys.argv[2]
    t = EmbeddedTransport(path, namespace=ns)
    r = route_queues(ns, "r1")
    t.setup([r])
    lock = threading.Lock()

    def run(k):
        i = 0
        while True:
            envs = [Envelope(route="r1", raw=b"thread %d message %d" % (k, i + j)) for j in range(25)]
            futures = [t.publish(r.work, e) for e in envs]
            for f in futures:
                f.result()
            with lock:
                sys.stdout.write("".join(e.id + "\\n" for e in envs))
                sys.stdout.flush()
            i += 25

    for k in range(4):
        threading.Thread(target=run, args=(k,), daemon=True).start()
    threading.Event().wait()
""")

# A child process that claims messages and then hangs (to be SIGKILLed) or consumes and acks until idle.
CONSUMER = textwrap.dedent("""
    import sys, threading, time
    from router.transport import route_queues
    from router.transport.embedded import EmbeddedTransport

    path, ns, mode, lease = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    t = EmbeddedTransport(path, namespace=ns, lease=lease)
    r = route_queues(ns, "r1")
    t.setup([r])
    c = t.consumer([r], prefetch=100)
    if mode == "hold":
        got = []
        while len(got) < int(sys.argv[5]):
            got += c.fetch(100, timeout=5)
        print(" ".join(d.envelope.id for d in got), flush=True)
        threading.Event().wait()
    else:
        print("ready", flush=True)
        idle = 0
        while idle < 3:
            batch = c.fetch(20, timeout=0.3)
            idle = 0 if batch else idle + 1
            time.sleep(0.01 if batch else 0)  # "work", so that both processes get some
            for d in batch:
                print(d.envelope.id, flush=False)
            c.ack(batch)
        sys.stdout.flush()
        c.close()
        t.close()
""")


def child(script: str, *args: object) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def kill(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    proc.stderr.close()


def envelope(i: int = 0) -> Envelope:
    return Envelope(route="r1", raw=b"MSH|^~\\&|A|B|C|D|||ADT^A01|%d|P|2.5\r" % i, control_id=str(i))


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "var" / "nested" / "queue.db")


@pytest.fixture
def route(namespace: str) -> RouteQueues:
    return route_queues(namespace, "r1", delays=(0.2,))


def open_transport(db: str, namespace: str, route: RouteQueues, **kw: object) -> EmbeddedTransport:
    t = EmbeddedTransport(db, namespace=namespace, **kw)  # type: ignore[arg-type]
    t.setup([route])
    return t


def test_creates_parent_directories_and_uses_wal(db: str, namespace: str, route: RouteQueues) -> None:
    t = open_transport(db, namespace, route)
    try:
        assert os.path.isfile(db)
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        t.close()


def test_committed_publishes_survive_sigkill_of_the_publisher(db: str, namespace: str, route: RouteQueues) -> None:
    proc = child(PUBLISHER, db, namespace)
    confirmed: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        while len(confirmed) < 2000 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            confirmed.append(line.strip())
        # killed while its threads are still publishing: some batches are in flight
    finally:
        kill(proc)
    assert len(confirmed) >= 2000, "the publisher child did not get going"

    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    t = open_transport(db, namespace, route)
    try:
        present = t.depth(route.work)
        consumer = t.consumer([route], prefetch=5000)
        got: list[str] = []
        while batch := consumer.fetch(1000, timeout=0.2):
            got.extend(d.envelope.id for d in batch)
        assert len(got) == present
        missing = set(confirmed) - set(got)
        assert not missing, f"{len(missing)} acknowledged publishes lost"
        assert len(set(got)) == len(got)
    finally:
        t.close()


def test_leases_of_a_killed_consumer_expire_and_messages_are_redelivered(db: str, namespace: str,
                                                                         route: RouteQueues) -> None:
    lease = 1.5
    t = open_transport(db, namespace, route, lease=lease)
    try:
        envs = [envelope(i) for i in range(5)]
        t.publish_many(route.work, envs)
        proc = child(CONSUMER, db, namespace, "hold", lease, 5)
        try:
            assert proc.stdout is not None
            held = proc.stdout.readline().split()
            claimed_by = time.monotonic()
        finally:
            kill(proc)
        assert sorted(held) == sorted(e.id for e in envs)

        consumer = t.consumer([route], prefetch=10)
        assert consumer.fetch(10, timeout=0.2) == []  # still leased to the dead process
        assert t.depth(route.work) == 0
        back: list = []
        while len(back) < 5 and time.monotonic() - claimed_by < 10:
            back += consumer.fetch(10, timeout=0.5)
        waited = time.monotonic() - claimed_by
        assert sorted(d.envelope.id for d in back) == sorted(e.id for e in envs)
        assert all(d.redelivered for d in back)
        assert waited >= lease * 0.5, waited  # not before the lease (renewed at lease/3) could expire
        consumer.ack(back)
        assert t.depth(route.work) == 0
    finally:
        t.close()


def test_an_open_consumer_keeps_its_leases_while_processing_slowly(db: str, namespace: str,
                                                                   route: RouteQueues) -> None:
    t = open_transport(db, namespace, route, lease=0.3)
    try:
        t.publish(route.work, envelope()).result(timeout=10)
        slow = t.consumer([route], prefetch=10)
        other = t.consumer([route], prefetch=10)
        (d,) = slow.fetch(10, timeout=5)
        assert other.fetch(10, timeout=1.2) == []  # four lease lengths, renewed by the keeper
        slow.ack([d])
        assert t.depth(route.work) == 0
    finally:
        t.close()


def test_a_lost_lease_makes_retry_later_fail_without_writing(db: str, namespace: str, route: RouteQueues) -> None:
    t = open_transport(db, namespace, route, lease=0.3, renew_leases=False)
    try:
        env = envelope()
        t.publish(route.work, env).result(timeout=10)
        stalled = t.consumer([route], prefetch=10)
        other = t.consumer([route], prefetch=10)
        (d,) = stalled.fetch(10, timeout=5)
        t0 = time.monotonic()
        (d2,) = other.fetch(10, timeout=5)  # the lease expired: delivered again
        assert time.monotonic() - t0 >= 0.2
        assert d2.envelope.id == env.id and d2.redelivered

        updated = d.envelope
        updated.record_failure(DestinationUnavailable("down"), transient=True)
        with pytest.raises(TransportError, match="no longer ours"):
            stalled.retry_later(d, updated, delay=0.0, tier=0)
        stalled.ack([d])  # a no-op: the message belongs to `other` now
        assert other.fetch(10, timeout=0.2) == []  # the failed retry wrote no copy
        other.ack([d2])
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0
    finally:
        t.close()


def test_consumers_in_separate_processes_share_the_work_exactly_once(db: str, namespace: str,
                                                                     route: RouteQueues) -> None:
    t = open_transport(db, namespace, route)
    try:
        envs = [envelope(i) for i in range(1000)]
        procs = [child(CONSUMER, db, namespace, "consume", 60) for _ in range(2)]
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready"
        t.publish_many(route.work, envs)
        outputs = []
        for p in procs:
            out, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
            outputs.append(out.split())
        seen = Counter(i for out in outputs for i in out)
        assert set(seen) == {e.id for e in envs}
        assert max(seen.values()) == 1
        assert all(outputs), "both processes got work"
        assert t.depth(route.work) == 0
    finally:
        t.close()


def test_single_publisher_order_and_delayed_messages_order(db: str, namespace: str, route: RouteQueues) -> None:
    t = open_transport(db, namespace, route)
    try:
        envs = [envelope(i) for i in range(100)]
        for e in envs:
            t.publish(route.work, e)
        t.publish_many(route.work, [])
        consumer = t.consumer([route], prefetch=100)
        got = []
        while len(got) < 100:
            got += consumer.fetch(100, timeout=5)
        assert [d.envelope.id for d in got] == [e.id for e in envs]
        # retried with different delays: they come back by due time, not by sequence
        consumer.retry_later(got[0], got[0].envelope, delay=0.4, tier=0)
        consumer.retry_later(got[1], got[1].envelope, delay=0.1, tier=0)
        consumer.ack(got[2:])
        time.sleep(0.5)
        back = consumer.fetch(10, timeout=1)
        assert [d.envelope.id for d in back] == [envs[1].id, envs[0].id]
        consumer.ack(back)
    finally:
        t.close()


def test_errors_are_reported_as_transport_errors(db: str, namespace: str, route: RouteQueues) -> None:
    t = open_transport(db, namespace, route)
    with pytest.raises(TransportError, match="not declared"):
        t.publish(f"{namespace}.nope", envelope()).result(timeout=5)
    with pytest.raises(TransportError, match="not declared"):
        t.consumer([route_queues(namespace, "nope")], prefetch=1)
    consumer = t.consumer([route], prefetch=1)
    t.close()
    with pytest.raises(TransportError, match="closed"):
        t.publish(route.work, envelope()).result(timeout=5)
    with pytest.raises(TransportError, match="closed"):
        consumer.fetch(1, timeout=0)
    t.close()  # idempotent


def test_publish_fails_with_transport_error_when_it_cannot_commit(db: str, namespace: str,
                                                                 route: RouteQueues) -> None:
    t = open_transport(db, namespace, route, busy_timeout=0.2)
    blocker = sqlite3.connect(db, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # another process holding the write lock for too long
        futures = [t.publish(route.work, envelope(i)) for i in range(3)]
        for f in futures:
            with pytest.raises(TransportError, match="locked"):
                f.result(timeout=10)
        assert t.stats.failed == 3
        blocker.execute("ROLLBACK")
        t.publish(route.work, envelope(9)).result(timeout=10)  # and it recovers
        assert t.depth(route.work) == 1
    finally:
        blocker.close()
        t.close()


def test_group_commit_needs_far_fewer_commits_than_messages(db: str, namespace: str, route: RouteQueues) -> None:
    t = open_transport(db, namespace, route)
    try:
        barrier = threading.Barrier(8)

        def publisher(k: int) -> None:
            envs = [envelope(k * 250 + i) for i in range(250)]
            barrier.wait()
            t.publish_many(route.work, envs)

        threads = [threading.Thread(target=publisher, args=(k,)) for k in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=60)
        assert t.stats.messages == 2000
        assert t.stats.failed == 0
        assert t.stats.commits <= 2000 // 10, t.stats
        assert t.stats.largest_batch <= t.max_batch
        assert t.depth(route.work) == 2000
    finally:
        t.close()


def test_throughput(db: str, namespace: str, route: RouteQueues, capsys: pytest.CaptureFixture[str]) -> None:
    """Prints publish and consume rates; asserts correctness only (timings vary by machine)."""
    n, threads_n = 5000, 4
    report = []

    def publish_from_threads(t: EmbeddedTransport, wait_each: bool) -> float:
        per = n // threads_n
        barrier = threading.Barrier(threads_n + 1)

        def run(k: int) -> None:
            envs = [envelope(k * per + i) for i in range(per)]
            barrier.wait()
            if wait_each:
                for e in envs:
                    t.publish(route.work, e).result(timeout=30)
            else:
                t.publish_many(route.work, envs)

        threads = [threading.Thread(target=run, args=(k,)) for k in range(threads_n)]
        for th in threads:
            th.start()
        barrier.wait()
        t0 = time.perf_counter()
        for th in threads:
            th.join(timeout=120)
        return time.perf_counter() - t0

    for wait_each in (False, True):
        path = f"{db}.{int(wait_each)}"
        t = open_transport(path, namespace, route)
        try:
            pub = publish_from_threads(t, wait_each)
            commits = t.stats.commits
            assert t.stats.messages == n and t.depth(route.work) == n
            consumer = t.consumer([route], prefetch=100)
            t0 = time.perf_counter()
            count = 0
            while count < n:
                batch = consumer.fetch(100, timeout=5)
                assert batch
                consumer.ack(batch)
                count += len(batch)
            con = time.perf_counter() - t0
            assert count == n and t.depth(route.work) == 0
        finally:
            t.close()
        mode = "each publisher waits for every future" if wait_each else "publish_many per thread"
        report.append(f"embedded publish {n} msgs from {threads_n} threads ({mode}): {n / pub:,.0f} msg/s "
                      f"in {commits} commits; consume+ack in batches of 100: {n / con:,.0f} msg/s")
    with capsys.disabled():
        print()
        for line in report:
            print(line)
