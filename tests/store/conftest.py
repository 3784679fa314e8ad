from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from router.db import create_schema, make_engine
from router.store.store import Store


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    """A fresh store on SQLite and on PostgreSQL (each test runs on both)."""
    e = make_engine(database_url)
    create_schema(e)
    yield e
    e.dispose()


@pytest.fixture
def store() -> Store:
    return Store()
