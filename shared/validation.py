"""Row validation compiled from the catalogue: one plain converter per field, no model per row.

A converter takes the raw value (a CSV cell or a JSON value) and returns the stored value or
raises ``ValueError`` with a reason that never quotes the value (it may be personal data).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from shared.catalogue import Dataset, FieldSpec
from shared.identifiers import PARSERS
from shared.periods import parse_iso

Converter = Callable[[Any], Any]

POSTCODE = re.compile(r"^([A-Z]{1,2}[0-9][A-Z0-9]?) ?([0-9][A-Z]{2})$")
# The stored form of an instant itself (UTC, whole seconds), with or without its ``Z``.
STORED_INSTANT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z?")
LOCATION_FIELDS = ("easting", "northing", "latitude", "longitude", "postcode")
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


def normalise_postcode(value: str) -> str | None:
    """``m14 5ab`` / ``M145AB`` → ``M14 5AB``; None when it is not a UK postcode."""
    match = POSTCODE.match(value.strip().upper().replace("  ", " "))
    if match is None:
        compact = value.replace(" ", "").upper()
        if 5 <= len(compact) <= 7:
            match = POSTCODE.match(compact[:-3] + " " + compact[-3:])
    return None if match is None else f"{match.group(1)} {match.group(2)}"


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be text")
    return str(value)


def _integer(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("must be a whole number")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ValueError("must be a whole number")


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("must be a number")
    try:
        number = float(value)
    except ValueError:
        # a decimal comma, as semicolon-separated exports write it
        try:
            number = float(value.replace(",", ".")) if isinstance(value, str) else math.nan
        except ValueError:
            raise ValueError("must be a number") from None
    except TypeError:
        raise ValueError("must be a number") from None
    if not math.isfinite(number):
        raise ValueError("must be a finite number")
    return number


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("must be true or false")


def _date(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 date (YYYY-MM-DD)")
    try:
        parsed = date.fromisoformat(value.strip()[:10])
    except ValueError:
        raise ValueError("is not a valid ISO 8601 date (YYYY-MM-DD)") from None
    if parsed.year < 1900:
        raise ValueError("is before 1900")
    return parsed.isoformat()


def parse_datetime(value: Any) -> str:
    """ISO 8601 date or date-time → ``YYYY-MM-DDTHH:MM:SSZ`` in UTC (UTC if no offset)."""
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 date or date-time")
    text = value.strip()
    if STORED_INSTANT.fullmatch(text):
        # Already in the stored form: checked as a date-time, not parsed and written again.
        try:
            datetime.fromisoformat(text[:19])
        except ValueError:
            raise ValueError("is not a valid ISO 8601 date or date-time") from None
        if text < "1900":
            raise ValueError("is before 1900")
        return text[:19] + "Z"
    try:
        if len(text) == 10:
            return date.fromisoformat(text).isoformat() + "T00:00:00Z"
        parsed = parse_iso(text)
    except ValueError:
        raise ValueError("is not a valid ISO 8601 date or date-time") from None
    if parsed.year < 1900:
        raise ValueError("is before 1900")
    return parsed.replace(tzinfo=None, microsecond=0).isoformat() + "Z"


def _postcode(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a UK postcode")
    normal = normalise_postcode(value)
    if normal is None:
        raise ValueError("is not a UK postcode")
    return normal


_BASE: dict[str, Converter] = {
    "string": _text,
    "integer": _integer,
    "number": _number,
    "boolean": _boolean,
    "date": _date,
    "datetime": parse_datetime,
    "postcode": _postcode,
}


def _string_checks(spec: FieldSpec) -> Converter:
    low, high = spec.min_length, spec.max_length

    def convert(value: Any) -> str:
        text = value.strip() if type(value) is str else _text(value)
        if high is not None and len(text) > high:
            raise ValueError(f"is longer than {high} characters")
        if low is not None and len(text) < low:
            raise ValueError(f"is shorter than {low} characters")
        return text

    return convert


def _identifier_check(spec: FieldSpec, base: Converter) -> Converter:
    """A field that links people is read in its identifier's written forms and stored in one."""
    parse = PARSERS.get(spec.link or "")
    if parse is None:
        return base
    if spec.type == "date":
        return parse
    return lambda value: parse(base(value))


@dataclass
class CompiledDataset:
    """What validating one dataset needs, computed once from its catalogue entry."""

    dataset: Dataset
    converters: list[tuple[str, Converter]]
    required: list[str]
    names: frozenset[str]
    # field → {casefolded value: canonical value}, and whether other values are refused
    allowed: dict[str, tuple[dict[str, str], bool]] = field(default_factory=dict)

    @property
    def by_name(self) -> dict[str, Converter]:
        return self._by_name

    def __post_init__(self) -> None:
        self._by_name = dict(self.converters)

    @property
    def located(self) -> bool:
        return self.dataset.location != "none"


def compile_dataset(dataset: Dataset) -> CompiledDataset:
    converters: list[tuple[str, Converter]] = []
    allowed: dict[str, tuple[dict[str, str], bool]] = {}
    for spec in dataset.fields:
        base = _string_checks(spec) if spec.type == "string" else _BASE[spec.type]
        converters.append((spec.name, _identifier_check(spec, base)))
        if spec.allowed:
            allowed[spec.name] = ({v.casefold(): v for v in spec.allowed}, spec.allowed_strict)
    return CompiledDataset(
        dataset=dataset,
        converters=converters,
        required=[f.name for f in dataset.fields if f.required],
        names=frozenset(dataset.field_names),
        allowed=allowed,
    )


RowErrors = list[tuple[str | None, str]]


def validate_row(
    compiled: CompiledDataset, raw: dict[str, Any]
) -> tuple[dict[str, Any], list[str], RowErrors]:
    """The clean record, the fields whose value is outside a non-strict national list, errors."""
    clean: dict[str, Any] = {}
    errors: RowErrors = []
    converters = compiled.by_name
    for name, value in raw.items():
        convert = converters.get(name)
        if convert is None:
            errors.append((name, f"is not a field of dataset {compiled.dataset.name}"))
            continue
        if value is None or value == "":
            continue
        try:
            converted = convert(value)
        except ValueError as exc:
            errors.append((name, str(exc)))
            continue
        if converted != "":
            clean[name] = converted
    for name in compiled.required:
        if name not in clean and not any(e[0] == name for e in errors):
            errors.append((name, "is required"))
    unlisted: list[str] = []
    for name, (canonical, strict) in compiled.allowed.items():
        value = clean.get(name)
        if value is None:
            continue
        match = canonical.get(str(value).casefold())
        if match is not None:
            if isinstance(value, str):  # a number in a code list keeps its type
                clean[name] = match
        elif strict:
            errors.append((name, "is not one of the allowed values"))
        else:
            unlisted.append(name)
    end = clean.get("occurred_to")
    if end is not None and "occurred_at" in clean and end < clean["occurred_at"]:
        errors.append(("occurred_to", "is before occurred_at"))
    return clean, unlisted, errors
