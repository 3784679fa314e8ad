"""Alembic migrations of the engine's database (journal and record store)."""
