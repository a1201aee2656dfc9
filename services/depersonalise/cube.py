"""The count cube: what aggregates read instead of the derived records.

Every live derived record adds 1 (and its record key) to one cell per layer × breakdown ``dim``
(``""``, the total; ``category``; each attribute or special-category field that can be a ``by``)
at its period at the dataset's time resolution (``fine`` false). A record of a linked person also
adds its person to the same cells in ``cube_person``, so ``count=people`` stays exact. The cube is
changed in the transaction that changes the records (derivation.apply_events,
held_records.drop_unheld), so it is never ahead of or behind them; a rebuild replays records
without counting them one by one and then counts the next generation's cube in one aggregation
over its records (``recount``).

Aggregates read only period cells: a grant window counts the base periods it covers whole
(protection.py), so no day cells (``fine`` true) are written. A whole table's read for the release
lattice (its base cells as columns and its uncovered rows at once) is base_cells.py.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy import and_, delete, select, tuple_
from sqlalchemy.engine import Connection

from services.depersonalise import cover_flags
from services.depersonalise.models import CUBE_KEY, CubeCell, CubePerson
from services.depersonalise.service import next_period, period_start
from shared.catalogue import Dataset
from shared.grants import Shown, Slices, Term

T_CELL = CubeCell.__table__  # type: ignore[attr-defined]
T_PERSON = CubePerson.__table__  # type: ignore[attr-defined]
TOTAL = ""  # the dim every record is counted in once per layer
BREAKDOWN_CLASSES = {"attribute", "special-category"}
WITHHELD = "withheld"

Key = tuple[Any, ...]  # the values of CUBE_KEY, in order


_DIMS: dict[tuple[str, int], list[str]] = {}


def dims_of(spec: Dataset) -> list[str]:
    """The dims a dataset's records are counted in: the total, category and each breakdown."""
    known = _DIMS.get((spec.name, id(spec)))
    if known is None:
        fields = [f.name for f in spec.fields if f.classification in BREAKDOWN_CLASSES]
        known = [TOTAL, "category", *[name for name in fields if name != "category"]]
        if len(_DIMS) > 64:
            _DIMS.clear()
        _DIMS[(spec.name, id(spec))] = known
    return known


def value_of(row: dict[str, Any], dim: str) -> str:
    """A record's value in ``dim`` as aggregates count it (``""`` for none)."""
    if dim == TOTAL:
        return ""
    if dim == "category":
        value = row.get("category")
    else:
        attributes = row.get("attributes") or {}
        value = attributes[dim] if dim in attributes else (row.get("counted") or {}).get(dim)
    return "" if value is None else str(value)


def as_date(value: Any) -> date | None:
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def cells_of(row: dict[str, Any], spec: Dataset) -> list[Key]:
    """The cube cells a derived record (a row of derived_record) is counted in."""
    start = as_date(row.get("period_start"))
    if row.get("deleted") or start is None:
        return []
    generation, dataset, provider = row["generation"], row["dataset"], row["provider"]
    values = [(dim, value_of(row, dim)) for dim in dims_of(spec)]
    return [
        (generation, dataset, layer, dim, False, provider, start, area or "", value)
        for layer, area in sorted((row.get("areas") or {}).items())
        for dim, value in values
    ]


@dataclass
class Delta:
    """Changes to cube cells and to their people, gathered over a batch."""

    cells: dict[Key, list[int]]
    people: dict[tuple[Key, str], list[int]]
    rules: dict[str, tuple[list[str], int]]  # each dataset's dims and threshold (cover_flags)

    @classmethod
    def empty(cls) -> Delta:
        return cls(defaultdict(lambda: [0, 0]), defaultdict(lambda: [0, 0]), {})

    def add(self, row: dict[str, Any], spec: Dataset, sign: int) -> None:
        self.rules.setdefault(spec.name, cover_rule(spec))
        person = row.get("person")
        for cell in cells_of(row, spec):
            counted = self.cells[cell]
            counted[0] += sign
            counted[1] += sign * int(row.get("key") or 0)
            if person:
                held = self.people[(cell, person)]
                held[0] += sign
                held[1] = int(row.get("person_key") or 0)


COPY_FROM = 500  # cells from which PostgreSQL is given a batch by COPY into a staging table


