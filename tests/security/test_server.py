"""The one use of aiohttp internals (geofence/http/server.py) still holds: if an aiohttp
upgrade moves the seam, these fail, loudly, rather than the service quietly answering
text/plain again."""

from __future__ import annotations

import inspect

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from geofence.adapters.memory import MemoryStore
from geofence.config import Settings
from geofence.http.app import create_app
from geofence.http.server import MAX_LINE_BYTES, ProblemRequestHandler, ProblemServer, runner


def test_handle_error_is_still_the_seam() -> None:
    ours = inspect.signature(ProblemRequestHandler.handle_error)
    theirs = inspect.signature(RequestHandler.handle_error)
    assert list(ours.parameters) == list(theirs.parameters)
    # aiohttp answers requests it cannot parse through this method, from here
    assert "handle_error" in inspect.getsource(RequestHandler._make_error_handler)


async def test_the_runner_makes_problem_handlers_with_the_edge_limits(settings: Settings) -> None:
    edge = runner(create_app(settings, store=MemoryStore()), settings.replace(keepalive_s=7.0))
    await edge.setup()
    try:
        assert isinstance(edge.server, ProblemServer)
        handler = edge.server()
        assert type(handler) is ProblemRequestHandler
        assert handler.keepalive_timeout == 7.0
        assert handler.max_line_size == MAX_LINE_BYTES
    finally:
        await edge.cleanup()


def test_the_server_is_an_aiohttp_server() -> None:
    assert issubclass(ProblemServer, web.Server)
    assert "_kwargs" in inspect.getsource(web.Server.__init__)
    assert "_loop" in inspect.getsource(web.Server.__init__)
