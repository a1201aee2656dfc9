"""Person identifiers in every written form, their check characters, and the cohort datasets."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.ingest.outbox import shareable_fields
from services.ingest.schema import field_schema
from shared.catalogue import Dataset, load_catalogue
from shared.identifiers import (
    PNC_CHECK,
    first_forename,
    nhs_check_digit,
    normalise_name,
    parse_cro,
    parse_date_of_birth,
    parse_nhs,
    parse_pnc,
    pnc_check_character,
    postcode_district,
)
from shared.validation import compile_dataset, validate_row
from tests.ingest.conftest import Client, token

CATALOGUE = load_catalogue()
NEEDS = [
    "accommodation",
    "education_training_employability",
    "finance",
    "relationships",
    "lifestyle",
    "drug_misuse",
    "alcohol_misuse",
    "emotional_wellbeing",
    "thinking_behaviour",
    "attitudes",
]


def test_pnc_check_character_follows_the_modulus_23_table() -> None:
    assert len(PNC_CHECK) == 23 and not set("IOS") & set(PNC_CHECK)
    # 190123456 = 23 * 8266237 + 5 → the fifth letter; 190000042 leaves 9 → J
    assert pnc_check_character(19, 123456) == "E"
    assert pnc_check_character(19, 42) == "J"
    assert pnc_check_character(0, 23) == "Z"


@pytest.mark.parametrize(
    "written",
    [
        "2019/0123456E",
        "19/123456E",
        "19/0123456e",
        "19123456e",
        " 2019/123456E ",
        "190123456E",
        "2019123456E",
        "20190123456E",
    ],
)
def test_every_written_form_of_a_pnc_id_reads_the_same(written: str) -> None:
    assert parse_pnc(written) == "19/123456E"


@given(
    year=st.integers(0, 99),
    serial=st.integers(1, 9_999_999),
    century=st.booleans(),
    padded=st.booleans(),
    slash=st.booleans(),
    lower=st.booleans(),
)
def test_any_valid_pnc_id_in_any_form_normalises_to_one(
    year: int, serial: int, century: bool, padded: bool, slash: bool, lower: bool
) -> None:
    check = pnc_check_character(year, serial)
    digits = f"{serial:07d}" if padded or not slash else str(serial)
    prefix = (("19" if year > 30 else "20") if century else "") + f"{year:02d}"
    written = f"{prefix}{'/' if slash else ''}{digits}{check}"
    if not slash and not century:
        written = f"{year:02d}{serial:07d}{check}" if padded else written
    written = written.lower() if lower else written
    assert parse_pnc(written) == f"{year:02d}/{serial}{check}"
    wrong = PNC_CHECK[(PNC_CHECK.index(check) + 1) % 23]
    with pytest.raises(ValueError, match="check character"):
        parse_pnc(written[:-1] + wrong)


@pytest.mark.parametrize(
    "written",
    ["", "19/", "19/12345678E", "ABC", "1/2E", "19/123456", "2119/123456E", "19/0000000Z"],
)
def test_malformed_pnc_ids_are_refused_without_quoting_them(written: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_pnc(written)
    assert written.strip() == "" or written not in str(caught.value)


def test_cro_numbers() -> None:
    assert parse_cro("123456/89x") == "123456/89X"
    assert parse_cro("42/01Q") == "000042/01Q"
    for bad in ("1234567/89X", "123456/8X", "123456-89X", "000000/01A"):
        with pytest.raises(ValueError):
            parse_cro(bad)


def _nhs(nine: int) -> str | None:
    first = f"{nine:09d}"
    check = nhs_check_digit(first)
    return None if check is None else first + str(check)


@given(st.integers(0, 999_999_999))
def test_nhs_numbers_carry_a_modulus_11_check_digit(nine: int) -> None:
    number = _nhs(nine)
    if number is None:  # no check digit exists: no NHS number begins so
        return
    spaced = f"{number[:3]} {number[3:6]} {number[6:]}"
    assert parse_nhs(spaced) == number
    wrong = number[:9] + str((int(number[9]) + 1) % 10)
    with pytest.raises(ValueError, match="check digit"):
        parse_nhs(wrong)


def test_the_nhs_example_number_and_bad_forms() -> None:
    assert parse_nhs("943 476 5919") == "9434765919"
    for bad in ("943476591", "94347659190", "94347659A9", "9434765918"):
        with pytest.raises(ValueError):
            parse_nhs(bad)


@given(st.dates(min_value=date(1900, 1, 1), max_value=date(2020, 12, 31)))
def test_dates_of_birth_in_iso_and_day_first_forms(born: date) -> None:
    iso = born.isoformat()
    today = date(2024, 1, 1)
    for written in (
        iso,
        f"{born.day:02d}/{born.month:02d}/{born.year}",
        f"{born.day}.{born.month}.{born.year}",
        iso.replace("-", ""),
    ):
        assert parse_date_of_birth(written, today) == iso


@pytest.mark.parametrize(
    "bad", ["1990-02-30", "31/13/1990", "1899-12-31", "2999-01-01", "1990", 19900101]
)
def test_bad_dates_of_birth(bad: Any) -> None:
    with pytest.raises(ValueError):
        parse_date_of_birth(bad)


def test_names_fold_case_accents_hyphens_and_nicknames() -> None:
    assert normalise_name("O'Neil-Smith") == normalise_name("ONEIL SMITH") == "oneilsmith"
    assert normalise_name("Zoë") == "zoe"
    assert first_forename("Bob James") == first_forename("ROBERT") == "robert"
    assert postcode_district("M14 5AB") == "M14"


def test_cohort_datasets_are_in_the_catalogue_with_their_link_kinds() -> None:
    offence = CATALOGUE["offender-offence"]
    assert (offence.holder, offence.max_level) == ("police", "personal")
    assert {"pnc_id", "occurred_at", "category", "outcome"} <= set(offence.field_names)
    assert offence.link_fields["pnc_id"] == "pnc"
    oasys = CATALOGUE["oasys-assessment"]
    assert (oasys.holder, oasys.max_level, oasys.location) == ("probation", "personal", "none")
    for need in NEEDS:
        spec = oasys.field(need)
        assert spec is not None and spec.allowed == ["0", "1", "2"] and spec.allowed_strict
    cohort = CATALOGUE["offender-cohort"]
    assert cohort.link_fields == {
        "pnc_id": "pnc",
        "cro_number": "cro",
        "surname": "surname",
        "forenames": "forenames",
        "date_of_birth": "date_of_birth",
        "home_postcode": "postcode",
    }
    drugs = CATALOGUE["drug-treatment"]
    assert drugs.max_level == "aggregate"
    assert {"nhs_number", "surname", "forenames", "date_of_birth"} <= set(drugs.link_fields)
    for dataset in (offence, oasys, cohort, drugs):
        assert dataset.statutory_basis
        # nothing that identifies a person is ever sent to depersonalise
        person = {n for n, kind in dataset.link_fields.items() if kind != "postcode"}
        assert not person & shareable_fields(dataset)
    assert field_schema(offence.field("pnc_id"))["x-link"] == "pnc"  # type: ignore[arg-type]


def test_a_link_field_must_be_an_identifier_or_an_address() -> None:
    with pytest.raises(ValueError, match="links people"):
        Dataset.model_validate(
            {"name": "x", "title": "x", "fields": [{"name": "pnc", "link": "pnc"}]}
        )


def test_identifiers_are_validated_and_stored_in_their_canonical_form() -> None:
    compiled = compile_dataset(CATALOGUE["oasys-assessment"])
    row = {
        "source_ref": "A-1",
        "occurred_at": "2024-02-01",
        "pnc_id": "2019/0123456e",
        "cro_number": "42/01q",
        "date_of_birth": "05/01/1990",
        **dict.fromkeys(NEEDS, 1),
        "drug_misuse": "2",
    }
    clean, _, errors = validate_row(compiled, row)
    assert errors == []
    assert (clean["pnc_id"], clean["cro_number"]) == ("19/123456E", "000042/01Q")
    assert clean["date_of_birth"] == "1990-01-05"
    assert clean["accommodation"] == 1 and clean["drug_misuse"] == 2
    _, _, errors = validate_row(
        compiled, {**row, "pnc_id": "19/123456A", "date_of_birth": "31/02/1990", "attitudes": 3}
    )
    assert {name for name, _ in errors} == {"pnc_id", "date_of_birth", "attitudes"}


async def test_an_identifier_that_does_not_parse_is_a_per_row_error(client: Client) -> None:
    rows = [
        {
            "source_ref": "T-1",
            "occurred_at": "2024-03-01",
            "category": "Start",
            "substance": "Opiates",
            "nhs_number": "943 476 5919",
            "date_of_birth": "1990-01-05",
        },
        {
            "source_ref": "T-2",
            "occurred_at": "2024-03-01",
            "category": "Start",
            "substance": "Opiates",
            "nhs_number": "943 476 5918",
        },
        {
            "source_ref": "T-3",
            "occurred_at": "2024-03-01",
            "category": "Start",
            "substance": "Opiates",
            "date_of_birth": "1990-13-05",
        },
    ]
    response = await client.post(
        "/v1/datasets/drug-treatment/records",
        json={"records": rows},
        headers=token("cgl", action="push", dataset="drug-treatment"),
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (1, 2)
    assert [(e["row"], e["field"]) for e in body["errors"]] == [
        (2, "nhs_number"),
        (3, "date_of_birth"),
    ]
    assert "5918" not in response.text and "1990-13" not in response.text
