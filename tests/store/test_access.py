"""The access policy as a matrix: for each role, which resources of a small world it may read
(single reads with check_read and searches filtered by read_condition - always the same set), which
types it may not read at all, and which writes it may make. Every test runs on SQLite and on
PostgreSQL."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from router.errors import ForbiddenError
from router.store import access
from router.store.principal import ROUTER, Principal
from router.store.store import Store, Stored
from router.store.tables import resources

SNILS = "urn:oid:1.2.643.100.3"


def ref(rtype: str, rid: str) -> dict[str, str]:
    return {"reference": f"{rtype}/{rid}"}


def org(rid: str) -> dict[str, Any]:
    return {"resourceType": "Organization", "id": rid, "name": rid}


def patient(rid: str, snils: str, managing: str | None) -> dict[str, Any]:
    p: dict[str, Any] = {"resourceType": "Patient", "id": rid, "identifier": [{"system": SNILS, "value": snils}],
                         "name": [{"family": "Test"}]}
    if managing:
        p["managingOrganization"] = ref("Organization", managing)
    return p


def coverage(rid: str, pid: str, payor: str) -> dict[str, Any]:
    return {"resourceType": "Coverage", "id": rid, "status": "active", "beneficiary": ref("Patient", pid),
            "payor": [ref("Organization", payor)]}


def obs(rid: str, pid: str, performer: str | None) -> dict[str, Any]:
    o: dict[str, Any] = {"resourceType": "Observation", "id": rid, "status": "final",
                         "code": {"text": "glucose"}, "subject": ref("Patient", pid)}
    if performer:
        o["performer"] = [ref("Organization", performer)]
    return o


def med_request(rid: str, pid: str, requester: str, status: str = "active") -> dict[str, Any]:
    return {"resourceType": "MedicationRequest", "id": rid, "status": status, "intent": "order",
            "medicationReference": ref("Medication", "med1"), "subject": ref("Patient", pid),
            "requester": ref("Organization", requester)}


def dispense(rid: str, pid: str, pharmacy: str, mr: str) -> dict[str, Any]:
    return {"resourceType": "MedicationDispense", "id": rid, "status": "completed",
            "medicationReference": ref("Medication", "med1"), "subject": ref("Patient", pid),
            "performer": [{"actor": ref("Organization", pharmacy)}],
            "authorizingPrescription": [ref("MedicationRequest", mr)]}


# p1: managed by clinic1, insured by ins1, lab1 results, prescription filled by pharm1
# p2: managed by clinic2, insured by ins2, lab2 results, a prescription
# p3: no managing organisation, lab1 result, ins1 coverage deleted (so ins1 no longer sees p3)
# p4: managed by clinic1, nothing else (uninsured, no prescription)
WORLD: list[dict[str, Any]] = [
    *(org(o) for o in ("ins1", "ins2", "lab1", "lab2", "clinic1", "clinic2", "pharm1", "pharm2")),
    {"resourceType": "Practitioner", "id": "doc1", "name": [{"family": "Doctor"}]},
    {"resourceType": "Medication", "id": "med1", "code": {"text": "metformin"}},
    patient("p1", "112-233-445 95", "clinic1"),
    patient("p2", "087-654-303 00", "clinic2"),
    patient("p3", "001-001-998 01", None),
    patient("p4", "001-001-997 02", "clinic1"),
    coverage("cov1", "p1", "ins1"),
    coverage("cov2", "p2", "ins2"),
    coverage("cov3", "p3", "ins1"),
    {"resourceType": "Encounter", "id": "enc1", "status": "finished", "class": {"code": "AMB"},
     "subject": ref("Patient", "p1"), "serviceProvider": ref("Organization", "clinic1")},
    {"resourceType": "Encounter", "id": "enc2", "status": "finished", "class": {"code": "AMB"},
     "subject": ref("Patient", "p2"), "serviceProvider": ref("Organization", "clinic2")},
    {"resourceType": "Encounter", "id": "enc3", "status": "finished", "class": {"code": "AMB"},
     "subject": ref("Patient", "p2"), "serviceProvider": ref("Organization", "clinic1")},  # clinic1 saw p2 once
    obs("obs1", "p1", "lab1"),
    obs("obs2", "p2", "lab2"),
    obs("obs3", "p3", "lab1"),
    obs("obs4", "p1", None),
    {"resourceType": "DiagnosticReport", "id": "dr1", "status": "final", "code": {"text": "panel"},
     "subject": ref("Patient", "p1"), "performer": [ref("Organization", "lab1")], "result": [ref("Observation", "obs1")]},
    {"resourceType": "Claim", "id": "claim1", "status": "active", "use": "claim", "patient": ref("Patient", "p1"),
     "provider": ref("Organization", "clinic1")},
    {"resourceType": "ExplanationOfBenefit", "id": "eob2", "status": "active", "patient": ref("Patient", "p2"),
     "insurer": ref("Organization", "ins2")},
    {"resourceType": "Condition", "id": "cond2", "subject": ref("Patient", "p2"), "code": {"text": "diabetes"}},
    {"resourceType": "AllergyIntolerance", "id": "alg1", "patient": ref("Patient", "p1"), "code": {"text": "penicillin"}},
    med_request("mr1", "p1", "clinic1"),
    med_request("mr2", "p2", "clinic2"),
    dispense("md1", "p1", "pharm1", "mr1"),
]
TYPES = sorted({r["resourceType"] for r in WORLD})


@pytest.fixture
def world(engine: sa.Engine, store: Store) -> Iterator[sa.Engine]:
    with engine.begin() as conn:
        store.transaction(conn, {"resourceType": "Bundle", "type": "transaction",
                                 "entry": [{"resource": r} for r in WORLD]})
        store.transaction(conn, {"resourceType": "Bundle", "type": "transaction",
                                 "entry": [{"request": {"method": "DELETE", "url": "Coverage/cov3"}}]})
    yield engine


INS1 = Principal("ins1-client", "insurer", organization="ins1")
INS2 = Principal("ins2-client", "insurer", organization="ins2")
LAB1 = Principal("lab1-client", "lab", organization="lab1")
LAB2 = Principal("lab2-client", "lab", organization="lab2")
CLINIC1 = Principal("clinic1-client", "organization", organization="clinic1")
PHARM1 = Principal("pharm1-client", "pharmacy", organization="pharm1")
PHARM2 = Principal("pharm2-client", "pharmacy", organization="pharm2")
CIT1 = Principal("citizen-1", "citizen", patient="p1")
CIT2 = Principal("citizen-2", "citizen", patient="p2")
CIT_UNKNOWN = Principal("citizen-x", "citizen", patient=None)
NO_ORG_LAB = Principal("lab-without-org", "lab")
ADMIN = Principal("ops", "admin")

DIRECTORY = {"Organization": {"ins1", "ins2", "lab1", "lab2", "clinic1", "clinic2", "pharm1", "pharm2"},
             "Practitioner": {"doc1"}, "Medication": {"med1"}}
EVERYTHING: dict[str, set[str]] = {}
for _r in WORLD:
    if _r["id"] != "cov3":
        EVERYTHING.setdefault(_r["resourceType"], set()).add(_r["id"])

# principal -> type -> ids visible (non-deleted). A type missing here is forbidden for the role
# (for the unrestricted roles every type is visible).
EXPECTED: dict[str, tuple[Principal, dict[str, set[str]]]] = {
    "admin": (ADMIN, EVERYTHING),
    "router": (ROUTER, EVERYTHING),
    "insurer ins1": (INS1, {**DIRECTORY, "Patient": {"p1"}, "Coverage": {"cov1"}, "Encounter": {"enc1"},
                            "Observation": {"obs1", "obs4"}, "DiagnosticReport": {"dr1"}, "Claim": {"claim1"},
                            "ExplanationOfBenefit": set(), "Condition": set(), "MedicationRequest": {"mr1"},
                            "MedicationDispense": {"md1"}}),
    "insurer ins2": (INS2, {**DIRECTORY, "Patient": {"p2"}, "Coverage": {"cov2"}, "Encounter": {"enc2", "enc3"},
                            "Observation": {"obs2"}, "DiagnosticReport": set(), "Claim": set(),
                            "ExplanationOfBenefit": {"eob2"}, "Condition": {"cond2"}, "MedicationRequest": {"mr2"},
                            "MedicationDispense": set()}),
    "lab lab1": (LAB1, {**DIRECTORY, "Patient": {"p1", "p3"}, "Observation": {"obs1", "obs3"},
                        "DiagnosticReport": {"dr1"}}),
    "lab lab2": (LAB2, {**DIRECTORY, "Patient": {"p2"}, "Observation": {"obs2"}, "DiagnosticReport": set()}),
    "lab without organisation": (NO_ORG_LAB, {**DIRECTORY, "Patient": set(), "Observation": set(),
                                              "DiagnosticReport": set()}),
    "pharmacy without organisation": (Principal("pharm-x", "pharmacy"), {
        **DIRECTORY, "MedicationRequest": set(), "MedicationDispense": set(), "Patient": set(), "Coverage": set()}),
    "organization clinic1": (CLINIC1, {
        **DIRECTORY, "Patient": {"p1", "p4"}, "Coverage": {"cov1"}, "Encounter": {"enc1", "enc3"},
        "Observation": {"obs1", "obs4"}, "DiagnosticReport": {"dr1"}, "Claim": {"claim1"},
        "ExplanationOfBenefit": set(), "Condition": set(), "AllergyIntolerance": {"alg1"},
        "MedicationRequest": {"mr1"}, "MedicationDispense": {"md1"}}),
    "pharmacy pharm1": (PHARM1, {**DIRECTORY, "MedicationRequest": {"mr1", "mr2"}, "MedicationDispense": {"md1"},
                                 "Patient": {"p1", "p2"}, "Coverage": {"cov1", "cov2"}}),
    "citizen p1": (CIT1, {**DIRECTORY, "Patient": {"p1"}, "Coverage": {"cov1"}, "Encounter": {"enc1"},
                          "Observation": {"obs1", "obs4"}, "DiagnosticReport": {"dr1"}, "Claim": {"claim1"},
                          "ExplanationOfBenefit": set(), "Condition": set(), "AllergyIntolerance": {"alg1"},
                          "MedicationRequest": {"mr1"}, "MedicationDispense": {"md1"}}),
    "citizen p2": (CIT2, {**DIRECTORY, "Patient": {"p2"}, "Coverage": {"cov2"}, "Encounter": {"enc2", "enc3"},
                          "Observation": {"obs2"}, "DiagnosticReport": set(), "Claim": set(),
                          "ExplanationOfBenefit": {"eob2"}, "Condition": {"cond2"}, "AllergyIntolerance": set(),
                          "MedicationRequest": {"mr2"}, "MedicationDispense": set()}),
    "citizen unknown": (CIT_UNKNOWN, {**DIRECTORY, **{t: set() for t in access.PATIENT_TYPES}}),
}


def visible(conn: sa.Connection, p: Principal, rtype: str) -> set[str]:
    r = resources.c
    stmt = sa.select(r.id).where(r.resource_type == rtype, r.deleted.is_(False))
    cond = access.read_condition(p, rtype)
    if cond is not None:
        stmt = stmt.where(cond)
    return {row[0] for row in conn.execute(stmt)}


def row(conn: sa.Connection, rtype: str, rid: str) -> Stored:
    found = Store().current(conn, rtype, rid)
    assert found is not None
    return found


@pytest.mark.parametrize("who", list(EXPECTED))
def test_searches_are_filtered(world: sa.Engine, who: str) -> None:
    principal, expected = EXPECTED[who]
    with world.connect() as conn:
        for rtype in TYPES:
            if rtype in expected:
                assert visible(conn, principal, rtype) == expected[rtype], f"{who} searching {rtype}"
            elif principal.role not in ("admin", "router"):
                with pytest.raises(ForbiddenError, match=f"may not read {rtype}"):
                    access.read_condition(principal, rtype)


@pytest.mark.parametrize("who", list(EXPECTED))
def test_single_reads_agree_with_searches(world: sa.Engine, who: str) -> None:
    """check_read allows exactly the resources the search condition returns, and forbids the rest."""
    principal, expected = EXPECTED[who]
    with world.connect() as conn:
        for r in WORLD:
            rtype, rid = r["resourceType"], r["id"]
            if rid == "cov3":  # deleted: see test_tombstones_follow_the_same_rules
                continue
            stored = row(conn, rtype, rid)
            if rid in expected.get(rtype, set()):
                access.check_read(conn, principal, stored)
            else:
                with pytest.raises(ForbiddenError):
                    access.check_read(conn, principal, stored)


def test_tombstones_follow_the_same_rules(world: sa.Engine) -> None:
    """A deleted resource keeps its compartment: whoever could read it learns it is gone (410),
    everyone else is refused as before (403)."""
    with world.connect() as conn:
        tombstone = row(conn, "Coverage", "cov3")
        assert tombstone.deleted
        for who in (ADMIN, ROUTER, INS1):
            access.check_read(conn, who, tombstone)
        for who in (INS2, CLINIC1, PHARM1, CIT1, LAB1):
            with pytest.raises(ForbiddenError):
                access.check_read(conn, who, tombstone)


def test_an_insurer_never_sees_another_insurers_insured(world: sa.Engine) -> None:
    with world.connect() as conn:
        for rtype, rid in (("Patient", "p2"), ("Coverage", "cov2"), ("Observation", "obs2"),
                           ("ExplanationOfBenefit", "eob2"), ("Condition", "cond2")):
            with pytest.raises(ForbiddenError):
                access.check_read(conn, INS1, row(conn, rtype, rid))
        access.check_read(conn, INS2, row(conn, "Patient", "p2"))


def test_a_deleted_coverage_ends_the_insurers_access(world: sa.Engine) -> None:
    with world.connect() as conn:
        with pytest.raises(ForbiddenError):
            access.check_read(conn, INS1, row(conn, "Patient", "p3"))
        assert "p3" not in visible(conn, INS1, "Patient")


def test_a_new_coverage_grants_the_insurer_access(world: sa.Engine, store: Store) -> None:
    with world.begin() as conn:
        assert visible(conn, INS2, "Observation") == {"obs2"}
        store.transaction(conn, {"resourceType": "Bundle", "type": "transaction",
                                 "entry": [{"resource": coverage("cov4", "p1", "ins2")}]})
        assert visible(conn, INS2, "Observation") == {"obs1", "obs2", "obs4"}
        assert visible(conn, INS2, "Coverage") == {"cov2", "cov4"}  # its own contracts, not ins1's cov1
        access.check_read(conn, INS2, row(conn, "Patient", "p1"))


def test_a_citizen_never_sees_another_citizens_record(world: sa.Engine) -> None:
    with world.connect() as conn:
        for who, other in ((CIT1, "p2"), (CIT2, "p1")):
            with pytest.raises(ForbiddenError):
                access.check_read(conn, who, row(conn, "Patient", other))
            for rtype in ("Observation", "MedicationRequest", "Encounter", "Coverage"):
                ids = visible(conn, who, rtype)
                assert all(row(conn, rtype, i).patient_id == who.patient for i in ids)


@pytest.mark.parametrize(("principal", "rtype"), [
    (INS1, "AllergyIntolerance"), (INS1, "Specimen"), (LAB1, "MedicationRequest"), (LAB1, "Coverage"),
    (LAB1, "Encounter"), (PHARM1, "Observation"), (PHARM1, "Condition"), (PHARM1, "Encounter"),
    (CIT1, "Basic"), (CLINIC1, "AuditEvent"), (Principal("x", "nonsense"), "Patient"),  # type: ignore[arg-type]
])
def test_types_outside_a_roles_table_are_forbidden(principal: Principal, rtype: str) -> None:
    with pytest.raises(ForbiddenError, match=f"may not read {rtype}"):
        access.read_condition(principal, rtype)


def test_unrestricted_roles_have_no_condition() -> None:
    assert access.read_condition(ADMIN, "AnyType") is None
    assert access.read_condition(ROUTER, "Patient") is None
    assert access.readable_types(ADMIN) is None
    assert access.readable_types(LAB1) == {"Patient", "Specimen", "ServiceRequest", "DiagnosticReport",
                                           "Observation", *access.DIRECTORY}


# ------------------------------------------------------------------------------------------ writes
def tx(*resources_: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": r} for r in resources_]}


def write(engine: sa.Engine, principal: Principal, bundle: dict[str, Any]) -> dict[str, Any]:
    with engine.begin() as conn:
        return Store().transaction(conn, bundle, principal=principal, authorize=access.authorize_write)


def test_a_lab_writes_results_for_its_own_organisation(world: sa.Engine) -> None:
    report = {"resourceType": "DiagnosticReport", "id": "dr9", "status": "final", "code": {"text": "panel"},
              "subject": ref("Patient", "p5"), "performer": [ref("Organization", "lab2")],
              "result": [ref("Observation", "obs9")]}
    out = write(world, LAB2, tx(patient("p5", "001-001-996 03", None), obs("obs9", "p5", "lab2"), report,
                                {"resourceType": "Specimen", "id": "sp9", "subject": ref("Patient", "p5"),
                                 "collection": {"collector": ref("Organization", "lab2")}},
                                {"resourceType": "Practitioner", "id": "doc9"}))
    assert [e["response"]["status"] for e in out["entry"]] == ["201 Created"] * 5
    with world.connect() as conn:  # ... and can read back what it wrote
        assert visible(conn, LAB2, "Patient") == {"p2", "p5"}
        assert visible(conn, LAB2, "Observation") == {"obs2", "obs9"}
    # a corrected result (update) of its own
    write(world, LAB2, tx({**obs("obs9", "p5", "lab2"), "status": "amended"}))


@pytest.mark.parametrize(("principal", "resource", "reason"), [
    (LAB1, obs("obs8", "p1", "lab2"), "organisation is not the client's"),  # for another lab
    (LAB1, obs("obs8", "p1", None), "organisation is not the client's"),  # for no lab
    (LAB1, {**obs("obs2", "p2", "lab1")}, "stored one belongs to another organisation"),  # lab2's result
    (LAB1, patient("p9", "001-001-995 04", "clinic1"), "organisation is not the client's"),
    (LAB1, {**patient("p1", "112-233-445 95", None)}, "stored one belongs to another organisation"),
    (LAB1, coverage("cov9", "p1", "lab1"), "type not writable"),
    (LAB1, med_request("mr9", "p1", "lab1"), "type not writable"),
    (NO_ORG_LAB, obs("obs8", "p1", None), "has no organisation"),
    (INS1, coverage("cov9", "p1", "ins1"), "read-only"),
    (INS1, {"resourceType": "Claim", "id": "claim9", "patient": ref("Patient", "p1")}, "read-only"),
    (CIT1, {**patient("p1", "112-233-445 95", "clinic1"), "telecom": [{"system": "phone", "value": "1"}]},
     "read-only"),
    (CIT1, obs("obs8", "p1", None), "read-only"),
    (PHARM1, dispense("md9", "p2", "pharm2", "mr2"), "organisation is not the client's"),
    (PHARM2, {**dispense("md1", "p1", "pharm2", "mr1")}, "stored one belongs to another organisation"),
    (PHARM1, med_request("mr9", "p1", "pharm1"), "only the status of an existing one"),
    (PHARM1, {**med_request("mr1", "p1", "clinic1"), "dosageInstruction": [{"text": "x2"}]},
     "only status and statusReason"),
    (PHARM1, obs("obs8", "p1", "pharm1"), "type not writable"),
    (CLINIC1, patient("p2", "087-654-303 00", "clinic1"), "another organisation"),  # take over clinic2's patient
    (CLINIC1, patient("p1", "112-233-445 95", "clinic2"), "organisation is not the client's"),  # hand over
    (CLINIC1, obs("obs8", "p1", "clinic1"), "type not writable"),
    (CLINIC1, coverage("cov9", "p1", "clinic1"), "type not writable"),
])
def test_denied_writes(world: sa.Engine, principal: Principal, resource: dict[str, Any], reason: str) -> None:
    with pytest.raises(ForbiddenError, match=reason):
        write(world, principal, tx(resource))
    with world.connect() as conn:  # nothing was written
        cur = Store().current(conn, resource["resourceType"], resource["id"])
        assert cur is None or cur.version_id == 1 or resource["id"] == "cov3"


def test_a_pharmacy_records_dispenses_and_prescription_status(world: sa.Engine) -> None:
    out = write(world, PHARM2, tx(dispense("md2", "p2", "pharm2", "mr2"),
                                  {**med_request("mr2", "p2", "clinic2"), "status": "completed",
                                   "statusReason": {"text": "dispensed"}}))
    assert [e["response"]["status"] for e in out["entry"]] == ["201 Created", "200 OK"]
    write(world, PHARM1, tx({**dispense("md1", "p1", "pharm1", "mr1"), "status": "cancelled"}))


def test_an_organisation_writes_only_patients_it_manages(world: sa.Engine) -> None:
    write(world, CLINIC1, tx(patient("p6", "001-001-994 05", "clinic1"),
                             {**patient("p4", "001-001-997 02", "clinic1"), "gender": "female"}))


@pytest.mark.parametrize("principal", [LAB1, INS1, PHARM1, CLINIC1, CIT1])
def test_only_admin_and_router_delete_and_merge(world: sa.Engine, principal: Principal) -> None:
    with pytest.raises(ForbiddenError, match="reserved to admin"):
        write(world, principal, {"resourceType": "Bundle", "type": "transaction",
                                 "entry": [{"request": {"method": "DELETE", "url": "Observation/obs1"}}]})
    merge = {"resourceType": "Parameters", "parameter": [
        {"name": "source-patient", "valueReference": ref("Patient", "p4")},
        {"name": "target-patient", "valueReference": ref("Patient", "p1")}]}
    with pytest.raises(ForbiddenError, match="reserved to admin"):
        write(world, principal, {"resourceType": "Bundle", "type": "transaction",
                                 "entry": [{"resource": merge, "request": {"method": "POST", "url": "Patient/$merge"}}]})


def test_admin_and_router_may_do_anything(world: sa.Engine) -> None:
    for who in (ADMIN, ROUTER):
        access.authorize_write(who, "delete", None, None)
        access.authorize_write(who, "merge", None, None)
        access.authorize_write(who, "create", coverage("x", "p1", "ins1"), None)
    write(world, ADMIN, {"resourceType": "Bundle", "type": "transaction",
                         "entry": [{"request": {"method": "DELETE", "url": "Observation/obs4"}}]})
    merge = {"resourceType": "Parameters", "parameter": [
        {"name": "source-patient", "valueReference": ref("Patient", "p4")},
        {"name": "target-patient", "valueReference": ref("Patient", "p1")}]}
    write(world, ADMIN, {"resourceType": "Bundle", "type": "transaction",
                         "entry": [{"resource": merge, "request": {"method": "POST", "url": "Patient/$merge"}}]})


def test_a_denied_entry_fails_the_whole_bundle(world: sa.Engine) -> None:
    with pytest.raises(ForbiddenError):
        write(world, LAB1, tx(obs("obs7", "p1", "lab1"), obs("obs8", "p1", "lab2")))
    with world.connect() as conn:
        assert Store().current(conn, "Observation", "obs7") is None
