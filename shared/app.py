"""What every service's app has: problem handlers, request ids, access logs, health and metrics.

Its job is the FastAPI app itself, so it imports FastAPI and Starlette: the problem handlers
render ``shared.errors.ProblemError`` (plain data) and the framework's own errors as RFC 9457.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import PROBLEM_JSON, TITLES, ProblemError, problem_body

T = TypeVar("T")

ReadyCheck = Callable[[FastAPI], Any]

access_log = logging.getLogger("csp.access")
log = logging.getLogger("csp.errors")
BODY_PARSE_FAILURE = "There was an error parsing the body"


def problem_response(
    status: int,
    detail: str,
    *,
    slug: str | None = None,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    return JSONResponse(
        problem_body(status, detail, slug=slug, title=title, **extra),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    """Name each offending field as a dotted path (without the ``body`` prefix) and its reason."""
    errors = []
    for error in exc.errors():
        location = [str(part) for part in error.get("loc", ())]
        where = location[0] if location else "body"
        field = ".".join(location[1:]) if len(location) > 1 else where
        errors.append({"field": field, "in": where, "message": error.get("msg", "invalid")})
    return errors


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def _problem(_request: Request, exc: ProblemError) -> JSONResponse:
        return problem_response(
            exc.status, exc.detail, slug=exc.slug, title=exc.title, headers=exc.headers, **exc.extra
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else TITLES.get(exc.status_code, "")
        if exc.status_code == 400 and detail == BODY_PARSE_FAILURE:
            # FastAPI's wording for bodies that are not JSON, not UTF-8 or nested too deeply.
            return problem_response(
                400,
                "The body is not valid JSON (or not UTF-8, or nested too deeply).",
                slug="bad-json",
                field="body",
            )
        return problem_response(exc.status_code, detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = validation_errors(exc)
        fields = ", ".join(sorted({e["field"] for e in errors})) or "body"
        return problem_response(
            422,
            f"The request is not valid: {fields}.",
            slug="validation-failed",
            title="Validation failed",
            errors=errors,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Log the exception class and request id only: messages may quote record contents.
        log.error(
            "unhandled error",
            extra={
                "error": type(exc).__name__,
                "request_id": request.headers.get("x-request-id"),
            },
        )
        return problem_response(500, "The service failed to handle the request.")


class RequestContextMiddleware:
    """Adds ``X-Request-ID``, counts and times each request by route template, logs one line.

    Pure ASGI (no BaseHTTPMiddleware) because it sits on every request's hot path.
    """

    def __init__(self, app: ASGIApp, service: str, registry: CollectorRegistry) -> None:
        self.app = app
        self.service = service
        self.requests = Counter(
            "csp_http_requests",
            "HTTP requests handled",
            ["service", "method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "csp_http_request_duration_seconds",
            "HTTP request latency",
            ["service", "method", "route"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _header(scope, b"x-request-id") or uuid.uuid4().hex
        if len(request_id) > 128 or not request_id.isprintable():
            request_id = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            elapsed = time.perf_counter() - started
            self.requests.labels(self.service, scope["method"], template, str(status)).inc()
            self.latency.labels(self.service, scope["method"], template).observe(elapsed)
            if access_log.isEnabledFor(logging.INFO):
                access_log.info(
                    "request",
                    extra={
                        "request_id": request_id,
                        "method": scope["method"],
                        "route": template,
                        "status": status,
                        "ms": round(elapsed * 1000, 2),
                    },
                )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def build_app(
    service: str,
    *,
    lifespan: Any,
    ready_checks: Iterable[tuple[str, ReadyCheck]] = (),
    title: str | None = None,
    description: str = "",
    version: str = "1.0.0",
    docs: bool = True,
) -> FastAPI:
    """A FastAPI app with the hub's common behaviour; the service adds its routers."""
    app = FastAPI(
        title=title or f"CSP hub {service}",
        description=description,
        version=version,
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url=None,
        openapi_url="/openapi.json" if docs else None,
        # A redirect would name the service's own address in its Location header.
        redirect_slashes=False,
    )
    install_problem_handlers(app)
    app.state.service_name = service  # the audience internal tokens must name
    registry = CollectorRegistry()
    app.state.metrics_registry = registry
    app.add_middleware(RequestContextMiddleware, service=service, registry=registry)
    _add_health_routes(app, service, list(ready_checks), registry)
    return app


def _add_health_routes(
    app: FastAPI, service: str, checks: list[tuple[str, ReadyCheck]], registry: CollectorRegistry
) -> None:
    """``/healthz`` (the process answers), ``/readyz`` (its dependencies do) and ``/metrics``."""

    @app.get("/healthz", tags=["health"], include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": service}

    @app.get("/readyz", tags=["health"], include_in_schema=False)
    async def readyz(request: Request) -> Response:
        results = await _run_checks(request.app, checks)
        if all(result == "ok" for result in results.values()):
            return JSONResponse({"status": "ready", "service": service, "checks": results})
        return problem_response(
            503,
            "A dependency of this service does not answer.",
            slug="not-ready",
            service=service,
            checks=results,
        )

    @app.get("/metrics", tags=["health"], include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


async def _run_checks(app: FastAPI, checks: list[tuple[str, ReadyCheck]]) -> dict[str, str]:
    """Each readiness check's outcome: ``ok`` or ``failing: <error type>``; none raises."""
    results: dict[str, str] = {}
    for name, check in checks:
        try:
            if inspect.iscoroutinefunction(check):
                await check(app)
            else:
                # Database pings block: keep them off the event loop.
                await asyncio.to_thread(check, app)
            results[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - readiness reports, never raises
            results[name] = f"failing: {type(exc).__name__}"
    return results


def state_of(app: Starlette, name: str, kind: type[T]) -> T:
    """``app.state.<name>`` checked to be a ``kind``: the typed way to what an app keeps."""
    value = getattr(app.state, name, None)
    if not isinstance(value, kind):
        raise RuntimeError(f"app.state.{name} is not a {kind.__name__} (has the lifespan run?)")
    return value


def request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))
