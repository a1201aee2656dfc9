"""HTTP routes of the depersonalise service, gathered in the order they are matched; each
``routes_*`` module holds one resource's handlers, which only translate HTTP to and from the
plain functions named in docs/architecture.md."""

from __future__ import annotations

from fastapi import APIRouter

from services.depersonalise import (
    routes_aggregates,
    routes_geographies,
    routes_operations,
    routes_records,
)

internal = routes_operations.internal
router = APIRouter()
for part in (routes_operations, routes_geographies, routes_aggregates, routes_records):
    router.include_router(part.router)
