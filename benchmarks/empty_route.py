"""Throughput through an empty route (passthrough mapping, discard destination), per transport.

    .venv/bin/python benchmarks/empty_route.py [--messages 20000] [--broker-url URL] [--database-url URL]

Measures, in one run: (1) durable intake: Intake.prepare + publish with the future awaited
(pipelined confirms / group commit), from 8 threads; (2) workers: fetch, process, journal +
dedupe keys committed per batch, ack, until the journal shows every message processed.
"""
from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import sqlalchemy as sa

from router import journal
from router.config.loader import load_config
from router.db import create_schema, make_engine
from router.intake import Intake, JournalWriter
from router.runtime import build_routes
from router.transport import open_transport
from router.worker import Worker

ROUTES = """
routes:
  - name: {name}
    source: mllp
    destinations: [discard]
    batch_size: 100
    prefetch: 500
"""


def message(i: int) -> bytes:
    return (f"MSH|^~\\&|LIS|LAB|EHR|HOSP|20240101120000||ORU^R01|B{i}|P|2.5\r"
            "PID|1||12345^^^HOSP^MR||TEST^PATIENT\rOBR|1|ORD1\rOBX|1|NM|GLU^Glucose^L||5.4|mmol/L|||||F\r").encode()


def run(n: int, broker_url: str | None, database_url: str | None, threads: int = 8) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    route = f"empty-{time.time_ns()}"  # the journal may hold earlier runs (PostgreSQL)
    (tmp / "routes.yaml").write_text(ROUTES.format(name=route))
    config = load_config(tmp / "routes.yaml")
    ns = f"bench{int(time.time())}"
    engine = make_engine(database_url or f"sqlite:///{tmp}/router.db")
    create_schema(engine)
    transport = open_transport(broker_url, namespace=ns, data_dir=str(tmp))
    routes = build_routes(config, transport, ns)
    transport.setup([r.queues for r in routes])
    intake = Intake(routes, transport, JournalWriter(None))

    def produce(lo: int, hi: int) -> None:
        futures = []
        for i in range(lo, hi):
            acc = intake.prepare(message(i), source="bench")
            futures.append(transport.publish(acc.route.queues.work, acc.envelope))
            if len(futures) >= 500:  # a sender waits for its ACKs; keep a bounded window in flight
                for f in futures:
                    f.result(60)
                futures.clear()
        for f in futures:
            f.result(60)

    t0 = time.perf_counter()
    step = n // threads
    ts = [threading.Thread(target=produce, args=(k * step, (k + 1) * step)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    publish_s = time.perf_counter() - t0
    total = step * threads

    worker = Worker(routes, transport, engine)
    t1 = time.perf_counter()
    worker.start()
    m = journal.messages.c
    q = sa.select(sa.func.count()).select_from(journal.messages).where(m.route == route, m.status == "processed")
    while True:
        with engine.connect() as conn:
            if conn.execute(q).scalar_one() >= total:
                break
        time.sleep(0.05)
    process_s = time.perf_counter() - t1
    worker.stop()
    transport.close()
    engine.dispose()
    return {"messages": total, "intake_msg_s": total / publish_s, "worker_msg_s": total / process_s}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--broker-url", default=None)
    ap.add_argument("--database-url", default=None)
    a = ap.parse_args()
    r = run(a.messages, a.broker_url, a.database_url)
    kind = "rabbitmq" if a.broker_url else "embedded"
    db = (a.database_url or "sqlite").split(":")[0]
    print(f"{kind:9} {db:20} {r['messages']:>7} msgs  intake (durable) {r['intake_msg_s']:>8.0f} msg/s  "
          f"workers {r['worker_msg_s']:>8.0f} msg/s")


if __name__ == "__main__":
    main()
