"""Search over the record store: every parameter type with its modifiers and prefixes, OR/AND,
_sort, paging by next links (also across concurrent writes), _include, access conditions, errors,
and the index rows themselves. Resources are written through Store.transaction. Every test runs on
SQLite and on PostgreSQL."""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.errors import GoneError, InputError
from router.store import search as search_module
from router.store.principal import ROUTER
from router.store.search import search
from router.store.store import Store
from router.store.tables import idx_date, idx_quantity, idx_reference, idx_string, idx_token, resources

BASE = "https://store.example/fhir"
SNILS = "urn:oid:1.2.643.100.3"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
UTC = timezone.utc


# ---------------------------------------------------------------------------------------- helpers
def tx(*resources_: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction",
            "entry": [{"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
                      for r in resources_]}


def write(engine: sa.Engine, *resources_: dict[str, Any]) -> None:
    with engine.begin() as conn:
        Store().transaction(conn, tx(*resources_))


def delete(engine: sa.Engine, rtype: str, rid: str) -> None:
    with engine.begin() as conn:
        Store().transaction(conn, {"resourceType": "Bundle", "type": "transaction",
                                   "entry": [{"request": {"method": "DELETE", "url": f"{rtype}/{rid}"}}]})


def run(engine: sa.Engine, rtype: str, params: str | list[tuple[str, str]], **kw: Any) -> dict[str, Any]:
    if isinstance(params, str):
        params = parse_qsl(params, keep_blank_values=True)
    with engine.begin() as conn:
        return search(conn, rtype, params, principal=ROUTER, base_url=BASE, **kw)


def ids(bundle: dict[str, Any], mode: str = "match") -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == mode]


def find(engine: sa.Engine, rtype: str, params: str | list[tuple[str, str]], **kw: Any) -> list[str]:
    found = ids(run(engine, rtype, params, **kw))
    assert len(found) == len(set(found)), found
    return found


def found(engine: sa.Engine, rtype: str, params: str | list[tuple[str, str]], **kw: Any) -> set[str]:
    return set(find(engine, rtype, params, **kw))


def next_url(bundle: dict[str, Any]) -> str | None:
    return {link["relation"]: link["url"] for link in bundle["link"]}.get("next")


def follow(engine: sa.Engine, url: str, **kw: Any) -> dict[str, Any]:
    parts = urlsplit(url)
    assert url.startswith(BASE + "/")
    return run(engine, parts.path.rsplit("/", 1)[1], parse_qsl(parts.query, keep_blank_values=True), **kw)


def ref(target: str) -> dict[str, str]:
    return {"reference": target}


def loinc(code: str) -> dict[str, Any]:
    return {"coding": [{"system": LOINC, "code": code}]}


def qty(value: float, unit: str = "mmol/L", system: str | None = UCUM, code: str | None = "mmol/L") -> dict[str, Any]:
    q: dict[str, Any] = {"value": value, "unit": unit}
    if system:
        q["system"] = system
    if code:
        q["code"] = code
    return q


def obs(rid: str, subject: str | None, code: dict[str, Any], status: str = "final", **more: Any) -> dict[str, Any]:
    o: dict[str, Any] = {"resourceType": "Observation", "id": rid, "status": status, "code": code, **more}
    if subject:
        o["subject"] = ref(subject)
    return o


def epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


