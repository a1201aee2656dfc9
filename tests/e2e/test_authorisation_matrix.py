"""Authorisation matrix through the running gateway: every route × caller × agreement state.

Each agreement state has its own provider and recipient agencies, so agreements never overlap;
an outsider (party to an active agreement on another dataset), a stranger (no agreement), the
operators' key and three unauthenticated callers (no key, a wrong key, a revoked key) complete the
callers. The expected outcome of every call comes from the small rule table below; the test makes
every call, collects every mismatch and fails with the whole list. An allowed read is also checked
for what it returns (only the caller's own providers' records), so an answer that succeeds with
someone else's data counts as an unauthorised success too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import httpx
import pytest

from scripts.hub import Hub
from services.depersonalise.demo import demo_layer
from tests.e2e.conftest import ADMIN_KEY

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DATASET = "police-crime"
PURPOSE = "strategic-assessment"
OTHER_PURPOSE = "licensing"
GRID = "mx-grid"
TODAY = date.today()
LEVEL_RANK = {"aggregate": 0, "depersonalised": 1, "personal": 2}
SETUP_RECORDS = 4  # pushed by each provider while its agreement was active; the last is retracted
WRONG_KEY = "csp_nope_not-a-real-key"


@dataclass(frozen=True)
class State:
    """One agreement state: the level its governing version grants and the rule a flow meets."""

    name: str
    level: str
    rule: str  # what the decision answers for a flow that passes role, purpose and level
    data: bool = False  # the provider pushed records while the agreement was active
    revoked: bool = False
    status: str = "active"  # the agreement's status as the service reports it
    review: str = "current"

    @property
    def index(self) -> int:
        return STATES.index(self)

    @property
    def provider(self) -> str:
        return f"mx-{self.name}-p"

    @property
    def recipient(self) -> str:
        return f"mx-{self.name}-r"

    @property
    def month(self) -> str:
        return f"2025-{self.index + 1:02d}"


STATES: tuple[State, ...] = (
    State("draft", "personal", "no-active-agreement", status="draft"),
    State("partly-signed", "personal", "no-active-agreement", status="draft"),
    State("not-started", "personal", "agreement-not-started", status="draft"),
    State("active", "personal", "allowed", data=True),
    State("review-grace", "depersonalised", "allowed", data=True, review="grace"),
    State("review-overdue", "personal", "review-overdue", review="overdue"),
    State("expired", "personal", "agreement-expired", status="expired", review="overdue"),
    State("suspended", "personal", "agreement-suspended", data=True, status="suspended"),
    State("revoked", "personal", "agreement-revoked", data=True, revoked=True, status="revoked"),
    # Version 1 (personal) is superseded by version 2, which narrows the level to aggregate.
    State("superseded", "aggregate", "allowed", data=True),
    # Version 2 (aggregate) awaits signatures, so version 1 (personal) still decides.
    State("amended-unsigned", "personal", "allowed", data=True),
    # A party agency (the recipient) is suspended: everything it is party to stops at once.
    State("agency-suspended", "personal", "agency-suspended", data=True),
)
BY_NAME = {s.name: s for s in STATES}

PROVIDER, RECIPIENT, OUTSIDER, STRANGER, OPERATOR = (
    "provider",
    "recipient",
    "outsider",
    "stranger",
    "operator",
)
NO_KEY, BAD_KEY, REVOKED_KEY = "no-key", "wrong-key", "revoked-key"
UNAUTHENTICATED = (NO_KEY, BAD_KEY, REVOKED_KEY)
# Operator last: its key revocation and agreement revocation are the final acts on a state.
CALLERS = (*UNAUTHENTICATED, STRANGER, OUTSIDER, RECIPIENT, PROVIDER, OPERATOR)
OUTSIDER_CODE, OUTSIDER_PEER, STRANGER_CODE = "mx-outsider", "mx-outsider-peer", "mx-stranger"


@dataclass
class World:
    """What the setup made: keys by agency, agreement ids and setup batches by state."""

    client: httpx.Client
    keys: dict[str, str] = field(default_factory=dict)
    agreements: dict[str, str] = field(default_factory=dict)
    bodies: dict[str, dict[str, Any]] = field(default_factory=dict)
    batches: dict[str, str] = field(default_factory=dict)
    spare_keys: dict[str, tuple[str, str]] = field(default_factory=dict)  # state -> (id, key)
    outsider_agreement: str = ""
    revoked_key: str = ""


@dataclass(frozen=True)
class Case:
    state: State
    caller: str

    @property
    def agency(self) -> str | None:
        return {
            PROVIDER: self.state.provider,
            RECIPIENT: self.state.recipient,
            OUTSIDER: OUTSIDER_CODE,
            STRANGER: STRANGER_CODE,
            OPERATOR: "ops",
        }.get(self.caller)

    @property
    def party(self) -> bool:
        return self.caller in (PROVIDER, RECIPIENT)


@dataclass(frozen=True)
class Expect:
    allow: bool
    statuses: frozenset[int]
    rule: str | None = None


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    params: dict[str, str] | None = None
    json: Any = None
    headers: dict[str, str] | None = None


Check = Callable[[World, Case, httpx.Response], str | None]


@dataclass(frozen=True)
class Route:
    name: str
    call: Callable[[World, Case], Call]
    expect: Callable[[Case], Expect]
    check: Check | None = None
    always_refused: bool = False  # a route variant no state or caller may use


# ---------------------------------------------------------------- the rule table


def allow(*statuses: int) -> Expect:
    return Expect(True, frozenset(statuses))


def deny(*statuses: int, rule: str | None = None) -> Expect:
    return Expect(False, frozenset(statuses), rule)


def flow_rule(case: Case, action: str, level: str | None = None, purpose_ok: bool = True) -> str:
    """The decision for a push, retract or read: role, purpose, level, then the state's status."""
    state = case.state
    if not case.party:
        return "no-active-agreement"
    if state.name == "agency-suspended" and case.caller == RECIPIENT:
        return "agency-suspended"  # the suspended agency itself is refused before anything else
    if action == "read" and case.caller != RECIPIENT:
        return "not-a-recipient"
    if action != "read" and case.caller != PROVIDER:
        return "not-a-provider"
    if not purpose_ok:
        return "purpose-not-agreed"
    if level is not None and LEVEL_RANK[level] > LEVEL_RANK[state.level]:
        return "level-exceeds-agreement"
    return state.rule


