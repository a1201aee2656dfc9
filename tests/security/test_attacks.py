"""Attacks on a running hub, each made through the gateway (or at a backend with what an
attacker on the internal network could capture), each asserting the refusal."""

from __future__ import annotations

import time
from datetime import date, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from scripts.hub import Hub
from tests.e2e.conftest import ADMIN_KEY

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PROVIDER, RECIPIENT = "sec-police", "sec-council"
RECORDS = "/v1/datasets/police-crime/records"
# A police reference form, a percent sign, a dot segment inside and alone, spaces.
AWKWARD_REFS = ("CR/2024/1", "CR%2024", "A/../B", "..", "two words here", "x/y/")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def ok(response: httpx.Response, status: int) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


def crime(ref: str, category: str = "Burglary") -> dict[str, Any]:
    return {
        "source_ref": ref,
        "occurred_at": "2024-02-03T10:00:00Z",
        "category": category,
        "easting": 383500,
        "northing": 398000,
    }


def path_of(ref: str) -> str:
    # Every reserved character and every dot encoded, so no client folds a dot segment.
    return f"{RECORDS}/{quote(ref, safe='').replace('.', '%2E')}"


@pytest.fixture(scope="module")
def client(hub: Hub) -> Any:
    with httpx.Client(base_url=hub.gateway_url, timeout=60) as made:
        yield made


@pytest.fixture(scope="module")
def world(client: httpx.Client) -> dict[str, str]:
    """Two agencies, a personal-level agreement between them, a full key for each."""
    admin = bearer(ADMIN_KEY)
    keys: dict[str, str] = {}
    for code, kind in ((PROVIDER, "police"), (RECIPIENT, "local-authority")):
        ok(client.post("/v1/agencies", json={"code": code, "name": code, "kind": kind},
                       headers=admin), 201)  # fmt: skip
        keys[code] = ok(client.post(f"/v1/agencies/{code}/keys", headers=admin), 201)["key"]
    today = date.today()
    agreement = ok(
        client.post(
            "/v1/agreements",
            json={
                "title": "Attack suite",
                "purpose": "strategic-assessment",
                "legal_basis": ["cda-1998-s115", "uk-gdpr-6-1-e"],
                "providers": [PROVIDER],
                "recipients": [RECIPIENT],
                "datasets": [{"dataset": "police-crime", "level": "personal"}],
                "start": "2024-01-01",
                "end": (today + timedelta(days=700)).isoformat(),
                "review_by": (today + timedelta(days=300)).isoformat(),
                "retention_days": 3650,
            },
            headers=admin,
        ),
        201,
    )
    for code in (PROVIDER, RECIPIENT):
        ok(client.post(f"/v1/agreements/{agreement['id']}/sign", headers=bearer(keys[code])), 200)
    return {**keys, "agreement": agreement["id"]}


def scoped_key(client: httpx.Client, agency: str, body: dict[str, Any]) -> dict[str, str]:
    issued = ok(client.post(f"/v1/agencies/{agency}/keys", json=body, headers=bearer(ADMIN_KEY)),
                201)  # fmt: skip
    return bearer(issued["key"])


def personal_refs(client: httpx.Client, key: str) -> dict[str, str]:
    read = ok(client.get(RECORDS, params={"level": "personal", "limit": 1000},
                         headers=bearer(key)), 200)  # fmt: skip
    return {row["source_ref"]: row["category"] for row in read["records"]}


# ------------------------------------------------------------------ keys and scopes


def test_a_read_only_key_cannot_push_retract_or_sign(
    client: httpx.Client, world: dict[str, str]
) -> None:
    reader = scoped_key(client, PROVIDER, {"holder": "Analyst", "scopes": ["read"]})
    attempts = [
        client.post(RECORDS, json={"records": [crime("SCOPE-1")]}, headers=reader),
        client.delete(path_of("SCOPE-1"), headers=reader),
        client.post(f"/v1/agreements/{world['agreement']}/sign", headers=reader),
    ]
    for answer in attempts:
        assert answer.status_code == 403, answer.text
        assert answer.json()["rule"] == "key-scope"


