"""MLLP ingest with durable ACK, per target, with the 11-segment ORU^R01:

* ours (embedded)    `router run --no-workers`: the embedded SQLite queue and a SQLite journal; AA
                     only once the message is durably enqueued
* ours (RabbitMQ)    `router run --no-workers` on RabbitMQ (publisher confirms), journal on PostgreSQL
* python-hl7         hl7.mllp.start_hl7_server answering AA, storing nothing (peers.py)
* node @medplum/hl7  Hl7Connection answering AA, storing nothing (benchmarks/node-peer/server.js)

After a one-second warm-up (not recorded), an open loop at a fixed offered rate (500 msg/s over 8
connections, one message in flight per connection) for the ACK latency at that rate, on a server with no backlog yet; then a closed loop with 1, 8 and 32 connections (messages per
second, ACK latency p50/p99/max). Ours runs without workers: what it accepts stays queued. The
load generator (load.py) runs in this process; every server is a child process.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import load, payloads, peers, procs, routes


def _ours(transport: str, folder: Path, broker_url: str, pg_url: str | None) -> tuple[procs.Child, int]:
    routes_file = routes.write(folder)
    mllp, http = procs.free_port(), procs.free_port()
    args = ["--no-workers", "--routes", str(routes_file), "--data-dir", str(folder / "var"),
            "--mllp-port", str(mllp), "--http-port", str(http)]
    if transport == "rabbitmq":
        args += ["--broker-url", broker_url, "--database-url", str(pg_url), "--namespace", folder.name]
    child = procs.router_child("run", args, folder, f"listener-{transport}")
    procs.wait_port(mllp, child.proc, timeout=60, log=child.log)
    return child, mllp


def _measure(port: int, connections: list[int], seconds: float, open_rate: float, open_seconds: float,
             tag: str, log: Callable[[str], None]) -> dict[str, Any]:
    def make(i: int) -> bytes:
        return payloads.make("oru", i, tag).encode()

    out: dict[str, Any] = {"closed": {}, "open": None}
    # warm-up, not recorded: 8 connections, closed loop
    w = load.closed_loop(port, 8, min(1.0, seconds), lambda i: payloads.make("oru", i, tag + "w").encode(), warmup=0)
    out["warmup"] = {k: w[k] for k in ("messages", "errors", "not_accepted")}
    if open_seconds > 0:  # then the open loop, before the closed loops leave a backlog in the queue
        r = load.open_loop(port, open_rate, 8, open_seconds, make)
        out["open"] = r
        log(f"  open loop {open_rate:.0f} msg/s offered: {r['msg_s']:.0f} msg/s  p50 {r['p50_ms']:.2f} ms  "
            f"p99 {r['p99_ms']:.2f} ms  max {r['max_ms']:.1f} ms  (not accepted {r['not_accepted']}, "
            f"no ACK within 60 s {r['errors']})")
    for n in connections:
        tag_n = f"{tag}c{n}-"
        r = load.closed_loop(port, n, seconds, lambda i, t=tag_n: payloads.make("oru", i, t).encode(),
                             warmup=min(0.5, seconds / 4))
        out["closed"][str(n)] = r
        log(f"  {n:>2} connections: {r['msg_s']:8.0f} msg/s  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms"
            f"  max {r['max_ms']:.1f} ms  (not accepted {r['not_accepted']}, errors {r['errors']})")
    return out


def run(broker_url: str, database_url: str, *, connections: list[int], seconds: float, open_rate: float = 500,
        open_seconds: float = 10, log: Callable[[str], None] = print) -> dict[str, Any]:
    result: dict[str, Any] = {"payload": payloads.LABELS["oru"], "connections": connections, "seconds_each": seconds,
                              "open_loop": {"offered_msg_s": open_rate, "connections": 8, "seconds": open_seconds},
                              "targets": {}, "skipped": {}}
    targets: list[tuple[str, str]] = [("ours (embedded)", "embedded"), ("ours (RabbitMQ)", "rabbitmq"),
                                      ("python-hl7", "python-hl7"), ("node @medplum/hl7", "node")]
    for name, kind in targets:
        log(f"MLLP ingest: {name}")
        with procs.workdir() as folder:
            child = None
            try:
                if kind in ("embedded", "rabbitmq"):
                    if kind == "rabbitmq":
                        with procs.pg_schema(database_url, "bench_ingest") as pg:
                            child, port = _ours(kind, folder, broker_url, pg)
                            try:
                                result["targets"][name] = _measure(port, connections, seconds, open_rate,
                                                                   open_seconds, folder.name[-8:], log)
                            finally:
                                child.stop()
                                procs.delete_queues(broker_url, folder.name, routes.ROUTE_NAMES)
                        continue
                    child, port = _ours(kind, folder, broker_url, None)
                else:
                    cmd, why = peers.python_hl7() if kind == "python-hl7" else peers.node_medplum(log)
                    if cmd is None:
                        log(f"  skipped: {why}")
                        result["skipped"][name] = why
                        continue
                    child, port = peers.start(cmd, folder, kind)
                result["targets"][name] = _measure(port, connections, seconds, open_rate, open_seconds,
                                                   folder.name[-8:], log)
            finally:
                if child is not None:
                    child.stop()
    return result
