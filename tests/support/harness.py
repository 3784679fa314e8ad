"""An in-process engine for tests: config, transport, database, intake and workers, no listeners."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from router import journal
from router.config.loader import load_config
from router.db import create_schema, make_engine
from router.store.tables import resources
from router.envelope import Envelope
from router.intake import Intake, JournalWriter
from router.runtime import build_routes
from router.transport import open_transport
from router.worker import Worker


class Harness:
    def __init__(self, tmp_path: Path, routes_yaml: str, *, broker_url: str | None, database_url: str,
                 namespace: str) -> None:
        (tmp_path / "routes.yaml").write_text(routes_yaml)
        self.tmp = tmp_path
        self.config = load_config(tmp_path / "routes.yaml")
        self.engine = make_engine(database_url)
        create_schema(self.engine)
        self.transport = open_transport(broker_url, namespace=namespace, data_dir=str(tmp_path))
        self.routes = build_routes(self.config, self.transport, namespace)
        self.transport.setup([r.queues for r in self.routes])
        self.intake = Intake(self.routes, self.transport, JournalWriter(None))
        self.worker = Worker(self.routes, self.transport, self.engine)

    def start(self) -> Harness:
        self.worker.start()
        return self

    def send(self, raw: bytes, content_type: str | None = None) -> Envelope:
        accepted = self.intake.prepare(raw, source="test", content_type=content_type)
        self.intake.enqueue_sync(accepted)
        return accepted.envelope

    def statuses(self) -> dict[str, str]:
        with self.engine.connect() as conn:
            return {r.id: r.status for r in conn.execute(sa.select(journal.messages.c.id, journal.messages.c.status))}

    def row(self, message_id: str) -> dict:
        with self.engine.connect() as conn:
            return dict(conn.execute(sa.select(journal.messages).where(journal.messages.c.id == message_id)).one()._mapping)

    def resource_count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(resources)).scalar_one())

    def versions(self) -> list[int]:
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(sa.select(resources.c.version_id))]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; journal: {self.statuses()}")

    def close(self) -> None:
        self.worker.stop()
        for r in self.routes:
            r.close()
        self.transport.close()
        self.engine.dispose()
