"""The FHIR REST API in-process (fastapi.testclient), on SQLite and on PostgreSQL: transaction,
read/vread/history/search and paging, single-resource writes, the error statuses as
OperationOutcomes, access control (403) and the audit rows it leaves."""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from router.api.auth import create_api_key
from router.api.fhir import fhir_router
from router.config.schema import ApiSettings
from router.db import create_schema, make_engine
from router.store import audit
from router.store.identity import snils_check

with warnings.catch_warnings():  # this Starlette prefers the httpx2 fork; plain httpx works the same
    warnings.simplefilter("ignore", UserWarning)
    from fastapi.testclient import TestClient

SNILS = "urn:oid:1.2.643.100.3"
FHIR = "application/fhir+json"


def snils(first9: str) -> str:
    return f"{first9[:3]}-{first9[3:6]}-{first9[6:]} {snils_check(first9)}"


def tx(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


def post(full: str, resource: dict[str, Any]) -> dict[str, Any]:
    return {"fullUrl": full, "resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}


def patient(first9: str, family: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": SNILS, "value": snils(first9)}],
            "name": [{"family": family}], "gender": "female", "birthDate": "1985-02-03"}


def observation(subject: str, lab: str, n: int, value: float = 5.0) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final",
            "identifier": [{"system": f"urn:lab:{lab}:obs", "value": f"O-{subject[-8:]}-{n}"}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7", "display": "Glucose"}]},
            "subject": {"reference": subject}, "performer": [{"reference": f"Organization/{lab}"}],
            "valueQuantity": {"value": value, "unit": "mmol/L", "system": "http://unitsofmeasure.org",
                              "code": "mmol/L"}}


@dataclass
class Api:
    client: TestClient
    engine: sa.Engine
    keys: dict[str, str]
    alice: str  # Patient ids
    bob: str
    alice_obs: str  # Observation ids (performed by lab1)
    bob_obs: str

    def h(self, who: str | None, **extra: str) -> dict[str, str]:
        out = {"X-API-Key": self.keys[who]} if who else {}
        return {**out, **extra}

    def get(self, url: str, who: str | None = "admin", **headers: str) -> httpx.Response:
        return fhir(self.client.get(url, headers=self.h(who, **headers)))

    def send(self, method: str, url: str, body: Any, who: str | None = "admin", **headers: str) -> httpx.Response:
        content = body if isinstance(body, (bytes, str)) else httpx.Request("POST", "/", json=body).content
        hdrs = {"Content-Type": FHIR, **self.h(who, **headers)}
        return fhir(self.client.request(method, url, content=content, headers=hdrs))

    def audit_rows(self, **filters: Any) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return audit.search(conn, **filters)


def fhir(r: httpx.Response) -> httpx.Response:
    """Every answer is FHIR JSON and carries a request id; every error is an OperationOutcome."""
    assert r.headers["content-type"].startswith(FHIR), (r.status_code, r.headers, r.text)
    assert r.headers.get("x-request-id")
    if r.status_code >= 400:
        body = r.json()
        assert body["resourceType"] == "OperationOutcome", body
        assert body["issue"][0]["severity"] in ("error", "fatal") and body["issue"][0]["diagnostics"]
        assert "Traceback" not in r.text
    return r


def issue(r: httpx.Response) -> dict[str, Any]:
    return r.json()["issue"][0]  # type: ignore[no-any-return]


def created_id(resp: dict[str, Any], n: int) -> str:
    return str(resp["entry"][n]["response"]["location"].split("/")[1])


@pytest.fixture
def api(database_url: str, tmp_path: Path) -> Iterator[Api]:
    engine = make_engine(database_url)
    create_schema(engine)
    app = FastAPI()
    settings = ApiSettings(page_size=2, max_page_size=50)
    app.include_router(fhir_router(engine, settings, str(tmp_path)))
    with engine.begin() as conn:
        keys = {"admin": create_api_key(conn, "ops", "admin")}
    with TestClient(app) as client:
        seed = tx(
            {"resource": {"resourceType": "Organization", "id": "lab1", "name": "Lab One"},
             "request": {"method": "PUT", "url": "Organization/lab1"}},
            {"resource": {"resourceType": "Organization", "id": "lab2", "name": "Lab Two"},
             "request": {"method": "PUT", "url": "Organization/lab2"}},
            post("urn:uuid:a", patient("123456789", "Alice")),
            post("urn:uuid:b", patient("987654321", "Bob")),
            post("urn:uuid:oa", observation("urn:uuid:a", "lab1", 1)),
            post("urn:uuid:ob", observation("urn:uuid:b", "lab1", 1)),
        )
        r = client.post("/fhir", content=httpx.Request("POST", "/", json=seed).content,
                        headers={"X-API-Key": keys["admin"], "Content-Type": FHIR})
        assert r.status_code == 200, r.text
        resp = r.json()
        alice, bob = created_id(resp, 2), created_id(resp, 3)
        with engine.begin() as conn:
            keys["lab"] = create_api_key(conn, "lab-one", "lab", organization="lab1")
            keys["citizen"] = create_api_key(conn, "alice-app", "citizen", patient=alice)
            keys["pharmacy"] = create_api_key(conn, "apteka", "pharmacy", organization="ph1")
        yield Api(client, engine, keys, alice, bob, created_id(resp, 4), created_id(resp, 5))
    engine.dispose()


# ---------------------------------------------------------------------------------------- metadata
def test_metadata_is_public_and_lists_what_is_supported(api: Api) -> None:
    r = api.get("/fhir/metadata", who=None)
    assert r.status_code == 200
    cs = r.json()
    assert cs["resourceType"] == "CapabilityStatement" and cs["fhirVersion"] == "4.0.1"
    assert cs["kind"] == "instance" and FHIR in cs["format"]
    rest = cs["rest"][0]
    assert rest["mode"] == "server" and {"code": "transaction"} in rest["interaction"]
    by_type = {res["type"]: res for res in rest["resource"]}
    assert {"Patient", "Observation", "MedicationDispense"} <= set(by_type)
    obs = by_type["Observation"]
    assert {"read", "vread", "search-type", "history-instance"} <= {i["code"] for i in obs["interaction"]}
    params = {p["name"]: p["type"] for p in obs["searchParam"]}
    assert params.get("subject") == "reference" and params.get("code") == "token"
    assert "identifier" in {p["name"] for p in by_type["Patient"]["searchParam"]}
    # the OpenAPI document lists the FHIR routes
    assert "/fhir/{type}/{id}" in api.client.get("/openapi.json").json()["paths"]


# ---------------------------------------------------------------------------------------- reads
def test_transaction_then_read_vread_history_with_etags(api: Api) -> None:
    r = api.get(f"/fhir/Patient/{api.alice}")
    assert r.status_code == 200 and r.headers["etag"] == 'W/"1"' and r.headers["last-modified"].endswith("GMT")
    pat = r.json()
    assert pat["id"] == api.alice and pat["meta"]["versionId"] == "1"
    assert pat["identifier"][0]["value"] == "12345678964"  # the store's canonical СНИЛС
    # a transaction that changes her: the same СНИЛС finds her, version 2
    changed = {**patient("123456789", "Alice"), "gender": "other"}
    r = api.send("POST", "/fhir", tx(post("urn:uuid:x", changed)))
    assert r.status_code == 200 and r.json()["type"] == "transaction-response"
    entry = r.json()["entry"][0]["response"]
    assert entry["status"] == "200 OK" and entry["location"] == f"Patient/{api.alice}/_history/2"
    r = api.get(f"/fhir/Patient/{api.alice}")
    assert r.headers["etag"] == 'W/"2"' and r.json()["gender"] == "other"
    v1 = api.get(f"/fhir/Patient/{api.alice}/_history/1")
    assert v1.status_code == 200 and v1.headers["etag"] == 'W/"1"' and v1.json()["gender"] == "female"
    assert api.get(f"/fhir/Patient/{api.alice}/_history/3").status_code == 404
    assert api.get(f"/fhir/Patient/{api.alice}/_history/x").status_code == 404
    hist = api.get(f"/fhir/Patient/{api.alice}/_history").json()
    assert hist["type"] == "history" and hist["total"] == 2
    assert [e["response"]["etag"] for e in hist["entry"]] == ['W/"2"', 'W/"1"']
    assert [e["request"]["method"] for e in hist["entry"]] == ["PUT", "POST"]


def test_put_and_post_single_resources(api: Api) -> None:
    # PUT creates at the given id, then updates it
    org = {"resourceType": "Organization", "id": "ph1", "name": "Аптека №1"}
    r = api.send("PUT", "/fhir/Organization/ph1", org)
    assert r.status_code == 201 and r.headers["etag"] == 'W/"1"'
    assert r.headers["location"].endswith("/fhir/Organization/ph1/_history/1")
    r = api.send("PUT", "/fhir/Organization/ph1", {**org, "name": "Аптека №2"})
    assert r.status_code == 200 and r.headers["etag"] == 'W/"2"' and r.json()["name"] == "Аптека №2"
    r = api.send("PUT", "/fhir/Organization/ph1", {**org, "id": "other"})
    assert r.status_code == 400 and "differs" in issue(r)["diagnostics"]
    r = api.send("PUT", "/fhir/Organization/ph1", {"resourceType": "Patient"})
    assert r.status_code == 400
    # a pharmacy POSTs a dispense (its own): 201, then the same identifier again updates it
    rx = api.send("POST", "/fhir/MedicationRequest", {
        "resourceType": "MedicationRequest", "status": "active", "intent": "order",
        "identifier": [{"system": "urn:rx", "value": "RX-1"}], "subject": {"reference": f"Patient/{api.alice}"},
        "medicationCodeableConcept": {"text": "Metformin 500 mg"}})
    assert rx.status_code == 201
    dispense = {"resourceType": "MedicationDispense", "status": "completed", "id": "ignored-on-post",
                "identifier": [{"system": "urn:ph1:dispense", "value": "D-1"}],
                "subject": {"reference": f"Patient/{api.alice}"},
                "authorizingPrescription": [{"reference": f"MedicationRequest/{rx.json()['id']}"}],
                "performer": [{"actor": {"reference": "Organization/ph1"}}],
                "medicationCodeableConcept": {"text": "Metformin 500 mg"}, "quantity": {"value": 60}}
    r = api.send("POST", "/fhir/MedicationDispense", dispense, who="pharmacy")
    assert r.status_code == 201, r.text
    did = r.json()["id"]
    assert did != "ignored-on-post" and r.headers["location"].endswith(f"/MedicationDispense/{did}/_history/1")
    r = api.send("POST", "/fhir/MedicationDispense", {**dispense, "quantity": {"value": 30}}, who="pharmacy")
    assert r.status_code == 200 and r.json()["id"] == did and r.headers["etag"] == 'W/"2"'
    # a pharmacy cannot write a dispense of another pharmacy
    other = {**dispense, "identifier": [{"system": "urn:ph2:dispense", "value": "D-9"}],
             "performer": [{"actor": {"reference": "Organization/ph2"}}]}
    assert api.send("POST", "/fhir/MedicationDispense", other, who="pharmacy").status_code == 403


# ---------------------------------------------------------------------------------------- search
def test_search_get_post_and_paging(api: Api) -> None:
    more = [post(f"urn:uuid:o{n}", observation(f"Patient/{api.alice}", "lab1", n + 10, float(n)))
            for n in range(3)]
    assert api.send("POST", "/fhir", tx(*more)).status_code == 200
    r = api.get(f"/fhir/Observation?subject=Patient/{api.alice}")  # page_size 2: 4 matches
    page = r.json()
    assert page["resourceType"] == "Bundle" and page["type"] == "searchset"
    assert len(page["entry"]) == 2
    seen = [e["resource"]["id"] for e in page["entry"]]
    nxt = {link["relation"]: link["url"] for link in page["link"]}.get("next")
    assert nxt and nxt.startswith("http://testserver/fhir/Observation")
    while nxt:
        page = api.get(nxt).json()
        seen += [e["resource"]["id"] for e in page.get("entry", [])]
        nxt = {link["relation"]: link["url"] for link in page["link"]}.get("next")
    assert len(seen) == len(set(seen)) == 4 and api.alice_obs in seen and api.bob_obs not in seen
    # POST _search: the same, parameters in a form body
    r = fhir(api.client.post("/fhir/Observation/_search", content=f"subject=Patient/{api.alice}&_count=10",
                             headers={**api.h("admin"), "Content-Type": "application/x-www-form-urlencoded"}))
    assert r.status_code == 200
    assert sorted(e["resource"]["id"] for e in r.json()["entry"]) == sorted(seen)
    r = api.get(f"/fhir/Patient?identifier={SNILS}|{snils('987654321')}")  # canonicalised like stored ones
    assert [e["resource"]["id"] for e in r.json()["entry"]] == [api.bob]
    # the citizen's search only ever returns her own records
    r = api.get("/fhir/Observation?code=http://loinc.org|2345-7&_count=50", who="citizen")
    ids = {e["resource"]["id"] for e in r.json()["entry"]}
    assert api.alice_obs in ids and api.bob_obs not in ids


# ---------------------------------------------------------------------------------------- errors
def test_not_found_gone_and_unknown_type(api: Api) -> None:
    r = api.get("/fhir/Patient/does-not-exist")
    assert r.status_code == 404 and issue(r)["code"] == "not-found"
    r = api.get("/fhir/Observaton/1")
    assert r.status_code == 404 and "did you mean Observation" in issue(r)["diagnostics"]
    assert api.get("/fhir/observation?code=x").status_code == 404
    assert api.get("/fhir/Patient/bad$id").status_code == 400
    r = api.send("POST", "/fhir", tx({"request": {"method": "DELETE", "url": f"Observation/{api.bob_obs}"}}))
    assert r.status_code == 200 and r.json()["entry"][0]["response"]["status"] == "204 No Content"
    r = api.get(f"/fhir/Observation/{api.bob_obs}")
    assert r.status_code == 410 and issue(r)["code"] == "deleted"
    assert api.get(f"/fhir/Observation/{api.bob_obs}/_history/1").status_code == 200
    assert api.get(f"/fhir/Observation/{api.bob_obs}/_history/2").status_code == 410
    assert api.get(f"/fhir/Observation/{api.bob_obs}/_history").json()["total"] == 2
    # paths and methods that are not FHIR interactions here
    assert api.send("DELETE", f"/fhir/Patient/{api.alice}", b"").status_code == 405
    assert api.get("/fhir/Patient/a/b/c/d").status_code == 404


def test_conflict_validation_and_malformed_input(api: Api) -> None:
    both = {**patient("123456789", "Twin"), "identifier": [{"system": SNILS, "value": snils("123456789")},
                                                           {"system": SNILS, "value": snils("987654321")}]}
    r = api.send("POST", "/fhir", tx(post("urn:uuid:t", both)))
    assert r.status_code == 409 and issue(r)["code"] == "conflict"
    bad = patient("111222333", "Wrong")
    bad["identifier"][0]["value"] = "111-222-333 00"  # wrong check number
    r = api.send("POST", "/fhir/Patient", bad)
    assert r.status_code == 422 and "check number" in issue(r)["diagnostics"]
    r = api.send("POST", "/fhir", b'{"resourceType": "Bundle", ')
    assert r.status_code == 400 and "not valid JSON" in issue(r)["diagnostics"]
    assert api.send("POST", "/fhir", b"[1, 2]").status_code == 400
    r = api.send("POST", "/fhir", {"resourceType": "Bundle", "type": "collection"})
    assert r.status_code == 400 and "transaction" in issue(r)["diagnostics"]
    r = api.send("POST", "/fhir/Patient", b"<Patient/>", **{"Content-Type": "application/fhir+xml"})
    assert r.status_code == 415
    r = api.get("/fhir/Observation?colour=blue")
    assert r.status_code == 400 and "colour" in issue(r)["diagnostics"]
    r = fhir(api.client.post("/fhir/Observation/_search", content=b'{"a": 1}',
                             headers={**api.h("admin"), "Content-Type": "application/json"}))
    assert r.status_code == 415
    # nothing of the refused writes was stored
    r = api.get(f"/fhir/Patient?identifier={SNILS}|11122233300")
    assert r.json().get("entry", []) == []


def test_credentials_are_required(api: Api) -> None:
    for url in (f"/fhir/Patient/{api.alice}", "/fhir/Observation", f"/fhir/Patient/{api.alice}/_history"):
        r = api.get(url, who=None)
        assert r.status_code == 401 and issue(r)["code"] == "login"
        assert "X-API-Key" in r.headers["www-authenticate"]
    r = api.send("POST", "/fhir", tx(post("urn:uuid:z", patient("200300400", "Mallory"))), who=None)
    assert r.status_code == 401
    key_id = api.keys["admin"].split(".")[0]
    for bad in (f"{key_id}.wrong-secret", "rk0000000000000000.x", "garbage"):
        r = api.get(f"/fhir/Patient/{api.alice}", who=None, **{"X-API-Key": bad})
        assert r.status_code == 401
    r = api.get(f"/fhir/Patient/{api.alice}", who=None, Authorization="Bearer abc.def.ghi")
    assert r.status_code == 401 and "not accepted" in issue(r)["diagnostics"]  # no api.jwt configured


# ---------------------------------------------------------------------------------------- access + audit
def test_citizen_reads_only_her_own_records(api: Api) -> None:
    assert api.get(f"/fhir/Observation/{api.alice_obs}", who="citizen").status_code == 200
    assert api.get(f"/fhir/Patient/{api.alice}", who="citizen").status_code == 200
    r = api.get(f"/fhir/Observation/{api.bob_obs}", who="citizen", **{"X-Request-Id": "req-denied-1"})
    assert r.status_code == 403 and issue(r)["code"] == "forbidden"
    assert r.headers["x-request-id"] == "req-denied-1"
    assert api.get(f"/fhir/Patient/{api.bob}", who="citizen").status_code == 403
    assert api.get(f"/fhir/Observation/{api.bob_obs}/_history/1", who="citizen").status_code == 403
    assert api.get(f"/fhir/Observation/{api.bob_obs}/_history", who="citizen").status_code == 403
    assert api.get("/fhir/Claim?patient=x", who="citizen").status_code == 200  # her Claims: none
    # a citizen cannot write at all
    r = api.send("PUT", f"/fhir/Patient/{api.alice}", {**patient("123456789", "Alice"), "id": api.alice},
                 who="citizen")
    assert r.status_code == 403


def test_lab_writes_only_its_own_results(api: Api) -> None:
    mine = observation(f"Patient/{api.alice}", "lab1", 7)
    r = api.send("POST", "/fhir/Observation", mine, who="lab")
    assert r.status_code == 201
    theirs = observation(f"Patient/{api.alice}", "lab2", 8)
    r = api.send("POST", "/fhir", tx(post("urn:uuid:1", mine | {"status": "amended"}), post("urn:uuid:2", theirs)),
                 who="lab", **{"X-Request-Id": "req-lab-2"})
    assert r.status_code == 403 and "organisation" in issue(r)["diagnostics"]
    # all or nothing: the first entry's amendment was not kept
    assert api.get(r"/fhir/Observation?identifier=urn:lab:lab2:obs|O-" + api.alice[-8:] + "-8").json().get(
        "entry", []) == []
    res = api.get(f"/fhir/Observation?identifier=urn:lab:lab1:obs|O-{api.alice[-8:]}-7").json()["entry"]
    assert res[0]["resource"]["status"] == "final"
    denied = api.audit_rows(request_id="req-lab-2")
    assert len(denied) == 1 and denied[0]["outcome"] == "denied" and denied[0]["client_id"] == "lab-one"
    assert denied[0]["patient_id"] == api.alice and denied[0]["resource_type"] == "Observation"
    # a lab reads what it performed, not other types
    assert api.get(f"/fhir/Observation/{api.alice_obs}", who="lab").status_code == 200
    assert api.get("/fhir/Claim/anything", who="lab").status_code == 403
    assert api.get("/fhir/Coverage", who="lab").status_code == 403


def test_audit_rows_for_allowed_and_denied_phi_reads(api: Api) -> None:
    ok = api.get(f"/fhir/Observation/{api.alice_obs}", who="citizen", **{"X-Request-Id": "req-ok-1"})
    assert ok.status_code == 200 and ok.headers["x-request-id"] == "req-ok-1"
    no = api.get(f"/fhir/Observation/{api.bob_obs}", who="citizen", **{"X-Request-Id": "req-no-1"})
    assert no.status_code == 403
    [allowed] = api.audit_rows(request_id="req-ok-1")
    assert allowed["outcome"] == "allowed" and allowed["action"] == "read" and allowed["role"] == "citizen"
    assert allowed["client_id"] == "alice-app" and allowed["patient_id"] == api.alice
    assert (allowed["resource_type"], allowed["resource_id"]) == ("Observation", api.alice_obs)
    [denied] = api.audit_rows(request_id="req-no-1")
    assert denied["outcome"] == "denied" and denied["patient_id"] == api.bob and denied["resource_id"] == api.bob_obs
    # search, vread, history, writes, and requests without credentials leave rows too
    r = api.get(f"/fhir/Observation?subject=Patient/{api.alice}", who="lab")
    [search] = api.audit_rows(request_id=r.headers["x-request-id"])
    assert search["action"] == "search" and search["patient_id"] == api.alice and search["outcome"] == "allowed"
    r = api.get(f"/fhir/Observation/{api.alice_obs}/_history/1")
    assert api.audit_rows(request_id=r.headers["x-request-id"])[0]["action"] == "vread"
    r = api.get(f"/fhir/Observation/{api.alice_obs}", who=None)
    [anon] = api.audit_rows(request_id=r.headers["x-request-id"])
    assert anon["outcome"] == "denied" and anon["client_id"] == "anonymous"
    r = api.send("POST", "/fhir", tx(post("urn:uuid:n", observation(f"Patient/{api.bob}", "lab1", 3)),
                                     post("urn:uuid:m", observation(f"Patient/{api.alice}", "lab1", 4))))
    rows = api.audit_rows(request_id=r.headers["x-request-id"])
    assert sorted((row["action"], row["patient_id"]) for row in rows) == sorted(
        [("create", api.bob), ("create", api.alice)])
    # a generated request id when none (or a bad one) is sent
    r = api.get(f"/fhir/Patient/{api.alice}", **{"X-Request-Id": "bad id with spaces"})
    assert r.headers["x-request-id"] != "bad id with spaces" and len(r.headers["x-request-id"]) == 36


def test_body_limit_and_concurrent_creates_of_one_patient(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    import router.api.fhir as fhir_module

    monkeypatch.setattr(fhir_module, "MAX_BODY_BYTES", 200)
    r = api.send("POST", "/fhir/Patient", {**patient("200300400", "Long"), "text": {"div": "x" * 300}})
    assert r.status_code == 413 and issue(r)["code"] == "too-long"
    monkeypatch.undo()
    # the same new patient sent 6 times at once: one resource in the end, never a 409 or 500
    body = httpx.Request("POST", "/", json=patient("200300400", "Race")).content
    headers = {**api.h("admin"), "Content-Type": FHIR}

    def send(_: int) -> int:
        return api.client.post("/fhir/Patient", content=body, headers=headers).status_code

    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(send, range(6)))
    # the losers of the race on the СНИЛС are retried and update the winner's (SQLite may answer 503)
    assert statuses.count(201) == 1 and set(statuses) <= {200, 201, 503}, statuses
    found = api.get(f"/fhir/Patient?identifier={SNILS}|{snils('200300400')}").json()["entry"]
    assert len(found) == 1


def test_the_app_mounts_the_api_at_its_base_path_when_enabled(tmp_path: Path) -> None:
    from router.app import App, AppOptions

    def status(settings: str, url: str) -> int:
        (tmp_path / "routes.yaml").write_text(f"settings:\n  api: {settings}\nroutes: []\n")
        app = App(AppOptions(routes_file=str(tmp_path / "routes.yaml"), data_dir=str(tmp_path / "var"),
                             run_routes=False))
        try:
            return TestClient(app.http_app).get(url).status_code
        finally:
            app.close()

    assert status("{}", "/fhir/metadata") == 200
    assert status("{base_path: /api/r4}", "/api/r4/metadata") == 200
    assert status("{base_path: /api/r4}", "/fhir/metadata") == 404
    assert status("{enabled: false}", "/fhir/metadata") == 404
