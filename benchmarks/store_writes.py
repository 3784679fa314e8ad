"""Transaction bundles written per second into the record store, one bundle per commit and
batched (many bundles per commit, as the router's workers write), on a fresh PostgreSQL schema
(or SQLite with --database-url sqlite:///...).

    .venv/bin/python benchmarks/store_writes.py [--bundles 2000] [--batch 50] [--database-url URL]

Each bundle is a lab result as a mapping emits it: Patient (upserted by СНИЛС, one of 500),
DiagnosticReport and two Observations with identifiers, urn:uuid references.
"""
from __future__ import annotations

import argparse
import time
import uuid
from typing import Any

import sqlalchemy as sa

from router.db import create_schema, make_engine
from router.store.identity import snils_check
from router.store.store import Store

PG = "postgresql+psycopg://root@127.0.0.1:5432/test"


def snils(n: int) -> str:
    d9 = f"{100000000 + n:09d}"
    return d9 + snils_check(d9)


def bundle(i: int) -> dict[str, Any]:
    p, r, o1, o2 = (f"urn:uuid:{uuid.uuid4()}" for _ in range(4))
    obs = [{"fullUrl": u, "resource": {
        "resourceType": "Observation", "status": "final", "identifier": [{"system": "urn:lab:obs", "value": f"{i}-{k}"}],
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]}, "subject": {"reference": p},
        "effectiveDateTime": "2024-05-01T10:00:00+03:00",
        "valueQuantity": {"value": 5.0 + k, "unit": "mmol/L", "system": "http://unitsofmeasure.org", "code": "mmol/L"}},
        "request": {"method": "POST", "url": "Observation"}} for k, (u, code) in enumerate([(o1, "2345-7"), (o2, "2093-3")])]
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": p, "resource": {"resourceType": "Patient", "identifier": [
            {"system": "urn:oid:1.2.643.100.3", "value": snils(i % 500)}], "name": [{"family": f"F{i % 500}"}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": r, "resource": {"resourceType": "DiagnosticReport", "status": "final",
                                    "identifier": [{"system": "urn:lab:filler", "value": f"R{i}"}],
                                    "code": {"text": "panel"}, "subject": {"reference": p},
                                    "result": [{"reference": o1}, {"reference": o2}]},
         "request": {"method": "POST", "url": "DiagnosticReport"}},
        *obs]}


def run(url: str, n: int, batch: int) -> dict[str, float]:
    schema = None
    if url.startswith("postgresql"):
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        with sa.create_engine(url).begin() as c:
            c.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        url = f"{url}?options=-csearch_path%3D{schema}"
    engine = make_engine(url)
    create_schema(engine)
    store = Store()
    out = {}
    try:
        bundles = [bundle(i) for i in range(2 * n)]
        t = time.perf_counter()
        for b in bundles[:n]:
            with engine.begin() as conn:
                store.transaction(conn, b)
        out["one_per_commit"] = n / (time.perf_counter() - t)
        t = time.perf_counter()
        rest = bundles[n:]
        for k in range(0, n, batch):
            with engine.begin() as conn:
                store.write_bundles(conn, [(b, None) for b in rest[k:k + batch]])
        out["batched"] = n / (time.perf_counter() - t)
    finally:
        engine.dispose()
        if schema:
            with sa.create_engine(PG).begin() as c:
                c.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundles", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--database-url", default=PG)
    a = ap.parse_args()
    r = run(a.database_url, a.bundles, a.batch)
    print(f"{a.database_url.split(':')[0]}: {a.bundles} bundles (4 resources each): "
          f"one per commit {r['one_per_commit']:.0f}/s, {a.batch} per commit {r['batched']:.0f}/s")


if __name__ == "__main__":
    main()
