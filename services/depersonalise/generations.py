"""Generations of derived records and their rebuild: answers are served from one generation; a
rebuild writes the next beside it (``start_building``), and when it completes one transaction
makes the pending layers active, switches the generation and drops the old records
(``activate``), or keeps the old one served (``abandon``). Each function owns its transaction:
the rebuild (``replay.rebuild``) calls them one step at a time.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.engine import Connection, Engine

from services.depersonalise import cube, partitions
from services.depersonalise.derivation import T_FIGURES, T_RECORD
from services.depersonalise.layer_registry import activate_pending
from services.depersonalise.service_state import bump, now, read_state
from shared.catalogue import Dataset
from shared.db import write_transaction


def start_building(engine: Engine) -> int:
    """Open the next generation for a rebuild (dropping any half-built one)."""
    with write_transaction(engine) as conn:
        state = read_state(conn)
        # Strictly above any earlier building generation, so a cancelled rebuild's late writes
        # land in a generation that activation drops.
        building = state["generation"] + state["layers_version"] + 1
        drop_generations(conn, state["generation"])
        partitions.create(conn, building)
        bump(
            conn,
            building=building,
            rebuild={"state": "running", "processed": 0, "started_at": now().isoformat()},
        )
    return building


def live_records(conn: Connection, generation: int) -> int:
    return int(
        conn.execute(
            select(func.count())
            .select_from(T_RECORD)
            .where((T_RECORD.c.generation == generation) & (T_RECORD.c.deleted.is_(False)))
        ).scalar_one()
    )


def activate(engine: Engine, building: int, rebuild: dict[str, Any]) -> None:
    """Serve the rebuilt generation with the pending layers, in one transaction."""
    with write_transaction(engine) as conn:
        activate_pending(conn)
        drop_generations(conn, building)
        bump(conn, generation=building, building=None, rebuild=rebuild)


def recount_cube(engine: Engine, generation: int, catalogue: dict[str, Dataset]) -> None:
    """Count a rebuilt generation's cube from its records (cube.recount), in one transaction.
    Writers of that generation's records wait meanwhile (on PostgreSQL a SHARE lock on its
    partition; SQLite has one writer), so a live event is either counted here or, committed
    after, adds its own change to the recounted cube."""
    with write_transaction(engine) as conn:
        if partitions.postgres(conn):
            held = conn.execute(
                text("SELECT to_regclass(:name)"), {"name": f"derived_record_g{int(generation)}"}
            ).scalar_one()
            conn.execute(text(f"LOCK TABLE {held or 'derived_record'} IN SHARE MODE"))
        cube.recount(conn, generation, catalogue)


def analyze_generation(engine: Engine, generation: int) -> None:
    """Fresh planner statistics for a generation's partitions (PostgreSQL; nothing elsewhere).
    A rebuild's partitions start empty: without them, a lookup of held record keys is planned
    as a scan of the whole partition, page after page."""
    with engine.begin() as conn:
        if not partitions.postgres(conn):
            return
        for table in partitions.PARTITIONED:
            name = f"{table}_g{int(generation)}"
            if conn.execute(text("SELECT to_regclass(:name)"), {"name": name}).scalar_one():
                conn.execute(text(f"ANALYZE {name}"))


def abandon(engine: Engine, rebuild: dict[str, Any]) -> None:
    """Keep serving the old generation; the pending layers wait for a retried rebuild."""
    with write_transaction(engine) as conn:
        state = read_state(conn)
        drop_generations(conn, state["generation"])
        bump(conn, building=None, rebuild=rebuild)


def drop_generations(conn: Connection, keep: int) -> None:
    """Every derived record, figure and cube cell of a generation other than ``keep``."""
    partitions.drop_others(conn, keep)
    conn.execute(delete(T_RECORD).where(T_RECORD.c.generation != keep))
    conn.execute(delete(T_FIGURES).where(T_FIGURES.c.generation != keep))
    cube.drop_generations(conn, keep)