# ---------------------------------------------------------------------------------------- a small world
WORLD: list[dict[str, Any]] = [
    {"resourceType": "Organization", "id": "lab1", "name": "Городская лаборатория №1", "alias": ["ГЛ-1"]},
    {"resourceType": "Group", "id": "g1", "type": "person", "actual": True},
    {"resourceType": "Patient", "id": "pa", "gender": "male", "birthDate": "1980-05-02",
     "identifier": [{"system": SNILS, "value": "112-233-445 95"},
                    {"system": "urn:hosp:mrn", "value": "MRN-1", "type": {"coding": [{"code": "MR"}]}}],
     "name": [{"family": "Ёлкин", "given": ["Иван", "Петрович"]}], "managingOrganization": ref("Organization/lab1")},
    {"resourceType": "Patient", "id": "pb", "gender": "female", "birthDate": "1975",
     "name": [{"family": "José", "given": ["Maria"], "text": "Maria José"}]},
    {"resourceType": "Patient", "id": "pc", "gender": "other", "birthDate": "1990-01", "name": [{"family": "Smith"}]},
    obs("o1", "Patient/pa", loinc("2345-7"), effectiveDateTime="2024-05-01T10:00:00+03:00", valueQuantity=qty(5.4),
        identifier=[{"system": "urn:lab:obs", "value": "o1"}],
        category=[{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                               "code": "laboratory"}]}],
        basedOn=[ref("ServiceRequest/sr1")], specimen=ref("Specimen/s1")),
    obs("o2", "Patient/pa", loinc("2093-3"), "preliminary", effectiveDateTime="2024-05-02", valueQuantity=qty(4.9)),
    obs("o3", "Patient/pb", loinc("2345-7"), effectivePeriod={"start": "2024-04-30T22:00:00Z",
                                                             "end": "2024-05-01T02:00:00Z"},
        valueQuantity=qty(6.1, unit="mg/dL", system=None, code=None)),
    obs("o4", "Patient/pb", {"coding": [{"system": "LAB", "code": "GLU"}, {"system": LOINC, "code": "2345-7"}]},
        effectiveDateTime="2024"),
    obs("o5", "Group/g1", {"coding": [{"code": "X1"}]}, "amended", effectiveDateTime="2023-12-31T23:59:59.999Z",
        valueQuantity={"value": 0.5}),
    obs("o6", "http://other.example/fhir/Patient/pc", loinc("2345-7")),
    {"resourceType": "DiagnosticReport", "id": "r1", "status": "final", "code": loinc("24323-8"),
     "subject": ref("Patient/pa"), "effectiveDateTime": "2024-05-02T09:00:00Z",
     "result": [ref("Observation/o1"), ref("Observation/o2")], "basedOn": [ref("ServiceRequest/sr1")]},
    {"resourceType": "DiagnosticReport", "id": "r2", "status": "final", "code": loinc("24323-8"),
     "subject": ref("Patient/pb"), "effectiveDateTime": "2024-05-01T09:00:00Z",
     "result": [ref("Observation/o3"), ref("Observation/o4")]},
    {"resourceType": "Encounter", "id": "e1", "status": "finished", "subject": ref("Patient/pa"),
     "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
     "period": {"start": "2024-05-01T08:00:00Z", "end": "2024-05-01T09:30:00Z"}},
    {"resourceType": "Encounter", "id": "e2", "status": "in-progress", "subject": ref("Patient/pb"),
     "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
     "period": {"start": "2024-05-01"}},
    {"resourceType": "ServiceRequest", "id": "sr1", "status": "active", "intent": "order", "code": loinc("24323-8"),
     "subject": ref("Patient/pa"), "authoredOn": "2024-04-29T12:00:00Z", "requester": ref("Organization/lab1")},
    {"resourceType": "ServiceRequest", "id": "sr2", "status": "active", "intent": "order", "code": loinc("24323-8"),
     "subject": ref("Patient/pb"), "authoredOn": "2024-04-28"},
    {"resourceType": "ServiceRequest", "id": "sr3", "status": "draft", "intent": "order", "code": loinc("24323-8"),
     "subject": ref("Patient/pc")},
    {"resourceType": "MedicationRequest", "id": "mr1", "status": "active", "intent": "order",
     "subject": ref("Patient/pa"), "authoredOn": "2024-03-01",
     "medicationCodeableConcept": {"coding": [{"system": "http://www.whocc.no/atc", "code": "A10BA02"}]}},
    {"resourceType": "MedicationRequest", "id": "mr2", "status": "completed", "intent": "order",
     "subject": ref("Patient/pb"), "authoredOn": "2024-02-01", "medicationReference": ref("Medication/met")},
]


@pytest.fixture
def world(engine: sa.Engine) -> sa.Engine:
    write(engine, *WORLD)
    return engine


# ---------------------------------------------------------------------------------------- index rows
def test_index_rows_as_written(world: sa.Engine) -> None:
    def rows(table: sa.Table, rid: str, *cols: str) -> set[tuple[Any, ...]]:
        with world.connect() as conn:
            return {tuple(r) for r in conn.execute(sa.select(table.c.param, *[table.c[c] for c in cols])
                                                    .where(table.c.id == rid))}

    at = epoch("2024-05-01T07:00:00+00:00")
    assert rows(idx_date, "o1", "start", "end", "is_min", "is_max") == {("date", at, at + 1, True, True)}
    assert rows(idx_date, "o5", "start", "end") == {("date", epoch("2023-12-31T23:59:59.999+00:00"),
                                                     epoch("2024-01-01T00:00:00+00:00"))}
    assert rows(idx_date, "pb", "start", "end") == {("birthdate", epoch("1975-01-01T00:00:00+00:00"),
                                                     epoch("1976-01-01T00:00:00+00:00"))}
    assert rows(idx_token, "o1", "system", "code") == {
        ("code", LOINC, "2345-7"), ("status", None, "final"), ("identifier", "urn:lab:obs", "o1"),
        ("category", "http://terminology.hl7.org/CodeSystem/observation-category", "laboratory")}
    assert rows(idx_reference, "o1", "target_type", "target_id") == {
        ("subject", "Patient", "pa"), ("based-on", "ServiceRequest", "sr1"), ("specimen", "Specimen", "s1")}
    assert rows(idx_reference, "o6", "target_type", "target_id") == {("subject", "Patient", "pc")}
    assert rows(idx_quantity, "o3", "value", "system", "code") == {("value-quantity", 6.1, None, "mg/dL")}
    assert rows(idx_string, "pa", "value", "exact") == {
        ("family", "елкин", "Ёлкин"), ("given", "иван", "Иван"), ("given", "петрович", "Петрович"),
        ("name", "елкин", "Ёлкин"), ("name", "иван", "Иван"), ("name", "петрович", "Петрович")}
    # the СНИЛС is indexed in its canonical form
    assert ("identifier", SNILS, "11223344595") in rows(idx_token, "pa", "system", "code")


