"""The record store on PostgreSQL (fresh schemas), reusing benchmarks/search.py and
benchmarks/store_writes.py:

* search    FHIR search latency p50/p95/max per query of search.py's mix (patient, patient+code,
            code+date sorted, DiagnosticReport with _include) at N Observations bulk-loaded
            (one Patient per 50 Observations, one DiagnosticReport per 5)
* writes    transaction bundles (Patient + DiagnosticReport + 2 Observations) per second, one
            bundle per commit and 50 per commit (as workers write)
"""
from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from . import sources


def search(database_url: str, observations: int, queries: int, log: Callable[[str], None]) -> dict[str, Any]:
    s = sources.bench_module("search")
    patients = max(100, observations // 50)
    schema = f"bench_search_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(database_url)
    with admin.begin() as c:
        c.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in database_url else "?"
    from router.db import create_schema, make_engine

    engine = make_engine(f"{database_url}{sep}options=-csearch_path%3D{schema}")
    try:
        create_schema(engine)
        seconds, docs = s.load(engine, observations, patients)
        log(f"  loaded {docs:,} resources ({observations:,} Observations) in {seconds:.1f} s")
        res = s.measure(engine, patients, queries)
        for name, r in res.items():
            log(f"    {name:46} p50 {r['p50']:7.2f} ms  p95 {r['p95']:7.2f} ms  max {r['max']:7.1f} ms")
    finally:
        engine.dispose()
        admin.dispose()
        _wait_for(database_url)  # the schema goes even when PostgreSQL was restarted under the run
        with admin.begin() as c:
            c.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
    return {"observations": observations, "patients": patients, "resources": docs, "load_s": seconds,
            "queries_each": queries, "queries": {k: {"p50_ms": v["p50"], "p95_ms": v["p95"], "max_ms": v["max"],
                                                     "entries": v["entries"]} for k, v in res.items()},
            "p95_ms_worst": max(v["p95"] for v in res.values())}


def writes(database_url: str, bundles: int, batch: int = 50) -> dict[str, Any]:
    r = sources.bench_module("store_writes").run(database_url, bundles, batch)
    return {"bundles": bundles, "resources_per_bundle": 4, "batch": batch,
            "one_per_commit_s": r["one_per_commit"], "batched_s": r["batched"]}


def _retrying(fn: Callable[[], dict[str, Any]], database_url: str, log: Callable[[str], None],
              attempts: int = 3) -> dict[str, Any]:
    """fn again from the start (a fresh schema) when PostgreSQL drops the connection (restarted by
    other work on a shared machine), after it is back; the restarts are counted in the result."""
    for k in range(1, attempts + 1):
        try:
            r = fn()
            r["restarts"] = k - 1
            return r
        except sa.exc.OperationalError as exc:
            if k == attempts:
                raise
            log(f"  PostgreSQL connection lost ({str(exc.orig).strip().splitlines()[0][:100]}); "
                "starting this size again once it is back")
            _wait_for(database_url)
    raise AssertionError("unreachable")


def _wait_for(database_url: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            e = sa.create_engine(database_url)
            with e.connect() as c:
                c.execute(sa.text("SELECT 1"))
            e.dispose()
            return
        except sa.exc.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)


def run(database_url: str, *, sizes: list[int], queries: int, bundles: int,
        log: Callable[[str], None] = print) -> dict[str, Any]:
    out: dict[str, Any] = {"search": {}, "writes": None}
    for n in sizes:
        log(f"store search at {n:,} Observations ({queries} queries of each kind)")
        out["search"][str(n)] = _retrying(lambda n=n: search(database_url, n, queries, log), database_url, log)
    log(f"store writes: {bundles} transaction bundles")
    out["writes"] = writes(database_url, bundles)
    w = out["writes"]
    log(f"  one per commit {w['one_per_commit_s']:.0f} bundles/s, {w['batch']} per commit {w['batched_s']:.0f} bundles/s")
    return out
