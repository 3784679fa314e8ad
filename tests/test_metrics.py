"""GET /metrics: Prometheus text with outcome counters per route, queue depths and worker
events, from `router run` and from `router worker --http-port` (embedded and RabbitMQ+PostgreSQL)."""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.hl7 import ack_code, free_port, mllp_exchange, oru
from tests.support.proc import RouterProcess, router_env

ROOT = Path(__file__).resolve().parent.parent
ROUTES = """
settings:
  plugins: [tests.support.faults]
routes:
  - name: lab
    source: mllp
    accept: [ORU^R01]
    mapping: tests.support.faults:to_bundle
    destinations: [store]
    retry: {attempts: 1}
"""


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    res = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(res.text) for s in fam.samples}


def wait_for(port: int, key: tuple[str, tuple[tuple[str, str], ...]], value: float, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    got: dict = {}
    while time.monotonic() < deadline:
        got = scrape(port)
        if got.get(key) == value:
            return got
        time.sleep(0.3)
    raise AssertionError(f"{key} never became {value}: {got}")


@pytest.fixture(params=["embedded", "rabbitmq+postgresql"])
def env(request: pytest.FixtureRequest, tmp_path: Path, namespace: str) -> dict[str, str]:
    (tmp_path / "routes.yaml").write_text(ROUTES)
    if request.param == "embedded":
        return router_env(PYTHONPATH=str(ROOT))
    return router_env(ROUTER_BROKER_URL=request.getfixturevalue("rabbitmq_url"),
                      ROUTER_DATABASE_URL=request.getfixturevalue("postgres_url"),
                      ROUTER_NAMESPACE=namespace, PYTHONPATH=str(ROOT))


@pytest.fixture
def router(tmp_path: Path, env: dict[str, str]) -> Iterator[tuple[int, int]]:
    mllp, http = free_port(), free_port()
    proc = RouterProcess(["run", "--mllp-port", str(mllp), "--http-port", str(http)], tmp_path, env, http_port=http)
    try:
        proc.wait_healthy()
        yield mllp, http
    finally:
        proc.kill()


def test_metrics_count_outcomes_per_route(router: tuple[int, int]) -> None:
    mllp, http = router
    acks = mllp_exchange(mllp, [oru("M1"), oru("M2"), oru("M3", extra="OBX|2|TX|X||POISON")])
    assert [ack_code(a) for a in acks] == ["AA", "AA", "AA"]
    processed = ("router_messages_settled_total", (("outcome", "processed"), ("route", "lab")))
    got = wait_for(http, processed, 2.0)
    got = wait_for(http, ("router_messages_settled_total", (("outcome", "dead-lettered"), ("route", "lab"))), 1.0)
    assert got[("router_queue_messages", (("queue", "dlq"), ("route", "lab")))] == 1.0
    assert got[("router_queue_messages", (("queue", "work"), ("route", "lab")))] == 0.0
    assert got[("router_worker_events_total", (("event", "processed"),))] == 2.0
    assert got[("router_worker_events_total", (("event", "dead_lettered"),))] == 1.0
    assert any(name == "router_info" for name, _ in got)


def test_worker_serves_metrics_without_the_fhir_api(tmp_path: Path, rabbitmq_url: str, postgres_url: str,
                                                   namespace: str) -> None:
    (tmp_path / "routes.yaml").write_text(ROUTES)
    env = router_env(ROUTER_BROKER_URL=rabbitmq_url, ROUTER_DATABASE_URL=postgres_url, ROUTER_NAMESPACE=namespace,
                     PYTHONPATH=str(ROOT))
    mllp, http, whttp = free_port(), free_port(), free_port()
    listener = RouterProcess(["run", "--no-workers", "--mllp-port", str(mllp), "--http-port", str(http)], tmp_path,
                             env, http_port=http)
    worker = RouterProcess(["worker", "--http-port", str(whttp)], tmp_path, env, http_port=whttp)
    try:
        listener.wait_healthy()
        worker.wait_healthy()
        assert [ack_code(a) for a in mllp_exchange(mllp, [oru("W1")])] == ["AA"]
        wait_for(whttp, ("router_messages_settled_total", (("outcome", "processed"), ("route", "lab"))), 1.0)
        assert httpx.get(f"http://127.0.0.1:{whttp}/fhir/metadata", timeout=5).status_code == 404
        listener_metrics = scrape(http)  # the listener runs no worker: depths, no outcome counters
        assert ("router_queue_messages", (("queue", "work"), ("route", "lab"))) in listener_metrics
        assert not any(name == "router_messages_settled_total" for name, _ in listener_metrics)
    finally:
        worker.kill()
        listener.kill()
