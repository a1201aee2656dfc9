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