# ---------------------------------------------------------------------------------------- token
def test_token_forms_and_not(world: sa.Engine) -> None:
    assert found(world, "Observation", f"code={LOINC}|2345-7") == {"o1", "o3", "o4", "o6"}
    assert found(world, "Observation", "code=2345-7") == {"o1", "o3", "o4", "o6"}
    assert found(world, "Observation", "code=GLU") == {"o4"}
    assert found(world, "Observation", "code=LAB|GLU") == {"o4"}
    assert found(world, "Observation", f"code={LOINC}|GLU") == set()
    assert found(world, "Observation", "code=|X1") == {"o5"}  # no system
    assert found(world, "Observation", "code=|2345-7") == set()
    assert found(world, "Observation", f"code={LOINC}|") == {"o1", "o2", "o3", "o4", "o6"}  # any code of the system
    assert found(world, "Observation", f"code:not={LOINC}|2345-7") == {"o2", "o5"}
    assert found(world, "Observation", "status=final,amended") == {"o1", "o3", "o4", "o5", "o6"}
    assert found(world, "Observation", "category=laboratory") == {"o1"}
    assert found(world, "Observation", "identifier=urn:lab:obs|o1") == {"o1"}
    assert found(world, "Patient", "gender=female") == {"pb"}
    assert found(world, "Encounter", "class=AMB") == {"e1"}
    assert found(world, "MedicationRequest", "code=http://www.whocc.no/atc|A10BA02") == {"mr1"}
    # identifiers with a system are compared in the store's canonical form (СНИЛС digits, aliases)
    assert found(world, "Patient", f"identifier={SNILS}|112-233-445 95") == {"pa"}
    assert found(world, "Patient", "identifier=http://fhir.ru/core/systems/snils|11223344595") == {"pa"}
    assert found(world, "Patient", "identifier=11223344595") == {"pa"}
    assert found(world, "Patient", "identifier=urn:hosp:mrn|MRN-1") == {"pa"}
    assert found(world, "Patient", f"identifier={SNILS}|112-233-445 96") == set()


# ---------------------------------------------------------------------------------------- string
def test_string_prefix_contains_exact(world: sa.Engine) -> None:
    assert found(world, "Patient", "family=ёлк") == {"pa"}
    assert found(world, "Patient", "family=ЕЛК") == {"pa"}  # case and ё/е insensitive
    assert found(world, "Patient", "family=Елкин") == {"pa"}
    assert found(world, "Patient", "name=петр") == {"pa"}  # name covers the given names
    assert found(world, "Patient", "given=MARIA") == {"pb"}
    assert found(world, "Patient", "name=jose") == {"pb"}  # accent-insensitive
    assert found(world, "Patient", "name=maria jos") == {"pb"}  # HumanName.text
    assert found(world, "Patient", "family=ose") == set()  # starts-with by default
    assert found(world, "Patient", "family:contains=OSÉ") == {"pb"}
    assert found(world, "Patient", "family:exact=José") == {"pb"}
    assert found(world, "Patient", "family:exact=jose") == set()
    assert found(world, "Patient", "family:exact=José,Smith") == {"pb", "pc"}
    assert found(world, "Patient", "family=%") == set()  # LIKE wildcards are literal
    assert found(world, "Patient", "family=_") == set()
    assert found(world, "Organization", "name=гл-1") == {"lab1"}  # alias
    assert found(world, "Organization", "name=городская лаб") == {"lab1"}


# ---------------------------------------------------------------------------------------- date
@pytest.mark.parametrize(("query", "expected"), [
    ("date=2024-05-01", {"o1"}),  # only o1 lies within the day (o3 starts the evening before)
    ("date=eq2024-05", {"o1", "o2"}),
    ("date=2024", {"o1", "o2", "o3", "o4"}),  # o4 is the year itself; o5 is one millisecond short
    ("date=ne2024", {"o5"}),  # o6 has no date: it matches no date comparison
    ("date=lt2024-05-01", {"o3", "o4", "o5"}),  # some of it before the day
    ("date=le2024-05-01", {"o1", "o3", "o4", "o5"}),  # some of it before the end of the day
    ("date=gt2024-05-01", {"o2", "o4"}),  # some of it after the day
    ("date=ge2024-05-01", {"o1", "o2", "o3", "o4"}),  # some of it at or after the start of the day
    ("date=sa2024-04-30", {"o1", "o2"}),  # starts after the day
    ("date=eb2024-05-01", {"o5"}),  # ends before the day (o5's last millisecond ends at midnight)
    ("date=2024-05-01T07:00:00Z", {"o1"}),
    ("date=2024-05-01T10:00:00%2B03:00", {"o1"}),  # the same instant with its offset
    ("date=2024-05-01T10:00:00", set()),  # no zone: UTC
    ("date=2024-05-01T07:00", {"o1"}),  # minute precision
    ("date=2023-12-31T23:59:59Z", {"o5"}),
    ("date=2024-05-02,2023", {"o2", "o5"}),
])
def test_date_prefixes_and_precision(world: sa.Engine, query: str, expected: set[str]) -> None:
    assert found(world, "Observation", query) == expected


