"""Upgrades the agreements database to the current schema, then exits.

``python -m services.agreements.migrations`` is the command of the Kubernetes migration Job; the
service also upgrades its database when it starts.
"""

from pathlib import Path

from services.agreements.models import Base
from services.agreements.settings import Settings
from shared.migrations import upgrade_to_head

upgrade_to_head(Base.metadata, Settings().database_url, Path(__file__).parent)
