"""Serving the app: the runner ``geofence serve`` uses, and the one use of aiohttp internals.

A request aiohttp cannot even parse (an over-long request line or header, too many
headers, bytes that are not HTTP) never reaches the app or its middlewares: aiohttp's
connection handler answers it itself, in text/plain, and logs the raw line. Its
``RequestHandler.handle_error`` is the seam: here a subclass answers those as
application/problem+json (414 for the request line, 431 for the headers, 400 else) and
logs neither the line nor a header. ``web.Server`` makes the handlers, ``AppRunner``
the server; each is subclassed by one small method, and tests/security/test_server.py
fails loudly if an aiohttp upgrade moves any of them.

The limits the parser applies are set here too, and idle keep-alive connections are
closed after ``GEOFENCE_KEEPALIVE_S``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, Final

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from geofence.config import Settings
from geofence.http.access_log import access_log_options
from geofence.http.errors import problem_response

logger = logging.getLogger(__name__)

MAX_LINE_BYTES: Final = 8190  # the request line (aiohttp's default)
MAX_FIELD_BYTES: Final = 8192  # one header; differs from the line's so that each is told apart
MAX_HEADERS: Final = 128
SHUTDOWN_GRACE_S: Final = 30.0
# after answering a request whose body it did not read (401, 404, 408, 413), how long the
# connection still takes the rest of the body, so that the client reads the answer rather
# than a reset; then it is closed (aiohttp's default is 10 s, long for a slow stranger)
LINGER_S: Final = 2.0


class ProblemRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering the requests it refuses as problems."""

    __slots__ = ()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            self.log_exception("error outside the app", exc_info=exc)
        else:  # the client's fault; the exception's text holds the raw line: not logged
            logger.debug("request refused unparsed status=%d error=%s", status, _name(exc))
        if request.writer.output_size > 0:  # as aiohttp: too late for another answer
            raise ConnectionError("the response was already started")
        status, code = unparsed(status, exc, max_line=self.max_line_size)
        response = problem_response(status, code, _detail(status))
        response.force_close()
        return response


def unparsed(status: int, exc: BaseException | None, *, max_line: int) -> tuple[int, str]:
    """The status and problem code of a request aiohttp could not parse."""
    if isinstance(exc, LineTooLong):
        if exc.args[1] == max_line:
            return 414, "request-line-too-long"
        return 431, "header-too-large"
    if isinstance(exc, BadHttpMessage) and "Too many headers" in str(exc):
        return 431, "too-many-headers"
    if status >= 500:
        return status, "internal-error"
    return status, "bad-request"


def _detail(status: int) -> str:
    if status == 414:
        return f"The request line is longer than {MAX_LINE_BYTES} bytes."
    if status == 431:
        return f"A header is over {MAX_FIELD_BYTES} bytes, or there are over {MAX_HEADERS}."
    return HTTPStatus(status).description or HTTPStatus(status).phrase


def _name(exc: BaseException | None) -> str:
    return type(exc).__name__ if exc is not None else "-"


class ProblemServer(web.Server):
    """``web.Server``, making :class:`ProblemRequestHandler` connection handlers."""

    def __call__(self) -> RequestHandler:
        return ProblemRequestHandler(self, loop=self._loop, **self._kwargs)


class EdgeRunner(web.AppRunner):
    """``web.AppRunner`` whose server is a :class:`ProblemServer`."""

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()
        return ProblemServer(
            made.request_handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            # aiohttp's own server's settings, carried over (tests/security/test_server.py
            # pins the aiohttp internals the edge builds on)
            loop=made._loop,  # noqa: SLF001
            **made._kwargs,  # noqa: SLF001
        )


def runner(app: web.Application, settings: Settings, *, linger_s: float = LINGER_S) -> EdgeRunner:
    """The runner of ``app`` with the edge's limits, and the access log when
    GEOFENCE_ACCESS_LOG asks for it (route templates only: paths carry device ids)."""
    return EdgeRunner(
        app,
        **access_log_options(settings),
        keepalive_timeout=settings.keepalive_s,
        lingering_time=linger_s,
        shutdown_timeout=SHUTDOWN_GRACE_S,
        max_line_size=MAX_LINE_BYTES,
        max_field_size=MAX_FIELD_BYTES,
        max_headers=MAX_HEADERS,
    )


def run(
    app: web.Application,
    settings: Settings,
    *,
    reuse_port: bool | None = None,
    announce: Callable[[str], Any] = print,
) -> None:
    """Serve ``app`` until SIGTERM or SIGINT, then shut down cleanly."""
    asyncio.run(_serve(runner(app, settings), settings, reuse_port=reuse_port, announce=announce))


async def _serve(
    edge: EdgeRunner,
    settings: Settings,
    *,
    reuse_port: bool | None,
    announce: Callable[[str], Any],
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await edge.setup()
    try:
        site = web.TCPSite(edge, settings.host, settings.port, reuse_port=reuse_port)
        await site.start()
        announce(f"======== Running on {site.name} ========")
        await stop.wait()
    finally:
        await edge.cleanup()
