"""The release lattice (protection.py) on hand-made base tables, and nesting between layers."""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.depersonalise.boundary_files import read_layer, zipped_shapefile
from services.depersonalise.demo import MANCHESTER, demo_layer
from services.depersonalise.geography import derive_layer, parent_map
from services.depersonalise.protection import (
    Cells,
    Lattice,
    Rows,
    Shape,
    noise,
    release,
    uncovered_rows,
)
from tests.conftest import require_data
from tests.depersonalise.conftest import admin, event, reader, wait_rebuild
from tests.depersonalise.test_api import load_demo, push

T5 = Lattice(5)
MONTHS = Shape(np.array([0]), np.array([0, 1, 2]), 1, 3)
QUARTER = Shape(np.array([0]), np.array([0, 0, 0]), 1, 1)


def flat(answer):  # (count or None) of each cell, in order
    return [
        None if s else int(c)
        for c, s in zip(answer.count.ravel(), answer.suppressed.ravel(), strict=True)
    ]


def test_a_suppressed_month_inside_a_published_quarter_makes_the_quarter_suppressed() -> None:
    cells = Cells.of({(0, 0, 0, 0): 6, (0, 0, 1, 0): 2, (0, 0, 2, 0): 7})
    months = release(cells, MONTHS, T5, breakdown=False)
    assert flat(months) == [6, None, 7]
    assert months.records is None  # 15 would give the 2 away
    assert flat(release(cells, QUARTER, T5, breakdown=False)) == [None]
    whole = Cells.of({(0, 0, 0, 0): 6, (0, 0, 1, 0): 5, (0, 0, 2, 0): 7})
    quarter = release(whole, QUARTER, T5, breakdown=False)
    assert flat(quarter) == [18] and quarter.records == 18


def test_a_parent_area_with_one_small_base_area_is_suppressed() -> None:
    # Base areas 0, 1 in parent 0; base area 2 in parent 1; one period.
    parents = Shape(np.array([0, 0, 1]), np.array([0]), 2, 1)
    cells = Cells.of({(0, 0, 0, 0): 40, (0, 1, 0, 0): 3, (0, 2, 0, 0): 9})
    assert flat(release(cells, parents, T5, breakdown=False)) == [None, 9]


def test_two_providers_are_each_their_own_base() -> None:
    # 6 of provider 0 and 2 of provider 1 in one cell: 8 together, but the 2 is suppressed, so
    # the union is too (else the answer without provider 1 would give the 2 away).
    one = Shape(np.array([0]), np.array([0]), 1, 1)
    cells = Cells.of({(0, 0, 0, 0): 6, (1, 0, 0, 0): 2})
    assert flat(release(cells, one, T5, breakdown=False)) == [None]
    only_first = Cells.of({(0, 0, 0, 0): 6})
    assert flat(release(only_first, one, T5, breakdown=False)) == [6]


def test_a_row_with_a_small_cell_gets_a_cover_and_its_total_stays_published() -> None:
    by = Shape(np.array([0]), np.array([0]), 1, 1, values=3)
    category = Cells.of({(0, 0, 0, 0): 3, (0, 0, 0, 1): 10, (0, 0, 0, 2): 12})
    # The 3 and its cover, the smallest published non-zero cell (10), are hidden together.
    assert flat(release(category, by, T5, breakdown=True)) == [None, None, 12]
    total = Cells.of({(0, 0, 0, 0): 25})
    one = Shape(np.array([0]), np.array([0]), 1, 1)
    assert flat(release(total, one, T5, breakdown=False, others=[category])) == [25]


def test_a_row_whose_small_cells_have_no_cover_hides_its_total_in_every_breakdown() -> None:
    one = Shape(np.array([0]), np.array([0]), 1, 1)
    # 1 + 1 + 3: a total of 5 would tell each is at most 3, not 1..4.
    category = Cells.of({(0, 0, 0, 0): 1, (0, 0, 0, 1): 1, (0, 0, 0, 2): 3})
    outcome = Cells.of({(0, 0, 0, 0): 5})  # no small cell, but it sums to the total
    loose = uncovered_rows([category, outcome], 5)
    assert (loose.provider.tolist(), loose.area.tolist(), loose.period.tolist()) == ([0], [0], [0])
    total = Cells.of({(0, 0, 0, 0): 5})
    assert flat(release(total, one, T5, breakdown=False, uncovered=loose)) == [None]
    by_outcome = Shape(np.array([0]), np.array([0]), 1, 1, values=1)
    assert flat(release(outcome, by_outcome, T5, breakdown=True, uncovered=loose)) == [None]