def test_date_approximately_periods_and_issued(world: sa.Engine) -> None:
    now = epoch("2024-05-11T00:00:00+00:00")  # ap widens by 10% of the 10 days to the value: one day
    assert found(world, "Observation", "date=ap2024-05-01", now=now) == {"o1", "o2", "o3", "o4"}
    # Encounter.period: e1 within the day, e2 started that day and has not ended
    assert found(world, "Encounter", "date=2024-05-01") == {"e1"}
    assert found(world, "Encounter", "date=ge2030") == {"e2"}
    assert found(world, "Encounter", "date=lt2024-05-01T08:30Z") == {"e1", "e2"}
    assert found(world, "Encounter", "date=sa2024-05-01T08:30Z") == set()
    assert found(world, "Patient", "birthdate=1975-06-01") == set()  # "1975" is not within a day of it
    assert found(world, "Patient", "birthdate=le1975-06-01") == {"pb"}
    assert found(world, "Patient", "birthdate=ge1985") == {"pc"}
    assert found(world, "ServiceRequest", "authored=2024-04") == {"sr1", "sr2"}
    assert found(world, "MedicationRequest", "authoredon=lt2024-03") == {"mr2"}


# ---------------------------------------------------------------------------------------- reference
def test_reference_forms(world: sa.Engine) -> None:
    assert found(world, "Observation", "subject=Patient/pa") == {"o1", "o2"}
    assert found(world, "Observation", "patient=pa") == {"o1", "o2"}
    assert found(world, "Observation", "subject=pa") == {"o1", "o2"}  # an id alone: any type
    assert found(world, "Observation", f"subject={BASE}/Patient/pa") == {"o1", "o2"}  # absolute URL
    assert found(world, "Observation", "subject=Patient/pa/_history/1") == {"o1", "o2"}
    assert found(world, "Observation", "patient=pc") == {"o6"}  # stored as an absolute URL
    assert found(world, "Observation", "subject=Group/g1") == {"o5"}
    assert found(world, "Observation", "subject:Group=g1") == {"o5"}
    assert found(world, "Observation", "patient=g1") == set()  # patient: Patient references only
    assert found(world, "Observation", "patient=pa,pb") == {"o1", "o2", "o3", "o4"}
    assert found(world, "Observation", "based-on=ServiceRequest/sr1") == {"o1"}
    assert found(world, "Observation", "specimen=s1") == {"o1"}
    assert found(world, "DiagnosticReport", "result=Observation/o3") == {"r2"}
    assert found(world, "ServiceRequest", "requester=Organization/lab1") == {"sr1"}
    assert found(world, "MedicationRequest", "medication=met") == {"mr2"}
    with pytest.raises(InputError, match="refers to Patient, not Group"):
        run(world, "Observation", "patient=Group/g1")


# ---------------------------------------------------------------------------------------- quantity
@pytest.mark.parametrize(("query", "expected"), [
    ("value-quantity=5.4", {"o1"}),
    ("value-quantity=5", {"o1", "o2"}),  # precision of "5": [4.5, 5.5)
    ("value-quantity=5.40", {"o1"}),
    ("value-quantity=gt5", {"o1", "o3"}),
    ("value-quantity=le4.9", {"o2", "o5"}),
    ("value-quantity=lt4.9", {"o5"}),
    ("value-quantity=ge6.1", {"o3"}),
    ("value-quantity=ne5.4", {"o2", "o3", "o5"}),
    ("value-quantity=ap5.5", {"o1"}),  # within 10%
    (f"value-quantity=5.4|{UCUM}|mmol/L", {"o1"}),
    ("value-quantity=6.1||mg/dL", {"o3"}),  # no code: the unit
    (f"value-quantity=6.1|{UCUM}|mg/dL", set()),
    ("value-quantity=gt0||mmol/L", {"o1", "o2"}),
    ("value-quantity=lt1,gt6", {"o3", "o5"}),
])
def test_quantity(world: sa.Engine, query: str, expected: set[str]) -> None:
    assert found(world, "Observation", query) == expected


# ---------------------------------------------------------------------------------------- combinations
def test_or_and_missing_id_and_no_criteria(world: sa.Engine) -> None:
    assert found(world, "Observation", "code=2093-3,X1") == {"o2", "o5"}
    assert found(world, "Observation", "status=final&code=2345-7&patient=pb") == {"o3", "o4"}
    assert found(world, "Observation", "date=ge2024-05-01&date=lt2024-05-02") == {"o1", "o3", "o4"}
    assert found(world, "Observation", "code=2345-7&code=GLU") == {"o4"}
    assert found(world, "Observation", "date:missing=true") == {"o6"}
    assert found(world, "Observation", "value-quantity:missing=true") == {"o4", "o6"}
    assert found(world, "Observation", "date:missing=false") == {"o1", "o2", "o3", "o4", "o5"}
    assert found(world, "Observation", "patient:missing=true") == {"o5"}  # its subject is a Group
    assert found(world, "Observation", "subject:missing=true") == set()
    assert found(world, "Observation", "_id=o1,o3,nope") == {"o1", "o3"}
    assert found(world, "Observation", "_id=o1&code=2093-3") == set()
    assert found(world, "Observation", "code=") == {f"o{n}" for n in range(1, 7)}  # empty: ignored
    assert found(world, "Observation", []) == {f"o{n}" for n in range(1, 7)}


