"""Alembic migrations of the agreements database."""