def test_a_total_that_leaves_its_small_cells_free_is_published_without_a_cover() -> None:
    # 2 + 3 = 5: either may be anything in 1..4 given the total. 4 + 4 = 8 would fix both.
    free = Cells.of({(0, 0, 0, 0): 2, (0, 0, 0, 1): 3})
    fixed = Cells.of({(0, 0, 1, 0): 4, (0, 0, 1, 1): 4})
    loose = uncovered_rows([free, fixed], 5)
    assert (loose.period.tolist(), len(loose)) == ([1], 1)
    totals = Cells.of({(0, 0, 0, 0): 5, (0, 0, 1, 0): 8})
    two = Shape(np.array([0]), np.array([0, 1]), 1, 2)
    assert flat(release(totals, two, T5, breakdown=False, uncovered=loose)) == [5, None]


def test_health_counts_follow_the_nhs_rule_on_the_exact_sums() -> None:
    nhs = Lattice(8, round_to=5)
    cells = Cells.of({(0, 0, 0, 0): 9, (0, 0, 1, 0): 8, (0, 0, 2, 0): 7})
    assert flat(release(cells, MONTHS, nhs, breakdown=False)) == [10, 10, None]
    whole = Cells.of({(0, 0, 0, 0): 9, (0, 0, 1, 0): 8, (0, 0, 2, 0): 9})
    assert flat(release(whole, QUARTER, nhs, breakdown=False)) == [25]  # 26 rounded, not 30


def test_a_callers_higher_threshold_only_hides_more_of_the_same_lattice() -> None:
    cells = Cells.of({(0, 0, 0, 0): 6, (0, 0, 1, 0): 2, (0, 0, 2, 0): 9})
    own = flat(release(cells, MONTHS, T5, breakdown=False))
    higher = flat(release(cells, MONTHS, Lattice(5, hide_below=8), breakdown=False))
    assert own == [6, None, 9] and higher == [None, None, 9]


