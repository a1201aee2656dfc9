"""Replay memory for internal tokens: the ``jti`` of each state-changing call, until it expires.

Per process by default; shared by every replica through Redis when ``CSP_REDIS_URL`` is set (the
same Redis the gateway keeps its rate limits in), so a captured token replayed to another replica
is refused too. If Redis stops answering, each process still remembers what it saw itself.
"""

from __future__ import annotations

import logging
import time

import redis.asyncio
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

MAX_REMEMBERED = 200_000
PREFIX = "csp:jti:"


class ReplayMemory:
    def __init__(self, redis_url: str | None = None) -> None:
        self._seen: dict[str, int] = {}
        self._redis = (
            # Bounded waits: an unreachable Redis costs a request half a second, not a hang.
            redis.asyncio.Redis.from_url(redis_url, socket_connect_timeout=0.5, socket_timeout=0.5)
            if redis_url
            else None
        )

    @property
    def shared(self) -> bool:
        return self._redis is not None

    async def first_use(self, jti: str, until: int) -> bool:
        """Remember ``jti`` until the time ``until``; False if it was already remembered."""
        if self._redis is not None:
            try:
                stored = await self._redis.set(PREFIX + jti, b"1", nx=True, exat=until + 1)
            except (RedisError, OSError) as exc:
                log.warning(
                    "replay memory in Redis unavailable", extra={"error": type(exc).__name__}
                )
            else:
                if not stored:
                    return False
        return self._remember(jti, until)

    def _remember(self, jti: str, until: int) -> bool:
        if len(self._seen) > MAX_REMEMBERED:
            now = int(time.time())
            for old in [j for j, end in self._seen.items() if end < now]:
                del self._seen[old]
        if jti in self._seen:
            return False
        self._seen[jti] = until
        return True

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
