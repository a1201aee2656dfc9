"""A record's person fields as linkage compares them, the linkage configuration and a link's
outcome: what the matching, the model and the re-linking of ``linkage`` share."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.catalogue import Dataset
from shared.identifiers import first_forename, normalise_name, postcode_district

STRONG = ("pnc", "cro", "nhs")
COMPARED = ("surname", "forename", "dob", "district")
KEYS = ("forename_year", "name_key")  # blocking keys, indexed for finding candidates
IN_CHUNK = 500  # values in one IN (...) list


@dataclass(frozen=True)
class LinkageConfig:
    """The linkage key (ingest only) and the partnership's thresholds, as match weights."""

    key: str
    accept_weight: float = 6.0
    review_weight: float = 0.0
    min_training_records: int = 50
    chunk_records: int | None = None
    """Records linked in one Splink pass (None: ``LINK_CHUNK``); smaller bounds memory."""
    duckdb_memory: str = "2GB"
    """DuckDB's memory limit for a Splink pass; beyond it DuckDB spills to a temporary folder."""


@dataclass
class LinkOutcome:
    records: int = 0
    exact: int = 0
    probabilistic: int = 0
    new_people: int = 0
    queued: int = 0
    conflicts: int = 0
    created: list[int] = field(default_factory=list)


def person_fields(dataset: Dataset, data: dict[str, Any]) -> dict[str, str | None]:
    """A stored record's person fields, normalised for comparison (values already validated)."""
    out: dict[str, str | None] = dict.fromkeys((*STRONG, *COMPARED, *KEYS))
    for name, kind in dataset.link_fields.items():
        value = data.get(name)
        if value is None or value == "":
            continue
        if kind in STRONG:
            out[kind] = str(value)
        elif kind == "surname":
            out["surname"] = normalise_name(str(value)) or None
        elif kind == "forenames":
            out["forename"] = first_forename(str(value)) or None
        elif kind == "date_of_birth":
            out["dob"] = str(value)
        elif kind == "postcode":
            out["district"] = postcode_district(str(value))
    if out["forename"] and out["dob"]:
        out["forename_year"] = f"{out['forename']}|{out['dob'][:4]}"
    if out["surname"] and out["forename"]:
        out["name_key"] = f"{out['surname']}|{out['forename']}"
    return out


def comparable(fields: dict[str, Any]) -> bool:
    return bool(fields.get("surname")) and bool(fields.get("dob") or fields.get("forename"))


def swapped_dob(dob: str | None) -> str | None:
    """``1990-05-03`` → ``1990-03-05`` (None where the day cannot be a month)."""
    if not dob or int(dob[8:10]) > 12:
        return None
    return f"{dob[:4]}-{dob[8:10]}-{dob[5:7]}"


def in_chunks(values: Sequence[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(values), IN_CHUNK):
        yield list(values[start : start + IN_CHUNK])


def config_from(
    key: str | None,
    accept: float,
    review: float,
    min_training_records: int,
    chunk_records: int | None = None,
    duckdb_memory: str = "2GB",
) -> LinkageConfig | None:
    """The linkage configuration from ingest's settings; None (no linkage) without a key."""
    if not key:
        return None
    if review > accept:
        raise ValueError("the review weight must not exceed the accept weight")
    return LinkageConfig(key, accept, review, min_training_records, chunk_records, duckdb_memory)
