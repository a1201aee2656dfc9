"""The domain rules called directly: converters, locations, postcode files, event contents."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from services.ingest.location import (
    NONE,
    POSTCODE,
    Located,
    LocationError,
    locate,
    parse_postcode_rows,
)
from services.ingest.outbox import shareable_fields
from shared.catalogue import load_catalogue
from shared.validation import (
    compile_dataset,
    normalise_postcode,
    parse_datetime,
    validate_row,
)

CATALOGUE = load_catalogue()


@given(st.datetimes(min_value=datetime(1900, 1, 2), max_value=datetime(2200, 1, 1)))
def test_any_iso_datetime_is_read_as_utc(moment: datetime) -> None:
    moment = moment.replace(microsecond=0)
    assert parse_datetime(moment.isoformat()) == moment.isoformat() + "Z"
    shifted = moment.replace(tzinfo=UTC).astimezone(timezone(timedelta(hours=2)))
    assert parse_datetime(shifted.isoformat()) == moment.isoformat() + "Z"


def test_impossible_dates_are_refused() -> None:
    for text in ("2024-13-45", "2024-02-30", "yesterday", "2024-02-01T25:00"):
        try:
            parse_datetime(text)
        except ValueError as exc:
            assert text not in str(exc)  # reasons never quote the value
        else:
            raise AssertionError(text)


def test_postcodes_are_normalised() -> None:
    assert normalise_postcode("m145ab") == "M14 5AB"
    assert normalise_postcode(" EC1A 1BB ") == "EC1A 1BB"
    assert normalise_postcode("M1  1AD") == "M1 1AD"
    assert normalise_postcode("12345") is None


def test_onspd_and_codepoint_files() -> None:
    onspd = (
        "pcd,pcds,doterm,oseast1m,osnrth1m\n"
        "M1 1AD,M1 1AD,,383825,398598\n"
        "M1 1ZZ,M1 1ZZ,201501,1,1\n"
    )
    assert list(parse_postcode_rows(csv.reader(io.StringIO(onspd)))) == [
        ("M1 1AD", 383825.0, 398598.0),
        None,
    ]
    codepoint = '"NG1 1AA",10,457000,340000,"E92000001"\n"NG1 1AB",90,0,0,""\n'
    assert list(parse_postcode_rows(csv.reader(io.StringIO(codepoint)))) == [
        ("NG1 1AA", 457000.0, 340000.0),
        None,
    ]


def test_location_precedence_and_requirements() -> None:
    records: list[dict[str, Any]] = [
        {"easting": 383000.0, "northing": 398000.0, "postcode": "M1 1AD"},
        {"latitude": 53.47, "longitude": -2.23},
        {"postcode": "M1 1AD"},
        {"postcode": "ZZ1 1ZZ"},
        {},
        {"easting": 383000.0},
        {"latitude": 40.7, "longitude": -74.0},
    ]
    found = locate(records, "optional", lambda wanted: {"M1 1AD": (1.0, 2.0)} if wanted else {})
    assert [getattr(r, "source", None) for r in found[:5]] == [
        "coordinates",
        "coordinates",
        POSTCODE,
        NONE,
        NONE,
    ]
    assert isinstance(found[5], LocationError) and found[5].field == "northing"
    assert isinstance(found[6], LocationError) and found[6].outside_gb
    manchester = found[1]
    assert isinstance(manchester, Located) and 380_000 < (manchester.easting or 0) < 390_000
    required = locate([{}], "required", lambda wanted: {})
    assert isinstance(required[0], LocationError)


def test_ae_assault_follows_istv() -> None:
    compiled = compile_dataset(CATALOGUE["ae-assault"])
    row = {
        "source_ref": "1",
        "occurred_at": "2024-01-01T01:00",
        "arrived_at": "2024-01-01T02:00",
        "category": "Fist",
        "assault_location_type": "Public place",
        "site_code": "RW3",
    }
    assert validate_row(compiled, row)[2] == []
    _, _, errors = validate_row(compiled, {**row, "site_code": "AB", "arrived_at": None})
    assert {e[0] for e in errors} == {"site_code", "arrived_at"}
    dataset = CATALOGUE["ae-assault"]
    assert (dataset.disclosure.threshold, dataset.disclosure.round_to) == (8, 5)
    assert dataset.generalisation.method == "area"


def test_cohort_and_special_category_reach_depersonalise_only_as_agreed() -> None:
    cohort = shareable_fields(CATALOGUE["offender-cohort"])
    assert cohort == {
        "occurred_at",
        "occurred_to",
        "category",
        "offence_group",
        "risk_level",
        "lead_agency",
    }
    assert CATALOGUE["offender-cohort"].location == "none"
    drugs = CATALOGUE["drug-treatment"]
    assert drugs.special_category and drugs.max_level == "aggregate"
    assert "substance" in shareable_fields(drugs) and "source_ref" not in shareable_fields(drugs)
    assert CATALOGUE["police-incident"].field("qualifier").allowed_strict  # type: ignore[union-attr]