def test_last_updated(engine: sa.Engine) -> None:
    write(engine, obs("a", None, loinc("1")), obs("b", None, loinc("1")))
    time.sleep(0.01)
    write(engine, obs("c", None, loinc("1")))
    with engine.connect() as conn:
        lu = {rid: t for rid, t in conn.execute(sa.select(resources.c.id, resources.c.last_updated))}
    assert lu["a"] == lu["b"] < lu["c"]
    second = datetime.fromtimestamp(int(lu["c"] * 1000) / 1000, UTC)  # its millisecond
    millis = second.strftime("%Y-%m-%dT%H:%M:%S.") + f"{second.microsecond // 1000:03d}Z"
    assert found(engine, "Observation", f"_lastUpdated=ge{millis}") == {"c"}
    assert found(engine, "Observation", f"_lastUpdated=lt{millis}") == {"a", "b"}
    assert found(engine, "Observation", f"_lastUpdated={millis}") == {"c"}
    assert found(engine, "Observation", f"_lastUpdated={second.year}") == {"a", "b", "c"}
    assert found(engine, "Observation", f"_lastUpdated=gt{second.year}") == set()
    assert find(engine, "Observation", "_sort=-_lastUpdated") == ["c", "a", "b"]  # ties by id
    assert find(engine, "Observation", "_sort=_lastUpdated,-_id") == ["b", "a", "c"]


# ---------------------------------------------------------------------------------------- _sort
@pytest.mark.parametrize(("rtype", "sort", "expected"), [
    ("Observation", "date", ["o5", "o4", "o3", "o1", "o2", "o6"]),  # earliest start first, no date last
    ("Observation", "-date", ["o4", "o2", "o1", "o3", "o5", "o6"]),  # latest end first: o4 is all of 2024
    ("Observation", "-value-quantity", ["o3", "o1", "o2", "o5", "o4", "o6"]),
    ("Observation", "status,-date", ["o5", "o4", "o1", "o3", "o6", "o2"]),
    ("Observation", "_id", ["o1", "o2", "o3", "o4", "o5", "o6"]),
    ("Observation", "-_id", ["o6", "o5", "o4", "o3", "o2", "o1"]),
    ("Observation", "-code,_id", ["o5", "o4", "o1", "o3", "o6", "o2"]),  # highest code: X1, GLU, 2345-7, 2093-3
    ("Patient", "birthdate", ["pb", "pa", "pc"]),
    ("Patient", "-birthdate", ["pc", "pa", "pb"]),
    ("Patient", "family", ["pb", "pc", "pa"]),  # jose, smith, елкин
    ("ServiceRequest", "-authored", ["sr1", "sr2", "sr3"]),
    ("ServiceRequest", "authored", ["sr2", "sr1", "sr3"]),
    ("MedicationRequest", "authoredon", ["mr2", "mr1"]),
    ("DiagnosticReport", "-date", ["r1", "r2"]),
])
def test_sort_and_paging_in_that_order(world: sa.Engine, rtype: str, sort: str, expected: list[str]) -> None:
    assert find(world, rtype, [("_sort", sort)]) == expected
    # the same order page by page, two at a time, through the next links
    page = run(world, rtype, [("_sort", sort), ("_count", "2")])
    seen = ids(page)
    while (url := next_url(page)) is not None:
        page = follow(world, url)
        assert 0 < len(ids(page)) <= 2
        seen += ids(page)
    assert seen == expected


def test_sort_errors(world: sa.Engine) -> None:
    with pytest.raises(InputError, match="cannot sort by reference parameter 'subject'"):
        run(world, "Observation", "_sort=subject")
    with pytest.raises(InputError, match="unknown search parameter 'dat'.*did you mean 'date'"):
        run(world, "Observation", "_sort=-dat")


# ---------------------------------------------------------------------------------------- paging
def series(n: int, code: str = "2345-7") -> list[dict[str, Any]]:
    return [obs(f"c{i:02d}", "Patient/pz", loinc(code), effectiveDateTime=f"2024-01-{i + 1:02d}T12:00:00Z",
                valueQuantity=qty(float(i))) for i in range(n)]


def test_paging_three_pages_links_and_total(engine: sa.Engine) -> None:
    write(engine, *series(10))
    page = run(engine, "Observation", "patient=pz&_count=4&_sort=-date&_total=accurate")
    assert page["total"] == 10 and ids(page) == ["c09", "c08", "c07", "c06"]
    links = {link["relation"]: link["url"] for link in page["link"]}
    assert links["self"] == f"{BASE}/Observation?patient=pz&_count=4&_sort=-date&_total=accurate"
    assert links["next"].startswith(f"{BASE}/Observation?patient=pz&_count=4&_sort=-date&_total=accurate&_cursor=")
    assert page["entry"][0]["fullUrl"] == f"{BASE}/Observation/c09"
    assert page["entry"][0]["resource"]["valueQuantity"]["value"] == 9.0
    pages = [ids(page)]
    while (url := next_url(page)) is not None:
        page = follow(engine, url)
        assert page["total"] == 10
        pages.append(ids(page))
    assert pages == [["c09", "c08", "c07", "c06"], ["c05", "c04", "c03", "c02"], ["c01", "c00"]]


