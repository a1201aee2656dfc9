"""Alembic migrations of the depersonalise database."""
