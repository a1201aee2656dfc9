"""Status from dates, signatures and operator acts; validation of terms against the code lists."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from services.agreements.lifecycle import review_state, status, version_status
from services.agreements.reference import load_code_lists
from services.agreements.settings import REFERENCE_DIR
from services.agreements.validation import check_terms
from shared.catalogue import load_catalogue
from tests.agreements.builders import NOW, TODAY, agreement, day, version

CODES = load_code_lists(REFERENCE_DIR)


@pytest.mark.parametrize(
    ("made", "expected"),
    [
        (agreement(version(signed=False)), "draft"),
        (agreement(replace(version(), signatures={"gmp": NOW})), "draft"),
        (agreement(version(start=3)), "draft"),
        (agreement(version()), "active"),
        (agreement(version(start=-400, end=-1, review=None)), "expired"),
        (agreement(version(), state="suspended"), "suspended"),
        (agreement(version(), state="revoked"), "revoked"),
    ],
)
def test_status_from_dates_and_signatures(made: Any, expected: str) -> None:
    assert status(made, NOW) == expected


def test_versions_supersede_only_once_in_force() -> None:
    old, new = version(1), version(2, signed=False)
    pending = agreement(old, new)
    assert version_status(pending, old, NOW) == "active"
    assert version_status(pending, new, NOW) == "draft"
    signed_future = agreement(old, replace(version(2, start=5)))
    assert version_status(signed_future, signed_future.versions[0], NOW) == "active"
    done = agreement(old, version(2))
    assert version_status(done, done.versions[0], NOW) == "superseded"
    assert version_status(done, done.versions[1], NOW) == "active"
    assert status(done, NOW) == "active"


def test_review_states() -> None:
    made = version(start=-100, review=-10)
    assert review_state(made, TODAY, 30) == "grace"
    assert review_state(made, TODAY, 5) == "overdue"
    assert review_state(made, TODAY - timedelta(days=11), 0) == "current"
    assert review_state(version(review=None), TODAY, 0) == "current"


def test_code_lists_load_with_flags() -> None:
    assert "strategic-assessment" in CODES.purposes
    s115 = CODES.legal_bases["cda-1998-s115"]
    assert s115.permits_personal and not s115.art9_condition and "1998" in s115.statute
    assert CODES.legal_bases["uk-gdpr-9-2-g"].art9_condition
    assert CODES.legal_bases["dpa-2018-part-3"].law_enforcement
    assert not CODES.legal_bases["cda-1998-s17a"].permits_personal


def special_catalogue(folder: Path) -> dict[str, Any]:
    """The real catalogue plus a special-category dataset capped at aggregate."""
    source = Path(__file__).resolve().parents[2] / "catalogue"
    for path in source.glob("*.toml"):
        (folder / path.name).write_text(path.read_text())
    (folder / "health-test.toml").write_text(
        'name = "health-test"\ntitle = "Health test"\nmax_level = "aggregate"\n'
        "special_category = true\n"
        '[[fields]]\nname = "condition"\nclassification = "special-category"\n'
    )
    return dict(load_catalogue(str(folder)))


def terms(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "purpose": "strategic-assessment",
        "legal_basis": ["cda-1998-s17a"],
        "providers": ["gmp"],
        "recipients": ["mcc"],
        "datasets": [{"dataset": "police-crime", "level": "aggregate", "fields": None}],
        "start": day(0),
        "end": day(100),
        "review_by": day(50),
    }
    body.update(changes)
    return body


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"purpose": "gossip"}, "purpose"),
        ({"legal_basis": ["cda-1998-s17a", "magna-carta"]}, "legal_basis[1]"),
        ({"providers": ["nobody"]}, "providers[0]"),
        ({"recipients": ["mcc", "mcc"]}, "recipients"),
        ({"end": day(-1)}, "end"),
        ({"review_by": day(-1)}, "review_by"),
        ({"datasets": [{"dataset": "tea-leaves", "level": "aggregate"}]}, "datasets[0].dataset"),
        ({"datasets": [{"dataset": "police-crime", "level": "personal"}]}, "datasets[0].level"),
        (
            {"datasets": [{"dataset": "police-crime", "level": "aggregate", "fields": ["shoe"]}]},
            "datasets[0].fields[0]",
        ),
        (
            {
                "datasets": [
                    {"dataset": "police-crime", "level": "aggregate"},
                    {"dataset": "police-crime", "level": "aggregate"},
                ]
            },
            "datasets[1].dataset",
        ),
        ({"datasets": [{"dataset": "health-test", "level": "aggregate"}]}, "datasets[0].dataset"),
        (
            {
                "legal_basis": ["uk-gdpr-6-1-e", "uk-gdpr-9-2-g"],
                "datasets": [{"dataset": "health-test", "level": "depersonalised"}],
            },
            "datasets[0].level",
        ),
    ],
)
def test_invalid_terms_name_the_field(tmp_path: Path, changes: dict, field: str) -> None:
    errors = check_terms(terms(**changes), CODES, special_catalogue(tmp_path), {"gmp", "mcc"})
    assert field in [e["field"] for e in errors], errors


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {
            "legal_basis": ["cda-1998-s115", "uk-gdpr-6-1-e"],
            "datasets": [{"dataset": "police-crime", "level": "personal"}],
        },
        {
            "legal_basis": ["cda-1998-s17a", "uk-gdpr-9-2-g"],
            "datasets": [{"dataset": "health-test", "level": "aggregate"}],
        },
        {"datasets": [{"dataset": "police-crime", "level": "aggregate", "fields": ["category"]}]},
    ],
)
def test_valid_terms_pass(tmp_path: Path, changes: dict) -> None:
    assert check_terms(terms(**changes), CODES, special_catalogue(tmp_path), {"gmp", "mcc"}) == []
