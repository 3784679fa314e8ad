"""The engine's database (journal and record store share it): URL defaults and engine set-up."""
from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event

metadata = sa.MetaData()


def database_url(explicit: str | None = None, data_dir: str = "var") -> str:
    url = explicit or os.environ.get("ROUTER_DATABASE_URL")
    if url:
        return url
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{Path(data_dir).resolve()}/router.db"


def make_engine(url: str) -> sa.Engine:
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


def create_schema(engine: sa.Engine) -> None:
    # import the modules that define tables so they are in the metadata
    from . import journal  # noqa: F401
    from .destinations import store  # noqa: F401

    metadata.create_all(engine)
