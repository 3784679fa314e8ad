"""The record store's write path: versions, tombstones, identifier upserts, transactions, merge.
Every test runs on SQLite and on PostgreSQL."""
from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.errors import ConflictError, GoneError, InputError, NotFoundError, ValidationError
from router.store import identity
from router.store.store import Store
from router.store.tables import history, identifiers, resources

SNILS = "urn:oid:1.2.643.100.3"


def tx(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


def patient(snils: str = "112-233-445 95", family: str = "Иванов", pid: str | None = None) -> dict[str, Any]:
    p: dict[str, Any] = {"resourceType": "Patient", "identifier": [{"system": SNILS, "value": snils}],
                         "name": [{"family": family, "given": ["Иван"]}], "gender": "male", "birthDate": "1980-05-01"}
    if pid:
        p["id"] = pid
    return p


def lab_bundle(value: float = 5.4, status: str = "final", order: str = "ORD-1") -> dict[str, Any]:
    """A lab result the way a mapping emits it: urn:uuid references, identifiers to upsert on."""
    return tx(
        {"fullUrl": "urn:uuid:p1", "resource": patient(), "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": "urn:uuid:r1", "resource": {
            "resourceType": "DiagnosticReport", "status": status,
            "identifier": [{"system": "urn:lab:filler", "value": order}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
            "subject": {"reference": "urn:uuid:p1"}, "result": [{"reference": "urn:uuid:o1"}]},
         "request": {"method": "POST", "url": "DiagnosticReport"}},
        {"fullUrl": "urn:uuid:o1", "resource": {
            "resourceType": "Observation", "status": status,
            "identifier": [{"system": "urn:lab:obs", "value": f"{order}-1"}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
            "subject": {"reference": "urn:uuid:p1"},
            "valueQuantity": {"value": value, "unit": "mmol/L", "system": "http://unitsofmeasure.org", "code": "mmol/L"}},
         "request": {"method": "POST", "url": "Observation"}},
    )


def count(conn: sa.Connection, rtype: str) -> int:
    r = resources.c
    return int(conn.execute(sa.select(sa.func.count()).select_from(resources)
                            .where(r.resource_type == rtype, r.deleted.is_(False))).scalar_one())


def versions(conn: sa.Connection, rtype: str) -> list[int]:
    return [v for (v,) in conn.execute(sa.select(resources.c.version_id).where(resources.c.resource_type == rtype))]


def test_snils_rules() -> None:
    assert identity.normalize_snils("112-233-445 95") == "11223344595"
    assert identity.canonical("http://fhir.ru/core/systems/snils", "112 233 445 95") == (SNILS, "11223344595")
    with pytest.raises(ValidationError, match="check number"):
        identity.normalize_snils("112-233-445 96")
    with pytest.raises(ValidationError, match="11 digits"):
        identity.normalize_snils("112-233")
    assert identity.normalize_snils("001-001-998 00") == "00100199800"  # below the checked range
    assert identity.snils_check("000000000") == "00"


def test_transaction_rewrites_references_and_versions(engine: sa.Engine, store: Store) -> None:
    with engine.begin() as conn:
        resp = store.transaction(conn, lab_bundle())
    assert [e["response"]["status"] for e in resp["entry"]] == ["201 Created"] * 3
    with engine.begin() as conn:
        pid = store.find_by_identifier(conn, "Patient", [(SNILS, "11223344595")]).pop()
        obs_id = resp["entry"][2]["response"]["location"].split("/")[1]
        obs = store.read(conn, "Observation", obs_id).resource()
        rep = store.read(conn, "DiagnosticReport", resp["entry"][1]["response"]["location"].split("/")[1]).resource()
        assert obs["subject"] == {"reference": f"Patient/{pid}"}
        assert rep["result"] == [{"reference": f"Observation/{obs_id}"}]
        assert obs["meta"]["versionId"] == "1" and obs["meta"]["lastUpdated"].endswith("Z")
        stored = store.current(conn, "Observation", obs_id)
        assert stored is not None and stored.patient_id == pid


def test_resend_upserts_and_correction_makes_a_new_version(engine: sa.Engine, store: Store) -> None:
    with engine.begin() as conn:
        store.transaction(conn, lab_bundle())
    with engine.begin() as conn:
        again = store.transaction(conn, lab_bundle())  # the same message resent
    assert [e["response"]["status"] for e in again["entry"]] == ["200 OK"] * 3
    with engine.begin() as conn:
        assert (count(conn, "Patient"), count(conn, "Observation"), count(conn, "DiagnosticReport")) == (1, 1, 1)
        assert versions(conn, "Observation") == [1]  # nothing changed: no new version
    with engine.begin() as conn:
        store.transaction(conn, lab_bundle(value=6.1, status="corrected"))
    with engine.begin() as conn:
        assert count(conn, "Observation") == 1 and versions(conn, "Observation") == [2]
        [oid] = [r for (r,) in conn.execute(sa.select(resources.c.id).where(resources.c.resource_type == "Observation"))]
        hist = store.history(conn, "Observation", oid)
        assert [h.version_id for h in hist] == [2, 1]
        assert hist[0].resource()["valueQuantity"]["value"] == 6.1 and hist[1].resource()["valueQuantity"]["value"] == 5.4
        assert store.vread(conn, "Observation", oid, 1).resource()["status"] == "final"


def test_snils_written_in_another_format_is_the_same_patient(engine: sa.Engine, store: Store) -> None:
    with engine.begin() as conn:
        store.transaction(conn, tx({"resource": patient("112-233-445 95")}))
        store.transaction(conn, tx({"resource": {**patient("11223344595", family="Иванов-Петров"),
                                                 "identifier": [{"system": "http://fhir.ru/core/systems/snils",
                                                                 "value": "112 233 445 95"}]}}))
        assert count(conn, "Patient") == 1 and versions(conn, "Patient") == [2]
        [(content,)] = conn.execute(sa.select(resources.c.content))
        assert b'"11223344595"' in content and SNILS.encode() in content


def test_bad_snils_is_refused_and_nothing_is_written(engine: sa.Engine, store: Store) -> None:
    with pytest.raises(ValidationError, match="check number"):
        with engine.begin() as conn:
            store.transaction(conn, tx({"resource": patient("112-233-445 95")},
                                       {"resource": patient("222-333-444 00", pid="p2")}))
    with engine.begin() as conn:
        assert count(conn, "Patient") == 0  # all-or-nothing
        assert conn.execute(sa.select(sa.func.count()).select_from(history)).scalar_one() == 0


def test_a_failing_entry_rolls_back_the_whole_bundle(engine: sa.Engine, store: Store) -> None:
    with pytest.raises(InputError):
        with engine.begin() as conn:
            store.transaction(conn, tx({"resource": patient()}, {"resource": {"resourceType": "Observation",
                                                                             "id": "bad id with spaces"}}))
    with engine.begin() as conn:
        assert count(conn, "Patient") == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(identifiers)).scalar_one() == 0


def test_identifiers_matching_two_stored_resources_conflict(engine: sa.Engine, store: Store) -> None:
    with engine.begin() as conn:
        store.transaction(conn, tx({"resource": patient("112-233-445 95", pid="a")}))
        store.transaction(conn, tx({"resource": {**patient(pid="b"),
                                                 "identifier": [{"system": "urn:mrn", "value": "1",
                                                                 "type": {"coding": [{"code": "MR"}]}}]}}))
    both = {**patient(), "identifier": [{"system": SNILS, "value": "11223344595"},
                                        {"system": "urn:mrn", "value": "1", "type": {"coding": [{"code": "MR"}]}}]}
    with pytest.raises(ConflictError, match="several"):
        with engine.begin() as conn:
            store.transaction(conn, tx({"resource": both}))


def test_conditional_create_and_update(engine: sa.Engine, store: Store) -> None:
    cov = {"resourceType": "Coverage", "status": "active", "identifier": [{"system": "urn:oms", "value": "P1"}],
           "beneficiary": {"reference": "Patient/x"}, "payor": [{"reference": "Organization/smo1"}]}
    with engine.begin() as conn:
        r1 = store.transaction(conn, tx({"resource": cov, "request": {"method": "POST", "url": "Coverage",
                                                                     "ifNoneExist": "identifier=urn:oms|P1"}}))
        r2 = store.transaction(conn, tx({"resource": {**cov, "status": "cancelled"},
                                         "request": {"method": "PUT", "url": "Coverage?identifier=urn:oms|P1"}}))
        assert r1["entry"][0]["response"]["location"].split("/")[1] == r2["entry"][0]["response"]["location"].split("/")[1]
        assert count(conn, "Coverage") == 1 and versions(conn, "Coverage") == [2]
        stored = store.current(conn, "Coverage", r2["entry"][0]["response"]["location"].split("/")[1])
        assert stored is not None and stored.org_id == "smo1" and stored.patient_id == "x"


def test_delete_is_a_tombstone_version(engine: sa.Engine, store: Store) -> None:
    with engine.begin() as conn:
        store.transaction(conn, tx({"resource": patient(pid="p1")}))
        resp = store.transaction(conn, tx({"request": {"method": "DELETE", "url": "Patient/p1"}}))
        assert resp["entry"][0]["response"]["status"] == "204 No Content"
        with pytest.raises(GoneError):
            store.read(conn, "Patient", "p1")
        assert [h.deleted for h in store.history(conn, "Patient", "p1")] == [True, False]
        assert store.find_by_identifier(conn, "Patient", [(SNILS, "11223344595")]) == set()
        with pytest.raises(NotFoundError):
            store.read(conn, "Patient", "nope")
        # re-creating after a delete continues the version sequence
        store.transaction(conn, tx({"resource": patient(pid="p1")}))
        assert store.read(conn, "Patient", "p1").version_id == 3


def test_merge_moves_records_and_identifiers(engine: sa.Engine, store: Store) -> None:
    with engine.begin() as conn:
        store.transaction(conn, tx({"resource": patient("112-233-445 95", pid="old")},
                                   {"resource": {"resourceType": "Observation", "id": "o1", "status": "final",
                                                 "code": {"text": "x"}, "subject": {"reference": "Patient/old"}}}))
        store.transaction(conn, tx({"resource": {**patient(pid="new"), "identifier": [
            {"system": "urn:mrn", "value": "42", "type": {"coding": [{"code": "MR"}]}}]}}))
        resp = store.transaction(conn, tx({"resource": {"resourceType": "Parameters", "parameter": [
            {"name": "source-patient", "valueReference": {"reference": "Patient/old"}},
            {"name": "target-patient", "valueReference": {"reference": "Patient/new"}}]},
            "request": {"method": "POST", "url": "Patient/$merge"}}))
        assert "1 resources moved" in resp["entry"][0]["response"]["outcome"]["issue"][0]["diagnostics"]
        obs = store.read(conn, "Observation", "o1")
        assert obs.resource()["subject"] == {"reference": "Patient/new"} and obs.patient_id == "new"
        old = store.read(conn, "Patient", "old").resource()
        assert old["active"] is False and old["link"][0]["type"] == "replaced-by"
        assert store.find_by_identifier(conn, "Patient", [(SNILS, "11223344595")]) == {"new"}
        # a later message with the old patient's СНИЛС lands on the surviving patient
        store.transaction(conn, tx({"resource": patient("112-233-445 95", family="Новая")}))
        assert store.read(conn, "Patient", "new").resource()["name"][0]["family"] == "Новая"


def test_many_bundles_in_one_commit(engine: sa.Engine, store: Store) -> None:
    bundles = [(lab_bundle(order=f"O{i}"), f"m{i}") for i in range(20)]
    with engine.begin() as conn:
        store.write_bundles(conn, bundles)
    with engine.begin() as conn:
        assert (count(conn, "Patient"), count(conn, "Observation"), count(conn, "DiagnosticReport")) == (1, 20, 20)
        assert versions(conn, "Patient") == [1]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["A", "B", "C"]), st.sampled_from([5.4, 6.1, 7.0])), min_size=1, max_size=8))
def test_resends_in_any_order_leave_one_record_per_identifier(engine: sa.Engine, store: Store,
                                                              sends: list[tuple[str, float]]) -> None:
    """Property: any sequence of (re)sends of orders A/B/C with changing values leaves exactly one
    current Observation per order, one Patient, and a version count equal to the number of
    changes of value seen for that order."""
    with engine.begin() as conn:
        for t in (history, identifiers, resources):
            conn.execute(t.delete())
        for order, value in sends:
            store.transaction(conn, lab_bundle(value=value, order=order))
    expected: dict[str, int] = {}
    last: dict[str, float] = {}
    for order, value in sends:
        if order not in last or last[order] != value:
            expected[order] = expected.get(order, 0) + 1
        last[order] = value
    with engine.begin() as conn:
        assert count(conn, "Patient") == 1 and versions(conn, "Patient") == [1]
        got = {}
        for order in expected:
            ids = store.find_by_identifier(conn, "Observation", [("urn:lab:obs", f"{order}-1")])
            assert len(ids) == 1
            cur = store.read(conn, "Observation", ids.pop())
            got[order] = cur.version_id
            assert cur.resource()["valueQuantity"]["value"] == last[order]
        assert got == expected
        assert count(conn, "Observation") == len(expected)
