"""The count cube answers exactly what per-record counting answers, on real open data.

Greater Manchester burglaries in Manchester LSOAs (real points and months); the day within the
month, a second provider, an outcome attribute and linked people are added deterministically so
that grant windows cutting a month, withheld fields, people counts and cohorts are exercised.
The reference is the per-record path: every live derived record read back and counted one by one
(aggregates.aggregate over stored facts), as aggregates were answered before the cube.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import date
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from services.depersonalise import record_reads
from services.depersonalise.aggregate_query import disclosure_rule as _rule
from services.depersonalise.aggregates import (
    ALL,
    calendar_layout,
    fact_cells,
    lattice_table,
    uncovered_of,
    whole_granted,
)
from services.depersonalise.boundary_files import zipped_shapefile
from services.depersonalise.cube import dims_of
from services.depersonalise.derivation import T_RECORD
from services.depersonalise.main import create_app
from services.depersonalise.populations import population
from services.depersonalise.settings import Settings
from shared.catalogue import load_catalogue
from shared.grants import Slices, slices_of
from tests.conftest import (
    create_pg_database,
    drop_pg_database,
    key_settings,
    require_data,
    using_postgres,
)
from tests.depersonalise.conftest import FakeIngest, SyncClient, admin, service, token
from tests.depersonalise.test_realdata import BURGLARY, LSOA

pytestmark = pytest.mark.realdata
OUTCOMES = ["charged", "no-suspect", "investigating", "", "cautioned"]
T = T_RECORD
CATALOGUE = load_catalogue()


def _hash(i: int) -> int:
    return int.from_bytes(hashlib.sha256(str(i).encode()).digest()[:4], "big")


def _events(rows: list[tuple[str, float, float]]) -> list[dict[str, Any]]:
    from pyproj import Transformer

    to_bng = Transformer.from_crs("EPSG:4326", "EPSG:27700", always_xy=True)
    events = []
    for i, (month, lon, lat) in enumerate(rows):
        h = _hash(i)
        x, y = to_bng.transform(lon, lat)
        dataset = "offender-offence" if h % 7 == 0 else "police-crime"
        record = {
            "occurred_at": f"{month}-{1 + h % 28:02d}",
            "category": "Burglary" if h % 3 else "Robbery",
            "outcome": OUTCOMES[h % 5] or None,
        }
        events.append(
            {
                "event_id": i + 1,
                "op": "upsert",
                "dataset": dataset,
                "provider": "gmp" if h % 2 else "tfgm",
                "record_key": f"r{i:08x}",
                "revision": 1,
                "location_source": "coordinates",
                "easting": float(x),
                "northing": float(y),
                "record": record,
                "person": f"p{h % 1500}" if dataset == "offender-offence" else None,
            }
        )
    return events


def _memberships(first: int) -> list[dict[str, Any]]:
    """Synthetic cohort memberships of some of the linked people (two strands)."""
    return [
        {
            "event_id": first + n,
            "op": "upsert",
            "dataset": "offender-cohort",
            "provider": "probation",
            "record_key": f"m{n:05d}",
            "revision": 1,
            "record": {
                "occurred_at": f"2017-{1 + n % 12:02d}-{1 + n % 27:02d}",
                "occurred_to": "2018-06-30" if n % 4 == 0 else None,
                "category": "ppo" if n % 3 else "iom",
            },
            "person": f"p{n * 3 % 1500}",
        }
        for n in range(400)
    ]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    import pandas as pd

    shp = require_data(*LSOA)
    raw = pd.read_csv(require_data(*BURGLARY))
    rows = list(zip(raw["Month"], raw["Longitude"], raw["Latitude"], strict=True))[::3]
    url = (
        create_pg_database("depcube")
        if using_postgres()
        else f"sqlite:///{tmp_path_factory.mktemp('cube') / 'depersonalise.db'}"
    )
    app = create_app(
        Settings(database_url=url, **key_settings("depersonalise")),
        ingest_transport=httpx.MockTransport(FakeIngest().handle),
    )
    client = SyncClient(app)
    try:
        loaded = client.post(
            "/v1/geographies/lsoa21?code_field=lsoa21cd&name_field=lsoa21nm",
            content=zipped_shapefile(shp),
            headers={**admin(), "Content-Type": "application/zip"},
        )
        assert loaded.status_code == 202, loaded.text
        events = _events(rows)
        events += _memberships(len(events) + 1)
        # A correction and a retraction, so the cube has been changed, not only added to.
        events.append({**events[0], "event_id": len(events) + 1, "revision": 2})
        events.append({**events[1], "event_id": len(events) + 1, "op": "delete", "revision": 2})
        for start in range(0, len(events), 4000):
            answer = client.post(
                "/internal/events", json={"events": events[start : start + 4000]}, headers=service()
            )
            assert answer.status_code == 200, answer.text
        yield {"client": client, "app": app}
    finally:
        client.close()
        if using_postgres():
            drop_pg_database(url)


def _reference(app: Any, dataset: str, scope: Slices, ask: dict[str, Any]) -> dict[str, Any]:
    """The per-record answer: every live record of the dataset counted one by one into base
    cells (and by every breakdown, for the covers), laid out under the same lattice."""
    engine, registry = app.state.engine, app.state.depersonalise.registry
    spec = CATALOGUE[dataset]
    where = record_reads._live(registry.generation, dataset, scope)

    def facts(by: str | None, shown: bool = True) -> list[Any]:
        with engine.connect() as conn:
            found = record_reads._facts(
                conn.execute(select(*record_reads.FACT_COLUMNS).where(where)), "lsoa21", by
            )
        return whole_granted(found, scope, spec.time_resolution, by if shown else None)

    layer = registry.active["lsoa21"]
    areas = list(zip(layer.codes.tolist(), layer.names.tolist(), strict=True))
    rule = _rule(spec, None)
    first = date.fromisoformat(ask["from"]) if "from" in ask else None
    last = date.fromisoformat(ask["to"]) if "to" in ask else None
    people = ask.get("count") == "people"
    kept = [
        f
        for f in facts(ask.get("by"))
        if (first is None or f.start >= first) and (last is None or f.start <= last)
    ]
    rows, who = fact_cells(kept, people, ask.get("by"))
    starts = {r[2] for r in (who if who is not None else rows)}
    period = ask.get("period", "month")
    layout = calendar_layout(areas, None, period, spec.time_resolution, (first, last), starts)
    # Covers look at every breakdown's true values, whatever the grants show.
    counted = [fact_cells(facts(dim, shown=False), people, dim) for dim in dims_of(spec)[1:]]
    dims = [who or rows for rows, who in counted]
    found = uncovered_of(dims, rule.lattice().threshold, people)
    loose = {r for r in found if _within(r[2], first, last)}
    described = {"base_layer": "lsoa21", "base_period": spec.time_resolution}
    with engine.connect() as conn:
        residents = population(conn, "lsoa21")
    return lattice_table(rows, layout, rule, ask.get("by"), residents, loose, who, described)


def _within(start: date, first: date | None, last: date | None) -> bool:
    return (first is None or start >= first) and (last is None or start <= last)


GRANTS = [
    [{"provider": "gmp", "fields": None}, {"provider": "tfgm", "fields": None}],
    # Windows cutting months, overlapping terms of one provider with different fields.
    [
        {"provider": "gmp", "fields": ["category"], "from": "2016-05-17", "to": "2017-03-09"},
        {"provider": "gmp", "fields": None, "from": "2016-11-02", "to": "2018-02-14"},
        {"provider": "tfgm", "fields": ["outcome"], "from": "2017-02-10"},
    ],
    [{"provider": "tfgm", "fields": ["category"], "to": "2016-08-20"}],
]
ASKS = [
    {"period": "month"},
    {"period": "quarter", "by": "category"},
    {"period": "year", "by": "outcome"},
    {"period": "month", "from": "2016-07-01", "to": "2017-08-31", "by": "outcome"},
    {"period": "quarter", "from": "2017-01-01", "to": "2018-12-31"},
]


def _query(dataset: str, ask: dict[str, Any], grants: list[dict[str, Any]]) -> tuple[str, Any]:
    params = "&".join(f"{k}={v}" for k, v in ask.items())
    headers = token(
        sub="council",
        action="read",
        dataset=dataset,
        level="aggregate",
        providers=sorted({g["provider"] for g in grants}),
        grants=grants,
        agreement="agr-1",
    )
    return f"/v1/datasets/{dataset}/aggregates?geography=lsoa21&{params}", headers


@pytest.mark.parametrize("grants", GRANTS, ids=["all", "windows", "one-provider"])
@pytest.mark.parametrize("ask", ASKS, ids=[str(i) for i in range(len(ASKS))])
def test_cube_answers_what_per_record_counting_answers(
    hub: dict[str, Any], grants: list[dict[str, Any]], ask: dict[str, Any]
) -> None:
    for dataset in ("police-crime", "offender-offence"):
        asks = [ask, {**ask, "count": "people"}] if dataset == "offender-offence" else [ask]
        for one in asks:
            url, headers = _query(dataset, one, grants)
            answer = hub["client"].get(url, headers=headers)
            granted = slices_of(grants).uniform_fields()
            if one.get("by") and granted is not None and one["by"] not in granted:
                assert answer.status_code == 422  # no grant shows the field at all
                continue
            assert answer.status_code == 200, answer.text
            expected = _reference(hub["app"], dataset, slices_of(grants), one)
            body = answer.json()
            assert body["disclosure"] == expected["disclosure"], (dataset, one)
            assert body["cells"] == expected["cells"], (dataset, one)


def test_cube_key_sums_are_the_records_and_peoples_keys(hub: dict[str, Any]) -> None:
    from services.depersonalise.tables import cube_table

    app = hub["app"]
    grants = GRANTS[1]
    scope = slices_of(grants)
    layer = app.state.depersonalise.registry.active["lsoa21"]
    areas = list(zip(layer.codes.tolist(), layer.names.tolist(), strict=True))
    spec = CATALOGUE["offender-offence"]
    for people in (False, True):
        ask = {"period": "quarter", "by": "outcome", "count": "people" if people else "records"}
        expected = _reference(app, "offender-offence", scope, ask)
        with app.state.engine.connect() as conn:
            ours = cube_table(
                conn,
                app.state.depersonalise.registry,
                spec,
                scope,
                "lsoa21",
                areas,
                ("quarter", None, None),
                "outcome",
                _rule(spec, None),
                people,
            )
        assert (ours["key"] == expected["key"]).all()
        assert ours["key"].sum() > 0


def test_a_cohort_query_reads_only_the_cohorts_people(hub: dict[str, Any]) -> None:
    grants = GRANTS[0]
    headers = token(
        sub="council",
        action="read",
        dataset="offender-offence",
        level="aggregate",
        providers=["gmp", "tfgm"],
        grants=grants,
        cohort_grants=[{"provider": "probation", "fields": None}],
        agreement="agr-1",
    )
    answer = hub["client"].get(
        "/v1/datasets/offender-offence/aggregates?cohort=ppo&period=quarter&count=people",
        headers=headers,
    )
    assert answer.status_code == 200, answer.text
    engine, generation = hub["app"].state.engine, hub["app"].state.depersonalise.registry.generation
    with engine.connect() as conn:
        members = set(
            conn.execute(
                select(T.c.person).where(
                    (T.c.generation == generation)
                    & (T.c.dataset == "offender-cohort")
                    & (T.c.category == "ppo")
                )
            ).scalars()
        )
        held = conn.execute(
            select(func.count())
            .select_from(T)
            .where(
                (T.c.generation == generation)
                & (T.c.dataset == "offender-offence")
                & T.c.person.in_(members)
            )
        ).scalar_one()
    with engine.connect() as conn:
        facts = record_reads.aggregate_rows(
            conn, generation, "offender-offence", slices_of(grants), None, None, people=members
        )
    assert len(facts) == held > 0
    assert {f.area for f in facts} == {ALL}
    records = answer.json()["disclosure"]["records"]
    assert records is None or records <= held  # no total where a cell is suppressed


@pytest.mark.parametrize("ask", ASKS[:3], ids=["month", "quarter-category", "year-outcome"])
def test_the_json_written_from_the_arrays_is_the_json_of_the_cells_byte_for_byte(
    hub: dict[str, Any], ask: dict[str, Any]
) -> None:
    from starlette.responses import JSONResponse

    url, headers = _query("police-crime", ask, GRANTS[0])
    answer = hub["client"].get(url, headers=headers)
    assert answer.status_code == 200, answer.text
    expected = _reference(hub["app"], "police-crime", slices_of(GRANTS[0]), ask)
    cells = [dict(cell) for cell in expected["cells"]]  # one dict per cell, as before
    assert any(c["count"] is None for c in cells) and any(c["count"] == 0 for c in cells)
    assert answer.content == JSONResponse({**answer.json(), "cells": cells}).body
