"""Shared fixtures. Services are real: RabbitMQ and PostgreSQL on 127.0.0.1.

Outside CI a missing service skips the tests that need it; with CI=true it fails them.
"""
from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
RABBITMQ_URL = os.environ.get("TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
POSTGRES_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg://root@127.0.0.1:5432/test")
ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    if _port_open(host, port):
        return
    msg = f"{name} is not reachable on {host}:{port}"
    if IN_CI:
        pytest.fail(msg + " (CI=true: services are required, not skipped)")
    pytest.skip(msg)


_NAMESPACES: set[str] = set()  # the queue namespaces this session used; their queues go at the end


@pytest.fixture
def namespace() -> str:
    """A unique queue namespace per test, so tests never see each other's messages."""
    ns = f"t{uuid.uuid4().hex[:10]}"
    _NAMESPACES.add(ns)
    return ns


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Delete the RabbitMQ queues of this session's namespaces (durable queues left by thousands
    of tests slow the shared broker's restarts down to a hang). Best effort: it needs rabbitmqctl
    on this machine to list queues; without it, or without the broker, nothing is done."""
    import shutil
    import subprocess

    if not _NAMESPACES or shutil.which("rabbitmqctl") is None or not _port_open("127.0.0.1", 5672):
        return
    try:
        out = subprocess.run(["rabbitmqctl", "list_queues", "-q", "--no-table-headers", "name"],
                             capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return
    names = [q for q in (line.strip() for line in out.splitlines()) if q.split(".", 1)[0] in _NAMESPACES]
    if not names:
        return
    import pika

    try:
        conn = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
        ch = conn.channel()
        for q in names:
            ch.queue_delete(q)
        conn.close()
    except Exception:  # noqa: BLE001 - clean-up only
        pass


@pytest.fixture
def rabbitmq_url() -> str:
    require_service("RabbitMQ", "127.0.0.1", 5672)
    return RABBITMQ_URL


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh schema-isolated PostgreSQL URL (own database schema per test)."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    import sqlalchemy as sa

    schema = f"t_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(POSTGRES_URL, pool_pre_ping=True)  # survives a database restart in the test
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in POSTGRES_URL else "?"
    yield f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/router.db"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Runs a test against SQLite and against PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/router.db"
    return str(request.getfixturevalue("postgres_url"))