def flow(action: str, level: str | None, ok: int, purpose_ok: bool = True) -> Callable[..., Expect]:
    def expect(case: Case) -> Expect:
        rule = flow_rule(case, action, level, purpose_ok)
        return allow(ok) if rule == "allowed" else deny(403, rule=rule)

    return expect


def retract_expect(case: Case) -> Expect:
    """A provider may always retract its own records, whatever its agreement's state (DESIGN
    "Erasure"); where it never pushed, the reference is unknown (404)."""
    rule = flow_rule(case, "retract")
    if case.caller == PROVIDER and case.party:
        return allow(204) if case.state.data else deny(404)
    return allow(204) if rule == "allowed" else deny(403, rule=rule)


def aggregate_level_records(case: Case) -> Expect:
    """Record-level data is never an aggregate: an aggregate-level decision does not unlock it."""
    rule = flow_rule(case, "read", "aggregate")
    return deny(403, 422) if rule == "allowed" else deny(403, rule=rule)


def operators_only(ok: int) -> Callable[[Case], Expect]:
    def expect(case: Case) -> Expect:
        return allow(ok) if case.caller == OPERATOR else deny(403, rule="admin-only")

    return expect


def agreement_act(act: str) -> Callable[[Case], Expect]:
    """Suspend, reinstate, revoke, change: operators only; a revoked agreement is final."""

    def expect(case: Case) -> Expect:
        if case.caller != OPERATOR:
            return deny(403, rule="admin-only")
        if case.state.revoked and act != "revoke":
            return deny(409)
        return allow(200)

    return expect


