"""The real CLI end to end: `router run` taking MLLP and HTTP, answering after durable enqueue,
`router messages` and `router dlq` as an operator uses them, and a clean stop on SIGTERM.
Runs on the embedded defaults and on RabbitMQ + PostgreSQL."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.hl7 import ack_code, free_port, mllp_exchange, oru
from tests.support.proc import RouterProcess, router_env, run_cli

ROUTES = """
settings:
  plugins: [tests.support.faults]
routes:
  - name: lab
    source: mllp
    accept: [ORU^R01]
    mapping: tests.support.faults:to_bundle
    destinations: [store, {{type: flaky, switch: "{switch}", log: "{log}"}}]
    retry: {{attempts: 2, initial_delay: 0.2, jitter: 0}}
  - name: adt
    source: mllp
    accept: ["ADT^*"]
    destinations: [{{type: file, path: out/adt}}]
  - name: bundles
    source: {{type: http, path: /fhir-in, content_types: [application/fhir+json, application/json]}}
    destinations: [{{type: file, path: out/bundles}}]
"""


@pytest.fixture(params=["embedded", "rabbitmq+postgresql"])
def env(request: pytest.FixtureRequest, tmp_path: Path, namespace: str) -> dict[str, str]:
    (tmp_path / "routes.yaml").write_text(ROUTES.format(switch=tmp_path / "down", log=tmp_path / "writes.log"))
    if request.param == "embedded":
        return router_env(PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    return router_env(ROUTER_BROKER_URL=request.getfixturevalue("rabbitmq_url"),
                      ROUTER_DATABASE_URL=request.getfixturevalue("postgres_url"),
                      ROUTER_NAMESPACE=namespace, PYTHONPATH=str(Path(__file__).resolve().parent.parent))


@pytest.fixture
def router(tmp_path: Path, env: dict[str, str]) -> Iterator[tuple[RouterProcess, int, int]]:
    mllp, http = free_port(), free_port()
    proc = RouterProcess(["run", "--mllp-port", str(mllp), "--http-port", str(http)], tmp_path, env, http_port=http)
    try:
        proc.wait_healthy()
        yield proc, mllp, http
    finally:
        proc.kill()


def cli(tmp_path: Path, env: dict[str, str], *args: str) -> str:
    res = run_cli(list(args), tmp_path, env)
    assert res.returncode == 0, res.stderr + res.stdout
    return res.stdout


def wait_status(tmp_path: Path, env: dict[str, str], status: str, n: int, timeout: float = 30) -> list[dict]:
    import time

    deadline = time.monotonic() + timeout
    rows: list[dict] = []
    while time.monotonic() < deadline:
        rows = [json.loads(line) for line in cli(tmp_path, env, "messages", "--status", status, "--json").splitlines()]
        if len(rows) >= n:
            return rows
        time.sleep(0.3)
    raise AssertionError(f"expected {n} {status}, got {rows}")


def test_mllp_and_http_intake_journal_and_clean_stop(tmp_path: Path, env: dict[str, str], router) -> None:
    proc, mllp, http = router
    acks = mllp_exchange(mllp, [oru("E1"), oru("E2"), oru("E1"), oru("X1", mtype="ADT^A01"), oru("Z", mtype="ZZZ^Z01")])
    assert [ack_code(a) for a in acks] == ["AA", "AA", "AA", "AA", "AR"]
    assert b"ERR|" in acks[4] and b"ZZZ" in acks[4]
    r = httpx.post(f"http://127.0.0.1:{http}/fhir-in", content=b'{"resourceType": "Bundle", "type": "transaction"}',
                   headers={"content-type": "application/fhir+json"})
    assert r.status_code == 202 and r.json()["route"] == "bundles"
    bad = httpx.post(f"http://127.0.0.1:{http}/fhir-in", content=b'{"resourceType": ', headers={"content-type": "application/fhir+json"})
    assert bad.status_code == 400 and bad.json()["resourceType"] == "OperationOutcome"
    assert "not valid JSON" in bad.json()["issue"][0]["diagnostics"]
    wrong = httpx.post(f"http://127.0.0.1:{http}/fhir-in", content=b"hello", headers={"content-type": "text/plain"})
    assert wrong.status_code == 415 and wrong.json()["issue"][0]["code"] == "not-supported"
    processed = wait_status(tmp_path, env, "processed", 4)
    assert sorted(r["route"] for r in processed) == ["adt", "bundles", "lab", "lab"]
    dup = wait_status(tmp_path, env, "duplicate", 1)
    assert dup[0]["control_id"] == "E1"
    assert len(list((tmp_path / "out/adt").glob("*.hl7"))) == 1
    assert len(list((tmp_path / "out/bundles").glob("*.json"))) == 1
    one = json.loads(cli(tmp_path, env, "messages", "--id", processed[0]["id"], "--json"))
    # history is in time order, although intake's background "queued" row may be written after the worker's
    statuses = [h["status"] for h in one["history"]]
    assert statuses[-1] == "processed" and set(statuses) <= {"queued", "processed"}
    refused = wait_status(tmp_path, env, "refused", 1)
    assert refused[0]["control_id"] == "Z" and "no route accepts message type ZZZ^Z01" in refused[0]["error"]
    text = cli(tmp_path, env, "messages", "--control-id", "E2")
    assert "E2" in text and "processed" in text
    assert proc.terminate() == 0
    out = proc.output()
    assert "router stopped" in out and "Traceback" not in out


def test_dlq_list_show_replay_purge(tmp_path: Path, env: dict[str, str], router) -> None:
    proc, mllp, _ = router
    (tmp_path / "down").write_text("x")
    acks = mllp_exchange(mllp, [oru("D1"), oru("D2"), oru("D3")])
    assert [ack_code(a) for a in acks] == ["AA"] * 3
    dead = wait_status(tmp_path, env, "dead-lettered", 3)
    ids = sorted(r["id"] for r in dead)
    listing = cli(tmp_path, env, "dlq", "list")
    assert "3 message(s)" in listing and all(i in listing for i in ids)
    assert "DestinationUnavailable" in listing
    shown = cli(tmp_path, env, "dlq", "show", ids[0])
    assert "attempt 1:" in shown and "attempt 2:" in shown and "transient" in shown and "TEST^PATIENT" not in shown
    assert "TEST^PATIENT" in cli(tmp_path, env, "dlq", "show", ids[0], "--raw")
    (tmp_path / "down").unlink()
    assert "replayed 1 message(s)" in cli(tmp_path, env, "dlq", "replay", ids[0])
    wait_status(tmp_path, env, "processed", 1)
    res = run_cli(["dlq", "purge"], tmp_path, env)
    assert res.returncode != 0 and "--yes" in res.stderr
    assert "replayed 2 message(s)" in cli(tmp_path, env, "dlq", "replay", "--all", "--route", "lab")
    assert sorted(r["id"] for r in wait_status(tmp_path, env, "processed", 3)) == ids
    missing = run_cli(["dlq", "replay", "no-such-id"], tmp_path, env)
    assert missing.returncode == 1 and "not found" in missing.stderr
    # dead-letter one more and purge it
    (tmp_path / "down").write_text("x")
    mllp_exchange(mllp, [oru("D4")])
    wait_status(tmp_path, env, "dead-lettered", 1)
    assert "purged 1 message(s)" in cli(tmp_path, env, "dlq", "purge", "--yes")
    assert "no dead-lettered messages" in cli(tmp_path, env, "dlq", "list")
    assert proc.terminate() == 0


def test_run_refuses_an_invalid_routes_file(tmp_path: Path) -> None:
    (tmp_path / "routes.yaml").write_text("routes:\n  - name: x\n    source: mlp\n    destinations: [store]\n")
    res = run_cli(["run"], tmp_path, router_env())
    assert res.returncode == 2
    assert "routes.yaml:3:13: routes[0].source: unknown source type 'mlp'" in res.stderr and "Traceback" not in res.stderr


def test_shipped_routes_start_on_embedded_defaults_and_stop_on_ctrl_c(tmp_path: Path) -> None:
    """What `make run` does: the shipped routes.yaml, no broker, no database URL."""
    import shutil
    import signal

    root = Path(__file__).resolve().parent.parent
    shutil.copy(root / "routes.yaml", tmp_path / "routes.yaml")
    shutil.copytree(root / "mappings", tmp_path / "mappings")
    mllp, http = free_port(), free_port()
    proc = RouterProcess(["run", "--mllp-port", str(mllp), "--http-port", str(http)], tmp_path, router_env(),
                         http_port=http)
    try:
        proc.wait_healthy()
        health = httpx.get(f"http://127.0.0.1:{http}/health").json()
        assert health["transport"] == "embedded" and health["database"] == "ok"
        sample = (root / "samples" / "oru-r01-glucose.hl7").read_bytes()
        assert [ack_code(a) for a in mllp_exchange(mllp, [sample])] == ["AA"]
        assert (tmp_path / "var" / "router.db").exists() and (tmp_path / "var" / "queue.db").exists()
        proc.proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.proc.wait(30) == 0
        assert "router stopped" in proc.output() and "Traceback" not in proc.output()
    finally:
        proc.kill()
