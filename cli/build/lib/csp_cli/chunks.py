"""Splits a CSV or JSON file of any size into request-sized chunks, streaming, never whole.

Each chunk is a complete request body (a CSV with the header, or ``{"records": [...]}``). The
file's SHA-256 and the chunk's index name the chunk, so a re-run sends the same chunks under the
same Idempotency-Keys and the gateway answers the ones it already has without storing them twice.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

FileFormat = Literal["csv", "json", "jsonl"]
READ_BYTES = 1 << 20


@dataclass(frozen=True)
class Chunk:
    index: int
    first_row: int  # 1-based number, in the file, of the chunk's first data row
    rows: int
    body: bytes
    content_type: str
    bytes_read: int  # how far into the file the reader had got when the chunk was cut


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(READ_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def idempotency_key(digest: str, chunk_rows: int, index: int) -> str:
    # The chunk size is part of the key: the same file cut differently gives different bodies.
    return f"csp-push-{digest[:40]}-{chunk_rows}-{index}"


def detect_format(path: Path) -> FileFormat:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in {".jsonl", ".ndjson"}:
        return "jsonl"
    if suffix == ".json":
        return "json"
    raise ValueError(f"{path.name}: cannot tell the format from the name; use --format")


class CountingReader(io.RawIOBase):
    """A binary file that counts the bytes read through it, for the progress bar."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.raw.read(len(buffer))
        buffer[: len(data)] = data
        self.count += len(data)
        return len(data)


def chunks(path: Path, fmt: FileFormat, chunk_rows: int) -> Iterator[Chunk]:
    with path.open("rb") as raw:
        counter = CountingReader(raw)
        text = io.TextIOWrapper(io.BufferedReader(counter), encoding="utf-8-sig", newline="")
        if fmt == "csv":
            yield from _csv_chunks(text, counter, chunk_rows)
        else:
            records = _json_lines(text) if fmt == "jsonl" else json_records(text)
            yield from _json_chunks(records, counter, chunk_rows)


def _csv_chunks(text: IO[str], counter: CountingReader, chunk_rows: int) -> Iterator[Chunk]:
    reader = csv.reader(text)
    header = next(reader, None)
    if not header:
        raise ValueError("the CSV file has no header row")
    index, first_row, rows = 0, 1, 0
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in reader:
        writer.writerow(row)
        rows += 1
        if rows == chunk_rows:
            yield Chunk(
                index, first_row, rows, buffer.getvalue().encode(), "text/csv", counter.count
            )
            index, first_row, rows = index + 1, first_row + rows, 0
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(header)
    if rows or index == 0:
        yield Chunk(index, first_row, rows, buffer.getvalue().encode(), "text/csv", counter.count)


def _json_chunks(
    records: Iterator[Any], counter: CountingReader, chunk_rows: int
) -> Iterator[Chunk]:
    index, first_row = 0, 1
    batch: list[Any] = []
    for record in records:
        batch.append(record)
        if len(batch) == chunk_rows:
            yield _json_chunk(index, first_row, batch, counter.count)
            index, first_row, batch = index + 1, first_row + len(batch), []
    if batch or index == 0:
        yield _json_chunk(index, first_row, batch, counter.count)


def _json_chunk(index: int, first_row: int, batch: list[Any], read: int) -> Chunk:
    body = json.dumps({"records": batch}, separators=(",", ":"), ensure_ascii=False).encode()
    return Chunk(index, first_row, len(batch), body, "application/json", read)


def _json_lines(text: IO[str]) -> Iterator[Any]:
    for number, line in enumerate(text, start=1):
        if line.strip():
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"line {number} is not JSON: {exc.msg}") from exc


class _Stream:
    """Characters of a text file with look-ahead, read in blocks."""

    def __init__(self, text: IO[str]) -> None:
        self.text = text
        self.buffer = ""
        self.position = 0
        self.eof = False

    def fill(self) -> bool:
        if self.eof:
            return False
        block = self.text.read(READ_BYTES)
        if not block:
            self.eof = True
            return False
        self.buffer = self.buffer[self.position :] + block
        self.position = 0
        return True

    def peek(self) -> str:
        """The next non-blank character (not consumed), or '' at the end."""
        while True:
            while self.position < len(self.buffer) and self.buffer[self.position].isspace():
                self.position += 1
            if self.position < len(self.buffer):
                return self.buffer[self.position]
            if not self.fill():
                return ""

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise ValueError(f"expected {char!r} in the JSON file")
        self.position += 1

    def value(self, decoder: json.JSONDecoder) -> Any:
        self.peek()
        while True:
            try:
                value, end = decoder.raw_decode(self.buffer, self.position)
            except json.JSONDecodeError as exc:
                # The value may run past the buffer: read more, or fail at the true end.
                if not self.fill():
                    raise ValueError(f"the JSON file is not valid: {exc.msg}") from exc
                continue
            if end == len(self.buffer) and not self.eof and self.fill():
                continue  # a number may go on in the next block
            self.position = end
            return value


def json_records(text: IO[str]) -> Iterator[Any]:
    """The records of ``[...]`` or ``{"records": [...]}`` one at a time, never the whole file."""
    stream = _Stream(text)
    decoder = json.JSONDecoder()
    wrapped = stream.peek() == "{"
    if wrapped:
        stream.expect("{")
        if stream.value(decoder) != "records":
            raise ValueError('a JSON object file must start with its "records" member')
        stream.expect(":")
    stream.expect("[")
    if stream.peek() == "]":
        stream.position += 1
    else:
        while True:
            yield stream.value(decoder)
            following = stream.peek()
            stream.position += 1
            if following == "]":
                break
            if following != ",":
                raise ValueError("expected ',' or ']' between the JSON records")
    if wrapped:
        stream.expect("}")
    if stream.peek():
        raise ValueError("the JSON file has content after its records")