def test_a_push_only_key_cannot_read(client: httpx.Client, world: dict[str, str]) -> None:
    pusher = scoped_key(client, RECIPIENT, {"holder": "Records system", "scopes": ["push"]})
    answer = client.get(RECORDS, params={"level": "personal"}, headers=pusher)
    assert answer.status_code == 403
    assert answer.json()["rule"] == "key-scope"


def test_an_agency_cannot_be_given_the_admin_scope(client: httpx.Client, world: Any) -> None:
    answer = client.post(
        f"/v1/agencies/{PROVIDER}/keys", json={"scopes": ["admin"]}, headers=bearer(ADMIN_KEY)
    )
    assert answer.status_code == 422
    assert answer.json()["field"] == "scopes"


def test_an_expired_key_is_refused(client: httpx.Client, world: dict[str, str]) -> None:
    soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 2))
    key = scoped_key(client, PROVIDER, {"expires": soon})
    assert client.get("/v1/me", headers=key).status_code == 200
    time.sleep(3)
    assert client.get("/v1/me", headers=key).status_code == 401


# ------------------------------------------------------------------ any reference can be erased


def test_awkward_references_round_trip_push_read_correct_retract(
    client: httpx.Client, world: dict[str, str]
) -> None:
    police, council = bearer(world[PROVIDER]), world[RECIPIENT]
    ok(client.post(RECORDS, json={"records": [crime(r) for r in AWKWARD_REFS]}, headers=police),
       202)  # fmt: skip
    assert {r: "Burglary" for r in AWKWARD_REFS}.items() <= personal_refs(client, council).items()
    corrected = [crime(r, "Robbery") for r in AWKWARD_REFS]
    answer = ok(client.post(RECORDS, json={"records": corrected}, headers=police), 202)
    assert answer["accepted"] == len(AWKWARD_REFS)
    assert {r: "Robbery" for r in AWKWARD_REFS}.items() <= personal_refs(client, council).items()
    for ref in AWKWARD_REFS:
        assert client.delete(path_of(ref), headers=police).status_code == 204, ref
        assert client.delete(path_of(ref), headers=police).status_code == 404, ref
    assert not set(AWKWARD_REFS) & set(personal_refs(client, council))


def test_a_read_token_replayed_at_ingest_cannot_retract(hub: Hub, world: dict[str, str]) -> None:
    """An attacker on the internal network captures the token of a read and sends it to ingest's
    retract route for the same agency: the token was decided for a read, so nothing is retracted."""
    from shared.tokens import issue_token
    from tests.conftest import GATEWAY_KEY

    captured = issue_token(
        GATEWAY_KEY,
        {"sub": PROVIDER, "roles": ["agency"], "action": "read", "dataset": "police-crime"},
        60,
    )
    answer = httpx.delete(
        hub["ingest"].url + path_of("ANY-1"), headers={"CSP-Internal-Token": captured}
    )
    assert answer.status_code == 403
    assert answer.json()["rule"] == "decision-mismatch"


def test_a_captured_push_token_cannot_be_replayed_or_used_elsewhere(
    hub: Hub, world: dict[str, str]
) -> None:
    """The gateway binds every token it forwards to its service, method and path, and a
    state-changing one is good once: here a token like the gateway's for one retraction."""
    from shared.tokens import issue_token
    from tests.conftest import GATEWAY_KEY

    path = path_of("BOUND-1")
    claims = {"sub": PROVIDER, "roles": ["agency"], "action": "retract",
              "dataset": "police-crime", "aud": "ingest", "htm": "DELETE", "htu": path}  # fmt: skip
    captured = {"CSP-Internal-Token": issue_token(GATEWAY_KEY, claims, 10)}
    first = httpx.delete(hub["ingest"].url + path, headers=captured)
    assert first.status_code == 404  # used once (no such record)
    replayed = httpx.delete(hub["ingest"].url + path, headers=captured)
    assert replayed.status_code == 401 and "already used" in replayed.json()["detail"]
    elsewhere = httpx.delete(hub["ingest"].url + path_of("OTHER-1"), headers=captured)
    assert elsewhere.status_code == 401
    for_ingest = {**claims, "htm": "GET", "htu": "/v1/geographies"}
    token = {"CSP-Internal-Token": issue_token(GATEWAY_KEY, for_ingest, 10)}
    other_service = httpx.get(hub["depersonalise"].url + "/v1/geographies", headers=token)
    assert other_service.status_code == 401


