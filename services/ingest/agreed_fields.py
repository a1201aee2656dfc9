"""Whether a push's fields are fields of the dataset and fields its agreement allows."""

from __future__ import annotations

from collections.abc import Iterable

from shared.errors import ProblemError
from shared.validation import CompiledDataset


def check_fields(names: Iterable[str], allowed: list[str] | None, dataset: str) -> None:
    """Fields the agreement does not allow refuse the whole push (422 naming them)."""
    if allowed is None:
        return
    outside = sorted(set(names) - set(allowed))
    if outside:
        raise ProblemError(
            422,
            f"The agreement does not allow these fields of {dataset}: {', '.join(outside)}.",
            slug="fields-not-agreed",
            rule="fields-not-agreed",
            fields=outside,
        )


def check_header(compiled: CompiledDataset, header: list[str], allowed: list[str] | None) -> None:
    """A CSV column that is not a field of the dataset refuses the push (422 naming it)."""
    unknown = sorted(set(header) - compiled.names)
    if unknown:
        raise ProblemError(
            422,
            f"Columns that are not fields of {compiled.dataset.name}: {', '.join(unknown[:20])}.",
            slug="unknown-fields",
            fields=unknown[:20],
        )
    check_fields(header, allowed, compiled.dataset.name)
