"""The real `router run` on the embedded defaults (no broker, no database URL) serving the FHIR API
next to the routes: an API key from `router apikey create`, a bearer token signed with the HS256
secret named in routes.yaml, the CapabilityStatement, a transaction and searches over HTTP, and a
Bundle routed into the store through an HTTP source that the API then finds."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson

from router.envelope import Envelope
from tests.support.hl7 import free_port
from tests.support.proc import RouterProcess, router_env, run_cli

SECRET = "e2e-test-secret-of-at-least-32-bytes!!"
ROUTES = """
settings:
  api:
    page_size: 2
    jwt: {issuer: "https://idp.example", audience: "router-fhir", secret_env: ROUTER_TEST_JWT_SECRET}
routes:
  - name: bundles
    source: {type: http, path: /fhir-in, content_types: [application/fhir+json]}
    mapping: tests.api.test_api_e2e:json_document
    destinations: [store]
"""
FHIR = "application/fhir+json"


def json_document(env: Envelope) -> dict[str, Any]:
    """The route's mapping: the body is already a FHIR transaction Bundle."""
    return orjson.loads(env.raw)  # type: ignore[no-any-return]


def bundle(order: str, value: float) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:p", "request": {"method": "POST", "url": "Patient"}, "resource": {
            "resourceType": "Patient", "identifier": [{"system": "urn:oid:1.2.643.100.3", "value": "123-456-789 64"}],
            "name": [{"family": "Петрова"}]}},
        {"fullUrl": "urn:uuid:o", "request": {"method": "POST", "url": "Observation"}, "resource": {
            "resourceType": "Observation", "status": "final", "identifier": [{"system": "urn:lab:obs", "value": order}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
            "subject": {"reference": "urn:uuid:p"}, "valueQuantity": {"value": value, "unit": "mmol/L"}}},
    ]}


def test_router_run_serves_the_fhir_api(tmp_path: Path) -> None:
    (tmp_path / "routes.yaml").write_text(ROUTES)
    env = router_env(PYTHONPATH=str(Path(__file__).resolve().parents[2]), ROUTER_TEST_JWT_SECRET=SECRET)
    mllp, port = free_port(), free_port()
    proc = RouterProcess(["run", "--mllp-port", str(mllp), "--http-port", str(port)], tmp_path, env, http_port=port)
    try:
        proc.wait_healthy()
        base = f"http://127.0.0.1:{port}/fhir"
        with httpx.Client(base_url=base, timeout=10) as http:
            meta = http.get("/metadata")
            assert meta.status_code == 200 and meta.headers["content-type"].startswith(FHIR)
            assert meta.json()["resourceType"] == "CapabilityStatement" and meta.json()["fhirVersion"] == "4.0.1"
            anon = http.get("/Observation")
            assert anon.status_code == 401 and anon.json()["resourceType"] == "OperationOutcome"
            assert "Bearer" in anon.headers["www-authenticate"]

            created = run_cli(["apikey", "create", "--client-id", "e2e-admin", "--role", "admin"], tmp_path, env)
            assert created.returncode == 0, created.stderr
            key = {"X-API-Key": created.stdout.strip().splitlines()[-1]}

            r = http.post("", content=orjson.dumps(bundle("E2E-1", 5.5)), headers={**key, "Content-Type": FHIR})
            assert r.status_code == 200, r.text
            assert [e["response"]["status"] for e in r.json()["entry"]] == ["201 Created", "201 Created"]
            pid = r.json()["entry"][0]["response"]["location"].split("/")[1]
            r = http.post("", content=orjson.dumps(bundle("E2E-2", 6.1)), headers={**key, "Content-Type": FHIR})
            assert [e["response"]["status"] for e in r.json()["entry"]] == ["200 OK", "201 Created"]

            # the same Patient (СНИЛС upsert); two Observations, one per page
            page = http.get("/Observation", params={"subject": f"Patient/{pid}"}, headers=key).json()
            assert page["type"] == "searchset" and len(page["entry"]) == 2
            r = http.post("/Observation/_search", content=f"subject=Patient/{pid}&_count=1",
                          headers={**key, "Content-Type": "application/x-www-form-urlencoded"})
            links = {link["relation"]: link["url"] for link in r.json()["link"]}
            assert len(r.json()["entry"]) == 1 and links["next"].startswith(base)
            assert len(http.get(links["next"], headers=key).json()["entry"]) == 1

            # a bearer token signed with the secret routes.yaml names works the same
            token = jwt.encode({"iss": "https://idp.example", "aud": "router-fhir", "sub": "portal", "role": "citizen",
                                "patient": pid, "exp": int(time.time()) + 300}, SECRET, algorithm="HS256")
            mine = http.get("/Observation", params={"_count": 10}, headers={"Authorization": f"Bearer {token}"})
            assert mine.status_code == 200 and len(mine.json()["entry"]) == 2
            forged = jwt.encode({"iss": "https://idp.example", "aud": "router-fhir", "sub": "x", "role": "admin",
                                 "exp": int(time.time()) + 300}, "another-secret-of-32-bytes-or-more!!",
                                algorithm="HS256")
            assert http.get("/Patient", headers={"Authorization": f"Bearer {forged}"}).status_code == 401

            # a Bundle routed through the HTTP source reaches the same store
            r = httpx.post(f"http://127.0.0.1:{port}/fhir-in", content=orjson.dumps(bundle("ROUTED-1", 7.0)),
                           headers={"Content-Type": FHIR})
            assert r.status_code == 202
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                found = http.get("/Observation", params={"identifier": "urn:lab:obs|ROUTED-1"}, headers=key).json()
                if found.get("entry"):
                    break
                time.sleep(0.2)
            assert found["entry"][0]["resource"]["subject"]["reference"] == f"Patient/{pid}"
        assert "/fhir/{type}" in httpx.get(f"http://127.0.0.1:{port}/openapi.json").json()["paths"]
        assert proc.terminate() == 0
        assert "Traceback" not in proc.output()
    finally:
        proc.kill()


def test_router_api_serves_only_the_api(tmp_path: Path) -> None:
    (tmp_path / "routes.yaml").write_text(ROUTES)
    env = router_env(PYTHONPATH=str(Path(__file__).resolve().parents[2]), ROUTER_TEST_JWT_SECRET=SECRET)
    port = free_port()
    proc = RouterProcess(["api", "--http-port", str(port)], tmp_path, env, http_port=port)
    try:
        proc.wait_healthy()
        health = httpx.get(f"http://127.0.0.1:{port}/health").json()
        assert health["transport"] == "none" and health["routes"] == []
        assert httpx.get(f"http://127.0.0.1:{port}/fhir/metadata").status_code == 200
        assert httpx.post(f"http://127.0.0.1:{port}/fhir-in", content=b"{}").status_code in (404, 405)
        assert not (tmp_path / "var" / "queue.db").exists()
        assert proc.terminate() == 0
    finally:
        proc.kill()
    # a missing JWT secret stops it at start, with the reason
    res = run_cli(["api", "--http-port", str(free_port())], tmp_path,
                  router_env(PYTHONPATH=str(Path(__file__).resolve().parents[2])))
    assert res.returncode == 2 and "ROUTER_TEST_JWT_SECRET" in res.stderr and "Traceback" not in res.stderr
