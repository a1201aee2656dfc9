"""Which service owns each public route, which decision it needs and who may call it.

``scope`` is the key scope a route needs (``None``: any valid key); ``admin_only`` routes need
the ``admin`` scope. This table is the one place that maps routes to scopes.

Follows docs/architecture.md ("Routes by owner" and the decision table). Matching is by path
segments, so it costs a dict lookup and a short scan per request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote

from shared.catalogue import load_catalogue

GATEWAY = "gateway"
AGREEMENTS = "agreements"
INGEST = "ingest"
DEPERSONALISE = "depersonalise"
PUSH, READ, SIGN, ADMIN = "push", "read", "sign", "admin"
# OAuth2 client credentials: the one /v1 route without a bearer; it authenticates its client.
TOKEN_PATH = "/v1/oauth/token"  # noqa: S105 - a path


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    backend: str
    action: str | None = None
    level: str | None = None
    admin_only: bool = False
    operators_free: bool = False  # operators pass without a decision
    scope: str | None = None
    dataset: str | None = None  # the dataset decided on, for a route that names none
    reason: bool = False  # the request must carry CSP-Reason (kept in the audit entry)
    segments: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "segments", tuple(self.path.strip("/").split("/")))
        if self.admin_only:
            object.__setattr__(self, "scope", ADMIN)


@dataclass(frozen=True)
class Match:
    route: Route
    params: dict[str, str]


# A cohort query (aggregates with ?cohort=) also reads the cohort's memberships.
COHORT_DATASET = "offender-cohort"
# The case view reads every dataset that is shared at level personal and identifies people.
PEOPLE = "people"


def person_datasets() -> list[str]:
    catalogue = load_catalogue()
    return sorted(
        name
        for name, spec in catalogue.items()
        if spec.max_level == "personal" and spec.link_fields
    )


def _gateway_routes() -> list[Route]:
    """The routes the gateway answers itself."""
    r = Route
    return [
        r("GET", "/v1/me", GATEWAY),
        r("POST", TOKEN_PATH, GATEWAY),
        r("POST", "/v1/agencies/{code}/keys", GATEWAY, admin_only=True),
        r("DELETE", "/v1/agencies/{code}/keys/{key_id}", GATEWAY, admin_only=True),
        r("GET", "/v1/audit", GATEWAY, scope=READ),
        r("GET", "/v1/audit/verify", GATEWAY, admin_only=True),
        r("GET", "/v1/audit/export", GATEWAY, admin_only=True),
        r("GET", "/v1/audit/checkpoints", GATEWAY, scope=READ),
        r("GET", "/v1/audit/consistency", GATEWAY, scope=READ),
        r("POST", "/v1/audit/{seq}/redact", GATEWAY, admin_only=True),
        r("GET", "/v1/audit/{seq}/proof", GATEWAY, scope=READ),
    ]


def _agreements_routes() -> list[Route]:
    """Agencies, agreements, decisions and the registers, owned by agreements."""
    r = Route
    return [
        r("GET", "/v1/agencies", AGREEMENTS),
        r("POST", "/v1/agencies", AGREEMENTS, admin_only=True),
        r("GET", "/v1/agencies/{code}", AGREEMENTS),
        r("PATCH", "/v1/agencies/{code}", AGREEMENTS, admin_only=True),
        r("POST", "/v1/agencies/{code}/suspend", AGREEMENTS, admin_only=True),
        r("POST", "/v1/agencies/{code}/reinstate", AGREEMENTS, admin_only=True),
        r("GET", "/v1/agreements", AGREEMENTS),
        r("POST", "/v1/agreements", AGREEMENTS, admin_only=True),
        r("GET", "/v1/agreements/register", AGREEMENTS),
        r("GET", "/v1/agreements/{id}", AGREEMENTS),
        r("PUT", "/v1/agreements/{id}", AGREEMENTS, admin_only=True),
        r("PATCH", "/v1/agreements/{id}", AGREEMENTS, admin_only=True),
        r("GET", "/v1/agreements/{id}/history", AGREEMENTS),
        r("GET", "/v1/agreements/{id}/versions", AGREEMENTS),
        r("POST", "/v1/agreements/{id}/versions", AGREEMENTS, admin_only=True),
        r("POST", "/v1/agreements/{id}/sign", AGREEMENTS, scope=SIGN),
        r("POST", "/v1/agreements/{id}/suspend", AGREEMENTS, admin_only=True),
        r("POST", "/v1/agreements/{id}/reinstate", AGREEMENTS, admin_only=True),
        r("POST", "/v1/agreements/{id}/revoke", AGREEMENTS, admin_only=True),
        r("POST", "/v1/agreements/{id}/dry-run", AGREEMENTS, admin_only=True),
        r("POST", "/v1/decisions", AGREEMENTS, scope=READ),
        r("GET", "/v1/purposes", AGREEMENTS),
        r("GET", "/v1/legal-bases", AGREEMENTS),
    ]


def _ingest_routes() -> list[Route]:
    """Datasets, pushes, batches, postcodes, purges, linkage and erasures, owned by ingest."""
    r = Route
    return [
        r("GET", "/v1/datasets", INGEST),
        r("GET", "/v1/datasets/{dataset}", INGEST),
        r("POST", "/v1/datasets/{dataset}/records", INGEST, action="push", scope=PUSH),
        r("DELETE", "/v1/datasets/{dataset}/records/{source_ref}", INGEST, "retract", scope=PUSH),
        r("GET", "/v1/batches/{batch_id}", INGEST, scope=PUSH),
        r("GET", "/v1/datasets/{dataset}/quality", INGEST, scope=PUSH),
        r("POST", "/v1/postcodes", INGEST, admin_only=True),
        r("GET", "/v1/postcodes", INGEST),
        r("GET", "/v1/purges", INGEST, admin_only=True),
        r("POST", "/v1/purges", INGEST, admin_only=True),
        r("GET", "/v1/reports/partnership", INGEST, scope=PUSH),  # its own report rows
        r("POST", "/v1/linkage/model", INGEST, admin_only=True),
        r("GET", "/v1/linkage/reviews", INGEST, admin_only=True),
        r("POST", "/v1/linkage/reviews/{review_id}", INGEST, admin_only=True),
        r("GET", "/v1/linkage/quality", INGEST, admin_only=True),
        r("POST", "/v1/linkage/quality", INGEST, admin_only=True),
        r("POST", "/v1/erasures", INGEST, admin_only=True),
    ]


def _case_view_routes() -> list[Route]:
    """The case view: personal reads of linked people, decided on every person dataset."""
    r = Route
    return [
        r(
            "GET",
            "/v1/cohorts/{strand}/members",
            INGEST,
            "read",
            "personal",
            dataset=COHORT_DATASET,
            reason=True,
            scope=READ,
        ),
        r("GET", "/v1/people", INGEST, "read", "personal", dataset=PEOPLE, reason=True, scope=READ),
        r(
            "GET",
            "/v1/people/{person}",
            INGEST,
            "read",
            "personal",
            dataset=PEOPLE,
            reason=True,
            scope=READ,
        ),
    ]


def _depersonalise_routes() -> list[Route]:
    """Depersonalised reads, aggregates, geographies, snap layers and releases (record reads
    at level personal go to ingest, see ``forwarding.decide``)."""
    r = Route
    return [
        r("GET", "/v1/datasets/{dataset}/records", DEPERSONALISE, "read", scope=READ),
        r(
            "GET",
            "/v1/datasets/{dataset}/aggregates",
            DEPERSONALISE,
            "read",
            "aggregate",
            scope=READ,
        ),
        r("GET", "/v1/geographies", DEPERSONALISE),
        r("GET", "/v1/geographies/{layer}", DEPERSONALISE),
        r("GET", "/v1/geographies/{layer}/status", DEPERSONALISE),
        r("POST", "/v1/geographies/{layer}", DEPERSONALISE, admin_only=True),
        r("POST", "/v1/geographies/{layer}/derive", DEPERSONALISE, admin_only=True),
        r("POST", "/v1/populations/{layer}", DEPERSONALISE, admin_only=True),
        # The stateless tool answers record-level data: decided like a depersonalised read of
        # ?dataset= (operators need no agreement).
        r(
            "POST",
            "/v1/depersonalise",
            DEPERSONALISE,
            action="read",
            level="depersonalised",
            operators_free=True,
            scope=READ,
        ),
        r("GET", "/v1/snap-layers", DEPERSONALISE),
        r("POST", "/v1/snap-layers/{layer}", DEPERSONALISE, admin_only=True),
        r("POST", "/v1/snap-layers/{layer}/postcodes", DEPERSONALISE, admin_only=True),
        r("GET", "/v1/releases/{release_id}", DEPERSONALISE, scope=READ),
        r("GET", "/v1/reconcile", DEPERSONALISE, admin_only=True),
        r("POST", "/v1/reconcile", DEPERSONALISE, admin_only=True),
    ]


def _routes() -> list[Route]:
    """Every public route, in matching order (within a method and length, the first that binds
    wins, so literal segments are listed before parameters)."""
    return [
        *_gateway_routes(),
        *_agreements_routes(),
        *_ingest_routes(),
        *_case_view_routes(),
        *_depersonalise_routes(),
    ]


ROUTES = _routes()
_INDEX: dict[tuple[str, int], list[Route]] = {}
_PATHS: dict[tuple[str, ...], list[str]] = {}
for _route in ROUTES:
    _INDEX.setdefault((_route.method, len(_route.segments)), []).append(_route)
    _PATHS.setdefault(_route.segments, []).append(_route.method)


def _segments(raw_path: str) -> list[str]:
    # Split before decoding, so "%2F" inside a parameter (CR/2024/1) stays in that parameter.
    return [unquote(part) for part in raw_path.strip("/").split("/")]


def match(method: str, raw_path: str) -> Match | None:
    """The route for this method and (still percent-encoded) path; literal segments win over
    parameters."""
    segments = _segments(raw_path)
    lookup = "GET" if method == "HEAD" else method
    for route in _INDEX.get((lookup, len(segments)), ()):
        params = _bind(route.segments, segments)
        if params is not None:
            return Match(route, params)
    return None


def allowed_methods(raw_path: str) -> list[str]:
    segments = _segments(raw_path)
    return sorted(
        {
            method
            for template, methods in _PATHS.items()
            if len(template) == len(segments) and _bind(template, segments) is not None
            for method in methods
        }
    )


def _bind(template: tuple[str, ...], segments: list[str]) -> dict[str, str] | None:
    params: dict[str, str] = {}
    for part, value in zip(template, segments, strict=True):
        if part[0] == "{":
            if not value:
                return None
            params[part[1:-1]] = value
        elif part != value:
            return None
    return params


def read_level(query_string: bytes) -> str:
    if b"level=" not in query_string:
        return "depersonalised"
    values = parse_qs(query_string.decode("latin-1")).get("level")
    return values[-1] if values else "depersonalised"


def query_param(query_string: bytes, name: str) -> str | None:
    """The last value of ``?name=``, if any."""
    if name.encode() + b"=" not in query_string:
        return None
    values = parse_qs(query_string.decode("latin-1")).get(name)
    return values[-1] if values else None


def query_dataset(query_string: bytes) -> str | None:
    """``?dataset=`` of a route that names its dataset in the query (the stateless tool)."""
    return query_param(query_string, "dataset")


def requested_fields(query_string: bytes) -> list[str] | None:
    if b"fields=" not in query_string:
        return None
    values = parse_qs(query_string.decode("latin-1")).get("fields")
    if not values:
        return None
    return [f for f in values[-1].split(",") if f]
