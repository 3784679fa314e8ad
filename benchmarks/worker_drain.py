"""How fast `router worker` processes drain a prefilled RabbitMQ queue into PostgreSQL.

    .venv/bin/python benchmarks/worker_drain.py [-n 4000] [--workers 1] [--profile prof.txt]

Fills the bench-lab route's work queue (fresh namespace) with N ORU^R01 messages of the end-to-end
benchmark (router/bench/payloads.py: distinct MSH-10, placer/filler numbers, one of 1,000 patients)
through the engine's own intake and publisher, journals them as queued (as the listener would), then
starts `--workers` real `router worker` processes on a fresh PostgreSQL schema and times them until
every message is journaled processed. The rate is taken from the first processed message to the
last (worker start-up excluded). Prints msg/s, rows written per message, the load average, and with
``--profile`` a py-spy profile (raw folded stacks) of the first worker while it drains.

No MLLP, no listener: this isolates the consumer side of the end-to-end benchmark.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import sqlalchemy as sa

from router import journal
from router.bench import payloads, procs, routes
from router.config.loader import load_config
from router.db import create_schema
from router.intake import Intake, JournalWriter
from router.runtime import build_routes
from router.transport.rabbitmq import RabbitMQTransport

PG = "postgresql+psycopg://root@127.0.0.1:5432/test"
BROKER = "amqp://guest:guest@127.0.0.1:5672/%2F"
ROUTE = "bench-lab"


def fill(routes_file: Path, broker: str, ns: str, engine: sa.Engine, n: int, tag: str) -> None:
    config = load_config(str(routes_file))
    transport = RabbitMQTransport(broker, namespace=ns)
    try:
        rts = build_routes(config, transport, ns, with_destinations=False)
        transport.setup([r.queues for r in rts])
        intake = Intake(rts, transport, JournalWriter(None))
        futures, queued = [], []
        for i in range(n):
            acc = intake.prepare(payloads.make("oru", i, tag).encode(), source="bench")
            futures.append(transport.publish(acc.route.queues.work, acc.envelope))
            queued.append(Intake._queued(acc.envelope))
        for f in futures:
            f.result(timeout=120)
        with engine.begin() as conn:
            for k in range(0, len(queued), 1000):
                journal.record(conn, queued[k:k + 1000])
    finally:
        transport.close()


def count(engine: sa.Engine) -> int:
    with engine.connect() as c:
        return int(c.execute(sa.text("SELECT count(*) FROM journal_messages WHERE status = 'processed'")).scalar_one())


def start_profile(out: str, pid: int, idle: bool) -> subprocess.Popen[bytes]:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return subprocess.Popen([exe, "record", "-r", "100", "--format", "raw", "-o", out, "--pid", str(pid),
                             *(["--idle"] if idle else [])], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def cpu_seconds(children: list[procs.Child]) -> float:
    """User + system CPU time of the worker processes so far."""
    import psutil

    total = 0.0
    for c in children:
        t = psutil.Process(c.pid).cpu_times()
        total += t.user + t.system
    return total


def rows_written(engine: sa.Engine) -> int:
    with engine.connect() as c:
        tables = [r[0] for r in c.execute(sa.text(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")).all()]
        return sum(int(c.execute(sa.text(f'SELECT count(*) FROM "{t}"')).scalar_one()) for t in tables
                   if t.startswith(("store_", "idx_", "journal_")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=4000, help="messages to drain")
    ap.add_argument("--workers", type=int, default=1, help="`router worker` processes")
    ap.add_argument("--database-url", default=PG)
    ap.add_argument("--broker-url", default=BROKER)
    ap.add_argument("--profile", help="py-spy raw profile of worker 0 written here")
    ap.add_argument("--idle", action="store_true", help="profile with idle samples (where the wall time goes)")
    ap.add_argument("--batch-size", type=int, help="the route's batch_size (default: the route default)")
    ap.add_argument("--concurrency", type=int, help="the route's consumer threads per worker (default: the route default)")
    ap.add_argument("--timeout", type=float, default=600)
    a = ap.parse_args()
    ns = procs.namespace()
    with procs.workdir() as folder, procs.pg_schema(a.database_url, "drain") as pg:
        routes_file = routes.write(folder)
        extra = (f"    batch_size: {a.batch_size}\n    prefetch: {2 * a.batch_size}\n" if a.batch_size else "") + (
            f"    concurrency: {a.concurrency}\n" if a.concurrency else "")
        routes_file.write_text(routes_file.read_text().replace("    destinations: [store]\n",
                                                               "    destinations: [store]\n" + extra))
        engine = sa.create_engine(pg, pool_size=1)
        create_schema(engine)
        children: list[procs.Child] = []
        spy = None
        try:
            t = time.perf_counter()
            fill(routes_file, a.broker_url, ns, engine, a.n, ns[-6:])
            print(f"filled {a.n} messages in {time.perf_counter() - t:.1f}s", flush=True)
            before = rows_written(engine)  # the queued journal rows and their events
            common = ["--routes", str(routes_file), "--broker-url", a.broker_url, "--database-url", pg,
                      "--namespace", ns, "--data-dir", str(folder / "var")]
            for k in range(a.workers):
                children.append(procs.router_child("worker", common, folder, f"worker{k}"))
            deadline = time.monotonic() + a.timeout
            first: tuple[float, int] | None = None
            done = 0
            while done < a.n and time.monotonic() < deadline:
                if not all(c.alive() for c in children):
                    raise RuntimeError(f"a worker died: {procs.tail(children[0].log)}")
                done = count(engine)
                now = time.perf_counter()
                if first is None and done > 0:
                    first = (now, done)
                    cpu0 = cpu_seconds(children)
                    if a.profile:  # the drain only, not the start-up nor the stop
                        spy = start_profile(a.profile, children[0].pid, a.idle)
                time.sleep(0.1)
            end = time.perf_counter()
            cpu1 = cpu_seconds(children)
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(30)
                spy = None
            if done < a.n:
                raise RuntimeError(f"only {done} of {a.n} processed before the timeout")
            assert first is not None
            rate = (done - first[1]) / (end - first[0])
            cpu_ms = 1000 * (cpu1 - cpu0) / (done - first[1])
            with engine.connect() as c:
                statuses = dict(c.execute(sa.text("SELECT status, count(*) FROM journal_messages GROUP BY status")).all())
            # rows per message: everything the workers added (store, index, audit, journal events, keys),
            # plus the journal row each message has (upserted from queued)
            rows = rows_written(engine) - before + a.n
            load = os.getloadavg()
            print(f"{a.workers} worker(s): {rate:.0f} msg/s over {end - first[0]:.1f}s, worker CPU {cpu_ms:.2f} ms/msg "
                  f"({100 * (cpu1 - cpu0) / (end - first[0]) / a.workers:.0f}% of a core each); {rows / a.n:.1f} rows/msg "
                  f"(journal message row included); statuses {statuses}; "
                  f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
        finally:
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(30)
            for c in reversed(children):
                c.stop()
            engine.dispose()
            procs.delete_queues(a.broker_url, ns, routes.ROUTE_NAMES)


if __name__ == "__main__":
    main()
