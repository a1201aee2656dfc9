"""Which depersonalised records a read may show, and of each record which fields: the level and
dataset checks of a record read or of the depersonalisation tool, and each record shown only as
its own provider's grants allow on the day it occurred. No FastAPI."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy.engine import Connection

from services.depersonalise.layer_registry import Registry
from services.depersonalise.populations import population
from services.depersonalise.public_records import (
    LOCATION_FIELDS,
    allowed_fields,
    public_record,
    record_areas,
)
from shared.catalogue import Dataset
from shared.errors import ProblemError
from shared.grants import Slices, slices
from shared.periods import period_label
from shared.tokens import InternalClaims

RECORD_LEVELS = {"depersonalised", "personal"}


def read_scope(claims: InternalClaims, dataset: str) -> Slices:
    """The grants of a read of ``dataset``: refused if the decision forwarded is for another."""
    if claims.dataset is not None and claims.dataset != dataset:
        raise ProblemError(
            403,
            "The decision forwarded is for another dataset.",
            slug="forbidden",
            rule="dataset-mismatch",
        )
    return slices(claims)


def check_record_read(spec: Dataset, claims: InternalClaims, level: str) -> None:
    """This service answers the depersonalised level of a dataset shared record by record, to a
    caller whose agreement allows record-level data."""
    if level != "depersonalised":
        raise ProblemError(
            422,
            "This service answers the depersonalised level only.",
            slug="wrong-level",
            field="level",
        )
    if spec.max_level == "aggregate":
        raise ProblemError(
            403,
            f"{spec.name} is shared only as aggregates.",
            slug="forbidden",
            rule="dataset-aggregate-only",
        )
    if claims.level not in RECORD_LEVELS:
        raise ProblemError(
            403,
            "The agreement does not allow record-level data.",
            slug="forbidden",
            rule="level-not-agreed",
        )


def may_use_the_tool(claims: InternalClaims, spec: Dataset) -> None:
    """Operators, or a caller whose grant on this dataset reaches the depersonalised level: the
    tool would otherwise map catchments point by point for anyone."""
    if spec.max_level == "aggregate" or spec.location == "none":
        raise ProblemError(
            403,
            f"{spec.name} is never published record by record.",
            slug="forbidden",
            rule="dataset-aggregate-only",
        )
    if claims.is_admin:
        return
    if claims.dataset != spec.name or claims.level not in RECORD_LEVELS:
        raise ProblemError(
            403,
            "Only operators and agencies with a depersonalised-level grant on the dataset may "
            "use the tool.",
            slug="forbidden",
            rule="level-not-agreed",
        )


def residents(conn: Connection, registry: Registry) -> dict[str, dict[str, float] | None]:
    """Each active layer's population table (None where none is loaded)."""
    return {name: population(conn, name) for name in registry.active}


def label(day: date, spec: Dataset) -> str:
    return period_label(day, spec.time_resolution)


def shown_records(
    rows: list[Any],
    spec: Dataset,
    scope: Slices,
    people: dict[str, dict[str, float] | None],
) -> list[dict[str, Any]]:
    """The public form of each stored row a grant shows, with the fields that grant allows."""
    allowed: dict[frozenset[str] | None, set[str]] = {}
    records = []
    for r in rows:
        # Each record shows only what its own provider's grants allow on the day it occurred.
        shown = scope.fields_for(r["provider"], r["occurred_on"] or r["period_start"])
        if shown is None:
            continue
        if shown.names not in allowed:
            names = None if shown.names is None else sorted(shown.names)
            allowed[shown.names] = allowed_fields(spec, names)
        fields = allowed[shown.names]
        point_shown = bool(fields & LOCATION_FIELDS) and r["x"] is not None
        areas = record_areas(
            r["areas"] or {}, r["point_areas"], point_shown, spec.generalisation.k, people
        )
        records.append(
            public_record(
                None if r["period_start"] is None else label(r["period_start"], spec),
                r["category"],
                r["attributes"] or {},
                areas,
                (r["x"], r["y"]),
                r["method"],
                r["k"],
                fields,
            )
        )
    return records
