"""The service's one state row: the generation served, the one being built, the layers' version
(bumped by every layer change, so each replica knows when to reload) and the rebuild's progress."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Engine

from services.depersonalise import partitions
from services.depersonalise.models import ServiceState
from shared.db import table_of, write_transaction

T_STATE = table_of(ServiceState)


def now() -> datetime:
    return datetime.now(UTC)


def ensure_state(engine: Engine) -> None:
    with write_transaction(engine) as conn:
        if conn.execute(select(T_STATE.c.id)).first() is None:
            conn.execute(insert(T_STATE).values(id=1, generation=1, layers_version=0, rebuild={}))
            partitions.create(conn, 1)


def still_held(conn: Connection, generation: int) -> bool:
    """Whether ``generation`` is still served or being built as ``conn`` sees it: its cells are
    there. A read replica lagging a switch still shows the generation being built; a database
    without the state row (a replica not yet copied) cannot tell, and is taken as holding it."""
    row = conn.execute(
        select(T_STATE.c.generation, T_STATE.c.building).where(T_STATE.c.id == 1)
    ).first()
    return row is None or generation in (row.generation, row.building)


def read_state(conn: Connection) -> dict[str, Any]:
    row = conn.execute(select(T_STATE).where(T_STATE.c.id == 1)).mappings().one()
    return dict(row)


def bump(conn: Connection, **values: Any) -> None:
    conn.execute(
        update(T_STATE)
        .where(T_STATE.c.id == 1)
        .values(layers_version=T_STATE.c.layers_version + 1, **values)
    )


def set_progress(engine: Engine, rebuild: dict[str, Any]) -> None:
    with write_transaction(engine) as conn:
        conn.execute(update(T_STATE).where(T_STATE.c.id == 1).values(rebuild=rebuild))
