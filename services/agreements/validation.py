"""Checks an agreement's terms against the code lists, the catalogue and the known agencies.

Plain data in, a list of ``{"field", "message"}`` out: empty means the terms are valid.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from services.agreements.reference import CodeLists, LegalBasis
from shared.catalogue import Dataset
from shared.levels import LEVEL_RANK


def check_terms(
    terms: Mapping[str, Any],
    codes: CodeLists,
    catalogue: Mapping[str, Dataset],
    agencies: Collection[str],
) -> list[dict[str, str]]:
    errors: list[dict[str, str]] = []
    bases = _check_basis_parties_dates(terms, codes, agencies, errors)
    _check_datasets(terms, catalogue, bases, errors)
    return errors


def _error(errors: list[dict[str, str]], field: str, message: str) -> None:
    errors.append({"field": field, "message": message})


def _check_basis_parties_dates(
    terms: Mapping[str, Any],
    codes: CodeLists,
    agencies: Collection[str],
    errors: list[dict[str, str]],
) -> list[LegalBasis]:
    """The purpose, legal bases, parties and dates checked; the legal bases the terms cite."""
    if terms["purpose"] not in codes.purposes:
        _error(errors, "purpose", f"unknown purpose {terms['purpose']!r}; see GET /v1/purposes")
    bases = []
    for index, code in enumerate(terms["legal_basis"]):
        basis = codes.legal_bases.get(code)
        if basis is None:
            message = f"unknown legal basis {code!r}; see GET /v1/legal-bases"
            _error(errors, f"legal_basis[{index}]", message)
        else:
            bases.append(basis)
    for role in ("providers", "recipients"):
        for index, code in enumerate(terms[role]):
            if code not in agencies:
                _error(errors, f"{role}[{index}]", f"unknown agency {code!r}")
        if len(set(terms[role])) != len(terms[role]):
            _error(errors, role, "an agency is named twice")
    if terms["end"] < terms["start"]:
        _error(errors, "end", "the end date is before the start date")
    review_by = terms.get("review_by")
    if review_by is not None and review_by < terms["start"]:
        _error(errors, "review_by", "the review date is before the start date")
    return bases


def _check_datasets(
    terms: Mapping[str, Any],
    catalogue: Mapping[str, Dataset],
    bases: list[LegalBasis],
    errors: list[dict[str, str]],
) -> None:
    """Each dataset known, listed once, at a level its catalogue entry and legal bases allow."""
    permits_personal = any(b.permits_personal for b in bases)
    art9 = any(b.art9_condition for b in bases)
    seen: set[str] = set()
    for index, entry in enumerate(terms["datasets"]):
        where = f"datasets[{index}]"
        name = entry["dataset"]
        dataset = catalogue.get(name)
        if name in seen:
            _error(errors, f"{where}.dataset", f"dataset {name!r} is listed twice")
        seen.add(name)
        if dataset is None:
            _error(errors, f"{where}.dataset", f"unknown dataset {name!r}; see GET /v1/datasets")
            continue
        level = entry["level"]
        if LEVEL_RANK[level] > LEVEL_RANK[dataset.max_level]:
            message = f"dataset {name!r} is shared at most at level {dataset.max_level!r}"
            _error(errors, f"{where}.level", message)
        if level == "personal" and not permits_personal:
            message = "level 'personal' needs a legal basis that permits personal data"
            _error(errors, f"{where}.level", message)
        if dataset.special_category and not art9:
            message = f"dataset {name!r} holds special category data: cite an Art 9 condition"
            _error(errors, f"{where}.dataset", message)
        for position, field_name in enumerate(entry.get("fields") or []):
            if dataset.field(field_name) is None:
                message = f"dataset {name!r} has no field {field_name!r}"
                _error(errors, f"{where}.fields[{position}]", message)
