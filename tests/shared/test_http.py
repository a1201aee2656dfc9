"""The HTTP edge every service shares: CSV safety, format negotiation, cursors, service-only."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import ProblemError
from shared.http import (
    decode_cursor,
    decode_int_cursor,
    encode_cursor,
    negotiate,
    neutralise,
    refuse_declared_over,
    require_service,
    spool,
)
from shared.tokens import InternalClaims


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_a_cell_a_spreadsheet_would_run_gets_an_apostrophe(start: str) -> None:
    assert neutralise(start + "HYPERLINK(1)") == "'" + start + "HYPERLINK(1)"


@pytest.mark.parametrize("value", ["ok", "", " =1", 5, -5, None, 1.5])
def test_other_cells_are_left_as_they_are(value: object) -> None:
    assert neutralise(value) == value


DEPERSONALISE = [("geo+json", "geojson"), ("text/csv", "csv")]
REGISTER = [("text/html", "html"), ("text/csv", "csv"), ("application/json", "json")]


@pytest.mark.parametrize(
    ("requested", "accept", "offered", "default", "chosen"),
    [
        ("csv", "application/geo+json", DEPERSONALISE, "json", "csv"),
        (None, "application/geo+json", DEPERSONALISE, "json", "geojson"),
        (None, "Text/CSV", DEPERSONALISE, "json", "csv"),
        (None, None, DEPERSONALISE, "json", "json"),
        (None, "*/*", REGISTER, "csv", "csv"),
        (None, "application/json", REGISTER, "csv", "json"),
        (None, "text/html,text/csv", REGISTER, "csv", "html"),
        ("", "text/csv", [("text/csv", "csv")], "json", "csv"),
    ],
)
def test_format_is_the_query_then_accept_then_the_routes_default(
    requested: str | None,
    accept: str | None,
    offered: list[tuple[str, str]],
    default: str,
    chosen: str,
) -> None:
    assert negotiate(requested, accept, offered, default) == chosen


def test_an_unknown_format_is_a_problem_naming_the_field_and_the_choices() -> None:
    with pytest.raises(ProblemError) as caught:
        negotiate("xml", None, DEPERSONALISE, "json")
    assert caught.value.status == 422 and caught.value.slug == "unknown-format"
    assert caught.value.extra["field"] == "format"
    assert caught.value.detail == "format must be one of csv, geojson, json."


@given(st.text(min_size=1, max_size=80))
def test_a_cursor_gives_back_its_key(key: str) -> None:
    cursor = encode_cursor(key)
    assert "=" not in cursor
    assert decode_cursor(cursor) == key


@given(st.integers(min_value=0, max_value=2**63))
def test_an_integer_cursor_gives_back_its_number(key: int) -> None:
    assert decode_int_cursor(encode_cursor(key)) == key


def test_no_cursor_is_the_start() -> None:
    assert decode_cursor(None) == "" and decode_cursor("") == ""
    assert decode_int_cursor(None) == 0


@pytest.mark.parametrize("cursor", ["not a cursor", "MQ==", "%%", "_w"])
def test_a_cursor_no_service_gave_is_a_problem_naming_it(cursor: str) -> None:
    with pytest.raises(ProblemError) as caught:
        decode_cursor(cursor, detail="The cursor is not valid.", slug="invalid-cursor")
    assert caught.value.status == 422 and caught.value.slug == "invalid-cursor"
    assert caught.value.extra["field"] == "cursor"


def test_an_integer_cursor_over_text_is_a_problem() -> None:
    with pytest.raises(ProblemError) as caught:
        decode_int_cursor(encode_cursor("abc"))
    assert caught.value.slug == "bad-cursor" and caught.value.extra["field"] == "cursor"


def _claims(*roles: str) -> InternalClaims:
    return InternalClaims(sub="x", roles=list(roles))


def test_service_only_admits_services_and_refuses_agencies_and_operators() -> None:
    assert require_service(_claims("service")).sub == "x"
    for caller in (_claims(), _claims("admin")):
        with pytest.raises(ProblemError) as caught:
            require_service(caller)
        assert caught.value.status == 403 and caught.value.extra["rule"] == "service-only"


def test_service_only_with_operators_admits_admins_too() -> None:
    assert require_service(_claims("admin"), operators=True).sub == "x"
    with pytest.raises(ProblemError) as caught:
        require_service(_claims("agency"), operators=True)
    assert caught.value.status == 403 and caught.value.slug == "forbidden"


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_a_spooled_body_is_hashed_and_read_back_as_text_without_its_bom() -> None:
    body = await spool(_chunks("\ufeffa,b\r\n".encode(), "é\r\n".encode()), limit=100)
    try:
        assert body.size == 12
        assert body.sha256 == hashlib.sha256("\ufeffa,b\r\né\r\n".encode()).hexdigest()
        assert body.text().read() == "a,b\r\né\r\n"
    finally:
        body.close()


@pytest.mark.parametrize(
    ("parts", "status", "slug"),
    [
        ((b"x" * 60, b"y" * 60), 413, "too-large"),
        ((b"ok", b"\xff"), 400, "bad-encoding"),
        (("é".encode()[:1],), 400, "bad-encoding"),
        ((), 400, "empty-body"),
    ],
)
async def test_a_body_over_the_limit_not_utf8_or_empty_is_refused(
    parts: tuple[bytes, ...], status: int, slug: str
) -> None:
    with pytest.raises(ProblemError) as caught:
        await spool(_chunks(*parts), limit=100)
    assert (caught.value.status, caught.value.slug) == (status, slug)


async def test_the_watch_sees_each_chunk_and_may_refuse_the_body() -> None:
    seen: list[bytes] = []

    def watch(chunk: bytes) -> None:
        seen.append(chunk)
        if b"!" in chunk:
            raise ProblemError(422, "no shouting", field="body")

    with pytest.raises(ProblemError):
        await spool(_chunks(b"a", b"b!", b"c"), limit=100, watch=watch)
    assert seen == [b"a", b"b!"]


@pytest.mark.parametrize(("declared", "refused"), [("101", True), ("100", False), (None, False)])
def test_a_declared_length_over_the_limit_is_refused_before_reading(
    declared: str | None, refused: bool
) -> None:
    if refused:
        with pytest.raises(ProblemError) as caught:
            refuse_declared_over(declared, 100)
        assert caught.value.status == 413
    else:
        refuse_declared_over(declared, 100)
