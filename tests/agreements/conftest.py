"""An agreements app per test, driven through httpx with internal tokens for each kind of caller."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import date, timedelta
from typing import Any

import httpx
import pytest

from services.agreements.main import create_app
from services.agreements.settings import Settings
from shared.tokens import HEADER, issue_token
from tests.conftest import GATEWAY_KEY

TODAY = date.today()


def days(offset: int) -> str:
    return (TODAY + timedelta(days=offset)).isoformat()


def token(sub: str, *roles: str) -> dict[str, str]:
    # Module-level tokens outlive a slow run of the module: an hour, not the default minute.
    return {HEADER: issue_token(GATEWAY_KEY, {"sub": sub, "roles": list(roles)}, 3600)}


ADMIN = token("ops", "agency", "admin")
SERVICE = token("gateway", "service")


def as_agency(code: str) -> dict[str, str]:
    return token(code, "agency")


def agreement_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "title": "Police crime data for the strategic assessment",
        "purpose": "strategic-assessment",
        "legal_basis": ["cda-1998-s115", "uk-gdpr-6-1-e"],
        "providers": ["gmp"],
        "recipients": ["manchester-cc"],
        "datasets": [{"dataset": "police-crime", "level": "aggregate"}],
        "start": days(-10),
        "end": days(365),
        "review_by": days(200),
        "retention_days": 365,
    }
    body.update(changes)
    return body


class Hub:
    """A client of one agreements app with helpers for the common steps."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def agency(self, code: str, kind: str = "police") -> None:
        answer = await self.client.post(
            "/v1/agencies", json={"code": code, "name": code.upper(), "kind": kind}, headers=ADMIN
        )
        assert answer.status_code == 201, answer.text

    async def agreement(self, **changes: Any) -> dict[str, Any]:
        answer = await self.client.post(
            "/v1/agreements", json=agreement_body(**changes), headers=ADMIN
        )
        assert answer.status_code == 201, answer.text
        return dict(answer.json())

    async def sign_all(self, agreement: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = agreement
        for party in dict.fromkeys(agreement["providers"] + agreement["recipients"]):
            answer = await self.client.post(
                f"/v1/agreements/{agreement['id']}/sign",
                json={"signatory": f"Officer of {party}, DPO"},
                headers=as_agency(party),
            )
            assert answer.status_code == 200, answer.text
            result = answer.json()
        return result

    async def active(self, **changes: Any) -> dict[str, Any]:
        return await self.sign_all(await self.agreement(**changes))

    async def decide(self, agency: str, **query: Any) -> dict[str, Any]:
        body = {"agency": agency, "action": "read", "dataset": "police-crime"} | query
        answer = await self.client.post("/internal/decisions", json=body, headers=SERVICE)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())


@pytest.fixture
def make_settings(database_url: Callable[[str], str]) -> Callable[..., Settings]:
    def make(**changes: Any) -> Settings:
        return Settings(
            database_url=database_url("agreements"),
            decision_flush_seconds=0.05,
            **changes,
        )

    return make


@pytest.fixture
async def hub(make_settings: Callable[..., Settings]) -> AsyncIterator[Hub]:
    app = create_app(make_settings())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://agreements") as client:
            h = Hub(client)
            await h.agency("gmp")
            await h.agency("manchester-cc", "local-authority")
            await h.agency("salford-cc", "local-authority")
            yield h
