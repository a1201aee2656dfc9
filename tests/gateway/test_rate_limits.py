"""Rate limits per key: in memory by default, shared through Redis across replicas."""

from __future__ import annotations

import redis

from tests.gateway.conftest import Hub, MakeHub

REDIS_URL = "redis://127.0.0.1:6379/0"


async def assert_limited(hub: Hub, headers: dict[str, str]) -> None:
    answer = await hub.client.get("/v1/me", headers=headers)
    assert answer.status_code == 429
    assert answer.headers["content-type"] == "application/problem+json"
    assert 1 <= int(answer.headers["retry-after"]) <= 60
    assert answer.headers["x-request-id"]


async def test_a_key_over_its_limit_gets_429_and_others_do_not(make_hub: MakeHub) -> None:
    hub = await make_hub(rate_limit="3/minute")
    agency = await hub.issue("gmp")  # the admin's first request
    for _ in range(3):
        assert (await hub.client.get("/v1/me", headers=agency)).status_code == 200
    await assert_limited(hub, agency)
    assert (await hub.client.get("/v1/me", headers=hub.admin())).status_code == 200
    entries = (await hub.client.get("/v1/audit?outcome=error", headers=hub.admin())).json()
    assert [e["status"] for e in entries["entries"]] == [429]


async def test_replicas_share_limits_through_redis(make_hub: MakeHub) -> None:
    redis.Redis.from_url(REDIS_URL).ping()
    first = await make_hub(rate_limit="4/minute", redis_url=REDIS_URL)
    second = await make_hub(rate_limit="4/minute", redis_url=REDIS_URL, admin_key=first.admin_key)
    for hub in (first, second, first, second):
        assert (await hub.client.get("/v1/me", headers=first.admin())).status_code == 200
    await assert_limited(second, first.admin())
    await assert_limited(first, first.admin())


async def test_failed_authentication_is_limited_per_client_address(make_hub: MakeHub) -> None:
    hub = await make_hub(rate_limit="3/minute")
    for _ in range(3):
        assert (await hub.client.get("/v1/me")).status_code == 401
    await assert_limited(
        hub, {"Authorization": "Bearer csp_000000000000_guessguessguessguessguess"}
    )
