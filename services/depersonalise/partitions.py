"""PostgreSQL partitions of derived_record and the cube, one per generation.

A rebuild writes the next generation into partitions of its own, and activation drops the old
generation's partitions whole instead of deleting millions of rows; each table keeps a DEFAULT
partition, so a generation without its own partition is still stored. SQLite has no partitions:
there the rows are deleted.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection

PARTITIONED = ("derived_record", "cube_cell", "cube_person")


def postgres(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def create(conn: Connection, generation: int) -> None:
    """The partitions of ``generation`` (PostgreSQL; nothing elsewhere)."""
    if not postgres(conn):
        return
    for table in PARTITIONED:
        conn.execute(
            text(
                f"CREATE TABLE IF NOT EXISTS {table}_g{int(generation)} "
                f"PARTITION OF {table} FOR VALUES IN ({int(generation)})"
            )
        )


def drop_others(conn: Connection, keep: int) -> None:
    """Drop the partitions of every generation but ``keep`` (PostgreSQL)."""
    if not postgres(conn):
        return
    for table in PARTITIONED:
        names = conn.execute(
            text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = :table"
            ),
            {"table": table},
        ).scalars()
        for name in list(names):
            if name.startswith(f"{table}_g") and name != f"{table}_g{int(keep)}":
                conn.execute(text(f"DROP TABLE {name}"))