@pytest.mark.parametrize("sort", ["date", "_lastUpdated", "_id", "-value-quantity"])
def test_paging_is_a_snapshot_across_concurrent_writes(engine: sa.Engine, sort: str) -> None:
    write(engine, *series(12))
    write(engine, obs("other", "Patient/pz", loinc("2093-3"), effectiveDateTime="2024-01-05"))  # never matches
    expected = run(engine, "Observation", [("code", "2345-7"), ("_sort", sort), ("_count", "100")])
    order = ids(expected)
    assert len(order) == 12
    page = run(engine, "Observation", [("code", "2345-7"), ("_sort", sort), ("_count", "4"), ("_total", "accurate")])
    seen = ids(page)
    assert seen == order[:4]
    first, unseen = seen[0], order[6]
    time.sleep(0.002)
    # meanwhile: an entry already returned is updated (moves to the end of every order), one not
    # yet returned is updated so that it would sort first and no longer match, another stops
    # matching... and one that did not match now does, a new one is created, one is deleted
    moved = {**obs(first, "Patient/pz", loinc("2345-7"), effectiveDateTime="2030-01-01"), "valueQuantity": qty(-1)}
    changed = {**obs(unseen, "Patient/pz", loinc("9999-9"), effectiveDateTime="2000-01-01"),
               "valueQuantity": qty(99)}
    write(engine, moved, changed, obs("other", "Patient/pz", loinc("2345-7"), effectiveDateTime="2024-01-05"),
          obs("new", "Patient/pz", loinc("2345-7"), effectiveDateTime="2024-01-06"))
    delete(engine, "Observation", order[9])
    pages = 1
    while (url := next_url(page)) is not None:
        page = follow(engine, url)
        seen += ids(page)
        pages += 1
        if unseen in ids(page):  # the snapshot's version of it, not the update
            entry = next(e for e in page["entry"] if e["resource"]["id"] == unseen)
            assert entry["resource"]["code"] == loinc("2345-7")
        assert page["total"] == 12  # counted on the first page
    assert pages == 3
    # every resource that matched when the search started, once, in that order; the deleted one is gone
    assert seen == [i for i in order if i != order[9]]
    # a new search sees the present
    now = found(engine, "Observation", "code=2345-7&_count=100")
    assert unseen not in now and {"other", "new", first} <= now and order[9] not in now


def test_changed_resources_are_merged_in_order_with_the_rest(engine: sa.Engine) -> None:
    write(engine, *series(9))
    page = run(engine, "Observation", "code=2345-7&_sort=date&_count=3")
    assert ids(page) == ["c00", "c01", "c02"]
    time.sleep(0.002)
    # c04 and c07 change after the snapshot: both are still returned at their old places
    write(engine, {**series(9)[4], "status": "amended"}, {**series(9)[7], "effectiveDateTime": "2023-01-01"})
    page = follow(engine, next_url(page) or "")
    assert ids(page) == ["c03", "c04", "c05"] and page["entry"][1]["resource"]["status"] == "final"
    page = follow(engine, next_url(page) or "")
    assert ids(page) == ["c06", "c07", "c08"] and next_url(page) is None


