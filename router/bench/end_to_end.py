"""End to end: MLLP -> RabbitMQ -> workers -> PostgreSQL, sustained, with 1, 2 and 4 `router worker`
processes behind one `router run --no-workers` listener, on a fresh PostgreSQL schema and queue
namespace; beside the raw-limit pipeline (raw_pipeline.py: pika publish with confirms -> consume
-> COPY of the same rows -> ack, no processing) with the same number of consumer processes.

The load is a closed loop of 32 MLLP connections sending the 11-segment ORU^R01 for the whole
window. Throughput is what reached the database inside the window after a warm-up: journal rows
with status processed (ours) or raw journal rows (raw), counted once a second; whatever was
accepted but not yet stored when the window closed is reported as the backlog (it grows when intake
outpaces the workers). Peak RSS of the listener and of each worker is sampled with psutil.
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from . import load, payloads, procs, raw_pipeline, routes, sources

CONNECTIONS = 32


def _count(engine: sa.Engine, sql: str) -> int:
    with engine.connect() as c:
        return int(c.execute(sa.text(sql)).scalar_one())


def _window(engine: sa.Engine, sql: str, seconds: float, warmup: float, busy: threading.Thread) -> dict[str, Any]:
    """Count rows once a second while the load runs; the rate between warm-up and window end."""
    t0 = time.perf_counter()
    series: list[tuple[float, int]] = []
    while busy.is_alive():
        series.append((time.perf_counter() - t0, _count(engine, sql)))
        busy.join(timeout=1.0)
    series.append((time.perf_counter() - t0, _count(engine, sql)))
    start = next((p for p in series if p[0] >= warmup), series[0])
    end = series[-1]
    rate = (end[1] - start[1]) / (end[0] - start[0]) if end[0] > start[0] else 0.0
    return {"msg_s": rate, "window_s": end[0] - start[0], "stored": end[1],
            "series": [[round(t, 2), n] for t, n in series]}


def _consumers(broker_url: str, queue: str, want: int, timeout: float = 60) -> None:
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ch = conn.channel()
            n = ch.queue_declare(queue, passive=True).method.consumer_count
            ch.close()
            if n >= want:
                return
            time.sleep(0.2)
        raise RuntimeError(f"{want} consumers not subscribed to {queue} after {timeout}s")
    finally:
        conn.close()


def ours(broker_url: str, database_url: str, workers: int, seconds: float, warmup: float,
         log: Callable[[str], None]) -> dict[str, Any]:
    ns = procs.namespace()
    with procs.workdir() as folder, procs.pg_schema(database_url, "bench_e2e") as pg:
        routes_file = routes.write(folder, end_to_end=True)
        common = ["--routes", str(routes_file), "--broker-url", broker_url, "--database-url", pg,
                  "--namespace", ns, "--data-dir", str(folder / "var")]
        mllp, http = procs.free_port(), procs.free_port()
        children: list[procs.Child] = []
        try:
            listener = procs.router_child("run", ["--no-workers", *common, "--mllp-port", str(mllp),
                                                  "--http-port", str(http)], folder, "listener")
            children.append(listener)
            procs.wait_port(mllp, listener.proc, timeout=60, log=listener.log)
            for k in range(workers):
                children.append(procs.router_child("worker", common, folder, f"worker{k}"))
            _consumers(broker_url, f"{ns}.bench-lab", workers)
            engine = sa.create_engine(pg, pool_size=1)
            sql = "SELECT count(*) FROM journal_messages WHERE status = 'processed'"
            pids = {c.name: c.pid for c in children}
            sent: dict[str, Any] = {}
            tag = ns[-6:]

            def drive() -> None:
                sent.update(load.closed_loop(mllp, CONNECTIONS, seconds,
                                             lambda i: payloads.make("oru", i, tag).encode(), warmup=0.5))

            with procs.RssSampler(pids) as rss:
                t = threading.Thread(target=drive)
                t.start()
                w = _window(engine, sql, seconds + 0.5, warmup, t)
            dead = [c.name for c in children if not c.alive()]
            with engine.connect() as c:
                statuses = dict(c.execute(sa.text(
                    "SELECT status, count(*) FROM journal_messages GROUP BY status")).all())
                tables = [r[0] for r in c.execute(sa.text(
                    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")).all()]
                # rows a processed message left: the store's (resources, history, identifiers, index, audit)
                # and the journal's (its message row, its events, its dedupe key)
                rows = sum(int(c.execute(sa.text(f'SELECT count(*) FROM "{tb}"')).scalar_one()) for tb in tables
                           if tb.startswith(("store_", "idx_")))
                rows += int(c.execute(sa.text(
                    "SELECT count(*) FROM journal_events e JOIN journal_messages m ON m.id = e.message_id "
                    "WHERE m.status = 'processed'")).scalar_one())
                rows += int(c.execute(sa.text("SELECT count(*) FROM journal_processed_keys")).scalar_one())
            engine.dispose()
        finally:
            for c in reversed(children):
                c.stop()
            procs.delete_queues(broker_url, ns, routes.ROUTE_NAMES)
    peaks = rss.peaks_mb()
    processed = statuses.get("processed", 0)
    rows += processed  # their journal_messages rows
    out = {"workers": workers, "msg_s": w["msg_s"], "window_s": w["window_s"],
           "accepted_msg_s": sent.get("msg_s", 0.0), "accepted": sent.get("messages", 0),
           "ack_p50_ms": sent.get("p50_ms"), "ack_p99_ms": sent.get("p99_ms"),
           "backlog_at_end": max(0, sent.get("messages", 0) - w["stored"]),
           "statuses": statuses, "rows_per_message": rows / processed if processed else None,
           "rss_peak_mb": {"listener": peaks.get("listener", 0.0),
                           "worker_max": max(v for k, v in peaks.items() if k.startswith("worker"))},
           "series": w["series"], "children_died": dead}
    log(f"  ours, {workers} worker(s): {out['msg_s']:7.0f} msg/s stored  (accepted {out['accepted_msg_s']:.0f} msg/s, "
        f"backlog {out['backlog_at_end']}, {out['rows_per_message'] or 0:.1f} rows/msg; RSS listener "
        f"{out['rss_peak_mb']['listener']:.0f} MB, worker {out['rss_peak_mb']['worker_max']:.0f} MB)")
    return out


def raw(broker_url: str, database_url: str, consumers: int, seconds: float, warmup: float,
        log: Callable[[str], None]) -> dict[str, Any]:
    import pika

    from router.maplang.compiler import MappingOptions, compile_mapping

    mapping = compile_mapping(sources.MAPPINGS / "oru-r01.yaml", MappingOptions(unmapped="pass"))
    bundle = mapping.run(payloads.make("oru", 1)).document
    template = [(e["resource"]["resourceType"], orjson.dumps(e["resource"]).decode()) for e in bundle["entry"]]
    ns = procs.namespace()
    queue = f"{ns}.raw"
    with procs.workdir() as folder, procs.pg_schema(database_url, "bench_raw") as pg:
        (folder / "rows.json").write_text(json.dumps(template))
        engine = sa.create_engine(pg, pool_size=1)
        with engine.begin() as c:
            for stmt in raw_pipeline.SCHEMA_SQL.strip().split(";"):
                if stmt.strip():
                    c.execute(sa.text(stmt))
        bc = pika.BlockingConnection(pika.URLParameters(broker_url))
        bc.channel().queue_declare(queue, durable=True)
        children: list[procs.Child] = []
        tag = ns[-6:]
        try:
            import sys

            for k in range(consumers):
                children.append(procs.Child([sys.executable, "-m", "router.bench.raw_pipeline", "consume", broker_url,
                                             queue, raw_pipeline.pg_dsn(pg), str(folder / "rows.json")],
                                            folder, f"raw{k}"))
            _consumers(broker_url, queue, consumers)
            pub = raw_pipeline.Publisher(broker_url, queue, lambda i: payloads.make("oru", i, tag).encode())
            timer = threading.Thread(target=lambda: (time.sleep(seconds + 0.5), pub.stop.set()))
            pub.start()
            timer.start()
            w = _window(engine, "SELECT count(*) FROM raw_journal", seconds + 0.5, warmup, timer)
            pub.stop.set()
            pub.join(30)
        finally:
            for c in children:
                c.stop()
            bc.channel().queue_delete(queue)
            bc.close()
            engine.dispose()
    out = {"consumers": consumers, "msg_s": w["msg_s"], "window_s": w["window_s"],
           "published_confirmed": pub.confirmed, "backlog_at_end": max(0, pub.confirmed - w["stored"]),
           "rows_per_message": len(template) + 1, "series": w["series"]}
    log(f"  raw,  {consumers} consumer(s): {out['msg_s']:7.0f} msg/s stored  (published "
        f"{pub.confirmed / (seconds + 0.5):.0f} msg/s confirmed, backlog {out['backlog_at_end']})")
    return out


def run(broker_url: str, database_url: str, *, workers: list[int], seconds: float, warmup: float,
        log: Callable[[str], None] = print) -> dict[str, Any]:
    out: dict[str, Any] = {"payload": payloads.LABELS["oru"], "connections": CONNECTIONS, "seconds": seconds,
                           "warmup_s": warmup, "ours": {}, "raw": {}, "ratio": {}}
    for n in workers:
        log(f"end to end, {n} worker process(es), {seconds:.0f} s")
        out["ours"][str(n)] = ours(broker_url, database_url, n, seconds, warmup, log)
        out["raw"][str(n)] = raw(broker_url, database_url, n, seconds, warmup, log)
        r = out["raw"][str(n)]["msg_s"]
        out["ratio"][str(n)] = out["ours"][str(n)]["msg_s"] / r if r else None
    return out
