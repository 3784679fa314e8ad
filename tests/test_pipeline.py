"""The worker pipeline end to end in process, over both transports: processing, resends,
permanent and transient failures, the dead-letter queue and replay, poison isolation."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.harness import Harness
from tests.support.hl7 import oru

ROUTES = """
settings:
  plugins: [tests.support.faults]
routes:
  - name: lab
    source: mllp
    accept: [ORU^R01]
    mapping: tests.support.faults:to_bundle
    destinations:
      - store
      - {{type: flaky, switch: "{switch}", log: "{log}"}}
    retry: {{attempts: 3, initial_delay: 0.3, multiplier: 2, max_delay: 5, jitter: 0}}
    batch_size: 20
    batch_wait: 0.05
"""


@pytest.fixture(params=["embedded", "rabbitmq"])
def harness(request: pytest.FixtureRequest, tmp_path: Path, namespace: str, sqlite_url: str) -> Iterator[Harness]:
    broker = request.getfixturevalue("rabbitmq_url") if request.param == "rabbitmq" else None
    switch, log = tmp_path / "down", tmp_path / "writes.log"
    h = Harness(tmp_path, ROUTES.format(switch=switch, log=log), broker_url=broker, database_url=sqlite_url,
                namespace=namespace)
    h.switch, h.log = switch, log  # type: ignore[attr-defined]
    yield h.start()
    h.close()


def writes(h: Harness) -> list[str]:
    p: Path = h.log  # type: ignore[attr-defined]
    return p.read_text().split() if p.exists() else []


def test_messages_are_processed_into_the_store_and_journal(harness: Harness) -> None:
    envs = [harness.send(oru(f"C{i}")) for i in range(30)]
    harness.wait_for(lambda: sum(s == "processed" for s in harness.statuses().values()) == 30, what="30 processed")
    assert harness.resource_count() == 30
    assert sorted(writes(harness)) == sorted(e.id for e in envs)
    row = harness.row(envs[0].id)
    assert (row["route"], row["sender"], row["control_id"], row["attempts"]) == ("lab", "LIS|LAB", "C0", 0)


def test_a_resend_is_recognised_and_not_processed_twice(harness: Harness) -> None:
    first = harness.send(oru("SAME"))
    harness.wait_for(lambda: harness.statuses().get(first.id) == "processed")
    again = [harness.send(oru("SAME")) for _ in range(3)]
    harness.wait_for(lambda: all(harness.statuses().get(e.id) == "duplicate" for e in again), what="duplicates")
    assert writes(harness) == [first.id]
    assert harness.resource_count() == 1 and harness.versions() == [1]
    assert harness.row(again[0].id)["duplicate_of"] == first.id


def test_resends_inside_one_batch_are_processed_once(harness: Harness) -> None:
    envs = [harness.send(oru("BATCHDUP")) for _ in range(5)]
    harness.wait_for(lambda: all(harness.statuses().get(e.id) in ("processed", "duplicate") for e in envs))
    st = [harness.statuses()[e.id] for e in envs]
    assert st.count("processed") == 1 and st.count("duplicate") == 4
    assert len(writes(harness)) == 1


def test_permanent_failure_is_dead_lettered_at_once_and_does_not_block_others(harness: Harness) -> None:
    before = [harness.send(oru(f"B{i}")) for i in range(5)]
    poison = harness.send(oru("P1", extra="POISON"))
    after = [harness.send(oru(f"A{i}")) for i in range(5)]
    harness.wait_for(lambda: harness.statuses().get(poison.id) == "dead-lettered", what="poison dead-lettered")
    harness.wait_for(lambda: all(harness.statuses().get(e.id) == "processed" for e in before + after))
    dlq = harness.transport.dlq_browse(harness.routes[0].queues)
    assert [e.id for e in dlq] == [poison.id]
    dead = dlq[0]
    assert dead.attempts == 1 and dead.errors[0].error == "MappingError" and not dead.errors[0].transient
    assert dead.raw == poison.raw and dead.control_id == "P1" and dead.route == "lab"
    assert "MappingError: poison message" in harness.row(poison.id)["error"]


def test_transient_failure_is_retried_with_growing_delays_then_dead_lettered_then_replayed(harness: Harness) -> None:
    harness.switch.write_text("down")  # type: ignore[attr-defined]
    env = harness.send(oru("T1"))
    harness.wait_for(lambda: harness.statuses().get(env.id) == "dead-lettered", timeout=30, what="dead-lettered")
    [dead] = harness.transport.dlq_browse(harness.routes[0].queues)
    assert dead.attempts == 3
    assert [e.error for e in dead.errors] == ["DestinationUnavailable"] * 3
    assert all(e.transient for e in dead.errors)
    gaps = [b.at - a.at for a, b in zip(dead.errors, dead.errors[1:])]
    assert gaps[0] >= 0.3 * 0.9 and gaps[1] >= 0.6 * 0.9, gaps  # 0.3 s then 0.6 s (multiplier 2)
    assert gaps[1] > gaps[0]
    assert writes(harness) == [] and harness.resource_count() == 0  # the store write was rolled back
    # the fault is gone: replay puts it back on its route
    harness.switch.unlink()  # type: ignore[attr-defined]
    assert harness.transport.dlq_replay(harness.routes[0].queues, {env.id}) == [env.id]
    harness.wait_for(lambda: harness.statuses().get(env.id) == "processed", what="processed after replay")
    assert writes(harness) == [env.id] and harness.resource_count() == 1
    assert harness.transport.dlq_browse(harness.routes[0].queues) == []


def test_store_keeps_one_version_when_content_unchanged_and_bumps_on_change(harness: Harness) -> None:
    a = harness.send(oru("V1", order="ORD-X", value="5.4"))
    harness.wait_for(lambda: harness.statuses().get(a.id) == "processed")
    same = harness.send(oru("V2", order="ORD-X", value="5.4"))  # new control id, same content
    harness.wait_for(lambda: harness.statuses().get(same.id) == "processed")
    assert harness.resource_count() == 1 and harness.versions() == [1]
    corrected = harness.send(oru("V3", order="ORD-X", value="6.1"))
    harness.wait_for(lambda: harness.statuses().get(corrected.id) == "processed")
    assert harness.resource_count() == 1 and harness.versions() == [2]


CHAIN = """
routes:
  - name: first
    source: mllp
    accept: [ORU^R01]
    destinations: [{{type: amqp, route: second}}, {{type: file, path: "{out1}"}}]
  - name: second
    source: {{type: http, path: /second}}
    destinations: [{{type: file, path: "{out2}"}}]
