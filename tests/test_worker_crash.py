"""Against real RabbitMQ and PostgreSQL: a `router worker` killed with SIGKILL in the middle of its
batches loses nothing, and a second worker finishes the queue with every message in effect once."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from router import journal
from router.store.tables import resources
from router.envelope import Envelope
from router.transport.base import route_queues
from router.transport.rabbitmq import RabbitMQTransport
from tests.support.hl7 import oru
from tests.support.proc import RouterProcess, router_env

ROUTES = """
settings:
  plugins: [tests.support.faults]
routes:
  - name: lab
    source: mllp
    accept: [ORU^R01]
    mapping: tests.support.faults:to_bundle
    destinations: [store, {{type: flaky, switch: "{switch}", log: "{log}", delay: 0.02}}]
    batch_size: 50
"""

N = 2000
pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres, pytest.mark.chaos]


def count(engine: sa.Engine, status: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(journal.messages)
                                .where(journal.messages.c.status == status)).scalar_one())


def wait(pred, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_sigkill_mid_batch_loses_nothing_and_duplicates_nothing(tmp_path: Path, rabbitmq_url: str,
                                                                 postgres_url: str, namespace: str) -> None:
    log = tmp_path / "writes.log"
    (tmp_path / "routes.yaml").write_text(ROUTES.format(switch=tmp_path / "never", log=log))
    env = router_env(ROUTER_BROKER_URL=rabbitmq_url, ROUTER_DATABASE_URL=postgres_url, ROUTER_NAMESPACE=namespace,
                     PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    engine = sa.create_engine(postgres_url)
    transport = RabbitMQTransport(rabbitmq_url, namespace=namespace)
    q = route_queues(namespace, "lab", delays=(1.0, 2.0, 4.0, 8.0), jitter=0.1)
    try:
        transport.setup([q])
        envs = [Envelope(route="lab", raw=oru(f"K{i}"), sender="LIS|LAB", control_id=f"K{i}",
                         content_type="x-application/hl7-v2+er7", headers={"message_type": "ORU^R01"})
                for i in range(N)]
        transport.publish_many(q.work, envs)
        first = RouterProcess(["worker"], tmp_path, env)
        try:
            wait(lambda: log.exists() and len(log.read_text().split()) >= 300, 60, "the first worker to get going")
            first.proc.kill()  # SIGKILL: no chance to finish or ack anything
            first.proc.wait(10)
        finally:
            first.kill()
        done_before = count(engine, "processed")
        assert 0 < done_before < N, "the kill must land in the middle of the run"
        second = RouterProcess(["worker"], tmp_path, env)
        try:
            wait(lambda: count(engine, "processed") >= N, 120, "all messages processed")
            assert second.terminate() == 0
        finally:
            second.kill()
        ids = {e.id for e in envs}
        with engine.connect() as conn:
            rows = conn.execute(sa.select(journal.messages.c.id, journal.messages.c.status)).all()
            n_res = conn.execute(sa.select(sa.func.count()).select_from(resources)).scalar_one()
            versions = {v for (v,) in conn.execute(sa.select(resources.c.version_id))}
        assert {r.id for r in rows} == ids and {r.status for r in rows} == {"processed"}
        assert n_res == N and versions == {1}  # each message's records written once
        written = log.read_text().split()
        assert set(written) == ids  # the non-transactional destination got every message (at least once)
        assert transport.depth(q.work) == 0 and transport.depth(q.dlq) == 0
    finally:
        transport.close()
        engine.dispose()
