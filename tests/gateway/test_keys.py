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
    # The whole secret: urlsafe base64 may hold "_", and a tail after the last one can be a
    # character or two that any stored value contains.
    secret = issued["key"].removeprefix(f"csp_{issued['key_id']}_")
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


@pytest.mark.slow
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


async def _key(hub: Hub, agency: str, body: dict[str, object]) -> dict[str, str]:
    answer = await hub.client.post(f"/v1/agencies/{agency}/keys", headers=hub.admin(), json=body)
    assert answer.status_code == 201, answer.text
    return {"Authorization": f"Bearer {answer.json()['key']}"}


async def test_no_body_or_empty_body_gives_every_scope_of_the_agency(hub: Hub) -> None:
    bare = await hub.client.post("/v1/agencies/gmp/keys", headers=hub.admin())
    empty = await hub.client.post("/v1/agencies/gmp/keys", headers=hub.admin(), json={})
    ops = await hub.client.post("/v1/agencies/ops/keys", headers=hub.admin(), json={})
    assert bare.json()["scopes"] == empty.json()["scopes"] == ["push", "read", "sign"]
    assert ops.json()["scopes"] == ["push", "read", "sign", "admin"]
    assert bare.json()["holder"] is None and bare.json()["expires"] is None


async def test_a_read_key_cannot_push_retract_or_sign_and_says_why(hub: Hub) -> None:
    hub.allow("gmp", "push", "police-crime", None)
    hub.allow("gmp", "read", "police-crime", "depersonalised")
    reader = await _key(hub, "gmp", {"holder": "J. Analyst", "scopes": ["read"]})
    refusals = [
        await hub.client.post(
            "/v1/datasets/police-crime/records", headers=reader, json={"records": []}
        ),
        await hub.client.delete("/v1/datasets/police-crime/records/CR-1", headers=reader),
        await hub.client.get("/v1/batches/b-1", headers=reader),
        await hub.client.post("/v1/agreements/agr-1/sign", headers=reader, json={}),
    ]
    for answer in refusals:
        assert answer.status_code == 403, answer.text
        assert answer.json()["rule"] == "key-scope"
        assert answer.headers["content-type"] == "application/problem+json"
    assert refusals[0].json()["scope"] == "push"
    assert refusals[3].json()["scope"] == "sign"
    read = await hub.client.get("/v1/datasets/police-crime/records", headers=reader)
    assert read.status_code == 200
    assert (await hub.client.get("/v1/me", headers=reader)).status_code == 200


async def test_a_push_key_cannot_read(hub: Hub) -> None:
    hub.allow("gmp", "push", "police-crime", None)
    hub.allow("gmp", "read", "police-crime", "depersonalised")
    pusher = await _key(hub, "gmp", {"scopes": ["push"]})
    pushed = await hub.client.post(
        "/v1/datasets/police-crime/records", headers=pusher, json={"records": []}
    )
    assert pushed.status_code == 202
    case_view = ("/v1/people/p-1", "/v1/people?pnc_id=19/1A", "/v1/cohorts/PPO/members")
    for path in ("/v1/datasets/police-crime/records", "/v1/audit", *case_view):
        answer = await hub.client.get(path, headers={**pusher, "CSP-Reason": "case review"})
        assert answer.status_code == 403
        assert answer.json()["rule"] == "key-scope"


async def test_an_operators_key_without_admin_scope_is_no_admin(hub: Hub) -> None:
    reader = await _key(hub, "ops", {"scopes": ["read"], "holder": "Duty analyst"})
    answer = await hub.client.post("/v1/agencies/gmp/keys", headers=reader)
    assert answer.status_code == 403
    assert answer.json()["rule"] == "key-scope"
    me = await hub.client.get("/v1/me", headers=reader)
    assert me.json()["roles"] == ["agency"]


async def test_admin_scope_is_for_operators_only(hub: Hub) -> None:
    answer = await hub.client.post(
        "/v1/agencies/gmp/keys", headers=hub.admin(), json={"scopes": ["read", "admin"]}
    )
    assert answer.status_code == 422
    assert answer.json()["field"] == "scopes"


