"""Fake backends that follow docs/architecture.md, for testing the gateway alone."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request
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


# Each fake's routes are made once, not per test: a route's dependency analysis is most of what a
# fake costs, and an app pays for its included routes only when a request first reaches it. The
# routes keep their state on the app they answer for (``request.app.state``).
_agreements = APIRouter()
_ingest = APIRouter()
_depersonalise = APIRouter()


@_agreements.post("/internal/decisions")
async def decide(claims: ClaimsDep, request: Request) -> dict[str, Any]:
    assert claims.is_service
    state = request.app.state
    body = await request.json()
    try:  # the real service's validation of the query, so its 422 reaches the gateway
        InternalDecisionQuery.model_validate(body)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from exc
    state.decision_calls += 1
    state.seen.append(("/internal/decisions", claims, body))
    key = (body["agency"], body["action"], body["dataset"], body["level"])
    decision = state.decisions.get(key, DENY)
    if body.get("purpose") and decision["allow"] and body["purpose"] != decision["purpose"]:
        return {**DENY, "rule": "purpose-not-agreed"}
    return dict(decision)


@_agreements.get("/internal/agencies/{code}")
async def agency(code: str, claims: ClaimsDep, request: Request) -> dict[str, str]:
    if code not in request.app.state.agencies:
        raise ProblemError(404, "no such agency")
    return {"code": code, "name": code.upper(), "kind": "police", "status": "active"}


@_agreements.get("/v1/me")
async def me(claims: ClaimsDep) -> dict[str, Any]:
    return {"agency": {"code": claims.sub}, "agreements": [{"id": "agr-1"}]}


@_agreements.get("/v1/agencies")
async def agencies(claims: ClaimsDep, request: Request) -> list[dict[str, str]]:
    request.app.state.seen.append(("/v1/agencies", claims, dict(request.headers)))
    return [{"code": c} for c in sorted(request.app.state.agencies)]


@_agreements.post("/v1/agencies")
async def create_agency(claims: ClaimsDep) -> dict[str, str]:
    return {"code": "new"}


def agreements_app() -> FastAPI:
    app = _base("agreements")
    app.state.agencies = {"gmp", "manchester-cc", "ops", "tvp"}
    app.state.decisions = {}  # (agency, action, dataset, level) -> decision
    app.state.decision_calls = 0
    app.include_router(_agreements)
    return app


@_ingest.get("/internal/purges")
async def purges(
    claims: ClaimsDep, request: Request, after: int = 0, limit: int = 500
) -> dict[str, Any]:
    assert claims.is_service
    return {"purges": [p for p in request.app.state.purges if p["id"] > after][:limit]}


@_ingest.post("/v1/datasets/{dataset}/records", status_code=202)
async def push(dataset: str, claims: ClaimsDep, request: Request) -> dict[str, Any]:
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
    request.app.state.seen.append((request.url.path, claims, dict(request.headers)))
    return {"batch_id": "b-2", "received": size, "accepted": size, "rejected": 0, "errors": []}


@_ingest.get("/v1/batches/{batch_id}")
async def batch(batch_id: str, claims: ClaimsDep, request: Request) -> dict[str, Any]:
    # Object-level check as the real ingest does it: the batch's owner is the token's sub.
    if request.app.state.batches.get(batch_id) != claims.sub and not claims.is_admin:
        raise ProblemError(404, "No such batch.")
    return {"batch_id": batch_id, "dataset": "police-crime", "status": "done"}


@_ingest.get("/v1/datasets")
async def datasets(claims: ClaimsDep) -> list[str]:
    return ["police-crime"]


@_ingest.get("/v1/datasets/{dataset}/records")
async def personal(dataset: str, claims: ClaimsDep, request: Request) -> Response:
    request.app.state.seen.append((request.url.path, claims, dict(request.headers)))
    return JSONResponse({"served_by": "ingest"}, headers={"CSP-Record-Count": "2"})


@_ingest.get("/v1/people/{person}")
async def person(person: str, claims: ClaimsDep, request: Request) -> Response:
    request.app.state.seen.append((request.url.path, claims, dict(request.headers)))
    return JSONResponse({"person": person, "records": {}})


def ingest_app() -> FastAPI:
    app = _base("ingest")
    app.state.batches = {"b-1": "gmp"}
    app.state.purges = []
    app.include_router(_ingest)
    return app


@_depersonalise.get("/v1/datasets/{dataset}/aggregates")
async def aggregates(dataset: str, claims: ClaimsDep, request: Request) -> Response:
    request.app.state.seen.append((request.url.path, claims, dict(request.headers)))
    body: dict[str, Any] = {"dataset": dataset, "cells": [], "agreement": claims.agreement}
    return JSONResponse(body, headers={"CSP-Record-Count": "812", "Server": "fake"})


@_depersonalise.get("/v1/datasets/{dataset}/records")
async def records(dataset: str, claims: ClaimsDep, request: Request) -> Response:
    request.app.state.seen.append((request.url.path, claims, dict(request.headers)))
    return JSONResponse({"served_by": "depersonalise"}, headers={"CSP-Record-Count": "5"})


@_depersonalise.get("/v1/geographies")
async def geographies(claims: ClaimsDep) -> list[str]:
    return ["lsoa21"]


def depersonalise_app() -> FastAPI:
    app = _base("depersonalise")
    app.include_router(_depersonalise)
    return app


def backend_apps() -> dict[str, FastAPI]:
    return {
        "agreements": agreements_app(),
        "ingest": ingest_app(),
        "depersonalise": depersonalise_app(),
    }
