"""The access log: one JSON record per answered request, off unless GEOFENCE_ACCESS_LOG.

A record holds the method, the route template (``/v1/devices/{device_id}``, or
``unmatched``), the status, the time taken and the size of the answer: never the path or
the query, which name devices, and never a header, which carries credentials. It goes
through the same JSON lines as every other record (geofence.logs), as logger
``geofence.access``.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from geofence.config import Settings

access_logger = logging.getLogger("geofence.access")
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RouteAccessLogger(AbstractAccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            "request",
            extra={
                "method": request.method if request.method in METHODS else "other",
                "route": route_template(request),
                "status": response.status,
                "duration_ms": round(time * 1000, 3),
                "bytes": response.body_length,
            },
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


def route_template(request: web.BaseRequest) -> str:
    """The route the request matched, as written in the route table; ``unmatched`` for
    none (and for a request aiohttp could not even parse)."""
    try:
        resource = request.match_info.route.resource  # type: ignore[attr-defined]
    except (AttributeError, AssertionError):  # not a web.Request, or never routed
        return "unmatched"
    return resource.canonical if resource is not None else "unmatched"


def access_log_options(settings: Settings) -> dict[str, Any]:
    """``web.run_app``'s access log arguments: ours, or none at all (the default: a
    record per request costs the ping path)."""
    return {
        "access_log_class": RouteAccessLogger,
        "access_log": access_logger if settings.access_log else None,
    }
