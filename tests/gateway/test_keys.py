"""API keys: issued once, stored hashed, identifiable by prefix, revoked within a second."""

from __future__ import annotations

import asyncio
import hashlib
import time

import pytest
from sqlalchemy import create_engine, text

from tests.gateway.conftest import Hub, MakeHub, make_key


async def test_issued_key_is_shown_once_and_stored_only_as_its_hash(hub: Hub) -> None:
    answer = await hub.client.post("/v1/agencies/gmp/keys", headers=hub.admin())
    assert answer.status_code == 201
    issued = answer.json()
    assert issued["key"].startswith(f"csp_{issued['key_id']}_")
    engine = create_engine(hub.settings.database_url)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT * FROM api_key")).all()
    engine.dispose()
    stored = {row._mapping["key_id"]: row._mapping for row in rows}
    assert (
        stored[issued["key_id"]]["key_hash"] == hashlib.sha256(issued["key"].encode()).hexdigest()
    )
    secret = issued["key"].rsplit("_", 1)[-1]
    assert not any(secret in str(value) for row in rows for value in row)
    me = await hub.client.get("/v1/me", headers={"Authorization": f"Bearer {issued['key']}"})
    assert me.status_code == 200
    assert me.json()["key_id"] == issued["key_id"]
    assert me.json()["roles"] == ["agency"]
    assert me.json()["agreements"] == [{"id": "agr-1"}]


async def test_key_for_unknown_agency_is_refused(hub: Hub) -> None:
    answer = await hub.client.post("/v1/agencies/nobody/keys", headers=hub.admin())
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    "header", [None, "Bearer", "Bearer csp_000000000000_wrongwrongwrongwrongwrong", "Basic abc"]
)
async def test_missing_or_wrong_key_is_401_with_challenge(hub: Hub, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    answer = await hub.client.get("/v1/me", headers=headers)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["status"] == 401
    assert answer.headers["x-request-id"]


async def test_right_prefix_wrong_secret_is_refused(hub: Hub) -> None:
    key = (await hub.issue("gmp"))["Authorization"].split()[1]
    forged = key[: key.rindex("_") + 1] + "x" * 43
    assert (
        await hub.client.get("/v1/me", headers={"Authorization": f"Bearer {forged}"})
    ).status_code == 401


async def test_revocation_takes_effect_within_one_second_on_every_replica(
    make_hub: MakeHub,
) -> None:
    first = await make_hub()
    second = await make_hub(admin_key=first.admin_key)  # another replica on the same database
    headers = await first.issue("gmp")
    key_id = headers["Authorization"].split("_")[1]
    assert (await first.client.get("/v1/me", headers=headers)).status_code == 200
    assert (
        await second.client.get("/v1/me", headers=headers)
    ).status_code == 200  # now cached there
    revoked = await first.client.delete(f"/v1/agencies/gmp/keys/{key_id}", headers=first.admin())
    assert revoked.status_code == 204
    assert (await first.client.get("/v1/me", headers=headers)).status_code == 401
    await asyncio.sleep(1.0)
    assert (await second.client.get("/v1/me", headers=headers)).status_code == 401
    again = await first.client.delete(f"/v1/agencies/gmp/keys/{key_id}", headers=first.admin())
    assert again.status_code == 404


async def test_agency_key_cannot_issue_or_revoke(hub: Hub) -> None:
    headers = await hub.issue("gmp")
    answer = await hub.client.post("/v1/agencies/gmp/keys", headers=headers)
    assert answer.status_code == 403
    assert answer.json()["rule"] == "admin-only"
    answer = await hub.client.delete("/v1/agencies/ops/keys/aaaaaaaaaaaa", headers=headers)
    assert answer.json()["rule"] == "admin-only"


async def test_operator_key_is_generated_and_printed_once(
    make_hub: MakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    first = await make_hub(admin_key=None, fresh_db=True)
    printed = capsys.readouterr().out
    assert "shown once" in printed
    key = printed.strip().rsplit(" ", 1)[-1]
    me = await first.client.get("/v1/me", headers={"Authorization": f"Bearer {key}"})
    assert me.status_code == 200
    assert set(me.json()["roles"]) == {"agency", "admin"}
    await make_hub(admin_key=None, database_url=first.settings.database_url)
    assert "shown once" not in capsys.readouterr().out


async def test_configured_operator_key_is_the_ops_admin(make_hub: MakeHub) -> None:
    configured = "operators-chosen-key-" + make_key()[-20:]
    hub = await make_hub(admin_key=configured)
    me = await hub.client.get("/v1/me", headers=hub.admin())
    assert me.status_code == 200
    assert me.json()["agency"] == {"code": "ops"}


async def test_last_used_time_is_recorded_in_batches(make_hub: MakeHub) -> None:
    hub = await make_hub(last_used_flush_seconds=0.1)
    headers = await hub.issue("gmp")
    key_id = headers["Authorization"].split("_")[1]
    before = time.time()
    assert (await hub.client.get("/v1/me", headers=headers)).status_code == 200
    await asyncio.sleep(0.4)
    engine = create_engine(hub.settings.database_url)
    with engine.connect() as connection:
        used = connection.execute(
            text("SELECT last_used_at FROM api_key WHERE key_id = :k"), {"k": key_id}
        ).scalar()
    engine.dispose()
    assert used is not None and used >= before - 1
