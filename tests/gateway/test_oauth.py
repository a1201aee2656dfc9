"""OAuth2 client credentials: the token endpoint and access tokens used as bearers."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.gateway import oauth
from tests.gateway.conftest import Hub, MakeHub

TOKEN = "/v1/oauth/token"
RECORDS = "/v1/datasets/police-crime/records"


async def _client(hub: Hub, agency: str = "gmp", **body: Any) -> tuple[str, str]:
    answer = await hub.client.post(f"/v1/agencies/{agency}/keys", headers=hub.admin(), json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()["key_id"], answer.json()["key"]


def _basic(client_id: str, secret: str) -> dict[str, str]:
    pair = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {pair}"}


async def _token(hub: Hub, client_id: str, secret: str, **form: str) -> dict[str, Any]:
    answer = await hub.client.post(
        TOKEN, data={"grant_type": "client_credentials", **form}, headers=_basic(client_id, secret)
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_token_is_issued_and_works_as_the_key_does(hub: Hub) -> None:
    hub.allow("gmp", "read", "police-crime", "depersonalised")
    key_id, key = await _client(hub)
    answer = await hub.client.post(
        TOKEN, data={"grant_type": "client_credentials"}, headers=_basic(key_id, key)
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    granted = answer.json()
    assert granted["token_type"] == "Bearer"
    assert granted["scope"] == "push read sign"
    assert 0 < granted["expires_in"] <= 900
    claims = jwt.decode(granted["access_token"], options={"verify_signature": False})
    assert claims["key_id"] == key_id and claims["sub"] == "gmp"
    assert jwt.get_unverified_header(granted["access_token"])["alg"] == "EdDSA"
    me = await hub.client.get("/v1/me", headers=_bearer(granted["access_token"]))
    assert me.status_code == 200, me.text
    assert me.json()["key_id"] == key_id
    read = await hub.client.get(RECORDS, headers=_bearer(granted["access_token"]))
    assert read.status_code == 200, read.text
    # The audit names the key, as for the key itself.
    entries = (await hub.client.get("/v1/audit", headers=hub.admin())).json()["entries"]
    assert any(
        e["key_id"] == key_id and e["route"] == "/v1/datasets/{dataset}/records" for e in entries
    )
    assert not any(granted["access_token"] in json.dumps(e) for e in entries)


async def test_the_credentials_may_be_form_members(hub: Hub) -> None:
    key_id, key = await _client(hub)
    answer = await hub.client.post(
        TOKEN,
        data={"grant_type": "client_credentials", "client_id": key_id, "client_secret": key},
    )
    assert answer.status_code == 200, answer.text
    me = await hub.client.get("/v1/me", headers=_bearer(answer.json()["access_token"]))
    assert me.status_code == 200


async def test_scope_narrows_the_keys_scopes(hub: Hub) -> None:
    hub.allow("gmp", "push", "police-crime", None)
    hub.allow("gmp", "read", "police-crime", "depersonalised")
    key_id, key = await _client(hub)
    granted = await _token(hub, key_id, key, scope="read")
    assert granted["scope"] == "read"
    headers = _bearer(granted["access_token"])
    assert (await hub.client.get(RECORDS, headers=headers)).status_code == 200
    pushed = await hub.client.post(RECORDS, headers=headers, json={"records": []})
    assert pushed.status_code == 403
    assert pushed.json()["rule"] == "key-scope"
    # With the key itself the push is allowed.
    allowed = await hub.client.post(RECORDS, headers=_bearer(key), json={"records": []})
    assert allowed.status_code == 202


async def test_a_scope_the_key_does_not_hold_is_invalid_scope(hub: Hub) -> None:
    key_id, key = await _client(hub, scopes=["read"])
    for asked in ("push", "read admin", "everything"):
        answer = await hub.client.post(
            TOKEN,
            data={"grant_type": "client_credentials", "scope": asked},
            headers=_basic(key_id, key),
        )
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"] == "invalid_scope"


async def test_an_operators_token_without_admin_is_no_admin(hub: Hub) -> None:
    key_id, key = await _client(hub, "ops")
    granted = await _token(hub, key_id, key, scope="read")
    headers = _bearer(granted["access_token"])
    assert (await hub.client.post("/v1/agencies/gmp/keys", headers=headers)).status_code == 403
    assert (await hub.client.get("/v1/me", headers=headers)).json()["roles"] == ["agency"]
    admin = await _token(hub, key_id, key)
    issued = await hub.client.post("/v1/agencies/gmp/keys", headers=_bearer(admin["access_token"]))
    assert issued.status_code == 201


@pytest.mark.parametrize(
    "credentials",
    ["wrong-secret", "other-key", "wrong-id", "none", "malformed", "not-ascii"],
)
async def test_bad_client_credentials_are_invalid_client_401(hub: Hub, credentials: str) -> None:
    key_id, key = await _client(hub)
    _, other_key = await _client(hub)
    headers = {
        "wrong-secret": _basic(key_id, key[:-4] + "AAAA"),
        "other-key": _basic(key_id, other_key),
        "wrong-id": _basic("000000000000", key),
        "none": {},
        "malformed": {"Authorization": "Basic %%%"},
        "not-ascii": {"Authorization": "Basic \u00e9\u00e9\u00e9\u00e9".encode("latin-1")},
    }[credentials]
    answer = await hub.client.post(
        TOKEN, data={"grant_type": "client_credentials"}, headers=headers
    )
    assert answer.status_code == 401, answer.text
    body = answer.json()
    assert body["error"] == "invalid_client"
    assert body["status"] == 401 and body["type"].endswith("invalid-client")
    assert answer.headers["www-authenticate"].startswith("Basic")
    assert key not in answer.text and other_key not in answer.text


async def test_a_revoked_or_expired_key_gets_no_token(hub: Hub) -> None:
    key_id, key = await _client(hub)
    revoked = await hub.client.delete(f"/v1/agencies/gmp/keys/{key_id}", headers=hub.admin())
    assert revoked.status_code == 204
    answer = await hub.client.post(
        TOKEN, data={"grant_type": "client_credentials"}, headers=_basic(key_id, key)
    )
    assert answer.status_code == 401
    assert answer.json()["error"] == "invalid_client"


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"grant_type": "password"}, "unsupported_grant_type"),
        ({"grant_type": "authorization_code"}, "unsupported_grant_type"),
        ({}, "invalid_request"),
    ],
)
async def test_a_wrong_grant_type_is_400(hub: Hub, form: dict[str, str], error: str) -> None:
    key_id, key = await _client(hub)
    answer = await hub.client.post(TOKEN, data=form, headers=_basic(key_id, key))
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == error
    assert answer.headers["content-type"] == "application/json"


async def test_a_json_body_or_repeated_member_is_invalid_request(hub: Hub) -> None:
    key_id, key = await _client(hub)
    as_json = await hub.client.post(
        TOKEN, json={"grant_type": "client_credentials"}, headers=_basic(key_id, key)
    )
    assert as_json.status_code == 400
    assert as_json.json()["error"] == "invalid_request"
    repeated = await hub.client.post(
        TOKEN,
        content=b"grant_type=client_credentials&grant_type=client_credentials",
        headers={**_basic(key_id, key), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert repeated.status_code == 400
    assert "grant_type" in repeated.json()["error_description"]


async def test_a_tampered_token_is_401(hub: Hub) -> None:
    key_id, key = await _client(hub, scopes=["read"])
    token = (await _token(hub, key_id, key))["access_token"]
    head, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["scope"] = "push read sign admin"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    for bad in (f"{head}.{forged}.{signature}", token[:-3] + "AAA", f"{head}.{payload}."):
        answer = await hub.client.get("/v1/me", headers=_bearer(bad))
        assert answer.status_code == 401, bad
        assert answer.headers["content-type"] == "application/problem+json"
    # alg "none" is never accepted.
    unsigned = jwt.encode(claims, key=None, algorithm="none")
    assert (await hub.client.get("/v1/me", headers=_bearer(unsigned))).status_code == 401


async def test_a_token_signed_by_another_key_is_401(hub: Hub) -> None:
    key_id, _ = await _client(hub)
    now = int(time.time())
    claims = {
        "iss": oauth.ISSUER,
        "aud": oauth.ISSUER,
        "sub": "gmp",
        "key_id": key_id,
        "scope": "read",
        "iat": now,
        "exp": now + 600,
    }
    stranger = jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA")
    assert (await hub.client.get("/v1/me", headers=_bearer(stranger))).status_code == 401
    # Nor one HMAC-signed with a secret the hub holds (its internal token key's seed).
    assert hub.settings.token_key is not None
    hmac_signed = jwt.encode(claims, hub.settings.token_key.get_secret_value(), "HS256")
    assert (await hub.client.get("/v1/me", headers=_bearer(hmac_signed))).status_code == 401


@pytest.mark.slow
async def test_an_expired_token_is_401(make_hub: MakeHub) -> None:
    hub = await make_hub(oauth_token_ttl_seconds=1)
    key_id, key = await _client(hub)
    granted = await _token(hub, key_id, key)
    assert granted["expires_in"] == 1
    await asyncio.sleep(2.1)
    answer = await hub.client.get("/v1/me", headers=_bearer(granted["access_token"]))
    assert answer.status_code == 401


async def test_a_token_lives_no_longer_than_its_key(hub: Hub) -> None:
    soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60))
    key_id, key = await _client(hub, expires=soon)
    granted = await _token(hub, key_id, key)
    assert granted["expires_in"] <= 60


async def test_a_revoked_keys_token_stops_working(hub: Hub) -> None:
    key_id, key = await _client(hub)
    token = (await _token(hub, key_id, key))["access_token"]
    assert (await hub.client.get("/v1/me", headers=_bearer(token))).status_code == 200
    revoked = await hub.client.delete(f"/v1/agencies/gmp/keys/{key_id}", headers=hub.admin())
    assert revoked.status_code == 204
    assert (await hub.client.get("/v1/me", headers=_bearer(token))).status_code == 401


async def test_the_signing_key_is_generated_0600_beside_the_database_and_kept(
    make_hub: MakeHub, tmp_path: Path
) -> None:
    database = tmp_path / "gw.db"
    first = await make_hub(database_url=f"sqlite:///{database}")
    key_id, key = await _client(first)
    token = (await _token(first, key_id, key))["access_token"]
    made = tmp_path / "gateway-oauth-key.pem"
    assert stat.S_IMODE(os.stat(made).st_mode) == 0o600
    second = await make_hub(database_url=f"sqlite:///{database}")
    assert (await second.client.get("/v1/me", headers=_bearer(token))).status_code == 200


@pytest.mark.parametrize("form", ["pem", "seed"])
async def test_a_configured_signing_key_signs(make_hub: MakeHub, form: str) -> None:
    private = Ed25519PrivateKey.generate()
    if form == "pem":
        given = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
    else:
        raw = private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        given = base64.b64encode(raw).decode()
    hub = await make_hub(oauth_signing_key=given)
    key_id, key = await _client(hub)
    token = (await _token(hub, key_id, key))["access_token"]
    claims = jwt.decode(token, private.public_key(), algorithms=["EdDSA"], audience="csp-hub")
    assert claims["key_id"] == key_id
