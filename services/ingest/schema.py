"""A dataset's catalogue entry as JSON Schema (one record, and the push body) and a CSV template."""

from __future__ import annotations

from typing import Any

from shared.catalogue import Dataset, FieldSpec

_TYPES: dict[str, dict[str, Any]] = {
    "string": {"type": "string"},
    "integer": {"type": "integer"},
    "number": {"type": "number"},
    "boolean": {"type": "boolean"},
    "date": {"type": "string", "format": "date"},
    "datetime": {
        "type": "string",
        "description": "ISO 8601 date or date-time; UTC if no offset",
        "anyOf": [{"format": "date"}, {"format": "date-time"}, {"pattern": "T\\d\\d:\\d\\d"}],
    },
    "postcode": {"type": "string", "pattern": "^[A-Za-z]{1,2}[0-9][A-Za-z0-9]? ?[0-9][A-Za-z]{2}$"},
}


def field_schema(spec: FieldSpec) -> dict[str, Any]:
    schema = dict(_TYPES[spec.type])
    if spec.max_length is not None:
        schema["maxLength"] = spec.max_length
    if spec.min_length is not None:
        schema["minLength"] = spec.min_length
    if spec.allowed:
        if spec.allowed_strict:
            schema["enum"] = list(spec.allowed)
        else:
            schema["examples"] = list(spec.allowed)
    description = spec.description or schema.get("description", "")
    if description:
        schema["description"] = description
    schema["x-classification"] = spec.classification
    if spec.link is not None:
        schema["x-link"] = spec.link
    return schema


def record_schema(dataset: Dataset) -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"{dataset.name} record",
        "type": "object",
        "properties": {spec.name: field_schema(spec) for spec in dataset.fields},
        "required": [spec.name for spec in dataset.fields if spec.required],
        "additionalProperties": False,
    }


def push_body_schema(dataset: Dataset) -> dict[str, Any]:
    record = record_schema(dataset)
    record.pop("$schema")
    return {
        "title": f"{dataset.name} batch",
        "type": "object",
        "properties": {"records": {"type": "array", "items": record}},
        "required": ["records"],
        "additionalProperties": False,
    }


def csv_template(dataset: Dataset) -> str:
    return ",".join(dataset.field_names) + "\r\n"


def summary(dataset: Dataset) -> dict[str, Any]:
    return {
        "name": dataset.name,
        "title": dataset.title,
        "kind": dataset.kind,
        "holder": dataset.holder,
        "max_level": dataset.max_level,
        "special_category": dataset.special_category,
        "location": dataset.location,
        "time_resolution": dataset.time_resolution,
    }


def describe(dataset: Dataset) -> dict[str, Any]:
    body = summary(dataset)
    body.update(
        description=dataset.description,
        statutory_basis=dataset.statutory_basis,
        period_days=dataset.period_days,
        generalisation=dataset.generalisation.model_dump(),
        disclosure=dataset.disclosure.model_dump(),
        fields=[spec.model_dump() for spec in dataset.fields],
        schema=record_schema(dataset),
        csv_template=csv_template(dataset),
    )
    return body
