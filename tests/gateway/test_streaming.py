"""Bodies stream through the gateway both ways over the production (aiohttp) client."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator, MutableMapping
from typing import Any

import pytest
from fastapi import Request
from fastapi.responses import StreamingResponse

from shared.deps import ClaimsDep
from tests.gateway import fakes
from tests.gateway.conftest import MakeHub, served

STEP_TIMEOUT = 5.0


class Backend:
    """A fake ingest + depersonalise on a real port; events show what arrived when."""

    def __init__(self) -> None:
        self.app = fakes._base()
        self.first_chunk_in = threading.Event()
        self.client_got_first = threading.Event()
        self.received = 0

        @self.app.post("/v1/datasets/{dataset}/records", status_code=202)
        async def push(dataset: str, claims: ClaimsDep, request: Request) -> dict[str, int]:
            async for chunk in request.stream():
                self.received += len(chunk)
                if chunk:
                    self.first_chunk_in.set()
            return {"received": self.received}

        @self.app.get("/v1/datasets/{dataset}/records")
        async def records(dataset: str, claims: ClaimsDep) -> StreamingResponse:
            async def rows() -> AsyncIterator[bytes]:
                yield b'{"rows": ['
                waited = await asyncio.to_thread(self.client_got_first.wait, STEP_TIMEOUT)
                yield b'"second"]}' if waited else b'"buffered"]}'

            return StreamingResponse(rows(), media_type="application/json")


@pytest.fixture
def backend() -> Iterator[tuple[Backend, int]]:
    fake = Backend()
    with served(fake.app) as port:
        yield fake, port


async def test_a_push_reaches_the_backend_before_the_client_has_finished_sending(
    make_hub: MakeHub, backend: tuple[Backend, int]
) -> None:
    fake, port = backend
    hub = await make_hub(real=("ingest",), ingest_url=f"http://127.0.0.1:{port}")
    headers = await hub.issue("gmp")
    hub.allow("gmp", "push", "police-crime", None)

    async def body() -> AsyncIterator[bytes]:
        yield b"source_ref,occurred_at,category\n" + b"r,2024-01-01,Burglary\n" * 5000
        # Only a gateway that streams lets the backend see the first part now.
        assert await asyncio.to_thread(fake.first_chunk_in.wait, STEP_TIMEOUT)
        for _ in range(20):
            yield b"r,2024-01-01,Burglary\n" * 5000

    answer = await hub.client.post(
        "/v1/datasets/police-crime/records",
        content=body(),
        headers={**headers, "Content-Type": "text/csv"},
    )
    assert answer.status_code == 202, answer.text
    assert answer.json()["received"] == fake.received > 2_000_000


async def test_a_response_reaches_the_client_while_the_backend_is_still_writing(
    make_hub: MakeHub, backend: tuple[Backend, int]
) -> None:
    fake, port = backend
    hub = await make_hub(real=("depersonalise",), depersonalise_url=f"http://127.0.0.1:{port}")
    headers = await hub.issue("manchester-cc")
    hub.allow("manchester-cc", "read", "police-crime", "depersonalised")
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": "/v1/datasets/police-crime/records", "raw_path": b"",
        "query_string": b"", "headers": raw, "client": ("127.0.0.1", 1), "server": None,
    }  # fmt: skip
    body: list[bytes] = []
    status: list[int] = []

    async def receive() -> MutableMapping[str, Any]:
        await asyncio.sleep(STEP_TIMEOUT * 2)
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(int(message["status"]))
        elif message.get("body"):
            body.append(message["body"])
            fake.client_got_first.set()

    await hub.app(scope, receive, send)
    assert status == [200]
    assert b"".join(body) == b'{"rows": ["second"]}'
