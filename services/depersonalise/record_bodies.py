"""The records sent to the depersonalisation tool: a CSV or JSON body read into rows, and each
row validated as a push would validate it (nothing is stored, so no ``source_ref``). No FastAPI."""

from __future__ import annotations

import io
import json
from typing import Any

import pandas as pd

from shared.catalogue import Dataset
from shared.errors import ProblemError
from shared.validation import CompiledDataset, compile_dataset, validate_row


def validated(
    spec: Dataset, incoming: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows that validate as a push would, and per-row errors for the others."""
    compiled = _compiled(spec.name, spec)
    kept, errors = [], []
    for row, raw in enumerate(incoming, start=1):
        clean, _unlisted, problems = validate_row(compiled, raw)
        if problems:
            errors += [{"row": row, "field": f, "message": m} for f, m in problems]
        else:
            kept.append(clean)
    return kept, errors


_COMPILED: dict[str, CompiledDataset] = {}


def _compiled(name: str, spec: Dataset) -> CompiledDataset:
    """The push's validation, except that nothing is stored, so no ``source_ref`` is needed."""
    if name not in _COMPILED:
        fields = [
            f.model_copy(update={"required": False}) if f.name == "source_ref" else f
            for f in spec.fields
        ]
        _COMPILED[name] = compile_dataset(spec.model_copy(update={"fields": fields}))
    return _COMPILED[name]


def incoming_records(body: bytes, content_type: str | None) -> list[dict[str, Any]]:
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind == "text/csv" or (
        kind != "application/json" and not body.lstrip().startswith((b"{", b"["))
    ):
        try:
            frame = pd.read_csv(io.BytesIO(body), dtype=str, keep_default_na=False)
        except Exception as exc:
            raise ProblemError(
                422, "The CSV could not be parsed.", slug="invalid-csv", field="body"
            ) from exc
        return [
            {k: (v if v != "" else None) for k, v in row.items()}
            for row in frame.to_dict("records")
        ]
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ProblemError(
            422, "The body is not valid JSON.", slug="invalid-json", field="body"
        ) from exc
    records = parsed.get("records") if isinstance(parsed, dict) else parsed
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ProblemError(
            422,
            'The body must be {"records": [...]} of objects.',
            slug="invalid-records",
            field="records",
        )
    return records