"""


@pytest.mark.parametrize("kind", ["embedded", "rabbitmq"])
def test_a_route_hands_over_to_another_route(kind: str, request: pytest.FixtureRequest, tmp_path: Path,
                                            namespace: str, sqlite_url: str) -> None:
    broker = request.getfixturevalue("rabbitmq_url") if kind == "rabbitmq" else None
    h = Harness(tmp_path, CHAIN.format(out1=tmp_path / "o1", out2=tmp_path / "o2"), broker_url=broker,
                database_url=sqlite_url, namespace=namespace).start()
    try:
        env = h.send(oru("H1"))
        h.wait_for(lambda: list(h.statuses().values()).count("processed") == 2, what="both routes processed")
        rows = {h.row(i)["route"]: h.row(i) for i in h.statuses()}
        assert rows["first"]["id"] == env.id and rows["second"]["id"] != env.id
        assert rows["second"]["control_id"] == "H1"
        assert [p.read_bytes() for p in (tmp_path / "o2").iterdir()] == [env.raw]
    finally:
        h.close()


def test_router_writes_to_the_store_are_audited(harness: Harness) -> None:
    import sqlalchemy as sa

    from router.store.tables import audit

    a = harness.send(oru("AU1", order="ORD-AU", value="1"))
    harness.wait_for(lambda: harness.statuses().get(a.id) == "processed")
    b = harness.send(oru("AU2", order="ORD-AU", value="2"))
    harness.wait_for(lambda: harness.statuses().get(b.id) == "processed")
    with harness.engine.connect() as conn:
        rows = conn.execute(sa.select(audit.c.client_id, audit.c.role, audit.c.action, audit.c.resource_type,
                                      audit.c.request_id, audit.c.outcome).order_by(audit.c.seq)).all()
    assert [tuple(r) for r in rows] == [("router", "router", "create", "Basic", a.id, "allowed"),
                                        ("router", "router", "update", "Basic", b.id, "allowed")]
