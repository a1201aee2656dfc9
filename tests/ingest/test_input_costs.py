"""Bad input costs at most linear time and is refused early: wide CSV headers, long JSON values."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import pytest

from services.ingest.bodies import MAX_VALUE_CHARS, json_rows
from tests.ingest.conftest import Client, crime, token

PUSH = "/v1/datasets/police-crime/records"


def csv_headers() -> dict[str, str]:
    return {**token("gmp", action="push", dataset="police-crime"), "Content-Type": "text/csv"}


@pytest.mark.parametrize("columns", [50_000, 200_000])
async def test_a_header_far_wider_than_the_dataset_is_refused_at_once(
    client: Client, columns: int
) -> None:
    header = ",".join(f"c{n}" for n in range(columns)).encode() + b"\r\n"
    started = time.perf_counter()
    answer = await client.post(PUSH, content=header + b"x\r\n" * 10, headers=csv_headers())
    assert time.perf_counter() - started < 5.0  # linear; quadratic would take minutes
    assert answer.status_code == 422
    assert answer.json()["field"] == "header"


async def test_the_header_is_refused_before_the_rest_of_the_body_arrives(client: Client) -> None:
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        yield ",".join(f"c{n}" for n in range(1000)).encode()
        for _ in range(1000):
            sent += 1
            yield b",x" * 50_000  # the header line goes on: never a newline

    answer = await client.post(PUSH, content=body(), headers=csv_headers())
    assert answer.status_code == 422
    assert sent < 5


async def test_a_repeated_column_among_many_is_found_quickly(client: Client) -> None:
    names = ["source_ref", "occurred_at", "category", "easting", "northing", "category"]
    answer = await client.post(
        PUSH, content=(",".join(names) + "\r\n").encode(), headers=csv_headers()
    )
    assert answer.status_code == 422
    assert answer.json()["fields"] == ["category"]


async def test_a_json_value_longer_than_the_limit_is_refused(client: Client) -> None:
    long = json.dumps({"records": [crime("r1", location_description="x" * (3 * MAX_VALUE_CHARS))]})
    started = time.perf_counter()
    answer = await client.post(PUSH, content=long.encode(), headers={
        **token("gmp"), "Content-Type": "application/json"})  # fmt: skip
    assert time.perf_counter() - started < 5.0  # linear; quadratic would take minutes
    assert answer.status_code == 400
    assert "longer than" in answer.json()["detail"]


@pytest.mark.slow
def test_reading_json_rows_is_linear_in_the_body() -> None:
    """Eight times the records take about eight times the time (quadratic would be 64), with a
    loose bound for a loaded machine."""
    import io

    def seconds(count: int) -> float:
        body = json.dumps({"records": [crime(f"r{n}") for n in range(count)]})
        started = time.perf_counter()
        assert sum(1 for _ in json_rows(io.StringIO(body))) == count
        return time.perf_counter() - started

    seconds(1000)
    small, large = min(seconds(20_000) for _ in range(3)), min(seconds(160_000) for _ in range(3))
    assert large / small < 24


def test_a_value_just_under_the_limit_is_still_read() -> None:
    import io

    record = crime("r1", location_description="y" * (MAX_VALUE_CHARS - 1000))
    rows = list(json_rows(io.StringIO(json.dumps({"records": [record, crime("r2")]}))))
    assert [number for number, _ in rows] == [1, 2]