def sign_expect(case: Case) -> Expect:
    if case.state.revoked:
        return deny(409)
    return allow(200) if case.party else deny(403)


def party_or_operator(case: Case) -> Expect:
    return allow(200) if case.party or case.caller == OPERATOR else deny(404)


def any_key(case: Case) -> Expect:
    return allow(200)


def batch_expect(case: Case) -> Expect:
    owner = case.caller == PROVIDER and case.state.data
    return allow(200) if owner or case.caller == OPERATOR else deny(403, 404)


def own_agency(case: Case) -> Expect:
    return allow(200) if case.caller in (PROVIDER, OPERATOR) else deny(404)


# ---------------------------------------------------------------- what an allowed answer may hold


def _warning_matches(case: Case, response: httpx.Response) -> str | None:
    warned = "warning" in response.headers
    if warned != (case.state.review == "grace"):
        return f"Warning header {'present' if warned else 'absent'}"
    return None


def check_records(world: World, case: Case, response: httpx.Response) -> str | None:
    records = response.json()["records"]
    months = {r.get("occurred_at") for r in records}
    if len(records) != SETUP_RECORDS or months != {case.state.month}:
        return f"{len(records)} records of months {sorted(map(str, months))}"
    return _warning_matches(case, response)


def check_personal(world: World, case: Case, response: httpx.Response) -> str | None:
    records = response.json()["records"]
    providers = {r.get("provider") for r in records}
    if len(records) != SETUP_RECORDS or providers != {case.state.provider}:
        return f"{len(records)} records of providers {sorted(map(str, providers))}"
    return _warning_matches(case, response)


def check_aggregates(world: World, case: Case, response: httpx.Response) -> str | None:
    body = response.json()
    counted = body["disclosure"]["records"]
    if counted is None:
        # No total beside a suppressed cell: the records are there, too few to be shown.
        if not any(cell.get("suppressed") for cell in body["cells"]):
            return "aggregates publish no total and suppress no cell"
    elif counted != SETUP_RECORDS:
        return f"aggregates count {counted} records, not {SETUP_RECORDS}"
    return _warning_matches(case, response)


def check_push(world: World, case: Case, response: httpx.Response) -> str | None:
    accepted = response.json().get("accepted")
    return None if accepted == 2 else f"accepted {accepted} of 2"


def check_batch(world: World, case: Case, response: httpx.Response) -> str | None:
    wanted = batch_target(world, case)
    return None if response.json().get("batch_id") == wanted else "another batch answered"


def check_quality(world: World, case: Case, response: httpx.Response) -> str | None:
    body = response.json()
    owner = case.state.provider if case.caller in (PROVIDER, OPERATOR) else case.agency
    months = {p["period"] for p in body["periods"]}
    owns_data = owner == case.state.provider and case.state.data
    if body.get("provider") != owner or months != ({case.state.month} if owns_data else set()):
        return f"quality of {body.get('provider')!r} over {sorted(months)}"
    return None


def check_audit(world: World, case: Case, response: httpx.Response) -> str | None:
    entries = response.json()["entries"]
    if case.caller == OPERATOR:
        return None if entries else "the operator sees no entry"
    foreign = [e["seq"] for e in entries if case.agency not in (e.get("providers") or [])]
    if foreign:
        return f"{len(foreign)} entries about other agencies' data"
    if case.caller == PROVIDER and case.state.data and not entries:
        return "the provider sees no entry about its own data"
    return None


def check_decision(action: str, level: str | None) -> Check:
    def check(world: World, case: Case, response: httpx.Response) -> str | None:
        body = response.json()
        rule = flow_rule(case, action, level)
        if body.get("allow") != (rule == "allowed") or body.get("rule") != rule:
            return f"decision {body.get('allow')}/{body.get('rule')}, table says {rule}"
        return None

    return check


