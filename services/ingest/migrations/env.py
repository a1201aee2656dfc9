"""Alembic environment of the ingest service; the work is in shared.migrations."""

from __future__ import annotations

from services.ingest.models import Base
from services.ingest.settings import Settings
from shared.migrations import run_environment

LOCK_KEY = 1129533443

run_environment(
    "ingest",
    Base.metadata,
    lambda: Settings().database_url,
    lock_key=LOCK_KEY,
)
