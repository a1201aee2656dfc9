"""The gateway's hot path, as pure ASGI: authenticate, rate-limit, decide, audit, proxy.

Every ``/v1`` request passes here. Allowed requests to a backend are streamed both ways with a
signed internal token; the gateway's own routes are handed to the FastAPI router with the caller
in ``scope["state"]``. Every outcome, refusals included, is audited before the client sees it.
Pure ASGI for speed, so it imports Starlette's types. What a forwarded request needs decided
is ``forwarding.py``; this module is the streaming and the refusals, kept in one file (some 450
lines) because every request runs through it top to bottom.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway import routing
from services.gateway.audit import AuditUnavailableError
from services.gateway.forwarding import Exchange, check_scope, decide, header
from services.gateway.keys import Caller
from services.gateway.oauth import authenticate, looks_like_jwt
from services.gateway.state import GatewayState
from services.gateway.upstream import BackendTimeoutError, BackendUnavailableError, Upstream
from shared.errors import PROBLEM_JSON, ProblemError, problem_body
from shared.serve import MAX_HEADER_BYTES
from shared.tokens import issue_token

log = logging.getLogger("csp.gateway")

SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"strict-transport-security", b"max-age=31536000; includeSubDomains"),
]
API_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
# The analysts' page (/app/): its own scripts, styles and API only, nothing from another host.
PAGE_CSP = (
    b"content-security-policy",
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    b"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
)
# Never forwarded either way (RFC 9110 7.6.1), plus what the gateway itself sets.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-connection",
        b"expect",
    }
)
DROP_UPSTREAM_REQUEST = HOP_BY_HOP | {
    b"host",
    b"authorization",
    b"csp-internal-token",
    b"x-request-id",
    b"cookie",
}
DROP_DOWNSTREAM = HOP_BY_HOP | {
    b"server",
    b"date",
    b"x-request-id",
    b"csp-record-count",
    b"set-cookie",
    *(name for name, _ in SECURITY_HEADERS),
    API_CSP[0],
}
RECORD_COUNT = b"csp-record-count"
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_HEADERS = 100


class BodyTooLargeError(Exception):
    pass


class ClientGoneError(Exception):
    pass


class GatewayMiddleware:
    def __init__(self, app: ASGIApp, gateway: Callable[[], GatewayState | None]) -> None:
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        gateway = self.gateway()
        if gateway is None or not (path.startswith("/v1/") or path == "/v1"):
            await self.app(scope, receive, _secured(send, path))
            return
        headers = scope["headers"]
        if (
            len(headers) > MAX_HEADERS
            or sum(len(k) + len(v) for k, v in headers) > MAX_HEADER_BYTES
        ):
            detail = f"At most {MAX_HEADERS} request headers of {MAX_HEADER_BYTES} bytes in all."
            await send_problem(send, ProblemError(431, detail, slug="headers-too-large"))
            return
        state = scope.setdefault("state", {})
        exchange = Exchange(request_id=state.get("request_id", ""), method=scope["method"])
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._handle(gateway, exchange, scope, receive, tracked)
        except ProblemError as problem:
            if not started:
                await _refuse(gateway, exchange, send, problem)
        except Exception as exc:  # noqa: BLE001 - answered as a problem, logged without details
            log.error(
                "gateway failure",
                extra={"error": type(exc).__name__, "request_id": exchange.request_id},
            )
            if not started:
                failure = ProblemError(500, "The gateway failed to handle the request.")
                await _refuse(gateway, exchange, send, failure)

    async def _handle(
        self, gw: GatewayState, exchange: Exchange, scope: Scope, receive: Receive, send: Send
    ) -> None:
        raw_path = _raw_path(scope)
        match = routing.match(scope["method"], raw_path)
        if match is not None:
            exchange.route = match.route.path
            scope["route"] = match.route
        if match is not None and match.route.path == routing.TOKEN_PATH:
            # The token endpoint authenticates its client itself (RFC 6749 2.3).
            client = scope.get("client")
            await _rate_limit(gw, "token:" + (str(client[0]) if client else "-"))
            await self.app(scope, receive, send)
            return
        key = _bearer(scope["headers"])
        caller = await _authenticate(gw, key) if key else None
        if caller is None:
            client = scope.get("client")
            # Failed attempts count against the client's address, which slows key guessing.
            await _rate_limit(gw, "unauthenticated:" + (str(client[0]) if client else "-"))
            raise ProblemError(
                401,
                "A valid API key is required: Authorization: Bearer csp_...",
                slug="unauthenticated",
                headers={"WWW-Authenticate": 'Bearer realm="csp-hub"'},
            )
        exchange.caller = caller
        await _rate_limit(gw, caller.key_id)
        if match is None:
            allowed = routing.allowed_methods(raw_path)
            if allowed:
                raise ProblemError(
                    405, "This method is not allowed here.", headers={"Allow": ", ".join(allowed)}
                )
            raise ProblemError(404, "No such route.", slug="not-found")
        route = match.route
        check_scope(route, caller)
        backend = route.backend
        claims: dict[str, Any] = {
            "sub": caller.agency,
            "roles": list(caller.roles),
            "key_id": caller.key_id,
            "request_id": exchange.request_id,
        }
        if route.action is not None and not (route.operators_free and caller.is_admin):
            query, headers = scope["query_string"], scope["headers"]
            backend = await decide(gw.decisions, exchange, match, query, headers, claims)
        if backend == routing.GATEWAY:
            scope["state"]["caller"] = caller
            await self.app(scope, receive, _audited(gw, exchange, send))
            return
        if scope["method"] in MUTATING:
            await _audit(gw, exchange.entry("intent", None, None))
        # Bound to this call: a token captured on the way is good for nothing else.
        claims.update(aud=backend, htm=scope["method"], htu=raw_path)
        await _proxy(gw, gw.upstreams[backend], exchange, claims, scope, receive, send)


async def _authenticate(gw: GatewayState, bearer: str) -> Caller | None:
    """An API key, or an access token the hub signed for one (checked against its key)."""
    if gw.tokens is not None and looks_like_jwt(bearer):
        return await authenticate(gw.tokens, gw.keys, bearer)
    return await gw.keys.authenticate(bearer)


def _raw_path(scope: Scope) -> str:
    """The path as the client encoded it (``raw_path`` has no query in ASGI servers we use)."""
    raw = scope.get("raw_path")
    return raw.decode("latin-1").partition("?")[0] if raw else quote(scope["path"])


def _bearer(headers: list[tuple[bytes, bytes]]) -> str | None:
    value = header(headers, b"authorization")
    if value is None or not value[:7].lower() == "bearer ":
        return None
    return value[7:].strip() or None


async def _rate_limit(gw: GatewayState, key_id: str) -> None:
    for item in gw.limits:
        if not await gw.limiter.hit(item, key_id):
            stats = await gw.limiter.get_window_stats(item, key_id)
            retry = max(1, math.ceil(stats.reset_time - time.time()))
            raise ProblemError(
                429,
                f"Rate limit of {item} per key reached.",
                slug="rate-limited",
                headers={"Retry-After": str(retry)},
            )


async def _audit(gw: GatewayState, entry: dict[str, Any]) -> None:
    try:
        await gw.audit.append(entry)
    except AuditUnavailableError as exc:
        raise ProblemError(
            503,
            "The audit log cannot be written, so the request is refused.",
            slug="audit-unavailable",
            headers={"Retry-After": "5"},
        ) from exc


async def _refuse(gw: GatewayState, exchange: Exchange, send: Send, problem: ProblemError) -> None:
    try:
        await _audit(gw, exchange.entry("complete", problem.status, None))
    except ProblemError as audit_problem:
        problem = audit_problem
    await send_problem(send, problem)


async def send_problem(send: Send, problem: ProblemError) -> None:
    body = json.dumps(
        problem_body(
            problem.status, problem.detail, slug=problem.slug, title=problem.title, **problem.extra
        )
    ).encode()
    headers = [
        (b"content-type", PROBLEM_JSON.encode()),
        (b"content-length", str(len(body)).encode()),
        *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in problem.headers.items()),
        *SECURITY_HEADERS,
        API_CSP,
    ]
    await send({"type": "http.response.start", "status": problem.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _secured(send: Send, path: str) -> Send:
    if path.startswith("/docs"):
        extra = SECURITY_HEADERS
    elif path == "/app" or path.startswith("/app/"):
        extra = [*SECURITY_HEADERS, PAGE_CSP]
    else:
        extra = [*SECURITY_HEADERS, API_CSP]

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), *extra]
        await send(message)

    return wrapped


def _audited(gw: GatewayState, exchange: Exchange, send: Send) -> Send:
    """Wraps the gateway's own routes: the entry is committed before the answer starts."""
    refused = False

    async def wrapped(message: Message) -> None:
        nonlocal refused
        if refused:
            return
        if message["type"] == "http.response.start":
            try:
                await _audit(gw, exchange.entry("complete", message["status"], None))
            except ProblemError as problem:
                refused = True
                await send_problem(send, problem)
                return
            message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS, API_CSP]
        await send(message)

    return wrapped


