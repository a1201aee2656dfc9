"""Helpers for the depersonalise tests: an app with a fake ingest behind a transport, tokens."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import httpx
import pytest
from anyio.from_thread import start_blocking_portal
from fastapi import FastAPI

from services.depersonalise.main import create_app
from services.depersonalise.settings import Settings
from shared.holdings import revision_digest
from shared.tokens import issue_token
from tests.conftest import GATEWAY_KEY


def token(**claims: Any) -> dict[str, str]:
    claims.setdefault("sub", "tester")
    claims.setdefault("roles", ["agency"])
    return {"CSP-Internal-Token": issue_token(GATEWAY_KEY, claims)}


def admin() -> dict[str, str]:
    return token(sub="ops", roles=["agency", "admin"])


def service() -> dict[str, str]:
    return token(sub="ingest", roles=["service"])


def reader(
    dataset: str = "police-crime",
    providers: list[str] | None = None,
    level: str = "aggregate",
    fields: list[str] | None = None,
) -> dict[str, str]:
    return token(
        sub="council",
        action="read",
        dataset=dataset,
        level=level,
        providers=["gmp"] if providers is None else providers,
        fields=fields,
        agreement="agr-1",
    )


class SyncClient:
    """A blocking client over ``httpx.ASGITransport``, the app's lifespan and loop in a thread.

    The loop keeps running between calls, so background rebuilds progress as in a real process.
    """

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.closed = False
        self._portal_cm = start_blocking_portal()
        self.portal = self._portal_cm.__enter__()
        self._lifespan = app.router.lifespan_context(app)
        self.portal.call(self._lifespan.__aenter__)
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://depersonalise"
        )

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.portal.call(partial(self.client.request, method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.portal.call(self.client.aclose)
        self.portal.call(self._lifespan.__aexit__, None, None, None)
        self._portal_cm.__exit__(None, None, None)


class FakeIngest:
    """Serves ``GET /internal/records`` from the events it was given (the latest per key)."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.down = False
        self.gate = threading.Event()
        self.gate.set()
        self.calls = 0

    def keep(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            if event["op"] == "delete":
                self.records.pop(event["record_key"], None)
            else:
                self.records[event["record_key"]] = event

    def holdings(self, dataset: str) -> dict[str, Any]:
        by_provider: dict[str, list[int]] = {}
        for e in self.records.values():
            if e["dataset"] == dataset:
                by_provider.setdefault(e["provider"], []).append(e["revision"])
        return {
            "dataset": dataset,
            "horizon": 1 + max((e["revision"] for e in self.records.values()), default=0),
            "holdings": [
                {"provider": p, "count": len(r), "digest": revision_digest(r)}
                for p, r in sorted(by_provider.items())
            ],
        }

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        while not self.gate.is_set():  # a polling wait stays cancellable when the app stops
            await asyncio.sleep(0.01)
        if self.down:
            raise httpx.ConnectError("ingest is down", request=request)
        if request.url.path == "/internal/holdings":
            return httpx.Response(200, json=self.holdings(request.url.params["dataset"]))
        assert request.url.path == "/internal/records"
        assert request.headers.get("CSP-Internal-Token")
        dataset = request.url.params["dataset"]
        after = int(request.url.params.get("after", 0))
        limit = int(request.url.params["limit"])
        provider = request.url.params.get("provider")
        rows = sorted(
            (
                e
                for e in self.records.values()
                if e["dataset"] == dataset and provider in (None, e["provider"])
            ),
            key=lambda e: e["event_id"],
        )
        page = [e for e in rows if e["event_id"] > after][:limit]
        more = len(page) == limit
        return httpx.Response(
            200, json={"events": page, "next": page[-1]["event_id"] if more else None}
        )


@pytest.fixture
def make_client(
    database_url: Callable[[str], str],
) -> Iterator[Callable[..., tuple[SyncClient, FakeIngest]]]:
    opened: list[SyncClient] = []

    def make(
        url: str | None = None, ingest: FakeIngest | None = None, **overrides: Any
    ) -> tuple[SyncClient, FakeIngest]:
        fake = ingest or FakeIngest()
        settings = Settings(
            database_url=url or database_url("depersonalise"),
            replay_page_size=500,
            **overrides,
        )
        app = create_app(settings, ingest_transport=httpx.MockTransport(fake.handle))
        client = SyncClient(app)
        opened.append(client)
        return client, fake

    yield make
    for client in opened:
        client.close()


def wait_rebuild(client: SyncClient, timeout: float = 60.0) -> dict[str, Any]:
    """Poll the listing until no rebuild is running; answer the final rebuild state."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.get("/v1/geographies", headers=admin()).json()["rebuild"]
        if state.get("state") != "running":
            return state
        time.sleep(0.05)
    raise AssertionError("rebuild did not finish")


def event(
    event_id: int,
    key: str,
    easting: float | None,
    northing: float | None,
    occurred_at: str = "2024-01-15T10:00:00Z",
    category: str = "Burglary",
    revision: int = 1,
    provider: str = "gmp",
    dataset: str = "police-crime",
    **record: Any,
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "op": "upsert",
        "dataset": dataset,
        "provider": provider,
        "record_key": key,
        "revision": revision,
        "batch_id": "b1",
        "received_at": "2024-02-01T00:00:00Z",
        "location_source": "coordinates" if easting is not None else "none",
        "easting": easting,
        "northing": northing,
        "record": {"occurred_at": occurred_at, "category": category, **record},
    }