def _upsert(conn: Connection, table: Any, rows: list[tuple[Any, ...]], added: list[str]) -> None:
    """Add rows (CUBE_KEY [+ person, person_key], then the ``added`` columns) to the cube."""
    if not rows:
        return
    postgres = conn.dialect.name == "postgresql"
    keys = [*CUBE_KEY, "person"] if table is T_PERSON else list(CUBE_KEY)
    every = [*keys, "person_key", "count"] if table is T_PERSON else [*keys, *added]
    if postgres and len(rows) >= COPY_FROM:
        _copy_upsert(conn, table.name, rows, every, keys, added)
        return
    if postgres:
        rows = sorted(rows, key=lambda row: tuple(str(v) for v in row))  # one lock order
    else:
        # SQLite: dates as ISO text and booleans as 0/1, as SQLAlchemy stores them.
        rows = [(*r[:4], int(r[4]), r[5], r[6].isoformat(), *r[7:]) for r in rows]
    mark = "%s" if postgres else "?"
    update = ", ".join(f"{c} = {table.name}.{c} + excluded.{c}" for c in added)
    sql = (
        f"INSERT INTO {table.name} ({', '.join(every)}) VALUES ({', '.join([mark] * len(every))})"
        f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {update}"
    )
    for start in range(0, len(rows), 5000):
        conn.exec_driver_sql(sql, rows[start : start + 5000])