def _upstream_headers(
    scope: Scope, token: str, request_id: str
) -> tuple[list[tuple[str, str]], bool, int | None]:
    headers: list[tuple[str, str]] = []
    has_body = False
    declared: int | None = None
    drop = DROP_UPSTREAM_REQUEST
    for key, value in scope["headers"]:
        if key == b"connection":
            # Headers the client names in Connection are hop-by-hop too (RFC 9110 7.6.1).
            drop = drop | {t.strip().lower() for t in value.split(b",")}
    for key, value in scope["headers"]:
        if key == b"content-length":
            declared = int(value) if value.isdigit() else None
            has_body = has_body or value != b"0"
        elif key == b"transfer-encoding":
            has_body = True
        if key in drop:
            continue
        headers.append((key.decode("latin-1"), value.decode("latin-1")))
    headers.append(("CSP-Internal-Token", token))
    headers.append(("X-Request-ID", request_id))
    client = scope.get("client")
    if client:
        headers.append(("X-Forwarded-For", str(client[0])))
    return headers, has_body, declared


async def _proxy(
    gw: GatewayState,
    upstream: Upstream,
    exchange: Exchange,
    claims: dict[str, Any],
    scope: Scope,
    receive: Receive,
    send: Send,
) -> None:
    token = issue_token(gw.token_key, claims, gw.token_ttl)
    headers, has_body, declared = _upstream_headers(scope, token, exchange.request_id)
    if declared is not None and declared > gw.max_body_bytes:
        raise _too_large(gw)
    body = _BodyStream(receive, gw.max_body_bytes) if has_body else None
    path_qs = _raw_path(scope)
    if scope["query_string"]:
        path_qs += "?" + scope["query_string"].decode("latin-1")
    try:
        response = await upstream.send(
            scope["method"], path_qs, headers, body.chunks() if body else None
        )
    except (
        BackendUnavailableError,
        BackendTimeoutError,
        BodyTooLargeError,
        ClientGoneError,
    ) as exc:
        if body is not None and body.too_large:
            raise _too_large(gw) from exc
        if body is not None and body.gone:
            return
        if isinstance(exc, BodyTooLargeError | ClientGoneError):
            raise
        if isinstance(exc, BackendTimeoutError):
            raise ProblemError(
                504, "The service behind this route did not answer in time."
            ) from exc
        raise ProblemError(
            503,
            "The service behind this route is unavailable.",
            slug="backend-unavailable",
            headers={"Retry-After": "5"},
        ) from exc
    if (
        response.status < 400
        and scope["method"] in MUTATING
        and upstream is gw.upstreams.get(routing.AGREEMENTS)
    ):
        gw.decisions.clear()  # a suspension made here bites here at once
    try:
        await _relay(gw, exchange, response, send)
    finally:
        await response.close()


