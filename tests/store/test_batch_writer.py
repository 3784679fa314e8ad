"""The batch write path's building blocks: bulk inserts (binary COPY on PostgreSQL), the
per-bundle undo of the batch overlay, copy-on-write reference rewriting. On SQLite and PostgreSQL."""
from __future__ import annotations

import copy
from typing import Any

import pytest
import sqlalchemy as sa
import sqlalchemy.exc as sa_exc

from router import journal
from router.db import insert_rows
from router.store.store import Store, rewrite_references
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


def test_rewrite_references_copies_only_what_changes() -> None:
    shared = {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]}
    res: dict[str, Any] = {"resourceType": "Observation", "code": shared,
                           "subject": {"reference": "urn:uuid:p1", "display": "x"},
                           "hasMember": [{"reference": "Observation/keep"}, {"reference": "urn:uuid:o2"}],
                           "note": [{"text": "urn:uuid:p1"}], "reference": "urn:uuid:p1"}
    before = copy.deepcopy(res)
    out = rewrite_references(res, {"urn:uuid:p1": "Patient/a", "urn:uuid:o2": "Observation/b"})
    assert res == before  # the input is left as it was
    assert out["subject"] == {"reference": "Patient/a", "display": "x"}
    assert out["hasMember"] == [{"reference": "Observation/keep"}, {"reference": "Observation/b"}]
    assert out["note"] == [{"text": "urn:uuid:p1"}] and out["reference"] == "Patient/a"  # only Reference.reference
    assert out["code"] is shared and out["note"] is res["note"]  # unchanged parts are shared
    assert out["hasMember"][0] is res["hasMember"][0]
    assert rewrite_references(res, {"urn:uuid:zz": "Patient/z"}) is res


def _patient(family: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": "p1", "identifier": [{"system": SNILS, "value": "11223344595"}],
            "name": [{"family": family}]}


def test_an_aborted_bundle_leaves_the_batch_as_before_it(engine: sa.Engine, store: Store) -> None:
    with engine.begin() as conn:
        w = store.writer(conn)
        w.begin_bundle()
        w.put(_patient("Иванов"), "m1")
        w.commit_bundle()
        w.begin_bundle()  # changes the patient (and frees its СНИЛС), adds an Observation, then fails
        w.put({**_patient("Петров"), "identifier": []}, "m2")
        w.put({"resourceType": "Observation", "id": "o1", "status": "final",
               "identifier": [{"system": "urn:lab:obs", "value": "1"}], "subject": {"reference": "Patient/p1"}}, "m2")
        w.abort_bundle()
        assert w.state(("Observation", "o1")) is None
        assert w.owners("Patient", [(SNILS, "11223344595")]) == {"p1"}
        w.begin_bundle()
        _, changed, _ = w.put(_patient("Иванов"), "m3")  # the same content as the first bundle wrote
        w.commit_bundle()
        assert not changed
        written = w.flush()
    assert written == [("create", "Patient", "p1", "p1", "m1")]
    with engine.connect() as conn:
        assert conn.execute(sa.select(resources.c.id, resources.c.version_id, resources.c.message_id)).all() == [
            ("p1", 1, "m1")]
        assert conn.execute(sa.select(sa.func.count()).select_from(history)).scalar_one() == 1
        assert store.find_by_identifier(conn, "Observation", [("urn:lab:obs", "1")]) == set()
        assert store.find_by_identifier(conn, "Patient", [(SNILS, "11223344595")]) == {"p1"}


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
