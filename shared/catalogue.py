"""Reads the dataset catalogue: one TOML file per dataset under ``catalogue/``.

This module only parses and checks the file format; what the fields mean for validation and
depersonalisation is decided by the services that read it.
"""

from __future__ import annotations

import os
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from shared.levels import Level

Classification = Literal[
    "identifier", "free-text", "address", "location", "datetime", "special-category", "attribute"
]
FieldType = Literal["string", "integer", "number", "boolean", "date", "datetime", "postcode"]
# What a field says about who a record is about; ingest links records of one person on them.
LinkKind = Literal["pnc", "cro", "nhs", "surname", "forenames", "date_of_birth", "postcode"]

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "catalogue"


class FieldSpec(BaseModel):
    name: str
    type: FieldType = "string"
    required: bool = False
    classification: Classification = "attribute"
    max_length: int | None = None
    min_length: int | None = None
    allowed: list[str] | None = Field(
        default=None, description="the national code list, where one exists"
    )
    allowed_strict: bool = Field(
        default=False, description="reject values outside `allowed` (else accept and report)"
    )
    keep_outward_code: bool = False
    link: LinkKind | None = Field(
        default=None, description="the person identifier this field holds, for linkage"
    )
    description: str = ""


class Perturbation(BaseModel):
    """Cell-key perturbation of published counts (ONS/ABS style): at most ``max`` either way."""

    method: Literal["cell-key"] = "cell-key"
    max: int = Field(default=2, ge=1, le=10)


class DisclosureRule(BaseModel):
    threshold: int = 5
    floor: int = Field(default=5, description="no agreement may set a lower threshold")
    round_to: int | None = None
    secondary: bool = True
    perturbation: Perturbation | None = None


class Generalisation(BaseModel):
    method: Literal["snap", "grid", "area"] = "snap"
    grid_metres: int = 250
    fallback: Literal["grid", "area"] = "grid"
    fallback_grid_metres: int = 250
    k: int = 8
    # Beyond this the fallback applies: a point moved further would land among strangers' homes.
    max_snap_metres: float = 2_000


class Dataset(BaseModel):
    name: str
    title: str
    description: str = ""
    kind: Literal["event", "cohort"] = "event"
    holder: str = Field(default="", description="who holds it: police, fire, health...")
    statutory_basis: list[str] = []
    max_level: Level = "personal"
    special_category: bool = False
    location: Literal["required", "optional", "none"] = "required"
    time_resolution: Literal["day", "week", "month", "quarter", "year"] = "month"
    period_days: int = Field(default=31, description="records arriving later than this are late")
    generalisation: Generalisation = Generalisation()
    disclosure: DisclosureRule = DisclosureRule()
    fields: list[FieldSpec]

    @model_validator(mode="after")
    def _links_never_leave_as_they_are(self) -> Dataset:
        for spec in self.fields:
            if spec.link is not None and spec.classification not in ("identifier", "address"):
                raise ValueError(
                    f"field {spec.name!r} links people: classify it identifier or address"
                )
        return self

    def field(self, name: str) -> FieldSpec | None:
        return next((f for f in self.fields if f.name == name), None)

    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    @property
    def link_fields(self) -> dict[str, LinkKind]:
        """Field name → link kind, for the fields that identify a person."""
        return {f.name: f.link for f in self.fields if f.link is not None}


def _read(path: Path) -> dict:
    with path.open("rb") as handle:
        return tomllib.load(handle)


def load_dataset(path: Path, envelope: list[dict] | None = None) -> Dataset:
    raw = _read(path)
    if raw.get("kind", "event") == "event" and envelope is not None:
        own = raw.get("fields", [])
        overridden = {f["name"] for f in own}
        raw["fields"] = [f for f in envelope if f["name"] not in overridden] + own
    return Dataset.model_validate(raw)


@lru_cache(maxsize=4)
def load_catalogue(directory: str | None = None) -> dict[str, Dataset]:
    """Every dataset in the folder, by name. ``_envelope.toml`` holds the shared event fields."""
    folder = Path(directory or os.environ.get("CSP_CATALOGUE_DIR") or DEFAULT_DIR)
    envelope_file = folder / "_envelope.toml"
    envelope = _read(envelope_file)["fields"] if envelope_file.exists() else None
    datasets = {}
    for path in sorted(folder.glob("*.toml")):
        if path.name.startswith("_"):
            continue
        dataset = load_dataset(path, envelope)
        if dataset.name != path.stem:
            raise ValueError(f"{path.name}: name {dataset.name!r} must match the file name")
        datasets[dataset.name] = dataset
    return datasets
