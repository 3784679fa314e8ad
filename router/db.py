"""The engine's database (journal and record store share it): URL defaults and engine set-up."""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from operator import itemgetter
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import sqlalchemy.exc as sa_exc
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
    """Bring the database to the latest schema revision (alembic migrations; see router.migrate)."""
    from .migrate import upgrade

    upgrade(engine)


_PG_ARRAY = {sa.String: "text", sa.Text: "text", sa.Float: "float8", sa.Integer: "int8", sa.LargeBinary: "bytea",
             sa.Boolean: "bool"}
# binary COPY needs each value in its column's exact type (int4 data into an int4 column, not int8)
_PG_COPY = {sa.String: "text", sa.Text: "text", sa.Float: "float8", sa.Integer: "int4", sa.LargeBinary: "bytea",
            sa.Boolean: "bool"}


def _pg_type(column: sa.Column[Any], types: dict[type, str] = _PG_ARRAY) -> str:
    for py, pg in types.items():
        if isinstance(column.type, py):
            return pg
    raise TypeError(f"no PostgreSQL type for column {column.name} ({column.type})")


def insert_rows(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]], conflict: str = "") -> None:
    """INSERT many rows in one round trip, on the batch hot path. Every row has the same keys.

    `conflict` is an SQL suffix valid on both databases (``ON CONFLICT (...) DO ...``, with
    ``excluded.col`` and the table name). Measured on 100-message batches (3 journal inserts of
    100 rows each, loaded machine): SQLAlchemy executemany on psycopg sends one statement per row,
    122 ms a batch; with insertmanyvalues, 76 ms (psycopg re-parses the long statement every time);
    one INSERT ... SELECT FROM unnest(arrays), 23-40 ms. See insert_tuples for how it is sent.
    """
    if not rows:
        return
    cols = list(rows[0])
    get = itemgetter(*cols)
    insert_tuples(conn, table, cols, [get(r) for r in rows] if len(cols) > 1 else [(get(r),) for r in rows],
                  conflict)


def insert_tuples(conn: sa.Connection, table: sa.Table, cols: Sequence[str], rows: list[tuple[Any, ...]],
                  conflict: str = "") -> None:
    """insert_rows for rows already as tuples in the order of `cols`.

    PostgreSQL: psycopg dumps the arrays of an ``INSERT ... SELECT FROM unnest(arrays)`` to text in
    pure Python, element by element: 21% of a worker's time at 80 rows a message (py-spy). So plain
    inserts on psycopg are a binary COPY (the rows are encoded by psycopg's C code, about a tenth of
    the cost); inserts with a conflict clause, which COPY cannot take, stay an INSERT ... SELECT
    FROM unnest with the arrays sent in binary (``%(x)b``: a third of the text cost; float columns
    are made floats, as a binary array cannot mix int and float). SQLite: the driver's executemany
    without SQLAlchemy's per-row parameter processing.
    """
    if not rows:
        return
    names = ", ".join(f'"{c}"' for c in cols)
    if conn.dialect.name == "postgresql":
        if not conflict and conn.dialect.driver == "psycopg":
            copy_rows(conn, table, cols, rows)
            return
        types = [_pg_type(table.c[c]) for c in cols]
        arrays = ", ".join(f"%(a{n})b::{t}[]" for n, t in enumerate(types))  # binary arrays: cheaper to dump
        sql = f'INSERT INTO "{table.name}" ({names}) SELECT * FROM unnest({arrays}) {conflict}'
        conn.exec_driver_sql(sql, {f"a{n}": [None if x is None else float(x) for x in col] if t == "float8" else list(col)
                                   for n, (t, col) in enumerate(zip(types, zip(*rows)))})
    else:
        marks = ", ".join("?" for _ in cols)
        conn.exec_driver_sql(f'INSERT INTO "{table.name}" ({names}) VALUES ({marks}) {conflict}', rows)


def copy_rows(conn: sa.Connection, table: sa.Table, cols: Sequence[str], rows: Iterable[tuple[Any, ...]]) -> None:
    """PostgreSQL with psycopg 3: COPY rows (tuples in the order of `cols`) into `table` in binary
    format, inside `conn`'s transaction. A driver error is raised wrapped as SQLAlchemy wraps the
    errors of statements (an IntegrityError for a unique-key clash, an OperationalError when the
    server is gone), so callers handle both alike."""
    import psycopg

    names = ", ".join(f'"{c}"' for c in cols)
    sql = f'COPY "{table.name}" ({names}) FROM STDIN (FORMAT BINARY)'
    types = [_pg_type(table.c[c], _PG_COPY) for c in cols]
    raw = conn.connection.dbapi_connection
    assert raw is not None
    try:
        with raw.cursor() as cur, cur.copy(sql) as copy:
            copy.set_types(types)
            write = copy.write_row
            for row in rows:
                write(row)
    except psycopg.Error as exc:
        raise sa_exc.DBAPIError.instance(sql, None, exc, psycopg.Error) from None


def dialect_insert(conn: sa.Connection) -> Any:
    """The dialect's insert() (with on_conflict_*), for PostgreSQL and SQLite."""
    from sqlalchemy.dialects import postgresql, sqlite

    name = conn.dialect.name
    if name == "postgresql":
        return postgresql.insert
    if name == "sqlite":
        return sqlite.insert
    raise NotImplementedError(f"needs PostgreSQL or SQLite, not {name}")
