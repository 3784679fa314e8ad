"""The whole lab journey against real RabbitMQ and PostgreSQL with the real CLI: a laboratory
sends ORU^R01 over MLLP (plain and TLS) with `router send`, gets AA only once the message is
durable, and the result is found through the FHIR API by patient; a resend creates nothing new, a
correction makes a new version; PostgreSQL stopped mid-stream: senders still get AA (the broker
holds the messages) and everything lands once the database is back; refused messages get AR with
an ERR segment."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.support.hl7 import free_port
from tests.support.proc import RouterProcess, router_env, run_cli
from tests.test_mllp import make_certs

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres, pytest.mark.chaos]
SNILS = "urn:oid:1.2.643.100.3|11223344595"

ROUTES = """
settings:
  mllp: {{port: {mllp}}}
  http: {{port: {http}}}
routes:
  - name: lab-results
    source: mllp
    accept: [ORU^R01]
    mapping: oru-r01
    destinations: [store]
    retry: {{attempts: 30, initial_delay: 0.5, max_delay: 2, jitter: 0}}
  - name: lab-results-tls
    source: {{type: mllp, port: {tls}, tls: {{cert_file: certs/server.pem, key_file: certs/server.key}}}}
    accept: [ORU^R01]
    mapping: oru-r01
    destinations: [store]
    retry: {{attempts: 30, initial_delay: 0.5, max_delay: 2, jitter: 0}}
"""


def pg_cluster(action: str) -> None:
    version = os.listdir("/etc/postgresql")[0]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action], check=True,
                   capture_output=True, timeout=120)


def test_lab_result_journey(tmp_path: Path, rabbitmq_url: str, postgres_url: str, namespace: str) -> None:
    if not Path("/etc/postgresql").is_dir():
        pytest.skip("needs the local PostgreSQL cluster tools to stop and start the database")
    ports = {"mllp": free_port(), "http": free_port(), "tls": free_port()}
    (tmp_path / "routes.yaml").write_text(ROUTES.format(**ports))
    shutil.copytree(ROOT / "mappings", tmp_path / "mappings")
    certs = make_certs(tmp_path / "certs")
    env = router_env(ROUTER_BROKER_URL=rabbitmq_url, ROUTER_DATABASE_URL=postgres_url, ROUTER_NAMESPACE=namespace)
    key = run_cli(["apikey", "create", "--client-id", "journey", "--role", "admin"], tmp_path, env)
    assert key.returncode == 0, key.stderr
    headers = {"X-API-Key": key.stdout.strip()}
    api = f"http://127.0.0.1:{ports['http']}/fhir"
    sample = (ROOT / "samples" / "oru-r01-glucose.hl7").read_bytes()
    proc = RouterProcess(["run"], tmp_path, env, http_port=ports["http"])

    def send(data: bytes, name: str, *extra: str) -> subprocess.CompletedProcess[str]:
        (tmp_path / name).write_bytes(data)
        return run_cli(["send", str(tmp_path / name), "--port", str(ports["mllp"]), "--timeout", "60", *extra],
                       tmp_path, env, timeout=120)

    def search(query: str) -> dict:
        r = httpx.get(f"{api}/{query}", headers=headers, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()

    def wait(pred, what: str, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if pred():
                    return
            except (httpx.HTTPError, AssertionError):
                pass
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what}\n{proc.output()[-3000:]}")

    try:
        proc.wait_healthy()
        # 1. plain MLLP: AA, then the result is in the store, found by patient
        sent = send(sample, "a.hl7")
        assert sent.returncode == 0 and " AA" in sent.stdout, sent.stdout + sent.stderr
        wait(lambda: search(f"Patient?identifier={SNILS}")["entry"], "the patient")
        pid = search(f"Patient?identifier={SNILS}")["entry"][0]["resource"]["id"]
        wait(lambda: len(search(f"Observation?patient={pid}").get("entry", [])) == 2, "two observations")
        reports = search(f"DiagnosticReport?patient={pid}&_include=DiagnosticReport:result")
        assert [e["search"]["mode"] for e in reports["entry"]].count("match") == 1
        assert [e["search"]["mode"] for e in reports["entry"]].count("include") == 2
        # 2. a resend: AA again, nothing new
        again = send(sample, "b.hl7")
        assert " AA" in again.stdout
        time.sleep(2)
        obs = search(f"Observation?patient={pid}")["entry"]
        assert len(obs) == 2 and {e["resource"]["meta"]["versionId"] for e in obs} == {"1"}
        # 3. a correction over TLS: a new version of the same Observation
        corrected = (ROOT / "samples" / "oru-r01-glucose-corrected.hl7").read_bytes()
        (tmp_path / "c.hl7").write_bytes(corrected)
        tls = run_cli(["send", str(tmp_path / "c.hl7"), "--port", str(ports["tls"]), "--tls",
                       "--ca-file", str(certs["ca"]), "--timeout", "60"], tmp_path, env, timeout=120)
        assert " AA" in tls.stdout, tls.stdout + tls.stderr

        def corrected_version() -> bool:
            versions = {e["resource"]["status"]: e["resource"]["meta"]["versionId"]
                        for e in search(f"Observation?patient={pid}")["entry"]}
            return versions.get("corrected") == "2"
        wait(corrected_version, "the corrected observation as version 2")
        assert len(search(f"Observation?patient={pid}")["entry"]) == 2
        # 4. refused: AR with an ERR segment, exit code 1
        refused = send(sample.replace(b"ORU^R01^ORU_R01", b"ZZZ^Z99"), "d.hl7")
        assert refused.returncode == 1 and " AR " in refused.stdout and "ERR" in refused.stdout
        # 5. PostgreSQL stops mid-stream: AA still means durable (RabbitMQ), all lands afterwards
        msgs = [sample.replace(b"SAMPLE0001", f"DOWN{i:03d}".encode()).replace(b"FL456", f"FD{i:03d}".encode())
                for i in range(10)]
        pg_cluster("stop")
        try:
            during = send(b"".join(msgs), "e.hl7")
            assert during.stdout.count(" AA") == 10, during.stdout + during.stderr
        finally:
            pg_cluster("start")
        wait(lambda: len(search(f"DiagnosticReport?patient={pid}&_count=50").get("entry", [])) == 11,
             "all ten reports sent while the database was down", timeout=120)
        assert proc.terminate() == 0
    finally:
        proc.kill()
