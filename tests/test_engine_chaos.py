"""The whole engine against real RabbitMQ and PostgreSQL while the broker restarts under load:
senders get AA only for what was confirmed, intake and workers reconnect by themselves, and
every acknowledged message ends up processed exactly once."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from router import journal
from tests.support.hl7 import ack_code, free_port, mllp_exchange, oru
from tests.support.proc import RouterProcess, router_env
from tests.test_rabbitmq_transport import rabbitmqctl

ROUTES = """
routes:
  - name: lab
    source: mllp
    accept: [ORU^R01]
    destinations: [{type: file, path: out}]
    batch_size: 20
"""
pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres, pytest.mark.chaos]


def test_broker_restart_under_load_loses_nothing(tmp_path: Path, rabbitmq_url: str, postgres_url: str,
                                                  namespace: str) -> None:
    (tmp_path / "routes.yaml").write_text(ROUTES)
    mllp, http = free_port(), free_port()
    env = router_env(ROUTER_BROKER_URL=rabbitmq_url, ROUTER_DATABASE_URL=postgres_url, ROUTER_NAMESPACE=namespace)
    proc = RouterProcess(["run", "--mllp-port", str(mllp), "--http-port", str(http)], tmp_path, env, http_port=http)
    acked: list[str] = []
    refused: list[str] = []
    stop = threading.Event()

    def sender(k: int) -> None:
        i = 0
        while not stop.is_set():
            cid = f"S{k}-{i}"
            i += 1
            try:
                [ack] = mllp_exchange(mllp, [oru(cid)], timeout=40)
            except OSError:
                refused.append(cid)
                time.sleep(0.1)
                continue
            (acked if ack_code(ack) == "AA" else refused).append(cid)

    try:
        proc.wait_healthy()
        threads = [threading.Thread(target=sender, args=(k,), daemon=True) for k in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        stopped = False
        try:
            rabbitmqctl("stop_app")
            stopped = True
            time.sleep(2.0)
        finally:
            rabbitmqctl("start_app")
            rabbitmqctl("await_startup")
        assert stopped
        n_at_restart = len(acked)
        deadline = time.monotonic() + 30
        while len(acked) < n_at_restart + 40 and time.monotonic() < deadline:
            time.sleep(0.2)
        stop.set()
        for t in threads:
            t.join(45)
        assert len(acked) >= n_at_restart + 40, "intake did not recover after the broker restart"
        engine = sa.create_engine(postgres_url)
        q = sa.select(journal.messages.c.control_id).where(journal.messages.c.status == "processed")
        deadline = time.monotonic() + 60
        done: set[str] = set()
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                done = {r[0] for r in conn.execute(q)}
            if set(acked) <= done:
                break
            time.sleep(0.5)
        engine.dispose()
        missing = set(acked) - done
        assert not missing, f"{len(missing)} acknowledged messages never processed: {sorted(missing)[:10]}"
        # exactly once in effect: one output file per processed control id, never two
        assert len(list((tmp_path / "out").glob("*.hl7"))) == len(done)
        assert proc.terminate() == 0
    finally:
        stop.set()
        proc.kill()
