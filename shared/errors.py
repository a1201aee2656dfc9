"""RFC 9457 problem details: domain errors carry their status; one handler renders them all.

Plain data, no web framework: domain modules raise ``ProblemError``, and the FastAPI handler that
renders it (``shared.app.install_problem_handlers``) lives with the app.
"""

from __future__ import annotations

from typing import Any

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "urn:csp-hub:problem:"

TITLES = {
    400: "Bad request",
    401: "Unauthorised",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    409: "Conflict",
    413: "Content too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    429: "Too many requests",
    431: "Request header fields too large",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
    504: "Gateway timeout",
}


class ProblemError(Exception):
    """An error a client should see: status, a stable slug, a human detail and extra members."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        slug: str | None = None,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.slug = slug or slugify(title or TITLES.get(status, "error"))
        self.title = title or TITLES.get(status, "Error")
        self.headers = headers or {}
        self.extra = extra


def slugify(text: str) -> str:
    return "-".join(text.lower().replace("'", "").split())


def problem_body(
    status: int, detail: str, *, slug: str | None = None, title: str | None = None, **extra: Any
) -> dict[str, Any]:
    title = title or TITLES.get(status, "Error")
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + (slug or slugify(title)),
        "title": title,
        "status": status,
        "detail": detail,
    }
    body.update({key: value for key, value in extra.items() if value is not None})
    return body
