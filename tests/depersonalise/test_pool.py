"""More requests at once than a connection pool holds: each answer holds its read connection
while it takes a writer connection (the layers' reload, the release it records), so the reads
have a pool of their own and every request answers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from tests.depersonalise.conftest import reader

AT_ONCE = 48  # over SQLAlchemy's default pool of 5 + 10 overflow, and PostgreSQL's 10 + 20


def test_more_concurrent_answers_than_the_pool_holds_all_answer(
    make_client: Callable[..., tuple[Any, Any]],
) -> None:
    client, _ = make_client()
    headers = reader(level="depersonalised")

    async def burst() -> list[int]:
        answers = await asyncio.gather(
            *(
                client.client.get("/v1/datasets/police-crime/records", headers=headers)
                for _ in range(AT_ONCE)
            )
        )
        return [answer.status_code for answer in answers]

    assert client.portal.call(burst) == [200] * AT_ONCE