def test_a_compromised_backend_cannot_mint_tokens_for_agencies_or_other_services(
    hub: Hub, world: dict[str, str]
) -> None:
    """An attacker holding ingest's own token key (all it would find on a compromised ingest):
    depersonalise refuses it speaking for an agency, agreements refuses it posing as the
    gateway, and a service that never calls a backend is not accepted there at all."""
    from shared.tokens import issue_token, service_token
    from tests.conftest import TEST_KEYS

    ingest_key = TEST_KEYS.token_key("ingest")
    as_agency = {"sub": RECIPIENT, "roles": ["agency"], "action": "read",
                 "dataset": "police-crime", "level": "personal"}  # fmt: skip
    minted = {"CSP-Internal-Token": issue_token(ingest_key, as_agency, 10)}
    refused = httpx.get(hub["depersonalise"].url + "/v1/geographies", headers=minted)
    assert refused.status_code == 401 and "only for itself" in refused.json()["detail"]
    as_operator = {"sub": "ops", "roles": ["agency", "admin"]}
    forged = issue_token(ingest_key, as_operator, 10)
    payload, _, signature = forged.partition(".")
    import base64
    import json

    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["iss"] = "gateway"  # claims to be the gateway, signed with ingest's key
    posing = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    answer = httpx.get(hub["agreements"].url + "/v1/agencies",
                       headers={"CSP-Internal-Token": f"{posing}.{signature}"})  # fmt: skip
    assert answer.status_code == 401 and "bad signature" in answer.json()["detail"]
    stranger = service_token(TEST_KEYS.token_key("depersonalise"), "agreements")
    answer = httpx.get(hub["agreements"].url + "/internal/retention",
                       headers={"CSP-Internal-Token": stranger})  # fmt: skip
    assert answer.status_code == 401 and "does not accept" in answer.json()["detail"]
    # The hub's own peer calls go on: ingest still delivers to depersonalise.
    assert hub["ingest"].alive() and hub["depersonalise"].alive()


# ------------------------------------------------------------------ an audit that only grows


def test_a_rewritten_audit_log_fails_the_tree_proof_a_witness_checks(
    hub: Hub, client: httpx.Client, world: dict[str, str]
) -> None:
    """An agency holds a signed tree head; the operator rewrites an entry in the database and
    rebuilds the Merkle tree, re-signing with the hub's own key: the consistency proof from the
    held head no longer verifies."""
    from csp_cli.tree import consistency_ok, inclusion_ok
    from sqlalchemy import create_engine, text

    from services.gateway import audit_chain, audit_sign, merkle

    key = bearer(world[RECIPIENT])
    for _ in range(5):
        client.get("/v1/me", headers=key)
    held = held_checkpoint(client, key)
    for _ in range(5):
        client.get("/v1/me", headers=key)
    newer = held_checkpoint(client, key, after=held["seq"])
    proof = ok(client.get("/v1/audit/consistency", params={"from": held["seq"],
               "to": newer["seq"], "digests": "false"}, headers=key), 200)  # fmt: skip
    assert consistency_ok(held["seq"], held["root"], newer["seq"], newer["root"], proof["proof"])
    entry = ok(client.get(f"/v1/audit/1/proof?size={held['seq']}", headers=key), 200)
    leaf = merkle.leaf_hash(entry["digest"])
    assert inclusion_ok(0, held["seq"], leaf, entry["proof"], held["root"])
    # The rewrite: entry 1's digest changed, the tree rebuilt (a signed head for every checkpoint).
    engine = create_engine(hub["gateway"].env["CSP_GATEWAY_DATABASE_URL"])
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE audit_entry SET digest = :d WHERE seq = 1"), {"d": "0" * 64}
        )
        connection.execute(text("DELETE FROM audit_tree_node"))
        connection.execute(text("UPDATE audit_head SET frontier = NULL"))
        connection.execute(text("UPDATE audit_checkpoint SET root = NULL"))
    with engine.begin() as connection:  # the hub's own key
        assert audit_chain.ensure_tree(connection, audit_sign.load_signer(connection, None)) > 0
    engine.dispose()
    for _ in range(5):
        client.get("/v1/me", headers=key)
    newest = held_checkpoint(client, key, after=newer["seq"])
    proof = ok(client.get("/v1/audit/consistency", params={"from": held["seq"],
               "to": newest["seq"], "digests": "false"}, headers=key), 200)  # fmt: skip
    assert proof["first"]["root"] != held["root"]
    assert not consistency_ok(
        held["seq"], held["root"], newest["seq"], newest["root"], proof["proof"]
    )


