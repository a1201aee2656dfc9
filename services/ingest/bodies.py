"""CSV and JSON row readers over spooled request bodies (``shared.http.spool``), the CSV header's
width watched while the body arrives, and the CSV writer every download uses."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import IO, Any, NoReturn

from shared.errors import ProblemError
from shared.http import neutralise

SPOOL_IN_MEMORY = 8 * 1024 * 1024
READ_CHUNK = 1024 * 1024
# A record is one flat object of short fields: one larger than this is refused, not parsed on.
MAX_VALUE_CHARS = 1024 * 1024
MAX_HEADER_CHARS = 1024 * 1024
HEADER_BYTES_PER_COLUMN = 256
MAX_NAMED = 20


class HeaderWatch:
    """Refuses a CSV whose header has more columns than the dataset has fields while the body is
    still arriving, so a huge header costs nothing beyond the bytes already read."""

    def __init__(self, max_columns: int) -> None:
        self.max_columns = max_columns
        self.max_bytes = max_columns * HEADER_BYTES_PER_COLUMN + 1024
        self.seen = bytearray()
        self.done = False

    def feed(self, chunk: bytes) -> None:
        if self.done:
            return
        end = chunk.find(b"\n")
        self.seen += chunk if end < 0 else chunk[:end]
        self.done = end >= 0
        columns = max(self.seen.count(b","), self.seen.count(b";")) + 1
        if columns > self.max_columns:
            raise ProblemError(
                422,
                f"The CSV header has more columns than the dataset's {self.max_columns} fields.",
                slug="bad-header",
                field="header",
            )
        if len(self.seen) > self.max_bytes:
            raise ProblemError(
                422,
                f"The CSV header line is longer than {self.max_bytes} bytes.",
                slug="bad-header",
                field="header",
            )


RawRow = tuple[int, dict[str, Any] | str]
"""(1-based data row number, the row's fields — or a reason the row could not be read)."""


def csv_header(
    text: IO[str], max_columns: int | None = None
) -> tuple[list[str], Iterator[list[str]]]:
    """The header (at most ``max_columns`` names, each once) and a reader of the rows."""
    first = text.readline(MAX_HEADER_CHARS + 1)
    if len(first) > MAX_HEADER_CHARS:
        raise ProblemError(
            422, f"The CSV header line is longer than {MAX_HEADER_CHARS} characters.",
            slug="bad-header", field="header",
        )  # fmt: skip
    if not first.strip():
        raise ProblemError(400, "The CSV has no header row.", slug="empty-body", field="body")
    delimiter = ";" if first.count(";") > first.count(",") else ","
    header = next(csv.reader([first], delimiter=delimiter))
    header = [name.strip() for name in header]
    if max_columns is not None and len(header) > max_columns:
        raise ProblemError(
            422,
            f"The CSV header has {len(header)} columns; the dataset has {max_columns} fields.",
            slug="bad-header",
            field="header",
        )
    counts = Counter(header)
    duplicates = sorted(name for name, count in counts.items() if count > 1)
    if duplicates:
        raise ProblemError(
            422,
            f"The CSV header repeats: {', '.join(duplicates[:MAX_NAMED])}.",
            slug="bad-header",
            fields=duplicates[:MAX_NAMED],
        )
    if "" in header:
        raise ProblemError(422, "The CSV header has an empty column name.", slug="bad-header")
    return header, csv.reader(text, delimiter=delimiter, strict=False)


class CsvChunk:
    """Consecutive data rows of a CSV as read (lists of cells), numbered from ``first``."""

    __slots__ = ("cells", "first", "header")

    def __init__(self, header: list[str], first: int, cells: list[list[str]]) -> None:
        self.header = header
        self.first = first
        self.cells = cells

    def __len__(self) -> int:
        return len(self.cells)

    def raw_rows(self) -> Iterator[RawRow]:
        """The chunk as ``RawRow``s, as ``CsvRows`` yields them one by one."""
        header, width = self.header, len(self.header)
        for number, cells in enumerate(self.cells, self.first):
            if len(cells) != width:
                yield number, f"has {len(cells)} cells; the header has {width}"
            else:
                yield number, dict(zip(header, cells, strict=True))


class CsvRows:
    """The data rows of a CSV: one by one as ``RawRow``s, or in chunks of cells (``chunks``),
    which the push validates column by column. Blank lines are skipped and not numbered."""

    def __init__(self, header: list[str], reader: Iterator[list[str]]) -> None:
        self.header = header
        self.reader = reader
        self.number = 0
        self._rows: Iterator[RawRow] | None = None

    def __iter__(self) -> CsvRows:
        return self

    def __next__(self) -> RawRow:
        if self._rows is None:
            self._rows = (row for chunk in self.chunks(1) for row in chunk.raw_rows())
        return next(self._rows)

    def chunks(self, size: int) -> Iterator[CsvChunk]:
        cells: list[list[str]] = []
        try:
            for row in self.reader:
                if row:
                    cells.append(row)
                    if len(cells) >= size:
                        yield CsvChunk(self.header, self.number + 1, cells)
                        self.number += len(cells)
                        cells = []
        except csv.Error as exc:
            number = self.number + len(cells)
            raise ProblemError(
                400, f"The CSV cannot be read after data row {number}: {exc}.", slug="bad-csv"
            ) from None
        if cells:
            yield CsvChunk(self.header, self.number + 1, cells)
            self.number += len(cells)


def csv_rows(header: list[str], reader: Iterator[list[str]]) -> Iterator[RawRow]:
    """The rows as a ``CsvRows``, which the push takes in chunks of cells."""
    return CsvRows(header, reader)


class _JsonStream:
    """Reads one JSON object ``{"records": [...]}`` element by element from a text stream."""

    def __init__(self, text: IO[str]) -> None:
        self.text = text
        self.buffer = ""
        self.pos = 0
        self.consumed = 0
        self.eof = False
        self.decoder = json.JSONDecoder()

    def _fill(self, at_least: int = READ_CHUNK) -> bool:
        if self.eof:
            return False
        more = self.text.read(max(READ_CHUNK, at_least))
        if not more:
            self.eof = True
            return False
        self.consumed += self.pos
        self.buffer = self.buffer[self.pos :] + more
        self.pos = 0
        return True

    def peek(self) -> str:
        while True:
            while self.pos < len(self.buffer) and self.buffer[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.buffer):
                return self.buffer[self.pos]
            if not self._fill():
                return ""

    def expect(self, char: str) -> None:
        if self.peek() != char:
            self.fail(f"expected {char!r}")
        self.pos += 1

    def value(self) -> Any:
        self.peek()
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buffer, self.pos)
            except json.JSONDecodeError:
                pending = len(self.buffer) - self.pos
                if pending > MAX_VALUE_CHARS:
                    self.fail(f"a value longer than {MAX_VALUE_CHARS} characters")
                # Doubling what is pending keeps re-parsing a long value linear in its length.
                if self._fill(pending):
                    continue
                self.fail("malformed value")
            except RecursionError:
                # A record is a flat object; thousands of nested levels are an attack, not data.
                self.fail("a value nested too deeply")
            if end == len(self.buffer) and self._fill():
                continue  # a number may go on in the next chunk
            self.pos = end
            return value

    def fail(self, reason: str) -> NoReturn:
        raise ProblemError(
            400,
            f"The body is not valid JSON ({reason} near character {self.consumed + self.pos}).",
            slug="bad-json",
            field="body",
        )


