"""The postcode layer ops loads (Code-Point Open or ONSPD CSV): unit centroids in EPSG:27700."""

from __future__ import annotations

import csv
from typing import IO, Any

from sqlalchemy import Connection, delete, func, select

from services.ingest.location import parse_postcode_rows
from services.ingest.tables import POSTCODE, dialect_insert


def load_postcodes(
    connection: Connection, text: IO[str], replace: bool, chunk: int = 5000
) -> dict[str, Any]:
    """Merge (or with ``replace`` swap in) a postcode file, in the caller's write transaction;
    counts loaded and skipped."""
    loaded = skipped = 0
    if replace:
        connection.execute(delete(POSTCODE))
    statement: Any = dialect_insert(connection, POSTCODE)
    statement = statement.on_conflict_do_update(
        index_elements=["postcode"],
        set_={"easting": statement.excluded.easting, "northing": statement.excluded.northing},
    )
    batch: dict[str, dict[str, Any]] = {}
    for parsed in parse_postcode_rows(csv.reader(text)):
        if parsed is None:
            skipped += 1
            continue
        postcode, east, north = parsed
        batch[postcode] = {"postcode": postcode, "easting": east, "northing": north}
        if len(batch) >= chunk:
            connection.execute(statement, list(batch.values()))
            loaded += len(batch)
            batch = {}
    if batch:
        connection.execute(statement, list(batch.values()))
        loaded += len(batch)
    total = connection.execute(select(func.count()).select_from(POSTCODE)).scalar_one()
    return {"loaded": loaded, "skipped": skipped, "postcodes": total}


def postcode_count(connection: Connection) -> int:
    return int(connection.execute(select(func.count()).select_from(POSTCODE)).scalar_one())