def held_checkpoint(client: httpx.Client, key: dict[str, str], after: int = 0) -> dict[str, Any]:
    """The newest checkpoint after ``after``, waiting for the writer to sign one."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        page = ok(client.get("/v1/audit/checkpoints", params={"after": after, "limit": 1000},
                             headers=key), 200)  # fmt: skip
        if page["checkpoints"]:
            return dict(page["checkpoints"][-1])
        client.get("/v1/me", headers=key)
        time.sleep(0.2)
    raise AssertionError("no checkpoint was signed")


# ------------------------------------------------------------------ no backend address leaks


def test_no_backend_address_in_any_header_or_body(
    hub: Hub, client: httpx.Client, world: dict[str, str]
) -> None:
    police, council = bearer(world[PROVIDER]), bearer(world[RECIPIENT])
    ok(client.post(RECORDS, json={"records": [crime(f"PAGE-{n}") for n in range(3)]},
                   headers=police), 202)  # fmt: skip
    answers = [
        client.get(RECORDS, params={"level": "personal", "limit": 1}, headers=council),
        client.get("/v1/datasets/", headers=council),
        client.get("/v1/geographies/", headers=council),
        client.get("/v1/agreements/", headers=council),
        client.get("/v1/datasets/police-crime/records/", headers=council),
    ]
    assert "link" in answers[0].headers
    assert answers[0].headers["link"].startswith("</v1/datasets/police-crime/records?")
    ports = [hub[name].port for name in ("agreements", "ingest", "depersonalise")]
    for answer in answers:
        assert answer.status_code < 500
        assert not 300 <= answer.status_code < 400, answer.headers
        seen = str(answer.headers) + answer.text
        assert not any(f":{port}" in seen for port in ports)


# ------------------------------------------------------------------ bounded costs


def test_oversized_or_countless_headers_are_refused_and_the_hub_stays_up(
    hub: Hub, client: httpx.Client, world: dict[str, str]
) -> None:
    key = bearer(world[RECIPIENT])
    big = client.get("/v1/me", headers={**key, "X-Filler": "x" * 20_000})
    assert 400 <= big.status_code < 500
    many = client.get("/v1/me", headers={**key, **{f"X-F{n}": "x" for n in range(200)}})
    assert many.status_code == 431
    assert client.get("/v1/me", headers=key).status_code == 200


def test_a_csv_header_far_wider_than_the_dataset_is_refused_at_once(
    client: httpx.Client, world: dict[str, str]
) -> None:
    header = ",".join(f"column{n}" for n in range(300_000)).encode() + b"\n"
    started = time.perf_counter()
    answer = client.post(RECORDS, content=header + b"x\n" * 1000, headers={
        **bearer(world[PROVIDER]), "Content-Type": "text/csv"})  # fmt: skip
    assert time.perf_counter() - started < 2
    assert answer.status_code == 422
    assert answer.json()["field"] == "header"


def test_an_endless_agreement_body_is_refused_while_it_streams(
    client: httpx.Client, world: dict[str, str]
) -> None:
    def endless() -> Any:
        yield b'{"title": "'
        for _ in range(4000):  # 4 GB if it were all read
            yield b"x" * 1_000_000

    started = time.perf_counter()
    answer = client.post("/v1/agreements", content=endless(), headers={
        **bearer(ADMIN_KEY), "Content-Type": "application/json"})  # fmt: skip
    assert answer.status_code == 413 and answer.json()["field"] == "body"
    assert time.perf_counter() - started < 10
    assert client.get("/v1/agreements", headers=bearer(ADMIN_KEY)).status_code == 200


def test_a_geojson_layer_of_a_million_vertices_is_refused_while_it_streams(
    client: httpx.Client,
) -> None:
    from bench.hostile import big_polygon

    body = big_polygon(1_000_000)
    started = time.perf_counter()
    answer = client.post("/v1/geographies/huge?code_field=code", content=body, headers={
        **bearer(ADMIN_KEY), "Content-Type": "application/geo+json"})  # fmt: skip
    assert answer.status_code == 422 and "vertices" in answer.json()["detail"]
    assert time.perf_counter() - started < 5


# ------------------------------------------------------------------ OAuth2 access tokens


def test_an_access_token_acts_as_its_key_until_the_key_is_revoked(
    client: httpx.Client, world: dict[str, str]
) -> None:
    issued = ok(client.post(f"/v1/agencies/{RECIPIENT}/keys", json={},
                            headers=bearer(ADMIN_KEY)), 201)  # fmt: skip
    form = {
        "grant_type": "client_credentials",
        "client_id": issued["key_id"],
        "client_secret": issued["key"],
    }
    reader = ok(client.post("/v1/oauth/token", data={**form, "scope": "read"}), 200)
    assert reader["token_type"] == "Bearer" and reader["scope"] == "read"
    token = bearer(reader["access_token"])
    assert ok(client.get("/v1/me", headers=token), 200)["key_id"] == issued["key_id"]
    ok(client.get(RECORDS, params={"level": "personal"}, headers=token), 200)
    refused = ok(client.post(RECORDS, json={"records": [crime("OAUTH-1")]}, headers=token), 403)
    assert refused["rule"] == "key-scope"
    # Claims widened by hand break the signature.
    head, payload, signature = reader["access_token"].split(".")
    assert ok(client.get("/v1/me", headers=bearer(f"{head}.{payload}x.{signature}")), 401)
    wrong = ok(client.post("/v1/oauth/token", data={**form, "client_secret": "csp_x"}), 401)
    assert wrong["error"] == "invalid_client"
    ok(client.delete(f"/v1/agencies/{RECIPIENT}/keys/{issued['key_id']}",
                     headers=bearer(ADMIN_KEY)), 204)  # fmt: skip
    deadline = time.monotonic() + 5
    while client.get("/v1/me", headers=token).status_code == 200:
        assert time.monotonic() < deadline, "a revoked key's token still works"
        time.sleep(0.2)
    assert client.get("/v1/me", headers=token).status_code == 401


# ------------------------------------------------------------------ admin key rotation (last)


def test_a_new_admin_key_at_start_retires_the_old_one(hub: Hub, client: httpx.Client) -> None:
    gateway = hub["gateway"]
    rotated = "csp_ops_rotated-operators-key-for-the-attack-suite"
    gateway.stop()
    gateway.env["CSP_ADMIN_KEY"] = rotated
    gateway.start()
    gateway.wait_ready()
    assert client.get("/v1/me", headers=bearer(ADMIN_KEY)).status_code == 401
    assert client.get("/v1/me", headers=bearer(rotated)).status_code == 200
    assert any("previous operators' key retired" in line for line in gateway.lines)
    assert not any(ADMIN_KEY in line for line in gateway.lines)
    # A retired key stays retired, even if an operator configures it again by mistake.
    gateway.stop()
    gateway.env["CSP_ADMIN_KEY"] = ADMIN_KEY
    gateway.start()
    gateway.wait_ready()
    assert client.get("/v1/me", headers=bearer(ADMIN_KEY)).status_code == 401