def json_rows(text: IO[str]) -> Iterator[RawRow]:
    stream = _JsonStream(text)
    if stream.peek() != "{":
        raise ProblemError(
            422,
            'The body must be a JSON object: {"records": [...]}.',
            slug="bad-body",
            field="records",
        )
    stream.pos += 1
    seen_records = False
    while stream.peek() != "}":
        if seen_records:
            stream.expect(",")
        key = stream.value()
        stream.expect(":")
        if key != "records" or seen_records:
            raise ProblemError(
                422,
                "The body must hold exactly one member, `records`.",
                slug="bad-body",
                field="records",
            )
        if stream.peek() != "[":
            raise ProblemError(422, "`records` must be an array.", slug="bad-body", field="records")
        stream.pos += 1
        number = 0
        while stream.peek() != "]":
            if number:
                stream.expect(",")
            number += 1
            element = stream.value()
            yield number, element if isinstance(element, dict) else "is not a JSON object"
        stream.pos += 1
        seen_records = True
    stream.pos += 1
    if not seen_records:
        raise ProblemError(
            422, "The body has no `records` array.", slug="bad-body", field="records"
        )
    if stream.peek() != "":
        stream.fail("trailing content")


def csv_lines(header: list[str], rows: Iterable[Iterable[Any]]) -> Iterator[str]:
    """CSV text, line by line, with every text cell neutralised."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([neutralise(name) for name in header])
    yield buffer.getvalue()
    for row in rows:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(["" if c is None else neutralise(c) for c in row])
        yield buffer.getvalue()
