"""The client for the backends: one pooled aiohttp session per backend (the fastest pooled client
measured here), in production and in the tests (which serve fake backends on local ports).

It streams the request body up and the response body down without holding either whole.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, Protocol

import aiohttp
from multidict import CIMultiDict
from yarl import URL

RawHeaders = list[tuple[bytes, bytes]]


class BackendUnavailableError(Exception):
    """The backend refused the connection or could not be reached."""


class BackendTimeoutError(Exception):
    """The backend accepted the request but did not answer in time."""


class UpstreamResponse(Protocol):
    status: int
    headers: RawHeaders

    def chunks(self) -> AsyncIterator[bytes]: ...

    async def close(self) -> None: ...


class Upstream(Protocol):
    async def send(
        self,
        method: str,
        path_qs: str,
        headers: list[tuple[str, str]],
        body: AsyncIterator[bytes] | None,
    ) -> UpstreamResponse: ...

    async def close(self) -> None: ...


class _AiohttpResponse:
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.headers: RawHeaders = list(response.raw_headers)

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except TimeoutError as exc:
            raise BackendTimeoutError(str(exc)) from exc
        except aiohttp.ClientError as exc:
            raise BackendUnavailableError(type(exc).__name__) from exc

    async def close(self) -> None:
        self._response.release()


class AiohttpUpstream:
    def __init__(
        self, base_url: str, *, connect_timeout: float, read_timeout: float, limit: int
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=limit, keepalive_timeout=30),
            timeout=aiohttp.ClientTimeout(
                total=None,
                sock_connect=connect_timeout,
                connect=connect_timeout,
                sock_read=read_timeout,
            ),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
        )

    async def send(
        self,
        method: str,
        path_qs: str,
        headers: list[tuple[str, str]],
        body: AsyncIterator[bytes] | None,
    ) -> UpstreamResponse:
        try:
            response = await self.session.request(
                method,
                # As encoded by the client: no re-quoting, no dot-segment folding ("%2E%2E").
                URL(self.base_url + path_qs, encoded=True),
                headers=CIMultiDict(headers),
                data=body,
                allow_redirects=False,
            )
        except TimeoutError as exc:
            raise BackendTimeoutError(str(exc)) from exc
        except aiohttp.ClientError as exc:
            raise BackendUnavailableError(type(exc).__name__) from exc
        return _AiohttpResponse(response)

    async def close(self) -> None:
        await self.session.close()


async def call_json(
    upstream: Upstream,
    method: str,
    path: str,
    token: str,
    payload: dict[str, Any] | None = None,
    *,
    request_id: str = "",
) -> tuple[int, Any]:
    """A small JSON call to a peer (decisions, agency look-ups, /v1/me)."""
    headers = [("CSP-Internal-Token", token), ("Accept", "application/json")]
    if request_id:
        headers.append(("X-Request-ID", request_id))
    body = None
    if payload is not None:
        headers.append(("Content-Type", "application/json"))
        encoded = json.dumps(payload).encode()
        headers.append(("Content-Length", str(len(encoded))))
        body = _once(encoded)
    response = await upstream.send(method, path, headers, body)
    try:
        data = b"".join([chunk async for chunk in response.chunks()])
    finally:
        await response.close()
    try:
        return response.status, json.loads(data) if data else None
    except ValueError:
        return response.status, None


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
