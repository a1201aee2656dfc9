"""Alembic environment of the depersonalise service: its own tables, its own database.

``shared.db.prepare_schema`` passes the service's engine in ``config.attributes["engine"]``;
run on its own (``python -m services.depersonalise.migrations``), it uses the service's settings.
"""

from __future__ import annotations

from alembic import context
from alembic.autogenerate import compare_metadata
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

from services.depersonalise.models import Base
from services.depersonalise.settings import Settings
from shared.db import make_engine

# One advisory lock per service, so replicas starting together migrate one after another.
LOCK_KEY = 1129533444


def adopt_unversioned(connection: Connection) -> bool:
    """A database made by ``create_all`` before migrations existed is stamped at head when it
    matches the models exactly; one that differs is refused rather than guessed at."""
    migration = context.get_context()
    if migration.get_current_revision() is not None:
        return False
    if not set(Base.metadata.tables) & set(inspect(connection).get_table_names()):
        return False
    differences = compare_metadata(migration, Base.metadata)
    if differences:
        raise RuntimeError(
            f"the depersonalise database has tables but no migration version, and differs from the "
            f"models ({len(differences)} differences): migrate it by hand or restore a backup"
        )
    migration.stamp(context.script, "heads")
    return True


def run_migrations() -> None:
    given: Engine | None = context.config.attributes.get("engine")
    engine = given or make_engine(Settings().database_url)  # type: ignore[call-arg]
    try:
        # One transaction for the lock, the version check and every step: all or nothing.
        with engine.connect() as connection, connection.begin():
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
            context.configure(
                connection=connection,
                target_metadata=Base.metadata,
                render_as_batch=True,  # SQLite alters tables by copying them
                compare_type=True,
            )
            if not adopt_unversioned(connection):
                context.run_migrations()
    finally:
        if given is None:
            engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: run against a database")
run_migrations()
