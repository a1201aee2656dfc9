"""Alembic environment of the depersonalise service; the work is in shared.migrations."""

from __future__ import annotations

from services.depersonalise.models import Base
from services.depersonalise.settings import Settings
from shared.migrations import run_environment

LOCK_KEY = 1129533444

run_environment(
    "depersonalise",
    Base.metadata,
    lambda: Settings().database_url,
    lock_key=LOCK_KEY,
)
