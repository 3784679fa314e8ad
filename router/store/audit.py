"""The audit log: one append-only row per read and write through the API and per write by the router.

A row says when, who (client id and role), what (action, resource type and id, the patient
compartment), the outcome (allowed, denied, error), why (``detail``: a reason or error code) and
which request it belonged to. This module only ever INSERTs and SELECTs: there is no update or
delete function, and ``install_append_only`` adds database triggers that reject UPDATE, DELETE
(and on PostgreSQL TRUNCATE) of ``store_audit`` for everyone else.

Patient data never goes in: ``patient_id`` is the Patient's resource id, never a name or an
identifier value, and ``detail`` is for reasons and codes only. As a last line of defence, runs of
9 or more digits (a СНИЛС, an ЕНП, a policy number) in ``detail`` are masked, and it is cut to
500 characters.
"""
from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import sqlalchemy as sa

from ..db import insert_rows
from .principal import Principal
from .tables import audit

Outcome = Literal["allowed", "denied", "error"]
OUTCOMES: tuple[Outcome, ...] = ("allowed", "denied", "error")
DETAIL_MAX = 500
_DIGIT_RUN = re.compile(r"\d(?:[\s-]?\d){8,}")
_FIELDS = ("resource_type", "resource_id", "patient_id", "outcome", "detail", "request_id")


def scrub(detail: str | None) -> str | None:
    """Mask digit runs that may be identifier values and bound the length."""
    if detail is None:
        return None
    return _DIGIT_RUN.sub("***", str(detail))[:DETAIL_MAX]


def _row(principal: Principal, action: str, at: float, *, resource_type: str | None = None,
         resource_id: str | None = None, patient_id: str | None = None, outcome: str = "allowed",
         detail: str | None = None, request_id: str | None = None) -> dict[str, Any]:
    if outcome not in OUTCOMES:
        raise ValueError(f"audit outcome must be one of {', '.join(OUTCOMES)}, not {outcome!r}")
    return {"at": at, "client_id": principal.client_id[:128], "role": principal.role, "action": action[:32],
            "resource_type": resource_type, "resource_id": resource_id, "patient_id": patient_id,
            "outcome": outcome, "detail": scrub(detail), "request_id": request_id[:64] if request_id else None}


def record(conn: sa.Connection, principal: Principal, action: str, *, resource_type: str | None = None,
           resource_id: str | None = None, patient_id: str | None = None, outcome: Outcome = "allowed",
           detail: str | None = None, request_id: str | None = None) -> None:
    """Append one row (in the caller's transaction)."""
    conn.execute(audit.insert().values(**_row(
        principal, action, time.time(), resource_type=resource_type, resource_id=resource_id,
        patient_id=patient_id, outcome=outcome, detail=detail, request_id=request_id)))


def record_many(conn: sa.Connection, rows: Iterable[Mapping[str, Any]]) -> int:
    """Append many rows in one statement (the router's batch path). Each row is a mapping with
    ``principal`` and ``action`` and, optionally, the keyword arguments of ``record``. Returns
    how many rows were written."""
    now = time.time()
    out = []
    for r in rows:
        extra = set(r) - {"principal", "action", *_FIELDS}
        if extra:
            raise ValueError(f"unknown audit fields: {', '.join(sorted(extra))}")
        out.append(_row(r["principal"], r["action"], now, **{k: r[k] for k in _FIELDS if k in r}))
    insert_rows(conn, audit, out)
    return len(out)


def search(conn: sa.Connection, *, client_id: str | None = None, role: str | None = None,
           patient_id: str | None = None, resource_type: str | None = None, resource_id: str | None = None,
           action: str | None = None, outcome: str | None = None, since: float | None = None,
           until: float | None = None, request_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Rows matching every given filter, newest first (`since` inclusive, `until` exclusive)."""
    a = audit.c
    stmt = sa.select(audit)
    for col, value in ((a.client_id, client_id), (a.role, role), (a.patient_id, patient_id),
                       (a.resource_type, resource_type), (a.resource_id, resource_id), (a.action, action),
                       (a.outcome, outcome), (a.request_id, request_id)):
        if value is not None:
            stmt = stmt.where(col == value)
    if since is not None:
        stmt = stmt.where(a.at >= since)
    if until is not None:
        stmt = stmt.where(a.at < until)
    stmt = stmt.order_by(a.seq.desc()).limit(limit)
    return [{str(k): v for k, v in r._mapping.items()} for r in conn.execute(stmt)]


_PG_APPEND_ONLY = [
    """CREATE OR REPLACE FUNCTION store_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION USING MESSAGE = 'store_audit is append-only: ' || TG_OP || ' refused',
    ERRCODE = 'insufficient_privilege';
END $$""",
    "DROP TRIGGER IF EXISTS store_audit_no_change ON store_audit",
    "CREATE TRIGGER store_audit_no_change BEFORE UPDATE OR DELETE ON store_audit "
    "FOR EACH ROW EXECUTE FUNCTION store_audit_append_only()",
    "DROP TRIGGER IF EXISTS store_audit_no_truncate ON store_audit",
    "CREATE TRIGGER store_audit_no_truncate BEFORE TRUNCATE ON store_audit "
    "FOR EACH STATEMENT EXECUTE FUNCTION store_audit_append_only()",
]
_SQLITE_APPEND_ONLY = [
    "CREATE TRIGGER IF NOT EXISTS store_audit_no_update BEFORE UPDATE ON store_audit "
    "BEGIN SELECT RAISE(ABORT, 'store_audit is append-only: UPDATE refused'); END",
    "CREATE TRIGGER IF NOT EXISTS store_audit_no_delete BEFORE DELETE ON store_audit "
    "BEGIN SELECT RAISE(ABORT, 'store_audit is append-only: DELETE refused'); END",
]


def install_append_only(conn: sa.Connection) -> None:
    """Make store_audit reject UPDATE and DELETE (and TRUNCATE on PostgreSQL) with database
    triggers. Idempotent; run it inside a transaction after the table exists (a migration step).
    The function and triggers are created in the schema of the table (the first one on the
    search_path). Retention, if ever needed, is a deliberate DBA operation: drop the trigger."""
    name = conn.dialect.name
    statements = _PG_APPEND_ONLY if name == "postgresql" else _SQLITE_APPEND_ONLY if name == "sqlite" else None
    if statements is None:
        raise NotImplementedError(f"append-only audit needs PostgreSQL or SQLite, not {name}")
    for sql in statements:
        conn.exec_driver_sql(sql)
