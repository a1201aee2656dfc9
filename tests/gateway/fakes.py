"""Fake backends that follow docs/architecture.md, for testing the gateway alone."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from services.agreements.models import InternalDecisionQuery
from shared.app import install_problem_handlers
from shared.deps import ClaimsDep
from shared.errors import ProblemError
from shared.replay import ReplayMemory
from shared.tokens import TokenVerifier, accepted_callers
from tests.conftest import TEST_KEYS

DENY = {
    "allow": False,
    "rule": "no-active-agreement",
    "agreement": None,
    "version": None,
    "fields": [],
    "providers": [],
    "purpose": None,
    "retention_days": None,
    "window": None,
    "warning": None,
}


def allow(**extra: Any) -> dict[str, Any]:
    return {
        **DENY,
        "allow": True,
        "rule": "agreement-allows",
        "agreement": "agr-1",
        "version": 3,
        "fields": None,
        "providers": ["gmp"],
        "purpose": "strategic-assessment",
        "retention_days": 365,
        "window": ["2024-01-01", "2027-12-31"],
        **extra,
    }


def _base(service: str | None = None) -> FastAPI:
    """A fake backend; ``service`` None for one standing in for several (no audience check)."""
    app = FastAPI()
    install_problem_handlers(app)
    callers = accepted_callers(service or "ingest", TEST_KEYS.public_keys)
    app.state.token_verifier = TokenVerifier(service, callers, ReplayMemory())
    app.state.seen = []  # (path, claims, headers) of each request received
    return app


def agreements_app() -> FastAPI:
    app = _base("agreements")
    app.state.agencies = {"gmp", "manchester-cc", "ops", "tvp"}
    app.state.decisions = {}  # (agency, action, dataset, level) -> decision
    app.state.decision_calls = 0

    @app.post("/internal/decisions")
    async def decide(claims: ClaimsDep, request: Request) -> dict[str, Any]:
        assert claims.is_service
        body = await request.json()
        try:  # the real service's validation of the query, so its 422 reaches the gateway
            InternalDecisionQuery.model_validate(body)
        except ValidationError as exc:
            raise RequestValidationError(exc.errors()) from exc
        app.state.decision_calls += 1
        app.state.seen.append(("/internal/decisions", claims, body))
        key = (body["agency"], body["action"], body["dataset"], body["level"])
        decision = app.state.decisions.get(key, DENY)
        if body.get("purpose") and decision["allow"] and body["purpose"] != decision["purpose"]:
            return {**DENY, "rule": "purpose-not-agreed"}
        return dict(decision)

    @app.get("/internal/agencies/{code}")
    async def agency(code: str, claims: ClaimsDep) -> dict[str, str]:
        if code not in app.state.agencies:
            raise ProblemError(404, "no such agency")
        return {"code": code, "name": code.upper(), "kind": "police", "status": "active"}

    @app.get("/v1/me")
    async def me(claims: ClaimsDep) -> dict[str, Any]:
        return {"agency": {"code": claims.sub}, "agreements": [{"id": "agr-1"}]}

    @app.get("/v1/agencies")
    async def agencies(claims: ClaimsDep, request: Request) -> list[dict[str, str]]:
        app.state.seen.append(("/v1/agencies", claims, dict(request.headers)))
        return [{"code": c} for c in sorted(app.state.agencies)]

    @app.post("/v1/agencies")
    async def create_agency(claims: ClaimsDep) -> dict[str, str]:
        return {"code": "new"}

    return app


def ingest_app() -> FastAPI:
    app = _base("ingest")
    app.state.batches = {"b-1": "gmp"}
    app.state.purges = []

    @app.get("/internal/purges")
    async def purges(claims: ClaimsDep, after: int = 0, limit: int = 500) -> dict[str, Any]:
        assert claims.is_service
        return {"purges": [p for p in app.state.purges if p["id"] > after][:limit]}

    @app.post("/v1/datasets/{dataset}/records", status_code=202)
    async def push(dataset: str, claims: ClaimsDep, request: Request) -> dict[str, Any]:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
        app.state.seen.append((request.url.path, claims, dict(request.headers)))
        return {"batch_id": "b-2", "received": size, "accepted": size, "rejected": 0, "errors": []}

    @app.get("/v1/batches/{batch_id}")
    async def batch(batch_id: str, claims: ClaimsDep) -> dict[str, Any]:
        # Object-level check as the real ingest does it: the batch's owner is the token's sub.
        if app.state.batches.get(batch_id) != claims.sub and not claims.is_admin:
            raise ProblemError(404, "No such batch.")
        return {"batch_id": batch_id, "dataset": "police-crime", "status": "done"}

    @app.get("/v1/datasets")
    async def datasets(claims: ClaimsDep) -> list[str]:
        return ["police-crime"]

    @app.get("/v1/datasets/{dataset}/records")
    async def personal(dataset: str, claims: ClaimsDep, request: Request) -> Response:
        app.state.seen.append((request.url.path, claims, dict(request.headers)))
        return JSONResponse({"served_by": "ingest"}, headers={"CSP-Record-Count": "2"})

    @app.get("/v1/people/{person}")
    async def person(person: str, claims: ClaimsDep, request: Request) -> Response:
        app.state.seen.append((request.url.path, claims, dict(request.headers)))
        return JSONResponse({"person": person, "records": {}})

    return app


def depersonalise_app() -> FastAPI:
    app = _base("depersonalise")

    @app.get("/v1/datasets/{dataset}/aggregates")
    async def aggregates(dataset: str, claims: ClaimsDep, request: Request) -> Response:
        app.state.seen.append((request.url.path, claims, dict(request.headers)))
        body: dict[str, Any] = {"dataset": dataset, "cells": [], "agreement": claims.agreement}
        return JSONResponse(body, headers={"CSP-Record-Count": "812", "Server": "fake"})

    @app.get("/v1/datasets/{dataset}/records")
    async def records(dataset: str, claims: ClaimsDep, request: Request) -> Response:
        app.state.seen.append((request.url.path, claims, dict(request.headers)))
        return JSONResponse({"served_by": "depersonalise"}, headers={"CSP-Record-Count": "5"})

    @app.get("/v1/geographies")
    async def geographies(claims: ClaimsDep) -> list[str]:
        return ["lsoa21"]

    return app


def backend_apps() -> dict[str, FastAPI]:
    return {
        "agreements": agreements_app(),
        "ingest": ingest_app(),
        "depersonalise": depersonalise_app(),
    }
