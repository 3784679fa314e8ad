"""The batch write path's building blocks: bulk inserts (binary COPY on PostgreSQL). On SQLite and PostgreSQL."""
from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
import sqlalchemy.exc as sa_exc

from router import journal
from router.db import insert_rows
from router.store.store import Store
from router.store.tables import audit, history, idx_date, idx_quantity, idx_token, resources

SNILS = "urn:oid:1.2.643.100.3"


def test_bulk_insert_keeps_every_type_and_null(engine: sa.Engine) -> None:
    rows = [{"at": 1.5 + k, "client_id": "c", "role": "router", "action": "create", "resource_type": "Patient",
             "resource_id": f"p{k}", "patient_id": None if k else "p0", "outcome": "allowed",
             "detail": "ёлка é" if k else None, "request_id": None} for k in range(3)]
    with engine.begin() as conn:
        insert_rows(conn, audit, rows)
        insert_rows(conn, idx_date, [{"resource_type": "Observation", "id": "o", "param": "date", "start": 0,
                                      "end": 86400.0, "is_min": True, "is_max": False}])
    with engine.connect() as conn:
        got = [dict(r._mapping) for r in conn.execute(sa.select(audit).order_by(audit.c.seq))]
        assert [{k: r[k] for k in rows[0]} for r in got] == rows
        assert len({r["seq"] for r in got}) == 3  # the identity column filled in
        d = conn.execute(sa.select(idx_date)).one()
        assert (d.start, d.end, d.is_min, d.is_max) == (0.0, 86400.0, True, False)


def test_bulk_insert_clash_is_an_integrity_error(engine: sa.Engine) -> None:
    """The worker retries and bisects on SQLAlchemy's IntegrityError: a binary COPY must raise it too."""
    row = {"route": "r", "sender": "s", "control_id": "c1", "message_id": "m1"}
    with engine.begin() as conn:
        insert_rows(conn, journal.processed_keys, [row])
    with pytest.raises(sa_exc.IntegrityError):
        with engine.begin() as conn:
            insert_rows(conn, journal.processed_keys, [{**row, "message_id": "m2"}])
    with engine.connect() as conn:  # the connection is usable again and the first row is intact
        assert conn.execute(sa.select(journal.processed_keys.c.message_id)).scalars().all() == ["m1"]


def test_new_and_updated_resources_in_one_flush(engine: sa.Engine, store: Store) -> None:
    """A flush inserts first versions and upserts later ones; index rows are replaced, not added."""
    obs = {"resourceType": "Observation", "id": "o1", "status": "final",
           "valueQuantity": {"value": 1.0, "code": "mmol/L"}}
    with engine.begin() as conn:
        store.put(conn, obs)
    with engine.begin() as conn:
        w = store.writer(conn)
        w.put({**obs, "valueQuantity": {"value": 2.0, "code": "mmol/L"}})
        w.put({"resourceType": "Observation", "id": "o2", "status": "final"})
        assert sorted(a for a, *_ in w.flush()) == ["create", "update"]
    with engine.connect() as conn:
        assert sorted(conn.execute(sa.select(resources.c.id, resources.c.version_id)).all()) == [("o1", 2), ("o2", 1)]
        assert conn.execute(sa.select(idx_quantity.c.value).where(idx_quantity.c.id == "o1")).scalars().all() == [2.0]
        statuses = conn.execute(sa.select(idx_token.c.id).where(idx_token.c.param == "status")).scalars().all()
        assert sorted(statuses) == ["o1", "o2"]
