"""Bulk writers for validated records: one SQLAlchemy Core executemany upsert per chunk, or on
PostgreSQL ``COPY``: straight into ``record`` while a chunk's keys are all new, otherwise into a
transaction-scoped staging table and one set-based upsert at the end."""

from __future__ import annotations

from typing import Any

from psycopg.errors import UniqueViolation
from sqlalchemy import Connection, Table, text

from services.ingest.models import Record
from services.ingest.service_sql import record_upsert
from shared.db import table_of

RECORD: Table = table_of(Record)
COLUMNS = [c.name for c in RECORD.columns if c.name != "id"]
REPLACED = [
    c
    for c in COLUMNS
    if c not in ("provider", "dataset", "source_ref", "first_batch", "corrections")
]


class ExecutemanyWriter:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.statement = record_upsert(connection)

    def write(self, rows: list[dict[str, Any]]) -> None:
        self.connection.execute(self.statement, rows)

    def finish(self) -> None:
        return None


class CopyWriter:
    """PostgreSQL: a chunk whose keys are all new is copied into ``record`` itself (under a
    savepoint); one that meets a held key or repeats one is copied into staging instead, and
    from then on every chunk is; the latest staged row per key is upserted at the end."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        connection.execute(
            text(
                "CREATE TEMP TABLE ingest_staging ON COMMIT DROP AS "
                f"SELECT {', '.join(COLUMNS)} FROM record WITH NO DATA"
            )
        )
        self.wrote = False
        self.direct = True

    def _copy(self, table: str, rows: list[dict[str, Any]]) -> None:
        raw: Any = self.connection.connection.driver_connection
        with (
            raw.cursor() as cursor,
            cursor.copy(f"COPY {table} ({', '.join(COLUMNS)}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row([row[name] for name in COLUMNS])

    def write(self, rows: list[dict[str, Any]]) -> None:
        if self.direct:
            self.connection.exec_driver_sql("SAVEPOINT ingest_direct")
            try:
                self._copy("record", rows)
            except UniqueViolation:
                self.connection.exec_driver_sql("ROLLBACK TO SAVEPOINT ingest_direct")
                self.direct = False
            else:
                self.connection.exec_driver_sql("RELEASE SAVEPOINT ingest_direct")
                return
        self._copy("ingest_staging", rows)
        self.wrote = True

    def finish(self) -> None:
        if not self.wrote:
            return
        columns = ", ".join(COLUMNS)
        updates = ", ".join(f"{name} = EXCLUDED.{name}" for name in REPLACED)
        # A key this batch already copied straight in is not a correction of an earlier record.
        self.connection.execute(
            text(
                f"INSERT INTO record ({columns}) "
                f"SELECT DISTINCT ON (provider, dataset, source_ref) {columns} FROM ingest_staging "
                "ORDER BY provider, dataset, source_ref, revision DESC "
                "ON CONFLICT (provider, dataset, source_ref) DO UPDATE SET "
                f"{updates}, corrections = record.corrections + "
                "CASE WHEN record.batch_seq = EXCLUDED.batch_seq THEN 0 ELSE 1 END "
                "WHERE EXCLUDED.revision > record.revision"
            )
        )


def record_writer(connection: Connection) -> ExecutemanyWriter | CopyWriter:
    if connection.dialect.name == "postgresql":
        return CopyWriter(connection)
    return ExecutemanyWriter(connection)