def _too_large(gw: GatewayState) -> ProblemError:
    return ProblemError(
        413, f"The request body exceeds {gw.max_body_bytes} bytes.", slug="body-too-large"
    )


async def _relay(gw: GatewayState, exchange: Exchange, response: Any, send: Send) -> None:
    records = None
    length = None
    headers: list[tuple[bytes, bytes]] = []
    for key, value in response.headers:
        name = key.lower()
        if name == RECORD_COUNT:
            records = int(value) if value.isdigit() else None
        elif name == b"content-length" and value.isdigit():
            length = int(value)
        if name not in DROP_DOWNSTREAM:
            headers.append((name, value))
    warning = exchange.decision.get("warning")
    if warning:
        headers.append((b"warning", f'299 csp-hub "{warning}"'.encode("latin-1", "replace")))
    headers.extend(SECURITY_HEADERS)
    headers.append(API_CSP)
    await _audit(gw, exchange.entry("complete", response.status, records))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    # With a known length the last chunk carries more_body=False (one ASGI message fewer).
    remaining = length if length is not None else -1
    try:
        async for chunk in response.chunks():
            remaining -= len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": remaining != 0})
            if remaining == 0:
                return
    except (BackendUnavailableError, BackendTimeoutError):
        log.warning("backend stream broke", extra={"request_id": exchange.request_id})
        return  # the client sees a truncated response, which it must treat as failed
    await send({"type": "http.response.body", "body": b"", "more_body": False})


class _BodyStream:
    """The client's body, passed on chunk by chunk and counted against the size limit."""

    def __init__(self, receive: Receive, limit: int) -> None:
        self.receive = receive
        self.limit = limit
        self.seen = 0
        self.too_large = False
        self.gone = False

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.gone = True
                raise ClientGoneError
            chunk = message.get("body", b"")
            self.seen += len(chunk)
            if self.seen > self.limit:
                self.too_large = True
                raise BodyTooLargeError
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return