@pytest.mark.parametrize(
    "body",
    [
        {"scopes": ["write"]},
        {"scopes": []},
        {"holder": ""},
        {"holder": "a\nb"},
        {"expires": "not a date"},
        {"expires": "2020-01-01"},
        {"expires": "9999-12-31"},
        {"colour": "blue"},
    ],
)
async def test_a_bad_key_request_is_422_naming_the_field(hub: Hub, body: dict[str, object]) -> None:
    answer = await hub.client.post("/v1/agencies/gmp/keys", headers=hub.admin(), json=body)
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert next(iter(body)) in answer.text


@pytest.mark.slow
async def test_an_expired_key_answers_401(hub: Hub) -> None:
    soon = await hub.client.post(
        "/v1/agencies/gmp/keys",
        headers=hub.admin(),
        json={"expires": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1.5))},
    )
    headers = {"Authorization": f"Bearer {soon.json()['key']}"}
    assert (await hub.client.get("/v1/me", headers=headers)).status_code == 200
    await asyncio.sleep(2.0)
    assert (await hub.client.get("/v1/me", headers=headers)).status_code == 401


async def test_a_dated_expiry_lasts_through_that_day(hub: Hub) -> None:
    answer = await hub.client.post(
        "/v1/agencies/gmp/keys", headers=hub.admin(), json={"expires": "2999-03-31"}
    )
    assert answer.json()["expires"] == "2999-04-01T00:00:00Z"


async def test_the_audit_names_the_key_and_not_the_holder(hub: Hub) -> None:
    reader = await _key(hub, "gmp", {"holder": "Jo Holder-Name", "scopes": ["read"]})
    key_id = reader["Authorization"].split("_")[1]
    await hub.client.get("/v1/datasets/police-crime/records", headers=reader)
    entries = (await hub.client.get("/v1/audit", headers=hub.admin())).json()["entries"]
    mine = [e for e in entries if e["key_id"] == key_id]
    assert mine and mine[-1]["route"] == "/v1/datasets/{dataset}/records"
    engine = create_engine(hub.settings.database_url)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT * FROM audit_entry")).all()
        holder = connection.execute(
            text("SELECT holder FROM api_key WHERE key_id = :k"), {"k": key_id}
        ).scalar()
    engine.dispose()
    assert holder == "Jo Holder-Name"
    assert "Holder-Name" not in str(rows)


@pytest.mark.slow
async def test_a_new_admin_key_at_start_retires_the_previous_one(
    make_hub: MakeHub, caplog: pytest.LogCaptureFixture
) -> None:
    first = await make_hub()
    operator = await _key(first, "ops", {"holder": "Named operator"})
    gmp = await first.issue("gmp")
    rotated = make_key()
    second = await make_hub(admin_key=rotated, database_url=first.settings.database_url)
    await asyncio.sleep(first.settings.key_cache_seconds + 0.1)
    for hub in (first, second):
        assert (await hub.client.get("/v1/me", headers=hub.admin())).status_code == (
            200 if hub is second else 401
        )
        assert (await hub.client.get("/v1/me", headers=operator)).status_code == 200
        assert (await hub.client.get("/v1/me", headers=gmp)).status_code == 200
    old_id = first.admin_key.split("_")[1]
    assert any(getattr(r, "key_id", None) == old_id for r in caplog.records)
    assert first.admin_key not in caplog.text


async def test_a_generated_admin_key_is_retired_by_a_configured_one(
    make_hub: MakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    first = await make_hub(admin_key=None, fresh_db=True)
    generated = capsys.readouterr().out.strip().rsplit(" ", 1)[-1]
    second = await make_hub(database_url=first.settings.database_url)
    answer = await second.client.get("/v1/me", headers={"Authorization": f"Bearer {generated}"})
    assert answer.status_code == 401
    assert (await second.client.get("/v1/me", headers=second.admin())).status_code == 200


@pytest.mark.parametrize("code", ["%C2%BF%C2%AB%C2%AC%18", "a%20b", "x%2Fy", "%F0%96%8F%86"])
async def test_a_key_for_an_odd_agency_code_is_404_not_a_failure(hub: Hub, code: str) -> None:
    answer = await hub.client.post(f"/v1/agencies/{code}/keys", headers=hub.admin())
    assert answer.status_code == 404, answer.text