def test_snapshot_too_old_and_bad_cursors(engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    write(engine, *series(6))
    page = run(engine, "Observation", "code=2345-7&_count=2")
    url = next_url(page) or ""
    cursor = dict(parse_qsl(urlsplit(url).query))["_cursor"]
    with pytest.raises(InputError, match="other parameters"):
        run(engine, "Observation", [("code", "2093-3"), ("_count", "2"), ("_cursor", cursor)])
    with pytest.raises(InputError, match="not a cursor"):
        run(engine, "Observation", [("code", "2345-7"), ("_count", "2"), ("_cursor", "garbage!")])
    monkeypatch.setattr(search_module, "MAX_CHANGED", 2)
    time.sleep(0.002)
    write(engine, *[{**o, "status": "amended"} for o in series(6)[:3]])
    with pytest.raises(GoneError, match="repeat the search"):
        follow(engine, url)


# ---------------------------------------------------------------------------------------- _count, _total
def test_count_total_and_summary(world: sa.Engine) -> None:
    page = run(world, "Observation", "code=2345-7&_count=2&_total=accurate")
    assert page["total"] == 4 and len(ids(page)) == 2 and next_url(page)
    assert follow(world, next_url(page) or "")["total"] == 4  # carried by the cursor
    # by default the total is given when it costs nothing: when the first page holds every match
    page = run(world, "Observation", "code=2345-7&_count=2")
    assert "total" not in page and len(ids(page)) == 2
    assert run(world, "Observation", "code=2345-7&_count=4")["total"] == 4
    assert run(world, "Observation", "code=nothing")["total"] == 0
    page = run(world, "Observation", "code=2345-7&_count=0")
    assert page["total"] == 4 and page["entry"] == [] and next_url(page) is None
    assert run(world, "Observation", "code=2345-7&_summary=count")["total"] == 4
    page = run(world, "Observation", "code=2345-7&_total=none")
    assert "total" not in page and len(ids(page)) == 4
    page = run(world, "Observation", "_count=1000&_total=accurate", max_page_size=3)
    assert len(ids(page)) == 3 and page["total"] == 6
    assert len(ids(run(world, "Observation", [], page_size=5))) == 5


# ---------------------------------------------------------------------------------------- _include
def test_include_result_and_subject(world: sa.Engine) -> None:
    page = run(world, "DiagnosticReport", "patient=pa&_include=DiagnosticReport:result"
                                          "&_include=DiagnosticReport:subject")
    assert ids(page) == ["r1"]
    assert [(e["resource"]["resourceType"], e["resource"]["id"]) for e in page["entry"]
            if e["search"]["mode"] == "include"] == [("Observation", "o1"), ("Observation", "o2"), ("Patient", "pa")]
    included = {e["resource"]["id"]: e for e in page["entry"]}
    assert included["o1"]["fullUrl"] == f"{BASE}/Observation/o1"
    assert included["o1"]["resource"]["valueQuantity"]["value"] == 5.4
    assert page["total"] == 1  # includes are not counted
    page = run(world, "DiagnosticReport", "_include=DiagnosticReport:*")
    assert set(ids(page, "include")) == {"o1", "o2", "o3", "o4", "pa", "pb", "sr1"}
    page = run(world, "DiagnosticReport", "_id=r1&_include=DiagnosticReport:subject:Group")
    assert ids(page, "include") == []
    page = run(world, "Observation", "code=2345-7&_include=Observation:patient")
    assert set(ids(page, "include")) == {"pa", "pb", "pc"}
    # a deleted resource is never included
    delete(world, "Observation", "o2")
    page = run(world, "DiagnosticReport", "_id=r1&_include=DiagnosticReport:result")
    assert ids(page, "include") == ["o1"]


def test_read_condition_on_matches_and_includes(world: sa.Engine) -> None:
    r = resources.c
    only_pa = r.patient_id == "pa"
    page = run(world, "Observation", "code=2345-7", read_condition=only_pa)
    assert ids(page) == ["o1"] and page["total"] == 1
    page = run(world, "DiagnosticReport", "_include=DiagnosticReport:result&_include=DiagnosticReport:subject",
               read_condition=sa.and_(r.resource_type != "Patient", r.id != "o2"))
    assert ids(page) == ["r1", "r2"] and ids(page, "include") == ["o1", "o3", "o4"]

    def per_type(principal: Any, rtype: str) -> Any:
        if rtype == "Patient":
            from router.errors import ForbiddenError
            raise ForbiddenError("no patients")
        return r.patient_id == "pb" if rtype == "Observation" else None

    page = run(world, "DiagnosticReport", "_include=DiagnosticReport:result&_include=DiagnosticReport:subject",
               read_condition=per_type)
    assert ids(page) == ["r1", "r2"] and ids(page, "include") == ["o3", "o4"]


def test_deleted_resources_never_match(world: sa.Engine) -> None:
    delete(world, "Observation", "o1")
    delete(world, "Patient", "pb")
    assert found(world, "Observation", "code=2345-7") == {"o3", "o4", "o6"}
    assert found(world, "Observation", "_id=o1") == set()
    assert found(world, "Observation", "identifier=urn:lab:obs|o1") == set()
    assert found(world, "Patient", "name=jose") == set()
    assert run(world, "Observation", "code=2345-7")["total"] == 3
    assert found(world, "Observation", "date:missing=true") == {"o6"}  # o1 is not "without a date" either


# ---------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(("rtype", "query", "message"), [
    ("Observation", "colour=blue", "unknown search parameter 'colour' for Observation"),
    ("Observation", "pateint=pa", "unknown search parameter 'pateint' for Observation; did you mean 'patient'?"),
    ("Patient", "birthDate=1980", "did you mean 'birthdate'"),
    ("Observation", "code:exact=x", "does not support the modifier :exact"),
    ("Observation", "date=2024-5-1", "'2024-5-1' is not a date"),
    ("Observation", "date=xx2024", "is not a date"),
    ("Observation", "value-quantity=abc", "'abc' is not a number"),
    ("Observation", "date:missing=maybe", "takes true or false"),
    ("Observation", "_count=many", "_count must be a whole number"),
    ("Observation", "subject.name=x", "chained search parameters are not supported"),
    ("Observation", "_revinclude=Provenance:target", "_revinclude is not supported"),
    ("Observation", "_include=DiagnosticReport:result", "only parameters of the searched type"),
    ("DiagnosticReport", "_include=DiagnosticReport:code", "no reference parameter 'code'"),
    ("DiagnosticReport", "_include=DiagnosticReport:reslt", "did you mean 'result'"),
    ("Observation", "_total=some", "_total must be"),
    ("observation", "code=x", "is not a resource type"),
])
def test_errors_name_the_parameter(world: sa.Engine, rtype: str, query: str, message: str) -> None:
    with pytest.raises(InputError) as info:
        run(world, rtype, query)
    assert message in str(info.value)


