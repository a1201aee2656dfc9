"""What ingest asks its peer agreements, over the one pooled client the lifespan made: the
retention rules in force (for the purge) and the agreements an agency is party to (the report)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from shared.tokens import HEADER, TokenKey, service_token

Entries = list[dict[str, Any]]


@dataclass
class AgreementsPeer:
    client: httpx.AsyncClient
    token_key: TokenKey

    async def _get(self, path: str, params: dict[str, str] | None = None) -> Entries:
        token = service_token(self.token_key, "agreements", "GET", path)
        response = await self.client.get(path, params=params or {}, headers={HEADER: token})
        response.raise_for_status()
        entries: Entries = response.json()
        return entries

    async def retention(self) -> Entries:
        """``[{"provider", "dataset", "retention_days", "ended"?}]`` of the agreements in force."""
        return await self._get("/internal/retention")

    async def agreement_entries(self, agency: str | None) -> Entries:
        """Every agreement, or those ``agency`` is party to, for the partnership report."""
        return await self._get("/internal/agreements", {"agency": agency} if agency else None)
