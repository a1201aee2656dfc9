"""Bulk writers for validated records, fed the rows ``record_rows`` builds (tuples in ``COLUMNS``
order): one executemany upsert per chunk, or on PostgreSQL ``COPY``: straight into ``record``
while a chunk's keys are all new, otherwise into a transaction-scoped staging table and one
set-based upsert at the end.

The COPY of one chunk runs on a writer thread while the next chunk is validated, so the server's
work on it overlaps Python's on the next; the connection is used by one thread at a time
(``wait`` before any other statement, ``close`` before the transaction ends)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from psycopg.errors import UniqueViolation
from sqlalchemy import Connection, text

from services.ingest.tables import RECORD, dialect_insert

COLUMNS = [c.name for c in RECORD.columns if c.name != "id"]
_NUMBERS: dict[str, Callable[[Any], str]] = {
    **dict.fromkeys(("revision", "batch_seq", "first_batch", "corrections"), int.__repr__),
    **dict.fromkeys(("easting", "northing"), float.__repr__),
}
# COPY's text format: a tab between columns, \N for NULL, these escaped inside a value
_ESCAPED = re.compile("[\\\\\t\n\r]")
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_BOOLEAN = {True: "t", False: "f"}
_NULL = "\\N"
KEY = ("provider", "dataset", "source_ref")
# What a newer revision of a held record replaces; ``corrections`` counts the replacements.
REPLACED = [c for c in COLUMNS if c not in (*KEY, "first_batch", "corrections")]
StoredRows = Sequence[tuple[Any, ...]]


def copy_text(rows: StoredRows) -> bytes | None:
    """The rows as the body of a text-format COPY, built column by column; None when a value
    holds a NUL, which COPY text cannot carry (the driver's own formatting then refuses it)."""
    cells: list[Sequence[str]] = []
    for name, values in zip(COLUMNS, zip(*rows, strict=True), strict=True):
        column = _copy_cells(name, values)
        if column is None:
            return None
        cells.append(column)
    return ("\n".join(map("\t".join, zip(*cells, strict=True))) + "\n").encode()


def _copy_cells(name: str, values: tuple[Any, ...]) -> Sequence[str] | None:
    nulls = None in values
    if name == "late":
        return list(map(_BOOLEAN.__getitem__, values))
    render = _NUMBERS.get(name)
    if render is not None:
        return (
            [_NULL if v is None else render(v) for v in values]
            if nulls
            else list(map(render, values))
        )
    joined = "".join([v for v in values if v is not None] if nulls else values)
    if "\x00" in joined:
        return None
    if _ESCAPED.search(joined):
        values = tuple(None if v is None else v.translate(_ESCAPES) for v in values)
    return [_NULL if v is None else v for v in values] if nulls else values


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
        """Copy the chunk on the writer thread once the previous chunk's COPY has ended. Its
        text is built here: the thread only sends it, so it seldom waits for the interpreter."""
        body = copy_text(rows)
        self.wait()
        self.pending = self.thread.submit(self._write, rows, body)

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

    def _copy(self, table: str, rows: StoredRows, body: bytes | None) -> None:
        with (
            self.raw.cursor() as cursor,
            cursor.copy(f"COPY {table} ({', '.join(COLUMNS)}) FROM STDIN") as copy,
        ):
            if body is not None:
                copy.write(body)
                return
            write = copy.write_row
            for row in rows:
                write(row)

    def _write(self, rows: StoredRows, body: bytes | None) -> None:
        if self.direct:
            self.connection.exec_driver_sql("SAVEPOINT ingest_direct")
            try:
                self._copy("record", rows, body)
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
        self._copy("ingest_staging", rows, body)

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
