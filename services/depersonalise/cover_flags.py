"""Each total cell's stored cover flag: whether its row (generation × dataset × layer × provider ×
period × area) has, in some breakdown, small cells that the release lattice cannot cover at the
dataset's threshold. It is the answer of the probe base_cells.py would otherwise run for that
row (:func:`lacking`), written down when the row's cells change.

A table's read takes each total's flag with the total instead of probing every breakdown of
every row at or above the threshold: about 64,000 index probes for a national table, most of
its cost. The flag is only ever a shortcut to the probe's own answer:

- ``uncovered_for`` is the threshold the flag was found at; a read at another threshold, or of
  a row whose flag is missing (cells written before the flag existed), probes that row instead.
- cube.apply refreshes the flags of every row a batch touches, in the batch's transaction, after
  all of the batch's cells are written; a recount refreshes a whole generation's
  (:func:`refresh_generation`). A row whose total is below the threshold is never probed, so its
  flag is not kept (a read never uses it).
- Two writers of one row never find its flag from each other's uncommitted cells: cube.apply
  writes a batch's total cells (even those whose count does not change) before its breakdown
  cells, in key order, so a second writer of the row waits on the total's row lock until the
  first commits, and its refresh, a later statement, sees the first one's cells.

The flags follow the catalogue's breakdown fields as the cube's cells do: a new breakdown field
needs a rebuild (its cells are counted by the recount, which refreshes every flag).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import ARRAY, Date, String, and_, bindparam, case, func, or_, select, update
from sqlalchemy.engine import Connection

from services.depersonalise.models import CubeCell

T_CELL = CubeCell.metadata.tables["cube_cell"]
TOTAL = ""
ROW = ("layer", "provider", "at", "area")  # a row's key within one generation and dataset
Row = tuple[Any, ...]  # (generation, dataset, layer, provider, at, area)


def lacking(total: Any, key: dict[str, Any], dim: str, threshold: int) -> Any:
    """Whether the row of a total cell has, in ``dim``, small cells (1..threshold-1) that its
    cells at or above the threshold cannot cover (protection.cover_need) and that, without a
    cover, the total would narrow (protection.whole_intervals): one probe of the cube's key.

    ``key`` holds the row's generation, dataset, layer and provider (values, or the updated
    total's own columns); the probe is correlated with ``total`` on the period and the area."""
    cell = T_CELL.alias(f"in_{dim}")
    t, c = total.c, cell.c

    def tally(condition: Any) -> Any:
        return func.sum(case((condition, 1), else_=0))

    large = tally(c.count >= threshold)
    small = tally((c.count >= 1) & (c.count < threshold))
    # How far the row's cells reach past the least they could be (protection.cover_need).
    spare = func.sum(
        case((c.count >= threshold, c.count - threshold), (c.count >= 1, c.count - 1), else_=0)
    )
    cells = func.count()
    free = (t.count >= cells + (threshold - 2)) & (t.count <= (cells - 1) * (threshold - 1) + 1)
    short = (small > 0) & ~(((large > 0) & (spare >= threshold - 2)) | ((large == 0) & free))
    # The generation as a value, not the total's column: PostgreSQL then plans each probe on
    # the generation's partition alone instead of pruning partitions at every probe.
    same_row = and_(
        *(getattr(c, k) == v for k, v in key.items()),
        c.fine.is_(False),
        c.dim == dim,
        c.at == t.at,
        c.area == t.area,
    )
    # An aggregate without GROUP BY answers one row, also for a row with no cell in ``dim``.
    found = select(case((short, 1), else_=0)).where(same_row).scalar_subquery()
    return found == 1


def any_lacking(total: Any, key: dict[str, Any], dims: Sequence[str], threshold: int) -> Any:
    """Whether the row lacks a cover in some breakdown (None when there is none): the probes in
    turn, until one lacks it."""
    breakdowns = [d for d in dims if d != TOTAL]
    if not breakdowns:
        return None
    return or_(*(lacking(total, key, dim, threshold) for dim in breakdowns))


def stored_or_probed(total: Any, key: dict[str, Any], dims: Sequence[str], threshold: int) -> Any:
    """Whether a total's row lacks a cover: its stored flag when found at ``threshold``, else
    the probes (None when the dataset has no breakdown)."""
    probed = any_lacking(total, key, dims, threshold)
    if probed is None:
        return None
    t = total.c
    return case((t.uncovered_for == threshold, t.uncovered), else_=probed)


