"""What every service's HTTP edge does the same way: CSV cells a spreadsheet will not run, the
answer's format from ``?format=`` and ``Accept``, opaque page cursors, the service-only check, and
request bodies spooled to a temporary file under a size limit (never held whole in memory).

A library: no domain rule lives here, each route states its own formats, default and messages.
"""

from __future__ import annotations

import base64
import codecs
import functools
import hashlib
import io
import re
import ssl
import tempfile
from collections.abc import AsyncIterable, Callable, Sequence
from dataclasses import dataclass
from typing import IO, Any

import httpx

from shared.errors import ProblemError
from shared.tokens import InternalClaims

# Spreadsheets run a cell starting with one of these as a formula (CSV injection).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
CSV_MEDIA = "text/csv; charset=utf-8"
_CURSOR = re.compile(r"^[A-Za-z0-9_-]+$")
# A spooled body stays in memory up to this size, then goes to a temporary file.
SPOOL_IN_MEMORY = 8 * 1024 * 1024


@functools.cache
def peer_tls() -> ssl.SSLContext:
    """The TLS context of every peer client in this process (``httpx.AsyncClient(verify=...)``),
    made once: left to itself httpx loads the CA certificates again for each client, about 50 ms
    of every app start."""
    return httpx.create_ssl_context()


def neutralise(cell: Any) -> Any:
    """A text cell a spreadsheet would run as a formula gets a leading apostrophe; any other
    value is returned as it is."""
    if isinstance(cell, str) and cell.startswith(FORMULA_START):
        return "'" + cell
    return cell


def negotiate(
    requested: str | None,
    accept: str | None,
    offered: Sequence[tuple[str, str]],
    default: str,
) -> str:
    """The answer's format: ``?format=`` when given (one of ``offered``'s names or ``default``,
    else 422), otherwise the first of ``offered`` — ``(media type fragment, format name)`` in
    order of preference — that ``Accept`` names, otherwise ``default``."""
    if requested:
        known = {name for _, name in offered} | {default}
        if requested not in known:
            raise ProblemError(
                422,
                f"format must be one of {', '.join(sorted(known))}.",
                slug="unknown-format",
                field="format",
            )
        return requested
    wanted = (accept or "").lower()
    for media, name in offered:
        if media in wanted:
            return name
    return default


def encode_cursor(value: str | int) -> str:
    """An opaque cursor (unpadded base64url) for the key a page ends at."""
    return base64.urlsafe_b64encode(str(value).encode()).decode().rstrip("=")


def decode_cursor(
    cursor: str | None,
    *,
    detail: str = "The cursor is not one this service gave.",
    slug: str = "bad-cursor",
) -> str:
    """The key an ``encode_cursor`` cursor stands for; ``""`` for none; 422 naming ``cursor``
    for anything no service gave."""
    if not cursor:
        return ""
    try:
        if not _CURSOR.match(cursor):
            raise ValueError("not base64url")
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except ValueError as exc:  # binascii.Error and UnicodeDecodeError are ValueErrors
        raise ProblemError(422, detail, slug=slug, field="cursor") from exc


def decode_int_cursor(
    cursor: str | None,
    *,
    detail: str = "The cursor is not one this service gave.",
    slug: str = "bad-cursor",
) -> int:
    """``decode_cursor`` for an integer key; 0 for none."""
    key = decode_cursor(cursor, detail=detail, slug=slug)
    if not key:
        return 0
    try:
        return int(key)
    except ValueError as exc:
        raise ProblemError(422, detail, slug=slug, field="cursor") from exc


def require_service(claims: InternalClaims, *, operators: bool = False) -> InternalClaims:
    """403 unless the caller is the gateway or a peer service (or, with ``operators``, an
    admin); the claims otherwise."""
    if claims.is_service or (operators and claims.is_admin):
        return claims
    raise ProblemError(
        403,
        "Only the gateway, peer services and operators call this."
        if operators
        else "Only the gateway and peer services call this.",
        slug="forbidden",
        rule="service-only",
    )


@dataclass
class SpooledBody:
    file: IO[bytes]
    size: int
    sha256: str

    def text(self) -> IO[str]:
        """The body as UTF-8 text (a byte order mark dropped), from its start."""
        self.file.seek(0)
        return io.TextIOWrapper(self.file, encoding="utf-8-sig", newline="")

    def close(self) -> None:
        self.file.close()


def _too_large(limit: int) -> ProblemError:
    return ProblemError(
        413, f"The body is larger than the limit of {limit} bytes.", slug="too-large"
    )


def refuse_declared_over(content_length: str | None, limit: int) -> None:
    """413 before reading a body whose declared length is over the limit."""
    if content_length and content_length.isdigit() and int(content_length) > limit:
        raise _too_large(limit)


async def spool(
    chunks: AsyncIterable[bytes], limit: int, *, watch: Callable[[bytes], None] | None = None
) -> SpooledBody:
    """Copy the body to a temporary file, hashing it and checking size and UTF-8 as it comes
    (413 over ``limit``, 400 for bad UTF-8 or no body); ``watch`` sees each chunk first and may
    refuse the body by raising."""
    file = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")()
    size = 0
    try:
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            if watch is not None:
                watch(chunk)
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                offset = size - len(chunk) + exc.start
                raise ProblemError(
                    400,
                    f"The body is not valid UTF-8 (byte {offset}).",
                    slug="bad-encoding",
                    field="body",
                ) from None
            digest.update(chunk)
            file.write(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise ProblemError(
                400, "The body is not valid UTF-8 (it ends mid-character).", slug="bad-encoding"
            ) from None
    except BaseException:
        file.close()
        raise
    if size == 0:
        file.close()
        raise ProblemError(400, "The body is empty.", slug="empty-body", field="body")
    file.seek(0)
    return SpooledBody(file=file, size=size, sha256=digest.hexdigest())
