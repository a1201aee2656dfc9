"""Decisions from the agreements service, permissions cached for under half a second.

A suspension or revocation therefore takes effect within one second on every replica, while a
burst of identical requests costs one call to agreements (concurrent misses share it). Refusals
are not cached, so an agreement that has just become active allows at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from services.gateway.upstream import Upstream, call_json
from shared.errors import ProblemError

DecisionKey = tuple[str, str, str | None, str | None, str | None, tuple[str, ...] | None]
MAX_CACHED = 50_000
# Where the client gave each member of the decision query agreements validates.
CLIENT_PLACE = {
    "level": ("query", "level"),
    "fields": ("query", "fields"),
    "purpose": ("header", "CSP-Purpose"),
    "dataset": ("path", "dataset"),
}


class DecisionCache:
    def __init__(self, agreements: Upstream, token: Callable[[], str], ttl_seconds: float) -> None:
        self.agreements = agreements
        self.token = token
        self.ttl = ttl_seconds
        self._cache: dict[DecisionKey, tuple[float, dict[str, Any]]] = {}
        self._inflight: dict[DecisionKey, asyncio.Future[dict[str, Any]]] = {}

    async def decide(
        self,
        agency: str,
        action: str,
        dataset: str | None,
        level: str | None,
        purpose: str | None,
        fields: list[str] | None,
    ) -> dict[str, Any]:
        key: DecisionKey = (
            agency,
            action,
            dataset,
            level,
            purpose,
            None if fields is None else tuple(fields),
        )
        cached = self._cache.get(key)
        if cached is not None and time.monotonic() - cached[0] < self.ttl:
            return cached[1]
        inflight = self._inflight.get(key)
        if inflight is not None:
            return await inflight
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            decision = await self._ask(agency, action, dataset, level, purpose, fields)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # marked retrieved; concurrent waiters re-raise it
            raise
        finally:
            self._inflight.pop(key, None)
        if len(self._cache) >= MAX_CACHED:
            self._cache.clear()
        if decision.get("allow"):
            self._cache[key] = (time.monotonic(), decision)
        future.set_result(decision)
        return decision

    def clear(self) -> None:
        """Forget every permission (this replica changed an agency or agreement)."""
        self._cache.clear()

    async def _ask(
        self,
        agency: str,
        action: str,
        dataset: str | None,
        level: str | None,
        purpose: str | None,
        fields: list[str] | None,
    ) -> dict[str, Any]:
        payload = {
            "agency": agency,
            "action": action,
            "dataset": dataset,
            "level": level,
            "purpose": purpose,
            "fields": fields,
        }
        status, body = await call_json(
            self.agreements, "POST", "/internal/decisions", self.token(), payload
        )
        if status == 422 and isinstance(body, dict):
            raise _invalid_query(body)
        if status != 200 or not isinstance(body, dict) or "allow" not in body:
            raise ProblemError(
                503,
                "The agreements service could not decide this request.",
                slug="decision-unavailable",
                upstream_status=status,
            )
        return body


def _invalid_query(answer: dict[str, Any]) -> ProblemError:
    """Agreements refused what the client sent (a level or purpose too long): name it to them."""
    errors = []
    for error in answer.get("errors") or []:
        member = str(error.get("field", "")).split(".")[0] if isinstance(error, dict) else ""
        where, field = CLIENT_PLACE.get(member, ("query", member or "query"))
        errors.append({"field": field, "in": where, "message": str(error.get("message", ""))})
    named = ", ".join(sorted({e["field"] for e in errors})) or "query"
    return ProblemError(
        422,
        f"The request is not valid: {named}.",
        slug="validation-failed",
        title="Validation failed",
        errors=errors,
    )