def check_agreement(world: World, case: Case, response: httpx.Response) -> str | None:
    body = response.json()
    if body.get("id") != world.agreements[case.state.name]:
        return "another agreement answered"
    return None


def check_agreement_list(world: World, case: Case, response: httpx.Response) -> str | None:
    items = response.json()["items"]
    if case.caller == OPERATOR:
        return None
    foreign = [
        i["id"] for i in items if case.agency not in {p["agency"] for p in i.get("parties", [])}
    ]
    if foreign:
        return f"lists agreements it is not party to: {foreign}"
    own = world.outsider_agreement if case.caller == OUTSIDER else world.agreements[case.state.name]
    if (case.party or case.caller == OUTSIDER) and own not in {i["id"] for i in items}:
        return "its own agreement is missing"
    return None


def check_register(world: World, case: Case, response: httpx.Response) -> str | None:
    rows = response.json()["items"]
    if case.caller == OPERATOR:
        return None
    foreign = [
        r["id"]
        for r in rows
        if case.agency not in r["providers"].split("; ") + r["recipients"].split("; ")
    ]
    return f"registers agreements it is not party to: {foreign}" if foreign else None


def check_key(world: World, case: Case, response: httpx.Response) -> str | None:
    return None if response.json().get("key", "").startswith("csp_") else "no key in the answer"


# ---------------------------------------------------------------- the routes


def records_path() -> str:
    return f"/v1/datasets/{DATASET}/records"


def aggregate_query() -> dict[str, str]:
    return {"geography": GRID, "period": "month", "from": "2025-01-01", "to": "2025-12-31"}


def batch_target(world: World, case: Case) -> str:
    """The state's own setup batch, else the active state's (someone else's for every caller)."""
    return world.batches[case.state.name if case.state.data else "active"]


def push_body(case: Case) -> dict[str, Any]:
    tag = f"mx{case.state.index:02d}-{case.caller}"
    return {"records": [record(f"{tag}-{n}", case.state.month, n) for n in range(2)]}


def record(ref: str, month: str, n: int) -> dict[str, Any]:
    return {
        "source_ref": ref,
        "occurred_at": f"{month}-{10 + n:02d}T12:00:00Z",
        "category": "Burglary",
        "easting": 382_500.0 + 40 * n,
        "northing": 396_500.0 + 30 * n,
    }


def agreement_call(act: str) -> Callable[[World, Case], Call]:
    def call(world: World, case: Case) -> Call:
        return Call("POST", f"/v1/agreements/{world.agreements[case.state.name]}/{act}")

    return call


def agency_call(act: str) -> Callable[[World, Case], Call]:
    def call(world: World, case: Case) -> Call:
        return Call("POST", f"/v1/agencies/{case.state.provider}/{act}")

    return call


def tiny_layer() -> dict[str, Any]:
    return demo_layer(columns=1, rows=1)


