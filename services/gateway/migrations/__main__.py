"""Upgrades the gateway database to the current schema, then exits.

``python -m services.gateway.migrations`` is the command of the Kubernetes migration Job; the
service also upgrades its database when it starts.
"""

from pathlib import Path

from services.gateway.models import Base
from services.gateway.settings import Settings
from shared.migrations import upgrade_to_head

upgrade_to_head(Base.metadata, Settings().database_url, Path(__file__).parent)
