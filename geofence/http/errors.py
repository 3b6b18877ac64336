"""Every error leaves as application/problem+json (RFC 9457), through one middleware.

Domain errors are mapped by the table below; HTTP-only refusals (401, 403, 413, 415, 429)
are raised as ``HTTPProblem``. Only an unexpected exception logs a traceback, and even
then the client gets a plain 500 problem, never the traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any

import msgspec
from aiohttp import web

from geofence.domain import errors as domain

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
RETRY_AFTER_UNAVAILABLE_S = 1

STATUS: dict[type[domain.GeofenceError], int] = {
    domain.InvalidInput: 422,
    domain.MalformedInput: 400,
    domain.Unauthorized: 401,
    domain.Forbidden: 403,
    domain.NotFound: 404,
    domain.Conflict: 409,
    domain.ConsentRequired: 403,
    domain.Unavailable: 503,
}


class HTTPProblem(Exception):
    """A refusal that exists only at the HTTP edge."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = dict(headers or {})
        self.errors = errors


def problem_response(
    status: int,
    code: str,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    errors: list[dict[str, Any]] | None = None,
    extensions: Mapping[str, Any] | None = None,
) -> web.Response:
    body: dict[str, Any] = {
        **(extensions or {}),
        "type": f"/problems/{code}",
        "title": _title(status),
        "status": status,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = errors
    return web.Response(
        status=status,
        body=msgspec.json.encode(body),
        content_type=PROBLEM_JSON,
        headers=headers,
    )


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except HTTPProblem as e:
        return problem_response(e.status, e.code, e.detail, headers=e.headers, errors=e.errors)
    except domain.GeofenceError as e:
        return _from_domain(e)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return _from_aiohttp(e)
    except Exception:
        logger.exception(
            "unexpected error", extra={"method": request.method, "route": _route(request)}
        )
        return problem_response(500, "internal-error", "The server failed to answer.")


def _from_domain(e: domain.GeofenceError) -> web.Response:
    status = next((s for kind, s in STATUS.items() if isinstance(e, kind)), 400)
    headers = dict(_HEADERS.get(status, {}))
    if e.retry_after_s is not None:
        headers["Retry-After"] = str(e.retry_after_s)
    errors = [p.as_dict() for p in e.problems] if isinstance(e, domain.InvalidInput) else None
    return problem_response(
        status, e.code, e.detail, headers=headers, errors=errors, extensions=e.extensions()
    )


_HEADERS = {
    401: {"WWW-Authenticate": "Bearer"},
    503: {"Retry-After": str(RETRY_AFTER_UNAVAILABLE_S)},
}


def _from_aiohttp(e: web.HTTPException) -> web.Response:
    code = (e.reason or "error").lower().replace(" ", "-")
    headers = {k: v for k, v in e.headers.items() if k in ("Allow", "Retry-After")}
    detail = e.text if e.text and not e.text.startswith(f"{e.status}:") else (e.reason or "")
    return problem_response(e.status, code, detail, headers=headers)


def _route(request: web.Request) -> str:
    info = request.match_info.route.resource
    return info.canonical if info is not None else "-"
