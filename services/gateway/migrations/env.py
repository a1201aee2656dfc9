"""Alembic environment of the gateway service; the work is in shared.migrations."""

from __future__ import annotations

from services.gateway.models import Base
from services.gateway.settings import Settings
from shared.migrations import run_environment

LOCK_KEY = 1129533441

run_environment(
    "gateway",
    Base.metadata,
    lambda: Settings().database_url,
    lock_key=LOCK_KEY,
)
