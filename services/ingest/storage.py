"""Bulk writers for validated records, fed the rows ``record_rows`` builds (tuples in ``COLUMNS``
order): one executemany upsert per chunk, or on PostgreSQL ``COPY``: straight into ``record``
while a chunk's keys are all new, otherwise into a transaction-scoped staging table and one
set-based upsert at the end.

The COPY of one chunk runs on a writer thread while the next chunk is validated, so the server's
work on it overlaps Python's on the next; the connection is used by one thread at a time
(``wait`` before any other statement, ``close`` before the transaction ends)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from psycopg.errors import UniqueViolation
from sqlalchemy import Connection, text

from services.ingest.tables import RECORD, dialect_insert

COLUMNS = [c.name for c in RECORD.columns if c.name != "id"]
KEY = ("provider", "dataset", "source_ref")
# What a newer revision of a held record replaces; ``corrections`` counts the replacements.
REPLACED = [c for c in COLUMNS if c not in (*KEY, "first_batch", "corrections")]
StoredRows = Sequence[tuple[Any, ...]]


def record_upsert(connection: Connection) -> Any:
    """Insert, or replace the stored record when this one carries a higher revision."""
    statement: Any = dialect_insert(connection, RECORD)
    excluded = statement.excluded
    values: dict[str, Any] = {name: excluded[name] for name in REPLACED}
    values["corrections"] = RECORD.c.corrections + 1
    return statement.on_conflict_do_update(
        index_elements=list(KEY),
        set_=values,
        where=excluded.revision > RECORD.c.revision,
    )


class ExecutemanyWriter:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.statement = record_upsert(connection)

    def write(self, rows: StoredRows) -> None:
        self.connection.execute(
            self.statement, [dict(zip(COLUMNS, row, strict=True)) for row in rows]
        )

    def wait(self) -> None:
        return None

    def finish(self) -> None:
        return None

    def close(self) -> None:
        return None


class CopyWriter:
    """PostgreSQL: a chunk whose keys are all new is copied into ``record`` itself (under a
    savepoint); one that meets a held key or repeats one is copied into staging instead, and
    from then on every chunk is; the latest staged row per key is upserted at the end."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.staging = False
        self.direct = True
        self.raw: Any = connection.connection.driver_connection
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-copy")
        self.pending: Future[None] | None = None

    def write(self, rows: StoredRows) -> None:
        """Copy the chunk on the writer thread once the previous chunk's COPY has ended."""
        self.wait()
        self.pending = self.thread.submit(self._write, rows)

    def wait(self) -> None:
        """Until the chunk being copied is in (its error, if any, raised here)."""
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        """Stop the writer thread once a COPY still running has ended. Reached with a chunk
        pending only when the push is already failing, so that COPY's own error is dropped."""
        with contextlib.suppress(Exception):
            self.wait()
        self.thread.shutdown(wait=True)

    def _copy(self, table: str, rows: StoredRows) -> None:
        with (
            self.raw.cursor() as cursor,
            cursor.copy(f"COPY {table} ({', '.join(COLUMNS)}) FROM STDIN") as copy,
        ):
            write = copy.write_row
            for row in rows:
                write(row)

    def _write(self, rows: StoredRows) -> None:
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
        if not self.staging:
            self.connection.execute(
                text(
                    "CREATE TEMP TABLE ingest_staging ON COMMIT DROP AS "
                    f"SELECT {', '.join(COLUMNS)} FROM record WITH NO DATA"
                )
            )
            self.staging = True
        self._copy("ingest_staging", rows)

    def finish(self) -> None:
        self.wait()
        if not self.staging:
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


RecordWriter = ExecutemanyWriter | CopyWriter


def record_writer(connection: Connection) -> RecordWriter:
    if connection.dialect.name == "postgresql":
        return CopyWriter(connection)
    return ExecutemanyWriter(connection)