# ---------------------------------------------------------------------------------------- date precision property
PRECISIONS = {  # strftime of the parameter value, and the range it covers
    "year": ("%Y", lambda d: (d.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0),
                              d.replace(year=d.year + 1, month=1, day=1, hour=0, minute=0, second=0, microsecond=0))),
    "month": ("%Y-%m", lambda d: (d.replace(day=1, hour=0, minute=0, second=0, microsecond=0),
                                  (d.replace(day=28) + timedelta(days=4)).replace(day=1, hour=0, minute=0, second=0,
                                                                                  microsecond=0))),
    "day": ("%Y-%m-%d", lambda d: (d.replace(hour=0, minute=0, second=0, microsecond=0),
                                   d.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1))),
    "minute": ("%Y-%m-%dT%H:%MZ", lambda d: (d.replace(second=0, microsecond=0),
                                             d.replace(second=0, microsecond=0) + timedelta(minutes=1))),
    "second": ("%Y-%m-%dT%H:%M:%SZ", lambda d: (d.replace(microsecond=0),
                                                d.replace(microsecond=0) + timedelta(seconds=1))),
}
instants = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2030, 12, 30)).map(
    lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000, tzinfo=UTC))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(instants, min_size=1, max_size=6), near=st.integers(0, 5),
       shift=st.sampled_from([timedelta(0), timedelta(milliseconds=1), timedelta(seconds=-1), timedelta(minutes=1),
                              timedelta(days=-1), timedelta(days=31), timedelta(days=365)]),
       precision=st.sampled_from(list(PRECISIONS)), offset=st.sampled_from([0, 3, -5]))
def test_date_precision_matches_exactly_the_instants_within(
        engine: sa.Engine, values: list[datetime], near: int, shift: timedelta, precision: str, offset: int) -> None:
    """A date parameter at precision P (eq) matches exactly the stored instants within the range P
    covers; ne the others; lt/ge and gt/le split them at its start and end. Instants are stored
    with millisecond precision and in an arbitrary zone offset."""
    fmt, cover = PRECISIONS[precision]
    q = values[near % len(values)] + shift  # often right at an edge of one of the values
    lo, hi = cover(q)
    text = q.strftime(fmt)
    zone = timezone(timedelta(hours=offset))
    docs = [obs(f"h{i}", "Patient/ph", loinc("h"), effectiveDateTime=v.astimezone(zone).isoformat(
        timespec="milliseconds")) for i, v in enumerate(values)]
    with engine.connect() as conn:
        with conn.begin() as t:
            Store().transaction(conn, tx(*docs))

            def hits(prefix: str) -> set[str]:
                bundle = search(conn, "Observation", [("date", prefix + text), ("_count", "50")], principal=ROUTER,
                                base_url=BASE)
                return set(ids(bundle))

            within = {f"h{i}" for i, v in enumerate(values) if lo <= v < hi}
            before = {f"h{i}" for i, v in enumerate(values) if v < lo}
            after = {f"h{i}" for i, v in enumerate(values) if v >= hi}
            assert hits("") == hits("eq") == within
            assert hits("ne") == before | after
            assert hits("lt") == hits("eb") == before
            assert hits("ge") == within | after
            assert hits("gt") == hits("sa") == after
            assert hits("le") == before | within
            t.rollback()


# ---------------------------------------------------------------------------------------- date criteria with a date sort
def test_date_criteria_with_a_sort_on_the_same_date(engine: sa.Engine) -> None:
    """With _sort on a date parameter, date criteria on it also bound the walk along the sort
    index (or replace the criterion where that is exact): the matches must be those without the
    sort, in the sort's order. Resources with several ranges (Timing events) and open Periods
    make the sort row differ from the matching row."""
    docs = [
        obs("t1", None, loinc("x"), effectiveTiming={"event": ["2024-01-01T10:00:00Z", "2024-06-01T10:00:00Z",
                                                                "2024-12-31T10:00:00Z"]}),
        obs("t2", None, loinc("x"), effectiveTiming={"event": ["2023-03-01", "2025-03-01"]}),
        obs("p1", None, loinc("x"), effectivePeriod={"start": "2024-05-01T00:00:00Z"}),
        obs("p2", None, loinc("x"), effectivePeriod={"end": "2024-02-01"}),
        obs("p3", None, loinc("x"), effectivePeriod={"start": "2023-01-01", "end": "2024-07-01"}),
        obs("d1", None, loinc("x"), effectiveDateTime="2024-06-01T10:00:00Z"),
        obs("d2", None, loinc("x"), effectiveDateTime="2024-06"),
        obs("d3", None, loinc("x"), effectiveDateTime="2024"),
        obs("n1", None, loinc("x")),
    ]
    write(engine, *docs)
    order = {sort: find(engine, "Observation", [("_sort", sort)]) for sort in ("date", "-date")}
    assert order["-date"][:2] == ["p1", "t2"] and order["-date"][-1] == "n1"  # open end first, no date last
    assert order["date"][:2] == ["p2", "p3"]  # open start first
    now = epoch("2024-06-20T00:00:00+00:00")
    for prefix in ("", "eq", "ne", "gt", "ge", "lt", "le", "sa", "eb", "ap"):
        for value in ("2024-06", "2024-06-01", "2024", "2023-12-31T23:00Z"):
            query = [("date", prefix + value)]
            matches = found(engine, "Observation", query, now=now)
            for sort, full in order.items():
                for count in ("100", "2"):
                    page = run(engine, "Observation", [*query, ("_sort", sort), ("_count", count)], now=now)
                    got = ids(page)
                    while (url := next_url(page)) is not None:
                        page = follow(engine, url, now=now)
                        got += ids(page)
                    assert got == [i for i in full if i in matches], (prefix + value, sort, count)
    assert found(engine, "Observation", "date=2024-06-01&date=ge2024-06-01&_sort=-date") == {"d1", "t1"}
    assert find(engine, "Observation", "date=lt2024-01-01,gt2024-12-31&_sort=-date") == ["p1", "t2", "p3", "p2"]
