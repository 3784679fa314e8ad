"""Migrations build exactly the schema the models describe, on SQLite and PostgreSQL, and
`router db upgrade` / `router db current` work from the CLI."""
from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from router import migrate
from router.db import make_engine, metadata
from tests.support.proc import router_env, run_cli


def test_migrations_match_the_models(database_url: str) -> None:
    engine = make_engine(database_url)
    migrate.upgrade(engine)
    migrate.import_models()
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    engine.dispose()
    # the PostgreSQL-only prefix index is created only there, by design
    diffs = [d for d in diffs if not (isinstance(d, tuple) and d[0] in ("add_index", "remove_index")
                                      and d[1].name == "ix_idx_string_prefix")]
    assert diffs == []
    assert migrate.current(make_engine(database_url)) == migrate.head()


def test_audit_log_is_append_only_after_migration(database_url: str) -> None:
    engine = make_engine(database_url)
    migrate.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO store_audit (at, client_id, role, action, outcome) "
                             "VALUES (1, 'c', 'admin', 'read', 'allowed')"))
    with pytest.raises(sa.exc.DatabaseError):
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE store_audit SET client_id = 'x'"))
    with pytest.raises(sa.exc.DatabaseError):
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM store_audit"))
    engine.dispose()


def test_router_db_upgrade_and_current(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/db.sqlite"
    first = run_cli(["db", "upgrade", "--database-url", url], tmp_path, router_env())
    assert first.returncode == 0, first.stderr
    assert f"database at revision {migrate.head()} (was None)" in first.stdout
    again = run_cli(["db", "upgrade", "--database-url", url], tmp_path, router_env())
    assert "(up to date)" in again.stdout
    cur = run_cli(["db", "current", "--database-url", url], tmp_path, router_env())
    assert f"current: {migrate.head()}" in cur.stdout and f"latest:  {migrate.head()}" in cur.stdout


def test_processes_starting_together_on_a_fresh_postgresql_schema_take_turns(postgres_url: str) -> None:
    """A listener and its workers started at once all run the migrations: none may fail."""
    import concurrent.futures

    from router.db import make_engine
    from router.migrate import current, head, upgrade

    engines = [make_engine(postgres_url) for _ in range(4)]
    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(upgrade, engines))  # raises if one of them failed
        assert current(engines[0]) == head()
    finally:
        for e in engines:
            e.dispose()
