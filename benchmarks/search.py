"""Search latency on a loaded store (PostgreSQL, a fresh schema), and the indexer's speed.

    .venv/bin/python benchmarks/search.py [--observations 100000] [--patients 2000] [--queries 200]
                                          [--database-url URL] [--explain] [--keep]

Loads N Observations across the patients (20 LOINC codes, effective dates over two years, a
value, an identifier), one DiagnosticReport per 5 Observations (its results), and the Patients,
straight into the tables in bulk: current rows, history rows and the index rows index_entries
produces (what Store.put would write, without its per-bundle bookkeeping). Then runs each query
of the mix --queries times with random patients/codes/dates through router.store.search.search
(a connection per query, the whole call timed: SQL, JSON decoding, the Bundle) and prints p50/p95.
--explain prints EXPLAIN ANALYZE of the page query of one instance of each; --keep keeps the schema.
"""
from __future__ import annotations

import argparse
import logging
import random
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import sqlalchemy as sa

from router.db import create_schema, insert_rows, make_engine
from router.store.indexer import index_entries
from router.store.principal import ROUTER
from router.store.search import search
from router.store.store import compartment, instant
from router.store.tables import INDEX_TABLES, history, resources

PG = "postgresql+psycopg://root@127.0.0.1:5432/test"
CODES = ["2345-7", "2093-3", "2571-8", "2085-9", "13457-7", "718-7", "4548-4", "6690-2", "789-8", "777-3",
         "2160-0", "3094-0", "2823-3", "2951-2", "1742-6", "1920-8", "6768-6", "1975-2", "2885-2", "3016-3"]
START = 1704067200.0  # 2024-01-01T00:00:00Z
SPAN = 2 * 365 * 86400.0
BASE = "https://store.example/fhir"


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def observation(n: int, patient: str, rng: random.Random) -> dict[str, Any]:
    code = CODES[n % len(CODES)]
    return {
        "resourceType": "Observation", "id": f"o{n}", "status": "final",
        "identifier": [{"system": "urn:lab:obs", "value": f"OBS-{n}"}],
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "laboratory"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": iso(START + rng.random() * SPAN),
        "performer": [{"reference": "Organization/lab1"}],
        "valueQuantity": {"value": round(rng.uniform(1, 10), 1), "unit": "mmol/L",
                          "system": "http://unitsofmeasure.org", "code": "mmol/L"},
        "basedOn": [{"reference": f"ServiceRequest/sr{n // 5}"}],
    }


def documents(n_obs: int, patients: int, seed: int = 1) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    for p in range(patients):
        yield {"resourceType": "Patient", "id": f"p{p}", "gender": rng.choice(["male", "female"]),
               "birthDate": f"{rng.randrange(1940, 2010)}-0{rng.randrange(1, 10)}-1{rng.randrange(0, 10)}",
               "name": [{"family": f"Family{p}", "given": [f"Given{p}"]}],
               "managingOrganization": {"reference": "Organization/lab1"}}
    for g in range(0, n_obs, 5):  # a report over five results of one patient
        patient = f"p{rng.randrange(patients)}"
        batch = [observation(n, patient, rng) for n in range(g, min(g + 5, n_obs))]
        yield from batch
        yield {"resourceType": "DiagnosticReport", "id": f"r{g // 5}", "status": "final",
               "identifier": [{"system": "urn:lab:filler", "value": f"R-{g // 5}"}],
               "code": {"coding": [{"system": "http://loinc.org", "code": "24323-8"}]},
               "subject": {"reference": f"Patient/{patient}"},
               "effectiveDateTime": max(b["effectiveDateTime"] for b in batch),
               "result": [{"reference": f"Observation/{b['id']}"} for b in batch]}


def load(engine: sa.Engine, n_obs: int, patients: int, chunk: int = 5000) -> tuple[float, int]:
    """Bulk-load; returns (seconds, documents)."""
    t0, count, now = time.perf_counter(), 0, time.time()
    buf: list[dict[str, Any]] = []

    def flush() -> None:
        cur, hist = [], []
        idx: dict[str, dict[tuple[str, ...], list[dict[str, Any]]]] = {}
        for doc in buf:
            doc["meta"] = {"versionId": "1", "lastUpdated": instant(now)}
            content = orjson.dumps(doc)
            patient, org = compartment(doc)
            cur.append({"resource_type": doc["resourceType"], "id": doc["id"], "version_id": 1, "last_updated": now,
                        "deleted": False, "patient_id": patient, "org_id": org, "message_id": None,
                        "content": content})
            hist.append({"resource_type": doc["resourceType"], "id": doc["id"], "version_id": 1, "last_updated": now,
                         "deleted": False, "content": content})
            for kind, row in index_entries(doc):
                full = {"resource_type": doc["resourceType"], "id": doc["id"], **row}
                idx.setdefault(kind, {}).setdefault(tuple(full), []).append(full)
        with engine.begin() as conn:
            insert_rows(conn, resources, cur)
            insert_rows(conn, history, hist)
            for kind, groups in idx.items():
                for rows in groups.values():
                    insert_rows(conn, INDEX_TABLES[kind], rows)
        buf.clear()

    for doc in documents(n_obs, patients):
        buf.append(doc)
        count += 1
        if len(buf) >= chunk:
            flush()
    if buf:
        flush()
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
    return time.perf_counter() - t0, count


