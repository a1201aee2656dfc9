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
from itertools import repeat
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


class Same:
    """A column holding one value on every row of a chunk."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class StoredChunk:
    """A chunk of ``record`` rows by column, in ``COLUMNS`` order: each a sequence of values, or
    ``Same`` for a value every row shares (the batch, the provider...), kept and rendered once."""

    def __init__(self, count: int, columns: list[Sequence[Any] | Same]) -> None:
        self.count = count
        self.columns = columns

    def __len__(self) -> int:
        return self.count

    def _full(self) -> list[Sequence[Any]]:
        return [[c.value] * self.count if isinstance(c, Same) else c for c in self.columns]

    def rows(self) -> list[tuple[Any, ...]]:
        return list(zip(*self._full(), strict=True))

    def copy_text(self) -> bytes | None:
        """The rows as the body of a text-format COPY, built column by column; None when a
        value holds a NUL, which COPY text cannot carry (the driver's own formatting then
        refuses it)."""
        cells: list[Any] = []
        for name, values in zip(COLUMNS, self.columns, strict=True):
            if isinstance(values, Same):
                rendered = _copy_cells(name, (values.value,))
                cells.append(None if rendered is None else repeat(rendered[0], self.count))
            else:
                cells.append(_copy_cells(name, values))
            if cells[-1] is None:
                return None
        return ("\n".join(map("\t".join, zip(*cells, strict=False))) + "\n").encode()


def _copy_cells(name: str, values: Sequence[Any]) -> Sequence[str] | None:
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
        values = [None if v is None else v.translate(_ESCAPES) for v in values]
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

    def write(self, chunk: StoredChunk) -> None:
        self.connection.execute(
            self.statement, [dict(zip(COLUMNS, row, strict=True)) for row in chunk.rows()]
        )

    def wait(self) -> None:
        return None

    @property
    def all_new(self) -> bool:
        """Whether every row written was a new key (unknown here: an upsert may replace)."""
        return False

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

    def write(self, chunk: StoredChunk) -> None:
        """Copy the chunk on the writer thread once the previous chunk's COPY has ended. Its
        text is built here: the thread only sends it, so it seldom waits for the interpreter."""
        body = chunk.copy_text()
        rows = chunk.rows() if body is None else []
        self.wait()
        self.pending = self.thread.submit(self._write, rows, body)

    @property
    def all_new(self) -> bool:
        """Whether every chunk went straight into ``record``: then no row met a held key or
        repeated one, so none was a correction."""
        return self.direct and not self.staging

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
