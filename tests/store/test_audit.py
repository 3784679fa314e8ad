"""The audit log: rows written one by one and in a batch, searched by every filter, append-only
in the database, and `router audit`. Every test runs on SQLite and on PostgreSQL."""
from __future__ import annotations

import json
import time

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from router.cli import main
from router.store import audit
from router.store.principal import ROUTER, Principal
from router.store.tables import audit as audit_table

LAB = Principal("lab1-client", "lab", organization="lab1")
CITIZEN = Principal("citizen-1", "citizen", patient="p1")


def test_record_and_search(engine: sa.Engine) -> None:
    t0 = time.time()
    with engine.begin() as conn:
        audit.record(conn, LAB, "create", resource_type="Observation", resource_id="obs1", patient_id="p1",
                     request_id="req-1")
        audit.record(conn, CITIZEN, "read", resource_type="Patient", resource_id="p2", patient_id="p2",
                     outcome="denied", detail="outside what role citizen may read", request_id="req-2")
        audit.record(conn, CITIZEN, "search", resource_type="Observation", patient_id="p1", request_id="req-3")
    with engine.connect() as conn:
        rows = audit.search(conn)
        assert [r["request_id"] for r in rows] == ["req-3", "req-2", "req-1"]  # newest first
        denied = rows[1]
        assert denied["client_id"] == "citizen-1" and denied["role"] == "citizen"
        assert denied["action"] == "read" and denied["outcome"] == "denied"
        assert (denied["resource_type"], denied["resource_id"], denied["patient_id"]) == ("Patient", "p2", "p2")
        assert denied["detail"] == "outside what role citizen may read"
        assert t0 <= denied["at"] <= time.time()

        def ids(**kw: object) -> list[str]:
            return [r["request_id"] for r in audit.search(conn, **kw)]  # type: ignore[arg-type]

        assert ids(client_id="citizen-1") == ["req-3", "req-2"]
        assert ids(role="lab") == ["req-1"]
        assert ids(patient_id="p1") == ["req-3", "req-1"]
        assert ids(resource_type="Observation") == ["req-3", "req-1"]
        assert ids(resource_type="Patient", resource_id="p2") == ["req-2"]
        assert ids(action="create") == ["req-1"]
        assert ids(outcome="denied") == ["req-2"]
        assert ids(outcome="error") == []
        assert ids(request_id="req-3") == ["req-3"]
        assert ids(since=t0 - 1, until=time.time() + 1, limit=2) == ["req-3", "req-2"]
        assert ids(since=time.time() + 60) == []
        assert ids(until=t0 - 60) == []


def test_record_many_writes_the_routers_batch_in_one_go(engine: sa.Engine) -> None:
    rows = [{"principal": ROUTER, "action": "create", "resource_type": "Observation", "resource_id": f"o{i}",
             "patient_id": f"p{i % 3}" if i % 2 else None} for i in range(50)]
    rows.append({"principal": ROUTER, "action": "transaction", "outcome": "error", "detail": "ValidationError"})
    with engine.begin() as conn:
        assert audit.record_many(conn, rows) == 51
        assert audit.record_many(conn, []) == 0
    with engine.connect() as conn:
        found = audit.search(conn, client_id="router", limit=1000)
        assert len(found) == 51
        assert {r["role"] for r in found} == {"router"}
        assert sorted(r["resource_id"] for r in found if r["resource_id"]) == sorted(f"o{i}" for i in range(50))
        assert [r["detail"] for r in audit.search(conn, outcome="error")] == ["ValidationError"]
        assert len(audit.search(conn, patient_id="p1", limit=1000)) == len([i for i in range(50) if i % 2 and i % 3 == 1])


def test_record_many_rejects_unknown_fields(engine: sa.Engine) -> None:
    with engine.begin() as conn, pytest.raises(ValueError, match="unknown audit fields: name"):
        audit.record_many(conn, [{"principal": ROUTER, "action": "create", "name": "Иванов"}])


def test_outcome_must_be_known(engine: sa.Engine) -> None:
    with engine.begin() as conn, pytest.raises(ValueError, match="outcome"):
        audit.record(conn, LAB, "read", outcome="maybe")  # type: ignore[arg-type]


def test_identifier_values_never_reach_the_detail(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        audit.record(conn, LAB, "create", outcome="error",
                     detail="СНИЛС 112-233-445 95 check failed; ЕНП 1234567890123456; policy 123456789; code 42" + "x" * 900)
    with engine.connect() as conn:
        detail = audit.search(conn)[0]["detail"]
    assert "445" not in detail and "1234567890123456" not in detail and "123456789" not in detail
    assert detail.startswith("СНИЛС *** check failed; ЕНП ***; policy ***; code 42")
    assert len(detail) == audit.DETAIL_MAX


def test_there_is_no_way_to_change_the_log_in_the_module() -> None:
    public = {n for n in dir(audit) if not n.startswith("_")}
    assert not {n for n in public if any(w in n for w in ("update", "delete", "purge", "remove", "truncate"))}


def test_append_only_triggers_refuse_update_and_delete(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        audit.record(conn, LAB, "read", resource_type="Observation", resource_id="obs1")
        audit.install_append_only(conn)
        audit.install_append_only(conn)  # idempotent
    a = audit_table.c
    for stmt in (audit_table.update().values(outcome="denied"), audit_table.delete().where(a.client_id == "lab1-client")):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            with engine.begin() as conn:
                conn.execute(stmt)
    if engine.dialect.name == "postgresql":
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            with engine.begin() as conn:
                conn.exec_driver_sql("TRUNCATE store_audit")
    with engine.begin() as conn:  # appending still works
        audit.record(conn, LAB, "read", resource_type="Observation", resource_id="obs2")
    with engine.connect() as conn:
        assert [(r["resource_id"], r["outcome"]) for r in audit.search(conn)] == [("obs2", "allowed"),
                                                                                   ("obs1", "allowed")]


def test_router_audit_command(engine: sa.Engine, database_url: str) -> None:
    with engine.begin() as conn:
        audit.record(conn, LAB, "create", resource_type="Observation", resource_id="obs1", patient_id="p1",
                     request_id="req-1")
        audit.record(conn, CITIZEN, "read", resource_type="Patient", resource_id="p2", patient_id="p2",
                     outcome="denied", detail="forbidden", request_id="req-2")
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(main, ["audit", "--database-url", database_url, *args])
        assert result.exit_code == 0, result.output
        return result.output

    text = run()
    assert "lab1-client" in text and "Observation/obs1" in text and "citizen-1" in text and "    forbidden" in text
    lines = [json.loads(line) for line in run("--outcome", "denied", "--json").splitlines()]
    assert [(r["client_id"], r["resource_id"]) for r in lines] == [("citizen-1", "p2")]
    assert [json.loads(x)["request_id"] for x in run("--patient", "p1", "--json").splitlines()] == ["req-1"]
    assert [json.loads(x)["request_id"] for x in run("--role", "lab", "--type", "Observation", "--action", "create",
                                                     "--since", "1h", "--json").splitlines()] == ["req-1"]
    assert "no audit records found" in run("--client-id", "nobody")
    assert "no audit records found" in run("--until", "2000-01-01")