ROUTES: tuple[Route, ...] = (
    # Reads first: they see exactly the setup data.
    Route(
        "read depersonalised records",
        lambda w, c: Call("GET", records_path()),
        flow("read", "depersonalised", 200),
        check_records,
    ),
    Route(
        "read personal records",
        lambda w, c: Call("GET", records_path(), params={"level": "personal"}),
        flow("read", "personal", 200),
        check_personal,
    ),
    Route(
        "read records asking for level aggregate",
        lambda w, c: Call("GET", records_path(), params={"level": "aggregate"}),
        aggregate_level_records,
        always_refused=True,
    ),
    Route(
        "read aggregates",
        lambda w, c: Call("GET", f"/v1/datasets/{DATASET}/aggregates", params=aggregate_query()),
        flow("read", "aggregate", 200),
        check_aggregates,
    ),
    Route(
        "read aggregates for another purpose",
        lambda w, c: Call(
            "GET",
            f"/v1/datasets/{DATASET}/aggregates",
            params=aggregate_query(),
            headers={"CSP-Purpose": OTHER_PURPOSE},
        ),
        flow("read", "aggregate", 200, purpose_ok=False),
        always_refused=True,
    ),
    Route(
        "read aggregates declaring the agreed purpose",
        lambda w, c: Call(
            "GET",
            f"/v1/datasets/{DATASET}/aggregates",
            params=aggregate_query(),
            headers={"CSP-Purpose": PURPOSE},
        ),
        flow("read", "aggregate", 200),
        check_aggregates,
    ),
    Route(
        "batch status",
        lambda w, c: Call("GET", f"/v1/batches/{batch_target(w, c)}"),
        batch_expect,
        check_batch,
    ),
    Route(
        "data quality (asking for the state's provider)",
        lambda w, c: Call(
            "GET", f"/v1/datasets/{DATASET}/quality", params={"provider": c.state.provider}
        ),
        any_key,
        check_quality,
    ),
    Route(
        "audit (filtered on the state's provider)",
        lambda w, c: Call("GET", "/v1/audit", params={"agency": c.state.provider}),
        any_key,
        check_audit,
    ),
    Route(
        "decision: push",
        lambda w, c: Call("POST", "/v1/decisions", json={"action": "push", "dataset": DATASET}),
        any_key,
        check_decision("push", None),
    ),
    Route(
        "decision: read personal",
        lambda w, c: Call(
            "POST",
            "/v1/decisions",
            json={"action": "read", "dataset": DATASET, "level": "personal"},
        ),
        any_key,
        check_decision("read", "personal"),
    ),
    Route(
        "read agreement",
        lambda w, c: Call("GET", f"/v1/agreements/{w.agreements[c.state.name]}"),
        party_or_operator,
        check_agreement,
    ),
    Route(
        "agreement history",
        lambda w, c: Call("GET", f"/v1/agreements/{w.agreements[c.state.name]}/history"),
        party_or_operator,
    ),
    Route(
        "list agreements", lambda w, c: Call("GET", "/v1/agreements"), any_key, check_agreement_list
    ),
    Route(
        "agreement register",
        lambda w, c: Call("GET", "/v1/agreements/register", params={"format": "json"}),
        any_key,
        check_register,
    ),
    Route(
        "dry-run a change",
        lambda w, c: Call(
            "POST",
            f"/v1/agreements/{w.agreements[c.state.name]}/dry-run",
            json={**w.bodies[c.state.name], "days": 7},
        ),
        operators_only(200),
    ),
    Route(
        "export the audit trail", lambda w, c: Call("GET", "/v1/audit/export"), operators_only(200)
    ),
    Route(
        "read the provider agency",
        lambda w, c: Call("GET", f"/v1/agencies/{c.state.provider}"),
        own_agency,
    ),
    # Then the writes, the agreement acts (which change the state) and the operator routes.
    Route(
        "push records",
        lambda w, c: Call("POST", records_path(), json=push_body(c)),
        flow("push", None, 202),
        check_push,
    ),
    Route(
        "retract a record",
        lambda w, c: Call("DELETE", f"{records_path()}/mx{c.state.index:02d}-R"),
        retract_expect,
    ),
    Route(
        "sign agreement",
        lambda w, c: Call("POST", f"/v1/agreements/{w.agreements[c.state.name]}/sign"),
        sign_expect,
    ),
    Route(
        "change agreement (PUT)",
        lambda w, c: Call(
            "PUT",
            f"/v1/agreements/{w.agreements[c.state.name]}",
            json={**w.bodies[c.state.name], "title": f"Changed by {c.caller}"},
        ),
        agreement_act("change"),
    ),
    *(
        Route(f"{act} agreement", agreement_call(act), agreement_act(act))
        for act in ("suspend", "reinstate", "revoke")
    ),
    Route(
        "create an agreement between the state's parties",
        lambda w, c: Call(
            "POST", "/v1/agreements", json={**w.bodies[c.state.name], "title": f"By {c.caller}"}
        ),
        operators_only(201),
    ),
    *(
        Route(f"{act} the provider agency", agency_call(act), operators_only(200))
        for act in ("suspend", "reinstate")
    ),
    Route(
        "create agency",
        lambda w, c: Call(
            "POST",
            "/v1/agencies",
            json={"code": f"mx-new-{c.state.index}-{c.caller}", "name": "New", "kind": "other"},
        ),
        operators_only(201),
    ),
    Route("list agencies", lambda w, c: Call("GET", "/v1/agencies"), operators_only(200)),
    Route(
        "issue a key for the provider",
        lambda w, c: Call("POST", f"/v1/agencies/{c.state.provider}/keys"),
        operators_only(201),
        check_key,
    ),
    Route(
        "revoke the provider's spare key",
        lambda w, c: Call(
            "DELETE", f"/v1/agencies/{c.state.provider}/keys/{w.spare_keys[c.state.name][0]}"
        ),
        operators_only(204),
    ),
    Route(
        "load a geography",
        lambda w, c: Call(
            "POST",
            f"/v1/geographies/mx-extra-{c.state.index}",
            params={"code_field": "code", "name_field": "name"},
            json=tiny_layer(),
        ),
        operators_only(202),
    ),
)


