"""The public API description: the gateway's own routes plus every backend's ``/v1`` paths.

Fetched at request time and cached; a backend that is down leaves its paths out until it answers.
"""

from __future__ import annotations

import asyncio
import copy
import time
from typing import Any

from services.gateway.upstream import Upstream, call_json

BEARER = {"ApiKey": {"type": "http", "scheme": "bearer", "description": "csp_<key_id>_<secret>"}}
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
# What every service's error handler (shared.errors) answers: RFC 9457 with optional members.
PROBLEM = {
    "title": "Problem",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "rule": {"type": "string"},
        "field": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
    "additionalProperties": True,
}
PROBLEM_RESPONSE = {
    "description": "An RFC 9457 problem naming the field or rule and the reason",
    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
}
# FastAPI documents its own 422 body, which the hub's handler replaces with a problem.
FASTAPI_VALIDATION = ("HTTPValidationError", "ValidationError")


class OpenApiMerger:
    def __init__(self, own: dict[str, Any], upstreams: dict[str, Upstream], ttl: float) -> None:
        self.own = own
        self.upstreams = upstreams
        self.ttl = ttl
        self._cached: tuple[float, dict[str, Any]] | None = None

    async def document(self, token: str) -> dict[str, Any]:
        if self._cached is not None and time.monotonic() - self._cached[0] < self.ttl:
            return self._cached[1]
        results = await asyncio.gather(
            *(self._fetch(u, token) for u in self.upstreams.values()), return_exceptions=True
        )
        merged = copy.deepcopy(self.own)
        paths = merged.setdefault("paths", {})
        schemas = merged.setdefault("components", {}).setdefault("schemas", {})
        complete = True
        for result in results:
            if not isinstance(result, dict):
                complete = False
                continue
            for path, operations in result.get("paths", {}).items():
                if path.startswith("/v1") and path not in paths:
                    paths[path] = operations
            for name, schema in result.get("components", {}).get("schemas", {}).items():
                schemas.setdefault(name, schema)
        declare_problems(merged)
        merged["components"]["securitySchemes"] = BEARER
        merged["security"] = [{"ApiKey": []}]
        merged["paths"] = dict(sorted(paths.items()))
        # A partial document is cached briefly only, so a recovered backend reappears soon.
        self._cached = (time.monotonic() - (0 if complete else self.ttl * 0.9), merged)
        return merged

    async def _fetch(self, upstream: Upstream, token: str) -> dict[str, Any]:
        status, body = await asyncio.wait_for(
            call_json(upstream, "GET", "/openapi.json", token), timeout=5
        )
        if status != 200 or not isinstance(body, dict):
            raise ValueError("no openapi document")
        return body


def declare_problems(document: dict[str, Any]) -> None:
    """Every error of every operation is a problem: FastAPI's 422 body is replaced by one, and
    ``default`` covers the other statuses (401, 403, 404, 409, 413, 429, 503...)."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name in FASTAPI_VALIDATION:
        schemas.pop(name, None)
    schemas["Problem"] = PROBLEM
    for operations in document.get("paths", {}).values():
        for method, operation in operations.items():
            if method not in METHODS:
                continue
            responses = operation.setdefault("responses", {})
            if "422" in responses and "HTTPValidationError" in str(responses["422"]):
                responses["422"] = {**PROBLEM_RESPONSE, "description": "Validation failed"}
            responses.setdefault("default", PROBLEM_RESPONSE)
