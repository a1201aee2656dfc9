"""Upgrades the depersonalise database to the current schema, then exits.

``python -m services.depersonalise.migrations`` is the command of the Kubernetes migration Job; the
service also upgrades its database when it starts.
"""

from pathlib import Path

from services.depersonalise.models import Base
from services.depersonalise.settings import Settings
from shared.migrations import upgrade_to_head

upgrade_to_head(Base.metadata, Settings().database_url, Path(__file__).parent)
