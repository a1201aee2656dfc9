"""Upgrades the ingest database to the current schema, then exits.

``python -m services.ingest.migrations`` is the command of the Kubernetes migration Job; the
service also upgrades its database when it starts.
"""

from pathlib import Path

from services.ingest.models import Base
from services.ingest.settings import Settings
from shared.db import make_engine, prepare_schema

engine = make_engine(Settings().database_url)  # type: ignore[call-arg]
try:
    prepare_schema(engine, Base.metadata, Path(__file__).parent)
finally:
    engine.dispose()