def _copy_upsert(
    conn: Connection,
    name: str,
    rows: list[tuple[Any, ...]],
    every: list[str],
    keys: list[str],
    added: list[str],
) -> None:
    """COPY a large batch into a session's staging table, then one INSERT … ON CONFLICT (in key
    order, so concurrent writers lock cells in one order) adds it to the cube."""
    listed = ", ".join(every)
    staging = f"{name}_delta"
    conn.exec_driver_sql(
        f"CREATE TEMP TABLE IF NOT EXISTS {staging} AS SELECT {listed} FROM {name} WITH NO DATA"
    )
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(f"COPY {staging} ({listed}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
    update = ", ".join(f"{c} = {name}.{c} + EXCLUDED.{c}" for c in added)
    conn.exec_driver_sql(
        f"INSERT INTO {name} ({listed}) SELECT {listed} FROM {staging} ORDER BY "
        f"{', '.join(keys)} ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {update}"
    )
    conn.exec_driver_sql(f"TRUNCATE {staging}")


def cover_rule(spec: Dataset) -> tuple[list[str], int]:
    """A dataset's dims and the threshold its cover flags are found at (the rule's own, which
    alone decides the release lattice)."""
    return dims_of(spec), spec.disclosure.threshold


def apply(conn: Connection, delta: Delta) -> None:
    """Add a batch's changes to the cube in the caller's transaction, drop cells that reach
    zero, and find again the cover flags of the rows it touched (cover_flags.py).

    Every total the batch touches is written, also one whose count does not change (a record
    moved between categories), and in key order a row's total comes before its breakdowns: the
    total's row lock keeps a second writer of the row waiting until this one commits."""
    cells = [(*k, c, s) for k, (c, s) in delta.cells.items() if c or s or k[3] == TOTAL]
    _upsert(conn, T_CELL, cells, ["count", "key_sum"])
    people = [(*k, p, pk, c) for (k, p), (c, pk) in delta.people.items() if c]
    _upsert(conn, T_PERSON, people, ["count"])
    width = len(CUBE_KEY)
    _drop_empty(conn, T_CELL, [r[:width] for r in cells if r[width] < 0])
    _drop_empty(conn, T_PERSON, [r[: width + 1] for r in people if r[-1] < 0])
    # (generation, dataset, layer, provider, at, area) of every row the batch touched
    touched = {(k[0], k[1], k[2], k[5], k[6], k[7]) for k in delta.cells if not k[4]}
    cover_flags.refresh(conn, touched, delta.rules)


def _drop_empty(conn: Connection, table: Any, keys: list[tuple[Any, ...]]) -> None:
    columns = [getattr(table.c, c) for c in CUBE_KEY]
    if table is T_PERSON:
        columns.append(table.c.person)
    for start in range(0, len(keys), 200):
        conn.execute(
            delete(table).where(
                tuple_(*columns).in_(keys[start : start + 200]) & (table.c.count <= 0)
            )
        )


def drop_generations(conn: Connection, keep: int) -> None:
    for table in (T_CELL, T_PERSON):
        conn.execute(delete(table).where(table.c.generation != keep))


RECOUNT_CHUNK = 20_000  # cells read, merged and written at a time: the recount's memory bound
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def recount(conn: Connection, generation: int, catalogue: dict[str, Dataset]) -> None:
    """Replace a generation's cube with a count of its live records: one aggregation per
    dataset (and one of its people) in the database, the cells streamed back in key order and
    written in chunks, so memory follows the chunk, not the records. The same cells as adding
    each record's ``cells_of`` one by one: the database groups by each breakdown value's JSON
    text, and Python turns it into the value aggregates count (``value_of``), merging texts that
    name the same value."""
    for table in (T_CELL, T_PERSON):
        conn.execute(delete(table).where(table.c.generation == generation))
    for name in sorted(catalogue):
        spec = catalogue[name]
        _recount_table(conn, T_CELL, generation, spec, people=False)
        _recount_table(conn, T_PERSON, generation, spec, people=True)
        cover_flags.refresh_generation(conn, generation, name, *cover_rule(spec))


def _recount_sql(conn: Connection, spec: Dataset, people: bool) -> str:
    """(layer, dim, provider, period start, area, the value's JSON text[, person], count, keys)
    of a dataset's live records in one generation, in key order."""
    postgres = conn.dialect.name == "postgresql"
    dims = dims_of(spec)
    for dim in dims:
        if dim and not _FIELD.match(dim):  # named in the SQL text: field names only
            raise ValueError(f"a breakdown field the cube cannot name: {dim!r}")
    fields = [d for d in dims if d not in (TOTAL, "category")]
    if postgres:
        json_of = [
            f"coalesce((r.attributes -> '{d}')::text, (r.counted -> '{d}')::text)" for d in fields
        ]
    else:
        json_of = [
            f"coalesce(r.attributes -> '$.\"{d}\"', r.counted -> '$.\"{d}\"')" for d in fields
        ]
    raws = ["r.category", *json_of]
    person = ", r.person" if people else ""
    counted = "count(*), max(coalesce(r.person_key, 0))" if people else "count(*), sum(r.key)"
    mark = "%s" if postgres else "?"
    where = (
        f"r.generation = {mark} AND r.dataset = {mark} AND NOT r.deleted "
        "AND r.period_start IS NOT NULL"
        + (" AND r.person IS NOT NULL AND r.person <> ''" if people else "")
    )
    named = ["category", *fields]
    if postgres:
        # One scan: each record's areas parsed once, every dim a grouping set of one hash
        # aggregation (GROUPING(vN) = 0 in the set of dim N).
        columns = ", ".join(f"{raw} AS v{i}" for i, raw in enumerate(raws))
        base = f"layer, provider, period_start, area{', person' if people else ''}"
        sets = ", ".join([f"({base})", *(f"({base}, v{i})" for i in range(len(raws)))])
        dim = " ".join(f"WHEN GROUPING(v{i}) = 0 THEN '{n}'" for i, n in enumerate(named))
        raw = " ".join(f"WHEN GROUPING(v{i}) = 0 THEN v{i}" for i in range(len(raws)))
        aggregate = counted.replace("r.", "")
        return (
            f"SELECT layer, CASE {dim} ELSE '' END AS dim, provider, period_start, area, "
            f"CASE {raw} END AS raw{', person' if people else ''}, {aggregate} "
            f"FROM (SELECT a.key AS layer, r.provider, r.period_start, "
            f"coalesce(a.value, '') AS area{person}, r.key, r.person_key, {columns} "
            f"FROM derived_record r, json_each_text(r.areas) a WHERE {where}) s "
            f"GROUP BY GROUPING SETS ({sets}) ORDER BY 1, 2, 3, 4, 5"
        )
    cases = " ".join(f"WHEN '{n}' THEN {raw}" for n, raw in zip(named, raws, strict=True))
    values = ", ".join(f"('{dim}')" for dim in dims)
    return (
        f"WITH dims(dim) AS (VALUES {values}) "
        f"SELECT a.key, d.dim, r.provider, r.period_start, coalesce(a.value, ''), "
        f"CASE d.dim WHEN '' THEN NULL {cases} END{person}, {counted} "
        f"FROM derived_record r, json_each(r.areas) a, dims d WHERE {where} "
        f"GROUP BY 1, 2, 3, 4, 5, 6{', 7' if people else ''} ORDER BY 1, 2, 3, 4, 5"
    )


def _recount_table(
    conn: Connection, table: Any, generation: int, spec: Dataset, people: bool
) -> None:
    sql = _recount_sql(conn, spec, people)
    params = (generation, spec.name)
    postgres = conn.dialect.name == "postgresql"
    driver: Any = conn.connection.driver_connection
    # On PostgreSQL a server-side cursor: the groups come back chunk by chunk, never all at once.
    cursor = driver.cursor(name="cube_recount") if postgres else driver.cursor()
    if postgres:
        # Millions of rows estimated: compiling (JIT) would cost more than it saves; the hash
        # aggregation gets room to stay in memory.
        conn.exec_driver_sql("SET LOCAL jit = off")
        conn.exec_driver_sql("SET LOCAL work_mem = '64MB'")
    try:
        cursor.execute(sql, params)
        pending: list[tuple[Any, ...]] = []
        group: Key | None = None
        merged: dict[Any, list[int]] = {}
        added = ["count"] if people else ["count", "key_sum"]
        while True:
            rows = cursor.fetchmany(RECOUNT_CHUNK)
            for row in rows:
                layer, dim, provider, at, area, raw = row[:6]
                prefix = (layer, dim, provider, at, area)
                if prefix != group:
                    pending += _cells(generation, spec.name, group, merged, people)
                    group, merged = prefix, {}
                value = _value(dim, raw)
                if people:
                    held = merged.setdefault((value, row[6]), [0, 0])
                    held[0] += int(row[7])
                    held[1] = int(row[8])
                else:
                    held = merged.setdefault(value, [0, 0])
                    held[0] += int(row[6])
                    held[1] += int(row[7])
            if not rows:
                pending += _cells(generation, spec.name, group, merged, people)
            if len(pending) >= RECOUNT_CHUNK or not rows:
                _upsert(conn, table, pending, added)
                pending = []
            if not rows:
                break
    finally:
        cursor.close()


def _value(dim: str, raw: Any) -> str:
    """The value aggregates count for a breakdown's JSON text (``value_of``)."""
    if dim == TOTAL or raw is None:
        return ""
    if dim == "category":
        return str(raw)
    value = json.loads(raw)
    return "" if value is None else str(value)


def _cells(
    generation: int, dataset: str, group: Key | None, merged: dict[Any, list[int]], people: bool
) -> list[tuple[Any, ...]]:
    if group is None:
        return []
    layer, dim, provider, at, area = group
    base = (generation, dataset, layer, dim, False, provider, as_date(at))
    if people:
        return [
            (*base, area, value, person, person_key, count)
            for (value, person), (count, person_key) in merged.items()
        ]
    return [(*base, area, value, count, keys) for value, (count, keys) in merged.items()]


# --- reading --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """Days ``lo..hi`` (None: open) of one provider under which one set of fields shows."""

    provider: str
    lo: date | None
    hi: date | None
    shown: Shown


def segments(scope: Slices) -> list[Segment]:
    """Each provider's timeline cut where the grants covering a day change (Slices.fields_for
    is constant within a segment); days no grant covers are left out."""
    out: list[Segment] = []
    for provider, terms in scope.by_provider.items():
        cuts = sorted(
            {t.start for t in terms if t.start is not None}
            | {t.end + timedelta(days=1) for t in terms if t.end is not None}
        )
        bounds: list[date | None] = [None, *cuts, None]
        for lo, nxt in itertools.pairwise(bounds):
            hi = nxt - timedelta(days=1) if nxt is not None else None
            shown = _shown(terms, lo, hi)
            if shown is None:
                continue
            last = out[-1] if out else None
            if last and last.provider == provider and last.shown == shown and _next(last.hi, lo):
                out[-1] = Segment(provider, last.lo, hi, shown)
            else:
                out.append(Segment(provider, lo, hi, shown))
    return out


def _next(hi: date | None, lo: date | None) -> bool:
    return hi is not None and lo is not None and hi + timedelta(days=1) == lo


def _shown(terms: Iterable[Term], lo: date | None, hi: date | None) -> Shown | None:
    covering = [
        t
        for t in terms
        if (t.start is None or (lo is not None and t.start <= lo))
        and (t.end is None or (hi is not None and t.end >= hi))
    ]
    if not covering:
        return None
    if any(t.fields is None for t in covering):
        return Shown(None)
    return Shown(frozenset().union(*(t.fields or frozenset() for t in covering)))


def whole_periods(
    segment: Segment, resolution: str, first: date | None, last: date | None
) -> tuple[date | None, date | None] | None:
    """The ``at`` range (period starts) of the periods a segment covers whole, within
    ``first``..``last``; None when it covers none. A grant window that cuts a period counts none
    of that period's records: every answer is made of whole base periods (protection.py)."""
    lo, hi = segment.lo, segment.hi
    if lo is not None and period_start(lo, resolution) != lo:
        lo = next_period(period_start(lo, resolution), resolution)
    if hi is not None and next_period(period_start(hi, resolution), resolution) != hi + timedelta(
        days=1
    ):
        hi = period_start(hi, resolution) - timedelta(days=1)
    lo, hi = _later(lo, first), _earlier(hi, last)
    if lo is not None and hi is not None and lo > hi:
        return None
    return lo, hi


def _later(a: date | None, b: date | None) -> date | None:
    return b if a is None else a if b is None else max(a, b)


def _earlier(a: date | None, b: date | None) -> date | None:
    return b if a is None else a if b is None else min(a, b)


def where_cells(
    table: Any, base: dict[str, Any], fine: bool, lo: date | None, hi: date | None
) -> Any:
    clause = and_(*(getattr(table.c, k) == v for k, v in base.items()), table.c.fine.is_(fine))
    if lo is not None:
        clause = clause & (table.c.at >= lo)
    if hi is not None:
        clause = clause & (table.c.at <= hi)
    return clause


def cell_select(base: dict[str, Any], fine: bool, lo: date | None, hi: date | None) -> Any:
    """The cells of one provider, layer and dim in ``lo..hi`` (the unique key's index serves
    it: equality on its first six columns, a range on ``at``)."""
    columns = [T_CELL.c.area, T_CELL.c.at, T_CELL.c.value, T_CELL.c.count, T_CELL.c.key_sum]
    return select(*columns).where(where_cells(T_CELL, base, fine, lo, hi))


def person_select(base: dict[str, Any], fine: bool, lo: date | None, hi: date | None) -> Any:
    t = T_PERSON.c
    columns = [t.area, t.at, t.value, t.person, t.person_key]
    return select(*columns).where(where_cells(T_PERSON, base, fine, lo, hi))


@dataclass(frozen=True)
class Query:
    generation: int
    dataset: str
    layer: str
    by: str | None
    first: date | None  # the first period start counted (at the dataset's resolution)
    last: date | None


BaseRow = tuple[str, str, date, str, int, int]  # provider, area, period start, value, count, keys
PersonRow = tuple[str, str, date, str, str, int]  # provider, area, period start, value, person, key


def segment_bases(
    query: Query, spec: Dataset, scope: Slices
) -> Iterator[tuple[dict[str, Any], Any]]:
    """(cell filter, withheld) of each grant segment's whole periods."""
    for segment in segments(scope):
        span = whole_periods(segment, spec.time_resolution, query.first, query.last)
        if span is None:
            continue
        withheld = query.by is not None and query.by not in segment.shown
        base = {
            "generation": query.generation,
            "dataset": query.dataset,
            "layer": query.layer,
            "provider": segment.provider,
            "dim": TOTAL if query.by is None or withheld else query.by,
        }
        yield base, (withheld, span)


def read_base(conn: Connection, query: Query, spec: Dataset, scope: Slices) -> Iterator[BaseRow]:
    """The base cells of a query (whole periods of the dataset's resolution, one provider each),
    sliced by the caller's grants; value ``withheld`` where the record's grant leaves the ``by``
    field out (the row's total, then)."""
    for base, (withheld, (lo, hi)) in segment_bases(query, spec, scope):
        provider = base["provider"]
        rows = fetch(conn, cell_select(base, False, lo, hi))
        if withheld or not query.by:
            shown = WITHHELD if withheld else ""
            yield from ((provider, a, at, shown, n, keys) for a, at, _v, n, keys in rows)
        else:
            yield from ((provider, a, at, v, n, keys) for a, at, v, n, keys in rows)


def fetch(conn: Connection, statement: Any) -> list[tuple[Any, ...]]:
    """A statement's rows as plain tuples; on PostgreSQL straight from the driver's cursor,
    without building a result row object per cell (half the time of a large table's read)."""
    if conn.dialect.name != "postgresql":
        return [tuple(row) for row in conn.execute(statement)]
    compiled = statement.compile(dialect=conn.dialect)
    with conn.connection.driver_connection.cursor() as cursor:  # type: ignore[union-attr]
        cursor.execute(str(compiled), compiled.params)
        return list(cursor.fetchall())


def read_people(
    conn: Connection, query: Query, spec: Dataset, scope: Slices
) -> Iterator[PersonRow]:
    """The people of a query's base cells (one row per person and base cell)."""
    for base, (withheld, (lo, hi)) in segment_bases(query, spec, scope):
        for area, at, value, who, person_key in conn.execute(
            person_select(base, False, lo, hi)
        ).all():
            shown = WITHHELD if withheld else value if query.by else ""
            yield base["provider"], area, as_date(at) or at, shown, who, person_key
