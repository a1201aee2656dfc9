"""Reads of derived records on the request's connection: the facts of a cohort's records, the
providers holding a dataset, a keyset page of records and their disclosure figures, records in
no layer. Every read is of one generation (the served one, ``Registry.generation``) and of the
records the caller's grants reach. None commits.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import false, func, or_, select
from sqlalchemy.engine import Connection

from services.depersonalise import cube
from services.depersonalise.aggregates import ALL, Fact
from services.depersonalise.derivation import T_FIGURES, T_RECORD
from services.depersonalise.masking_figures import merge_histograms
from shared.catalogue import Dataset
from shared.grants import Slices


def _granted(scope: Slices) -> Any:
    """Records of each provider dated within one of its grants' windows."""
    day = func.coalesce(T_RECORD.c.occurred_on, T_RECORD.c.period_start)
    clauses = []
    for provider, first, last in scope.windows():
        clause = T_RECORD.c.provider == provider
        if first is not None:
            clause = clause & (day >= first)
        if last is not None:
            clause = clause & (day <= last)
        clauses.append(clause)
    return or_(*clauses) if clauses else false()


def _live(generation: int, dataset: str, scope: Slices) -> Any:
    return (
        (T_RECORD.c.generation == generation)
        & (T_RECORD.c.dataset == dataset)
        & _granted(scope)
        & (T_RECORD.c.deleted.is_(False))
    )


def aggregate_rows(
    conn: Connection,
    generation: int,
    dataset: str,
    scope: Slices,
    layer: str | None,
    by: str | None = "category",
    people: set[str] | None = None,
    category: str | None = None,
) -> list[Fact]:
    """A fact of every record in scope of the given ``people`` (or of ``category``): its area in
    ``layer`` (``all`` without one), period start, day, end of window, the ``by`` field's value,
    provider, person pseudonym and keys. Cohort queries only, bounded by the cohort's people or
    strand: tables of whole datasets are read from the cube."""
    if people is None and category is None:
        raise ValueError("a per-record read is bounded by people or a category")
    where = _live(generation, dataset, scope)
    if category is not None:
        where = where & (T_RECORD.c.category == category)
    if people is None:
        return _facts(conn.execute(select(*FACT_COLUMNS).where(where)), layer, by)
    facts: list[Fact] = []
    chosen = sorted(people)
    for start in range(0, len(chosen), 500):
        bounded = where & T_RECORD.c.person.in_(chosen[start : start + 500])
        facts += _facts(conn.execute(select(*FACT_COLUMNS).where(bounded)), layer, by)
    return facts


FACT_COLUMNS = (
    T_RECORD.c.areas,
    T_RECORD.c.period_start,
    T_RECORD.c.category,
    T_RECORD.c.provider,
    func.coalesce(T_RECORD.c.occurred_on, T_RECORD.c.period_start),
    T_RECORD.c.occurred_until,
    T_RECORD.c.person,
    T_RECORD.c.attributes,
    T_RECORD.c.counted,
    T_RECORD.c.key,
    T_RECORD.c.person_key,
)


def _facts(result: Any, layer: str | None, by: str | None) -> list[Fact]:
    facts = []
    for areas, start, category, provider, day, until, person, attrs, counted, key, pkey in result:
        if by in (None, "category"):
            value = category
        else:
            value = (attrs or {}).get(by, (counted or {}).get(by))
        facts.append(
            Fact(
                (areas or {}).get(layer) if layer is not None else ALL,
                start,
                None if value is None else str(value),
                provider,
                _as_date(day),
                _as_date(until),
                person,
                key or 0,
                pkey or 0,
            )
        )
    return facts


def base_people(
    conn: Connection, query: cube.Query, spec: Dataset, scope: Slices
) -> list[cube.PersonRow]:
    return list(cube.read_people(conn, query, spec, scope))


def providers_holding(conn: Connection, generation: int, dataset: str) -> set[str]:
    """Every provider with live records of ``dataset``."""
    return set(
        conn.execute(
            select(T_RECORD.c.provider)
            .where(
                (T_RECORD.c.generation == generation)
                & (T_RECORD.c.dataset == dataset)
                & (T_RECORD.c.deleted.is_(False))
            )
            .distinct()
        ).scalars()
    )


def _as_date(value: Any) -> date | None:
    # SQLite answers coalesce() over dates as text.
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def record_page(
    conn: Connection,
    generation: int,
    dataset: str,
    scope: Slices,
    after: int,
    limit: int,
) -> list[dict[str, Any]]:
    result = conn.execute(page_select(generation, dataset, scope, after, limit))
    return [dict(r) for r in result.mappings()]


def page_select(generation: int, dataset: str, scope: Slices, after: int, limit: int) -> Any:
    """One keyset page of live records in id order (index ix_derived_page)."""
    return (
        select(T_RECORD)
        .where(_live(generation, dataset, scope) & (T_RECORD.c.id > after))
        .order_by(T_RECORD.c.id)
        .limit(limit)
    )


def record_figures(
    conn: Connection, generation: int, dataset: str, scope: Slices
) -> tuple[float | None, float | None, dict[str, int], int, int]:
    """Smallest and median k of the published points, the displacement histogram, records and
    records without a point: counted by the database, no record loaded."""
    live = _live(generation, dataset, scope)
    total, without, with_k, k_min = conn.execute(
        select(
            func.count(),
            func.count().filter(T_RECORD.c.x.is_(None)),
            func.count(T_RECORD.c.k),
            func.min(T_RECORD.c.k),
        ).where(live)
    ).one()
    middle = (
        [
            float(k)
            for k in conn.execute(
                select(T_RECORD.c.k)
                .where(live & T_RECORD.c.k.is_not(None))
                .order_by(T_RECORD.c.k)
                .offset((with_k - 1) // 2)
                .limit(1 if with_k % 2 else 2)
            ).scalars()
        ]
        if with_k
        else []
    )
    histograms = [
        r[0] or {}
        for r in conn.execute(
            select(T_FIGURES.c.displacement).where(
                (T_FIGURES.c.generation == generation)
                & (T_FIGURES.c.dataset == dataset)
                & T_FIGURES.c.provider.in_(scope.providers)
            )
        )
    ]
    median = sum(middle) / len(middle) if middle else None
    return k_min, median, merge_histograms(histograms), int(total), int(without)


def records_without_area(conn: Connection, generation: int) -> int:
    """Live records that fall in none of the loaded layers."""
    return int(
        conn.execute(
            select(func.count())
            .select_from(T_RECORD)
            .where(
                (T_RECORD.c.generation == generation)
                & (T_RECORD.c.deleted.is_(False))
                & T_RECORD.c.outside_all.is_(True)
            )
        ).scalar_one()
    )
