"""The rules the depersonalise routes call, called directly: what an aggregates query may ask,
which record reads and tool uses are refused, what an upload may be, and which layer names."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import pytest

from services.depersonalise.aggregate_query import (
    AggregateQuery,
    answer_body,
    check_table_size,
    checked_areas,
    cohort_scope,
    disclosure_rule,
    release_query,
)
from services.depersonalise.layer_registry import Registry
from services.depersonalise.layers import check_k, check_name, geography_listing, layer_or_error
from services.depersonalise.record_bodies import incoming_records, validated
from services.depersonalise.record_policy import check_record_read, may_use_the_tool, read_scope
from services.depersonalise.uploads import read_body, read_population
from shared.catalogue import load_catalogue
from shared.errors import ProblemError
from shared.grants import slices_of
from shared.tokens import InternalClaims

CATALOGUE = load_catalogue()
CRIME = CATALOGUE["police-crime"]
SCOPE = slices_of([{"provider": "gmp", "fields": None, "from": "2024-01-01"}])


def query(**given: Any) -> AggregateQuery:
    asked: dict[str, Any] = {
        "geography": None,
        "period": "month",
        "first": None,
        "last": None,
        "by": None,
        "threshold": None,
        "cohort": None,
        "count": "records",
        "relative": None,
    }
    return AggregateQuery(**{**asked, **given})


def refusal(call: Any, *args: Any) -> ProblemError:
    with pytest.raises(ProblemError) as refused:
        call(*args)
    return refused.value


def test_the_checks_of_a_query_are_met_in_order_each_naming_its_field() -> None:
    registry = Registry(generation=1)
    cases = [
        (query(relative="joined"), "relative-without-cohort", "relative"),
        (query(relative="joined", geography="x"), "relative-without-cohort", "relative"),
        (query(), "missing", "geography"),
        (query(cohort="iom", relative="joined", period="year"), "period-not-relative", "period"),
        (query(geography="x", count="people"), "no-person-fields", "count"),
        (query(geography="x", by="postcode"), "invalid-breakdown", "by"),
        (query(geography="x"), "unknown-layer", "geography"),
        (query(cohort="iom", period="week"), "period-too-fine", "period"),
        (query(cohort="iom", first=date(2024, 3, 1), last=date(2024, 1, 31)), "invalid-range",
         "from"),
        (query(cohort="iom", first=date(1800, 1, 1)), "invalid-range", "from"),
        (query(cohort="iom", first=date(2024, 1, 2)), "range-cuts-period", "from"),
    ]  # fmt: skip
    for asked, slug, field in cases:
        refused = refusal(checked_areas, CRIME, SCOPE, registry, asked, 1000)
        assert (refused.slug, refused.extra["field"]) == (slug, field), asked


def test_a_query_without_geography_counts_one_area() -> None:
    registry = Registry(generation=1)
    asked = query(cohort="iom", first=date(2024, 1, 1), last=date(2024, 12, 31))
    assert checked_areas(CRIME, SCOPE, registry, asked, 1000) == (None, [("all", "all")])


def test_a_table_over_the_cell_limit_is_refused_and_one_at_it_is_not() -> None:
    check_table_size(date(2024, 1, 1), date(2024, 12, 31), "month", 10, 120)
    refused = refusal(check_table_size, date(2024, 1, 1), date(2024, 12, 31), "month", 10, 119)
    assert refused.slug == "table-too-large"


def test_the_threshold_never_goes_below_the_floor_and_a_higher_one_is_kept() -> None:
    assert disclosure_rule(CRIME, None).threshold == CRIME.disclosure.threshold
    assert disclosure_rule(CRIME, 20).threshold == 20
    refused = refusal(disclosure_rule, CRIME, CRIME.disclosure.floor - 1)
    assert refused.extra["rule"] == "disclosure-floor"


def test_a_cohort_query_needs_a_grant_on_the_cohort() -> None:
    claims = InternalClaims(sub="council")
    assert (
        refusal(cohort_scope, claims, "police-crime", SCOPE).extra["rule"] == "cohort-not-granted"
    )
    assert cohort_scope(claims, "offender-cohort", SCOPE) is SCOPE


def test_the_release_names_the_query_and_a_cohort_answer_says_who_is_left_out() -> None:
    asked = query(cohort="iom", first=date(2024, 1, 1))
    rule = disclosure_rule(CRIME, None)
    recorded = release_query(asked, rule, ["gmp"], "json")
    assert recorded["from"] == "2024-01-01" and recorded["to"] == "" and recorded["cohort"] == "iom"
    answer = {"cells": [], "disclosure": {"records": 0}}
    body = answer_body(asked, rule, answer, ("police-crime", "a1", "r1"), ["cps"])
    assert body["geography"] == "all" and body["providers_left_out"] == ["cps"]
    assert "cohort" not in answer_body(query(), rule, answer, ("police-crime", None, "r1"), [])


def test_record_reads_and_the_tool_are_refused_outside_the_record_levels() -> None:
    claims = InternalClaims(sub="council", dataset="police-crime", level="aggregate")
    assert refusal(check_record_read, CRIME, claims, "personal").slug == "wrong-level"
    assert refusal(check_record_read, CRIME, claims, "depersonalised").extra["rule"] == (
        "level-not-agreed"
    )
    aggregate_only = CATALOGUE["drug-treatment"]
    assert refusal(check_record_read, aggregate_only, claims, "depersonalised").extra["rule"] == (
        "dataset-aggregate-only"
    )
    assert refusal(may_use_the_tool, claims, CRIME).extra["rule"] == "level-not-agreed"
    may_use_the_tool(InternalClaims(sub="ops", roles=["admin"]), CRIME)
    other = InternalClaims(sub="council", dataset="fire-incident")
    assert refusal(read_scope, other, "police-crime").extra["rule"] == "dataset-mismatch"


def test_tool_bodies_are_read_as_csv_or_json_and_rows_validated_without_a_reference() -> None:
    rows = incoming_records(b"category,occurred_at\nBurglary,2024-01-05\n", "text/csv")
    assert rows == [{"category": "Burglary", "occurred_at": "2024-01-05"}]
    assert incoming_records(b'{"records": [{"a": ""}]}', None) == [{"a": ""}]
    assert refusal(incoming_records, b"{", "application/json").slug == "invalid-json"
    assert refusal(incoming_records, b'{"records": 3}', None).extra["field"] == "records"
    kept, errors = validated(CRIME, [{"occurred_at": "not a day"}])
    assert kept == [] and errors and all(e["row"] == 1 for e in errors)


def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    async def stream() -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    return stream()


def test_a_body_is_refused_by_its_declared_length_by_its_bytes_or_when_empty() -> None:
    assert asyncio.run(read_body(chunks(b"ab", b"cd"), None, 4)) == b"abcd"
    for stream, declared, status in ((chunks(b"a"), "5", 413), (chunks(b"ab", b"cde"), None, 413),
                                     (chunks(), None, 422)):  # fmt: skip
        with pytest.raises(ProblemError) as refused:
            asyncio.run(read_body(stream, declared, 4))
        assert refused.value.status == status and refused.value.extra["field"] == "body"


def test_a_population_table_names_the_column_or_field_it_refuses() -> None:
    assert read_population(b"code,population\nE1, 10\n", "code", "population") == {"E1": 10.0}
    missing = refusal(read_population, b"code,people\nE1,3\n", "code", "population")
    assert missing.extra["field"] == "population_column"
    negative = refusal(read_population, b"code,population\nE1,-3\n", "code", "population")
    assert negative.slug == "invalid-population"


def test_layer_names_k_and_the_layer_counted_on() -> None:
    check_name("lsoa-2021")
    assert refusal(check_name, "LSOA").slug == "invalid-layer-name"
    assert refusal(check_k, 2, CATALOGUE).extra["field"] == "k"
    registry = Registry(generation=1)
    assert refusal(layer_or_error, registry, "lsoa").status == 404
    assert geography_listing(registry, is_admin=False)["rebuild"] == {}
