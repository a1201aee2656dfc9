"""The Alembic environment every service shares: its own tables, its own database, one at a time.

Each service's ``migrations/env.py`` calls ``run_environment`` with its metadata. When
``shared.db.prepare_schema`` runs it, the service's engine arrives in
``config.attributes["engine"]``; run alone (``python -m services.<name>.migrations``), the service's
settings give the database.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import context
from alembic.autogenerate import compare_metadata
from sqlalchemy import MetaData, inspect, text
from sqlalchemy.engine import Connection, Engine

from shared.db import make_engine, prepare_schema

PARTITION = re.compile(r"^(?P<parent>\w+?)_(default|g\d+)$")


def not_a_partition(metadata: MetaData) -> Callable[..., bool]:
    """Alembic's ``include_object``: leave out the partitions of a model's table (PostgreSQL
    partitions, ``<table>_default`` and ``<table>_g<n>``, are made at run time, not by models)."""

    def include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", None)
        found = PARTITION.match(table or "")
        return not (
            reflected and compare_to is None and found and found["parent"] in metadata.tables
        )

    return include


def adopt_unversioned(connection: Connection, service: str, metadata: MetaData) -> bool:
    """A database made by ``create_all`` before migrations existed is stamped at head when it
    matches the models exactly; one that differs is refused rather than guessed at."""
    migration = context.get_context()
    if migration.get_current_revision() is not None:
        return False
    if not set(metadata.tables) & set(inspect(connection).get_table_names()):
        return False
    differences = compare_metadata(migration, metadata)
    if differences:
        raise RuntimeError(
            f"the {service} database has tables but no migration version, and differs from the "
            f"models ({len(differences)} differences): migrate it by hand or restore a backup"
        )
    migration.stamp(context.script, "heads")
    return True


def run_environment(
    service: str, metadata: MetaData, database_url: Callable[[], str], lock_key: int
) -> None:
    if context.is_offline_mode():
        raise SystemExit("offline (--sql) migrations are not supported: run against a database")
    given: Engine | None = context.config.attributes.get("engine")
    engine = given or make_engine(database_url())
    try:
        # One transaction for the lock, the version check and every step: all or nothing.
        with engine.connect() as connection, connection.begin():
            if connection.dialect.name == "postgresql":
                # Replicas starting together migrate one after another.
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key})
            context.configure(
                connection=connection,
                target_metadata=metadata,
                render_as_batch=True,  # SQLite alters tables by copying them
                compare_type=True,
                include_object=not_a_partition(metadata),
            )
            if not adopt_unversioned(connection, service, metadata):
                context.run_migrations()
    finally:
        if given is None:
            engine.dispose()


def upgrade_to_head(metadata: MetaData, database_url: str, migrations_dir: Path) -> None:
    """The migration Job's work (``python -m services.<name>.migrations``): upgrade, then exit."""
    engine = make_engine(database_url)
    try:
        prepare_schema(engine, metadata, migrations_dir)
    finally:
        engine.dispose()