def _refresh_statement(dims: Sequence[str], threshold: int, generation: int, dataset: str) -> Any:
    """UPDATE the flags of one generation's and dataset's totals at or above the threshold (each
    probe keyed by the updated total's layer and provider); the caller narrows it to rows."""
    t = T_CELL.c
    key = {"generation": generation, "dataset": dataset, "layer": t.layer, "provider": t.provider}
    probed = any_lacking(T_CELL, key, dims, threshold)
    return (
        update(T_CELL)
        .where(
            t.generation == generation,
            t.dataset == dataset,
            t.dim == TOTAL,
            t.fine.is_(False),
            t.value == "",
            t.count >= threshold,
        )
        .values(uncovered=False if probed is None else probed, uncovered_for=threshold)
    )


def _touched_rows() -> Any:
    """PostgreSQL: the touched rows as arrays, one element per row (``unnest`` side by side)."""
    columns = {"layer": String, "provider": String, "at": Date, "area": String}
    return select(
        *(
            func.unnest(bindparam(f"{name}s", type_=ARRAY(kind))).label(name)
            for name, kind in columns.items()
        )
    ).subquery("touched")


def plan_probes(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        # The planner's estimate of the probes is far too high: it would compile them (JIT)
        # for longer than they take.
        conn.exec_driver_sql("SET LOCAL jit = off")


def refresh(conn: Connection, rows: Iterable[Row], rules: dict[str, tuple[list[str], int]]) -> None:
    """Find again the flags of ``rows`` (generation, dataset, layer, provider, period start,
    area) whose total is at or above their dataset's threshold; ``rules`` gives each dataset's
    dims and threshold. PostgreSQL: one UPDATE per generation and dataset, joined to the rows
    (one key lookup each); SQLite: one UPDATE per row, sent together."""
    by_dataset: dict[tuple[int, str], list[Row]] = defaultdict(list)
    for row in rows:
        by_dataset[(row[0], row[1])].append(row)
    if not by_dataset:
        return
    plan_probes(conn)
    t = T_CELL.c
    for (generation, dataset), found in sorted(by_dataset.items()):
        statement = _refresh_statement(*rules[dataset], generation, dataset)
        keys = sorted({r[2:] for r in found}, key=lambda r: tuple(str(v) for v in r))
        if conn.dialect.name == "postgresql":
            touched = _touched_rows()
            narrowed = statement.where(*(getattr(t, n) == touched.c[n] for n in ROW))
            columns = zip(*keys, strict=True)
            conn.execute(narrowed, {f"{n}s": list(c) for n, c in zip(ROW, columns, strict=True)})
            continue
        narrowed = statement.where(*(getattr(t, n) == bindparam(f"k_{n}") for n in ROW))
        _each_row(conn, narrowed, keys)


def _each_row(conn: Connection, statement: Any, keys: list[tuple[Any, ...]]) -> None:
    """SQLite: the statement once per row by the driver's executemany, its hundred constant
    parameters bound once here (SQLAlchemy's per-row binding costs more than the update)."""
    compiled = statement.compile(conn)
    names = compiled.positiontup or []
    fixed = {k: int(v) if isinstance(v, bool) else v for k, v in compiled.params.items()}
    at = names.index("k_at")
    rows: list[list[Any]] = []
    for key in keys:
        fixed.update(zip((f"k_{n}" for n in ROW), key, strict=True))
        row: list[Any] = [fixed[name] for name in names]
        row[at] = row[at].isoformat()  # dates as ISO text, as SQLAlchemy stores them
        rows.append(row)
    driver: Any = conn.connection.driver_connection
    cursor = driver.cursor()
    try:
        cursor.executemany(str(compiled), rows)
    finally:
        cursor.close()


def refresh_generation(
    conn: Connection, generation: int, dataset: str, dims: list[str], threshold: int
) -> None:
    """Find again the flags of every total of one generation's dataset at or above the
    threshold (after a recount): one UPDATE."""
    plan_probes(conn)
    conn.execute(_refresh_statement(dims, threshold, generation, dataset))
