"""Alembic environment of the agreements service; the work is in shared.migrations."""

from __future__ import annotations

from services.agreements.models import Base
from services.agreements.settings import Settings
from shared.migrations import run_environment

LOCK_KEY = 1129533442

run_environment(
    "agreements",
    Base.metadata,
    lambda: Settings().database_url,
    lock_key=LOCK_KEY,
)