def expected(route: Route, case: Case) -> Expect:
    if case.caller in UNAUTHENTICATED:
        return deny(401)
    return route.expect(case)


# ---------------------------------------------------------------- setup through the gateway


def bearer(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def send(client: httpx.Client, key: str | None, call: Call) -> httpx.Response:
    """One call; a rate-limit (429) or a busy store (503) is waited out, never judged."""
    headers = {**bearer(key), **(call.headers or {})}
    for _ in range(20):
        response = client.request(
            call.method, call.path, params=call.params, json=call.json, headers=headers
        )
        if response.status_code not in (429, 503):
            return response
        time.sleep(min(float(response.headers.get("retry-after", "1")), 2.0))
    return response


def ok(response: httpx.Response, *statuses: int) -> dict[str, Any]:
    assert response.status_code in statuses, f"{response.request.url}: {response.text}"
    return response.json() if response.content else {}


def agreement_body(state: State, level: str) -> dict[str, Any]:
    start, end, review = date(2024, 1, 1), TODAY + timedelta(days=730), TODAY + timedelta(days=300)
    if state.name == "not-started":
        start, review = TODAY + timedelta(days=30), TODAY + timedelta(days=200)
    elif state.name == "expired":
        end, review = TODAY - timedelta(days=30), TODAY - timedelta(days=60)
    elif state.name == "review-grace":
        review = TODAY - timedelta(days=10)
    elif state.name == "review-overdue":
        review = TODAY - timedelta(days=60)
    return {
        "title": f"Matrix: {state.name}",
        "purpose": PURPOSE,
        "legal_basis": ["cda-1998-s115", "uk-gdpr-6-1-e"],
        "providers": [state.provider],
        "recipients": [state.recipient],
        "datasets": [{"dataset": DATASET, "level": level}],
        "start": start.isoformat(),
        "end": end.isoformat(),
        "review_by": review.isoformat(),
        "retention_days": 3650,
    }


def make_agency(world: World, code: str, kind: str) -> str:
    admin = bearer(ADMIN_KEY)
    body = {"code": code, "name": code, "kind": kind}
    ok(world.client.post("/v1/agencies", json=body, headers=admin), 201)
    key = ok(world.client.post(f"/v1/agencies/{code}/keys", headers=admin), 201)["key"]
    world.keys[code] = key
    return key


def sign_all(world: World, agreement_id: str, parties: list[str]) -> None:
    for code in parties:
        sign = f"/v1/agreements/{agreement_id}/sign"
        ok(world.client.post(sign, headers=bearer(world.keys[code])), 200)


def wait_depersonalised(world: World, pending: dict[str, str]) -> None:
    deadline = time.monotonic() + 60
    while pending and time.monotonic() < deadline:
        for name, batch_id in list(pending.items()):
            key = world.keys[BY_NAME[name].provider]
            batch = world.client.get(f"/v1/batches/{batch_id}", headers=bearer(key)).json()
            if batch.get("depersonalised") == SETUP_RECORDS:
                del pending[name]
        time.sleep(0.2)
    assert not pending, f"setup batches not depersonalised in time: {pending}"


def build_world(client: httpx.Client) -> World:
    world = World(client)
    admin = bearer(ADMIN_KEY)
    for state in STATES:
        make_agency(world, state.provider, "police")
        make_agency(world, state.recipient, "local-authority")
        spare = ok(client.post(f"/v1/agencies/{state.provider}/keys", headers=admin), 201)
        world.spare_keys[state.name] = (spare["key_id"], spare["key"])
    for code, kind in ((OUTSIDER_CODE, "fire"), (OUTSIDER_PEER, "local-authority")):
        make_agency(world, code, kind)
    make_agency(world, STRANGER_CODE, "other")
    revoked = ok(client.post(f"/v1/agencies/{STRANGER_CODE}/keys", headers=admin), 201)
    ok(client.delete(f"/v1/agencies/{STRANGER_CODE}/keys/{revoked['key_id']}", headers=admin), 204)
    world.revoked_key = revoked["key"]

    layer = {"code_field": "code", "name_field": "name"}
    ok(client.post(f"/v1/geographies/{GRID}", params=layer, json=demo_layer(), headers=admin), 202)

    outsider = {
        **agreement_body(BY_NAME["active"], "aggregate"),
        "title": "Matrix: the outsider's own agreement, on another dataset",
        "providers": [OUTSIDER_CODE],
        "recipients": [OUTSIDER_PEER],
        "datasets": [{"dataset": "fire-incident", "level": "aggregate"}],
    }
    world.outsider_agreement = ok(client.post("/v1/agreements", json=outsider, headers=admin), 201)[
        "id"
    ]
    sign_all(world, world.outsider_agreement, [OUTSIDER_CODE, OUTSIDER_PEER])

    pending: dict[str, str] = {}
    for state in STATES:
        level = "personal" if state.name == "superseded" else state.level
        body = agreement_body(state, level)
        world.bodies[state.name] = body
        agreement_id = ok(client.post("/v1/agreements", json=body, headers=admin), 201)["id"]
        world.agreements[state.name] = agreement_id
        signers = {"draft": [], "partly-signed": [state.provider]}.get(
            state.name, [state.provider, state.recipient]
        )
        sign_all(world, agreement_id, signers)
        if state.data:
            refs = [f"mx{state.index:02d}-{n}" for n in range(SETUP_RECORDS - 1)]
            refs.append(f"mx{state.index:02d}-R")
            rows = [record(ref, state.month, n) for n, ref in enumerate(refs)]
            pushed = send(
                client,
                world.keys[state.provider],
                Call("POST", records_path(), json={"records": rows}),
            )
            answer = ok(pushed, 202)
            assert answer["accepted"] == SETUP_RECORDS, answer
            pending[state.name] = world.batches[state.name] = answer["batch_id"]
    wait_depersonalised(world, pending)

    for name in ("suspended", "revoked"):
        act = "suspend" if name == "suspended" else "revoke"
        ok(client.post(f"/v1/agreements/{world.agreements[name]}/{act}", headers=admin), 200)
    for name in ("superseded", "amended-unsigned"):
        state = BY_NAME[name]
        narrowed = {**world.bodies[name], "datasets": [{"dataset": DATASET, "level": "aggregate"}]}
        world.bodies[name] = narrowed
        agreement_id = world.agreements[name]
        ok(client.put(f"/v1/agreements/{agreement_id}", json=narrowed, headers=admin), 200)
        if name == "superseded":
            sign_all(world, agreement_id, [state.provider, state.recipient])
    suspended_agency = BY_NAME["agency-suspended"].recipient
    ok(client.post(f"/v1/agencies/{suspended_agency}/suspend", headers=admin), 200)
    return world


def assert_states(world: World) -> None:
    """The setup reached the states the matrix is named after, as the service reports them."""
    for state in STATES:
        path = f"/v1/agreements/{world.agreements[state.name]}"
        view = ok(world.client.get(path, headers=bearer(ADMIN_KEY)), 200)
        assert view["status"] == state.status, (state.name, view["status"])
        assert view["review"]["state"] == state.review, (state.name, view["review"])
        versions = [v["status"] for v in view["versions"]]
        changed = {"superseded": ["superseded", "active"], "amended-unsigned": ["active", "draft"]}
        assert versions == changed.get(state.name, [state.status]), (state.name, versions)
        if state.name == "partly-signed":
            assert view["pending_signatures"] == [state.recipient], view["pending_signatures"]


# ---------------------------------------------------------------- the matrix


def key_for(world: World, case: Case) -> str | None:
    if case.caller == NO_KEY:
        return None
    if case.caller == BAD_KEY:
        return WRONG_KEY
    if case.caller == REVOKED_KEY:
        return world.revoked_key
    if case.caller == OPERATOR:
        return ADMIN_KEY
    assert case.agency is not None
    return world.keys[case.agency]


def judge(world: World, route: Route, case: Case, response: httpx.Response) -> str | None:
    """A mismatch between the answer and the rule table, or None."""
    want = expected(route, case)
    status = response.status_code
    where = f"{route.name} | {case.caller} | {case.state.name}: {status}"
    if 200 <= status < 300 and not want.allow:
        return f"UNAUTHORISED SUCCESS {where}, table says {sorted(want.statuses)} {want.rule}"
    if status not in want.statuses:
        return (
            f"{where}, table says {sorted(want.statuses)} {want.rule or ''} ({response.text[:160]})"
        )
    if not want.allow:
        if want.rule is not None and response.json().get("rule") != want.rule:
            return f"{where} refused by {response.json().get('rule')!r}, table says {want.rule!r}"
        return None
    if route.check is not None:
        problem = route.check(world, case, response)
        if problem is not None:
            return f"WRONG CONTENT {where}: {problem}"
    return None


def test_no_route_succeeds_for_a_caller_the_rule_table_refuses(hub: Hub) -> None:
    started = time.monotonic()
    with httpx.Client(base_url=hub.gateway_url, timeout=60) as client:
        world = build_world(client)
        assert_states(world)
        setup_seconds = time.monotonic() - started
        mismatches: list[str] = []
        allowed = refused = 0
        for route in ROUTES:
            for state in STATES:
                for caller in CALLERS:
                    case = Case(state, caller)
                    response = send(client, key_for(world, case), route.call(world, case))
                    if expected(route, case).allow:
                        allowed += 1
                    else:
                        refused += 1
                    problem = judge(world, route, case, response)
                    if problem is not None:
                        mismatches.append(problem)
        # The operator's revocation of each spare key took effect: it no longer authenticates.
        time.sleep(0.6)
        for key_id, spare in world.spare_keys.values():
            if client.get("/v1/me", headers=bearer(spare)).status_code != 401:
                mismatches.append(f"the revoked spare key {key_id} still authenticates")
    print(
        f"\nauthorisation matrix: {len(ROUTES)} routes x {len(CALLERS)} callers x "
        f"{len(STATES)} states = {allowed + refused} calls ({allowed} allowed, {refused} refused); "
        f"setup {setup_seconds:.1f} s, total {time.monotonic() - started:.1f} s"
    )
    assert not mismatches, f"{len(mismatches)} mismatches:\n" + "\n".join(mismatches)
    for service in hub.services.values():
        assert service.alive(), f"{service.name} died"


def test_the_rule_table_allows_something_on_every_route() -> None:
    """A table that refuses everything would make the matrix pass vacuously."""
    for route in ROUTES:
        outcomes = {
            expected(route, Case(state, caller)).allow for state in STATES for caller in CALLERS
        }
        assert outcomes == ({False} if route.always_refused else {True, False}), route.name