def test_perturbation_is_fixed_per_cell_key_and_within_its_bound() -> None:
    keys = np.arange(256)
    assert set(noise(keys, 2).tolist()) == {-2, -1, 0, 1, 2}
    one = Shape(np.array([0]), np.array([0]), 1, 1)
    noisy = Lattice(5, perturbation=2)
    seen = set()
    for key in range(256):
        cells = Cells.of({(0, 0, 0, 0): 5}, {(0, 0, 0, 0): key})
        first = release(cells, one, noisy, breakdown=False)
        again = release(cells, one, noisy, breakdown=False)
        assert int(first.count[0, 0, 0]) == int(again.count[0, 0, 0])
        assert abs(int(first.count[0, 0, 0]) - 5) <= 2
        seen.add(int(first.count[0, 0, 0]))
    assert seen == {3, 4, 5, 6, 7}
    zero = release(Cells.of({}), one, noisy, breakdown=False)
    assert flat(zero) == [0]


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        st.tuples(st.integers(0, 1), st.integers(0, 3), st.integers(0, 2), st.integers(0, 2)),
        st.integers(1, 12),
        max_size=40,
    )
)
def test_every_published_cell_is_a_sum_of_published_base_cells(counts) -> None:
    cells = Cells.of(counts)
    # Parents {0, 1} and {2, 3}; a quarter of three months; three values.
    shape = Shape(np.array([0, 0, 1, 1]), np.array([0, 0, 0]), 2, 1, values=3)
    base = release(cells, Shape(np.arange(4), np.arange(3), 4, 3, values=3), T5, breakdown=True)
    answer = release(cells, shape, T5, breakdown=True)
    hidden = base.suppressed  # [area, period, value] at the base
    for parent in (0, 1):
        for value in range(3):
            inside = hidden[2 * parent : 2 * parent + 2, :, value]
            exact = sum(n for (_, a, _, v), n in counts.items() if a // 2 == parent and v == value)
            if answer.suppressed[parent, 0, value]:
                assert inside.any() or 1 <= exact < 5
            else:
                assert not inside.any() and answer.count[parent, 0, value] == exact
    small = [n for n in base.count[~base.suppressed].tolist() if 1 <= n < 5]
    assert not small  # per provider, a small base cell is never published


def test_empty_rows_are_harmless() -> None:
    assert len(uncovered_rows([], 5)) == 0
    empty = release(Cells.of({}), MONTHS, T5, breakdown=True, uncovered=Rows.of([]))
    assert flat(empty) == [0, 0, 0] and empty.records == 0


# --- nesting from geometries -----------------------------------------------------------------


@pytest.fixture(scope="module")
def manchester():
    lsoa = read_layer(
        zipped_shapefile(require_data("boundaries", "manchester_lsoa21.shp")),
        "lsoa21",
        "lsoa21cd",
        "lsoa21nm",
    )
    msoa = derive_layer(lsoa, "msoa21", {"source": "name", "start": 0, "end": -1}, None)
    lad = derive_layer(
        lsoa, "lad", {"lookup": dict.fromkeys(lsoa.codes.tolist(), "E08000003")}, None
    )
    wards = read_layer(
        zipped_shapefile(require_data("boundaries", "manchester_wards22.shp")), "wards", "wd22cd"
    )
    return lsoa, msoa, lad, wards


@pytest.mark.slow
def test_real_lsoas_nest_in_msoas_and_the_lad_and_not_in_wards(manchester) -> None:
    lsoa, msoa, lad, wards = manchester
    in_msoa = parent_map(lsoa, msoa)
    assert in_msoa is not None and len(in_msoa) == len(lsoa) == 295
    assert len(set(in_msoa.values())) == len(msoa) > 50
    assert set((parent_map(lsoa, lad) or {}).values()) == {"E08000003"}
    assert parent_map(msoa, lad) is not None
    assert parent_map(lsoa, wards) is None  # 2021 LSOAs straddle 2022 ward boundaries
    assert parent_map(msoa, lsoa) is None  # coarser never nests in finer


def _layer(client, name: str, parent: str | None = None, **shape) -> object:
    query = "code_field=code&name_field=name" + (f"&parent={parent}" if parent else "")
    return client.post(
        f"/v1/geographies/{name}?{query}",
        content=json.dumps(demo_layer(**shape)),
        headers={**admin(), "Content-Type": "application/geo+json"},
    )


def test_a_parent_layer_must_be_known_and_the_layer_nested_in_it(make_client) -> None:
    client, fake = make_client()
    load_demo(client)
    assert wait_rebuild(client)["state"] == "complete"
    unknown = _layer(client, "fine", "nowhere", columns=12, rows=12, size_metres=500)
    assert unknown.status_code == 422 and unknown.json()["field"] == "parent"
    assert "unknown layer family" in unknown.json()["detail"]
    shifted = (MANCHESTER[0] + 250, MANCHESTER[1])
    across = _layer(client, "fine", "demo", centre=shifted, columns=12, rows=12, size_metres=500)
    assert across.status_code == 422 and across.json()["field"] == "parent"
    nested = _layer(client, "fine", "demo", columns=12, rows=12, size_metres=500)
    assert nested.status_code == 202, nested.text
    assert wait_rebuild(client)["state"] == "complete"
    registry = client.app.state.depersonalise.registry
    assert registry.family["demo"] == "fine" and registry.family["fine"] == "fine"
    # Six records in one 1 km area, 2 + 4 in two of its 500 m areas: the 1 km answer is made of
    # the 500 m base cells, so it is suppressed with them (else 6 - 4 gives the 2 away).
    events = [event(i, f"e{i}", 380100, 394100) for i in range(2)]
    events += [event(10 + i, f"f{i}", 380600, 394100) for i in range(4)]
    push(client, fake, events)
    query = "/v1/datasets/police-crime/aggregates?period=month&from=2024-01-01&to=2024-01-31"
    coarse = client.get(query + "&geography=demo", headers=reader()).json()
    assert coarse["disclosure"]["protected"]["base_layer"] == "fine"
    assert {c["area"]: c["count"] for c in coarse["cells"]}["DEMO0001"] is None


def test_the_catalogue_turns_cell_key_perturbation_on_and_the_answer_says_so() -> None:
    import tomllib

    from services.depersonalise.aggregate_query import disclosure_rule as _rule
    from services.depersonalise.aggregates import calendar_layout, lattice_table
    from shared.catalogue import load_catalogue

    shipped = load_catalogue()
    assert all(spec.disclosure.perturbation is None for spec in shipped.values())
    text = '[disclosure]\nthreshold = 5\n[disclosure.perturbation]\nmethod = "cell-key"\nmax = 2\n'
    police = shipped["police-crime"]
    disclosure = type(police.disclosure).model_validate(tomllib.loads(text)["disclosure"])
    spec = police.model_copy(update={"disclosure": disclosure})
    rule = _rule(spec, None)
    assert rule.as_dict()["perturbation"] == {"method": "cell-key", "max": 2}
    areas = [(f"A{i}", f"A{i}") for i in range(40)]
    layout = calendar_layout(areas, None, "month", "month", (None, None), [date(2024, 1, 1)])
    base = [("gmp", f"A{i}", date(2024, 1, 1), "", 10, 37 * i) for i in range(40)]
    table = lattice_table(base, layout, rule, None)
    counts = [c["count"] for c in table["cells"]]
    assert all(8 <= n <= 12 for n in counts) and len(set(counts)) > 1
    assert table["cells"] == lattice_table(base, layout, rule, None)["cells"]  # same noise
    assert table["disclosure"]["protected"]["perturbation"] == {"method": "cell-key", "max": 2}


def _triangles(size: float = 2000.0, columns: int = 3) -> dict:
    """Each square of a ``columns`` × ``columns`` grid of ``size`` cut along its rising diagonal."""
    west, south = MANCHESTER[0] - columns * size / 2, MANCHESTER[1] - columns * size / 2
    features = []
    for row in range(columns):
        for column in range(columns):
            x0, y0 = west + column * size, south + row * size
            x1, y1 = x0 + size, y0 + size
            for half, ring in (
                ("a", [[x0, y0], [x1, y0], [x1, y1]]),
                ("b", [[x0, y0], [x1, y1], [x0, y1]]),
            ):
                features.append(
                    {
                        "type": "Feature",
                        "properties": {
                            "code": f"T{row}{column}{half}",
                            "name": f"T{row}{column}{half}",
                        },
                        "geometry": {"type": "Polygon", "coordinates": [[*ring, ring[0]]]},
                    }
                )
    return {**demo_layer(), "features": features}


def test_a_parent_is_hidden_where_any_layer_nested_in_it_hides_a_part(make_client) -> None:
    # 2 km squares; inside them the 1 km demo squares and, not nested in those, two triangles
    # per square. In the first square: 5 records in its lower-left 1 km square (3 below the
    # diagonal, 2 above) and 6 in its upper-left one. The squares' base (1 km) publishes 5 and 6,
    # but the lower triangle holds only 3: the 2 km square must be hidden, else 11 - 8 = 3.
    client, fake = make_client()
    load_demo(client)
    assert _layer(client, "big", columns=3, rows=3, size_metres=2000).status_code == 202
    halves = client.post(
        "/v1/geographies/halves?code_field=code&name_field=name&parent=big",
        content=json.dumps(_triangles()),
        headers={**admin(), "Content-Type": "application/geo+json"},
    )
    assert halves.status_code == 202, halves.text
    assert wait_rebuild(client)["state"] == "complete"
    registry = client.app.state.depersonalise.registry
    assert registry.family["big"] == "demo" and ("halves", "demo") not in registry.parents
    west, south = MANCHESTER[0] - 3000, MANCHESTER[1] - 3000
    points = [(west + 700, south + 200)] * 3 + [(west + 200, south + 700)] * 2
    points += [(west + 300, south + 1500)] * 6
    push(client, fake, [event(i, f"t{i}", x, y) for i, (x, y) in enumerate(points)])
    query = "/v1/datasets/police-crime/aggregates?period=month&from=2024-01-01&to=2024-01-31"
    cells = {}
    for layer in ("demo", "halves", "big"):
        body = client.get(f"{query}&geography={layer}", headers=reader()).json()
        cells[layer] = {c["area"]: c["count"] for c in body["cells"] if c["count"] != 0}
    assert cells["demo"] == {"DEMO0001": 5, "DEMO0007": 6}
    assert cells["halves"] == {"T00a": None, "T00b": 8}
    assert cells["big"] == {"DEMO0001": None}


def test_ranges_that_cut_a_period_are_refused_naming_the_end(make_client) -> None:
    client, _ = make_client()
    load_demo(client)
    base = "/v1/datasets/police-crime/aggregates?geography=demo"
    for query, field in (
        ("&period=month&from=2024-01-15&to=2024-03-31", "from"),
        ("&period=year&from=2024-01-01&to=2024-03-28", "to"),
        ("&period=quarter&from=2024-02-01&to=2024-06-30", "from"),
        ("&period=quarter&from=2024-01-01&to=2024-05-31", "to"),
    ):
        answer = client.get(base + query, headers=reader())
        assert answer.status_code == 422, query
        assert (answer.json()["field"], answer.json()["type"].rsplit(":", 1)[-1]) == (
            field,
            "range-cuts-period",
        )
    whole = client.get(base + "&period=quarter&from=2024-01-01&to=2024-06-30", headers=reader())
    assert whole.status_code == 200
    cohort = reader(dataset="offender-offence")
    relative = client.get(
        "/v1/datasets/offender-offence/aggregates?cohort=PPO&relative=joined&from=2024-02-01",
        headers=cohort,
    )
    assert relative.status_code == 422 and relative.json()["field"] == "from"
