"""What an operator's upload may be: a body bounded in bytes (and a GeoJSON one in vertices) as it
streams, and a population table read from CSV. No FastAPI: the routes pass the stream in."""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator

import pandas as pd

from shared.errors import ProblemError

# A GeoJSON position: "[" then a number. Arrays of numbers in properties count too (they cost
# the reader as much).
_POSITION = re.compile(rb"\[\s*[-+0-9.]")


class VertexCount:
    """Positions seen in a GeoJSON body as it streams, refused at the first one over ``limit``:
    parsing GeoJSON text is what makes a large layer slow, so it is refused before it starts."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self._carry = b""  # a "[" (and spaces) at a chunk's end, whose number comes next

    def feed(self, chunk: bytes) -> None:
        data = self._carry + chunk
        self.count += len(_POSITION.findall(data))
        last = data.rfind(b"[")
        tail = data[last:] if last >= 0 else b""
        self._carry = tail if len(tail) < 1024 and not tail[1:].strip() else b""
        if self.count > self.limit:
            raise ProblemError(
                422,
                f"A GeoJSON layer holds at most {self.limit} vertices: load a larger one as a "
                "zipped shapefile or a GeoPackage.",
                slug="upload-too-large",
                field="body",
            )


async def read_body(
    chunks: AsyncIterator[bytes],
    declared: str | None,
    limit: int,
    geojson_vertices: int | None = None,
) -> bytes:
    """The body, counted against ``limit`` as it streams: refused at the first byte over it (and,
    with ``geojson_vertices``, a GeoJSON body at its first vertex over that). ``declared`` is the
    request's Content-Length, refused before the first byte when it is over."""
    if declared and declared.isdigit() and int(declared) > limit:
        raise ProblemError(413, f"The body is larger than {limit} bytes.", field="body")
    parts: list[bytes] = []
    size = 0
    vertices: VertexCount | None = None
    undecided = geojson_vertices is not None  # until the first byte that is not a space
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise ProblemError(413, f"The body is larger than {limit} bytes.", field="body")
        if undecided and (head := chunk.lstrip()):
            undecided = False
            if head[:1] == b"{" and geojson_vertices is not None:
                vertices = VertexCount(geojson_vertices)
        if vertices is not None:
            vertices.feed(chunk)
        parts.append(chunk)
    body = b"".join(parts)
    if not body:
        raise ProblemError(422, "The body is empty.", slug="empty-body", field="body")
    return body


def read_population(body: bytes, code_column: str, population_column: str) -> dict[str, float]:
    """Area code -> population from a CSV, every row's population a number not below zero."""
    try:
        frame = pd.read_csv(io.BytesIO(body), dtype={code_column: str})
    except Exception as exc:
        raise ProblemError(
            422, "The CSV could not be parsed.", slug="invalid-csv", field="body"
        ) from exc
    for column, param in ((code_column, "code_column"), (population_column, "population_column")):
        if column not in frame.columns:
            raise ProblemError(
                422, f"The CSV has no column {column!r}.", slug="missing-column", field=param
            )
    values = pd.to_numeric(frame[population_column], errors="coerce")
    bad = int((values.isna() | (values < 0)).sum())
    if bad:
        raise ProblemError(
            422,
            f"{bad} rows have no valid population.",
            slug="invalid-population",
            field=population_column,
        )
    return dict(zip(frame[code_column].astype(str).str.strip(), values.astype(float), strict=True))