def indexer_speed(seconds: float = 1.0) -> float:
    doc = observation(1, "p1", random.Random(0))
    doc["specimen"] = {"reference": "Specimen/s1"}
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(1000):
            index_entries(doc)
        n += 1000
    return n / (time.perf_counter() - t0)


QUERIES: dict[str, tuple[str, Callable[[random.Random, int], list[tuple[str, str]]]]] = {
    "patient=X": ("Observation", lambda r, p: [("patient", f"p{r.randrange(p)}")]),
    "patient=X&code=Y": ("Observation", lambda r, p: [("patient", f"p{r.randrange(p)}"),
                                                      ("code", f"http://loinc.org|{r.choice(CODES)}")]),
    "code=Y&date=ge..&_sort=-date&_count=20": ("Observation", lambda r, p: [
        ("code", f"http://loinc.org|{r.choice(CODES)}"), ("date", "ge" + iso(START + r.uniform(0.5, 0.95) * SPAN)[:10]),
        ("_sort", "-date"), ("_count", "20")]),
    "DiagnosticReport?patient=X&_include=:result": ("DiagnosticReport", lambda r, p: [
        ("patient", f"p{r.randrange(p)}"), ("_include", "DiagnosticReport:result")]),
}


def measure(engine: sa.Engine, patients: int, queries: int, seed: int = 7) -> dict[str, dict[str, float]]:
    rng = random.Random(seed)
    out = {}
    for name, (rtype, make) in QUERIES.items():
        times, entries = [], 0
        for k in range(queries + 10):
            params = make(rng, patients)
            t0 = time.perf_counter()
            with engine.begin() as conn:
                bundle = search(conn, rtype, params, principal=ROUTER, base_url=BASE)
            dt = time.perf_counter() - t0
            if k >= 10:  # warm-up
                times.append(dt * 1000)
                entries += len(bundle["entry"])
        times.sort()
        out[name] = {"p50": statistics.median(times), "p95": times[int(len(times) * 0.95) - 1],
                     "max": times[-1], "entries": entries / len(times)}
    return out


def explain(engine: sa.Engine, patients: int) -> None:
    """EXPLAIN ANALYZE of every statement one search of each kind sends."""
    rng = random.Random(3)
    for name, (rtype, make) in QUERIES.items():
        params = make(rng, patients)
        statements: list[str] = []

        def grab(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
            if statement.lstrip().upper().startswith("SELECT"):
                statements.append(cursor.mogrify(statement, parameters) if hasattr(cursor, "mogrify")
                                  else statement % {k: repr(v) for k, v in (parameters or {}).items()})

        sa.event.listen(engine, "before_cursor_execute", grab)
        try:
            with engine.begin() as conn:
                search(conn, rtype, params, principal=ROUTER, base_url=BASE)
        finally:
            sa.event.remove(engine, "before_cursor_execute", grab)
        print(f"\n=== {name}: {params}")
        with engine.begin() as conn:
            for sql in statements:
                text = sql if isinstance(sql, str) else sql.decode()
                print("---", " ".join(text.split())[:300])
                for (line,) in conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + text.replace("%", "%%")):
                    print("   ", line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--observations", type=int, default=100_000)
    ap.add_argument("--patients", type=int, default=2000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--database-url", default=PG)
    ap.add_argument("--explain", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the schema (its name is printed)")
    a = ap.parse_args()
    logging.getLogger("sqlalchemy").setLevel(logging.WARNING)

    print(f"indexer: {indexer_speed():,.0f} Observations/s (index_entries, one core)")
    schema = f"bench_search_{uuid.uuid4().hex[:8]}"
    with sa.create_engine(a.database_url).begin() as c:
        c.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in a.database_url else "?"
    engine = make_engine(f"{a.database_url}{sep}options=-csearch_path%3D{schema}")
    try:
        create_schema(engine)
        seconds, docs = load(engine, a.observations, a.patients)
        print(f"loaded {docs:,} resources ({a.observations:,} Observations, {a.patients:,} Patients, "
              f"{a.observations // 5:,} DiagnosticReports) in {seconds:.1f} s into schema {schema}")
        results = measure(engine, a.patients, a.queries)
        print(f"\n{'query (' + str(a.queries) + ' each)':48} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'entries':>8}")
        for name, r in results.items():
            print(f"{name:48} {r['p50']:8.2f} {r['p95']:8.2f} {r['max']:8.2f} {r['entries']:8.1f}")
        if a.explain:
            explain(engine, a.patients)
    finally:
        engine.dispose()
        if not a.keep:
            with sa.create_engine(a.database_url).begin() as c:
                c.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))


if __name__ == "__main__":
    main()
