"""Alembic migrations of the ingest database."""
