"""A thin client of the gateway: the key in the Authorization header, problem+json as errors,
retries with the same request (and so the same Idempotency-Key) on transient failures."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from csp_cli import __version__
from csp_cli.config import Config

RETRY_STATUSES = {429, 502, 503, 504}


class GatewayError(Exception):
    """The gateway refused or failed a request; carries its problem details when it sent them."""

    def __init__(self, status: int | None, detail: str, problem: dict[str, Any] | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.problem = problem or {}

    def __str__(self) -> str:
        where = f"HTTP {self.status}" if self.status else "no answer"
        extra = [f"{k}: {self.problem[k]}" for k in ("rule", "field") if self.problem.get(k)]
        return f"{where}: {self.detail}" + (f" ({'; '.join(extra)})" if extra else "")


def error_from(response: httpx.Response) -> GatewayError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        detail = str(body.get("detail") or body.get("title") or response.reason_phrase)
        return GatewayError(response.status_code, detail, body)
    return GatewayError(response.status_code, response.reason_phrase or "request failed")


class Gateway:
    """One pooled connection to the gateway for the whole command."""

    def __init__(
        self,
        config: Config,
        *,
        transport: httpx.BaseTransport | None = None,
        attempts: int = 5,
        backoff_seconds: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        timeout: float = 120.0,
    ) -> None:
        headers = {"User-Agent": f"csp-cli/{__version__}"}
        if config.api_key:
            headers["Authorization"] = f"Bearer {config.api_key}"
        self.client = httpx.Client(
            base_url=config.url,
            headers=headers,
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=10.0),
        )
        self.attempts = attempts
        self.backoff_seconds = backoff_seconds
        self.sleep = sleep

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        content: bytes | Callable[[], Iterable[bytes]] | None = None,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Send, retrying transient failures; ``content`` may be a factory of a fresh stream."""
        for attempt in range(1, self.attempts + 1):
            body = content() if callable(content) else content
            try:
                response = self.client.request(
                    method, path, content=body, json=json, params=params, headers=headers
                )
            except httpx.TransportError as exc:
                if attempt == self.attempts:
                    raise GatewayError(None, f"the gateway does not answer ({exc!r})") from exc
                self.sleep(self.backoff_seconds * 2 ** (attempt - 1))
                continue
            if response.status_code in RETRY_STATUSES and attempt < self.attempts:
                self.sleep(_retry_after(response) or self.backoff_seconds * 2 ** (attempt - 1))
                continue
            if response.status_code >= 400:
                raise error_from(response)
            return response
        raise AssertionError("unreachable")

    def get_json(self, path: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None}
        return self.request("GET", path, params=clean or None).json()

    def post_json(self, path: str, body: Any = None) -> Any:
        response = self.request("POST", path, json=body if body is not None else {})
        return response.json() if response.content else {}

    def delete(self, path: str) -> None:
        self.request("DELETE", path)

    def paginate(self, path: str, **params: Any) -> Iterator[dict[str, Any]]:
        """Every item of a cursor-paginated list (or of a plain list answer)."""
        cursor: str | None = None
        while True:
            page = self.get_json(path, cursor=cursor, **params)
            if isinstance(page, list):
                yield from page
                return
            yield from page.get("items", [])
            cursor = page.get("next_cursor") or page.get("next")
            if not cursor:
                return

    @contextmanager
    def stream(self, path: str, params: dict[str, Any]) -> Iterator[httpx.Response]:
        clean = {k: v for k, v in params.items() if v is not None}
        with self.client.stream("GET", path, params=clean) as response:
            if response.status_code >= 400:
                response.read()
                raise error_from(response)
            yield response


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return min(float(value), 60.0) if value else None
    except ValueError:
        return None
