"""The population table of a layer: residents per area, loaded by operators, read for rates and
for the household estimate that decides which area codes a record may carry."""

from __future__ import annotations

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Connection, Engine

from services.depersonalise.models import PopulationRow
from shared.db import table_of, write_transaction

T_POP = table_of(PopulationRow)


def save_population(engine: Engine, layer: str, values: dict[str, float]) -> None:
    with write_transaction(engine) as conn:
        conn.execute(delete(T_POP).where(T_POP.c.layer == layer))
        items = [{"layer": layer, "code": c, "population": p} for c, p in values.items()]
        for start in range(0, len(items), 2000):
            conn.execute(insert(T_POP), items[start : start + 2000])


def population(conn: Connection, layer: str) -> dict[str, float] | None:
    rows = conn.execute(
        select(T_POP.c.code, T_POP.c.population).where(T_POP.c.layer == layer)
    ).all()
    return {code: value for code, value in rows} if rows else None
