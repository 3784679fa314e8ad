"""Alembic environment: runs on the connection router.migrate hands over (no alembic.ini)."""
from __future__ import annotations

from alembic import context

from router.db import metadata
from router.migrate import import_models

import_models()
connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True,
                  compare_type=True)
with context.begin_transaction():
    context.run_migrations()
