"""A fake push gateway: a real aiohttp app that records every call and fails on demand.

In a test::

    async with FakeGateway(secret="s") as gateway:
        gateway.script(("status", 500), ("status", 429, {"Retry-After": "7"}), "ok")
        push = HttpPush(gateway.url, "s")
        ...
        assert [c.status for c in gateway.calls] == [500, 429, 200]

Behaviours, one consumed per call; when the script is used up, ``default`` (200):

=============================  ============================================================
``"ok"``                       200
``("status", code)``           that status
``("status", code, headers)``  that status with those headers (``{"Retry-After": "7"}``)
``("hang", seconds)``          wait, then 200; cut short when the client goes away (the
                               call keeps ``status=None``) or the gateway stops
=============================  ============================================================

``fail_until(t)`` answers every call received before unix time ``t`` with a behaviour
(500 unless told), ahead of the script.

Every call records where the push departs from the OpenAPI document's ``webhooks`` entry
(``Call.push_problems``, empty when it conforms), whatever the answer.

As a process of its own, ``python -m tests.fakes.gateway --port N [--secret S]``, driven by:

- ``POST /_control/script``: a JSON list of behaviours, which replaces the script;
- ``POST /_control/fail_until``: ``{"until": <unix>}`` or ``{"for_s": s}``, and
  ``"behaviour"`` (default ``["status", 500]``);
- ``GET /_control/calls``: every call as JSON (``Call.as_dict``);
- ``POST /_control/reset``: forget the calls, the script and ``fail_until``.

Any other POST is a push.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Self

import msgspec
from aiohttp import web

from geofence.domain.delivery import verify
from geofence.domain.errors import Unauthorized
from tests.fakes.webhook import push_problems

GATEWAY: Final = [sys.executable, "-m", "tests.fakes.gateway"]  # the command that runs it
SIGNATURE: Final = "X-Geofence-Signature"
PUSH_PATH: Final = "/push"
SHUTDOWN_TIMEOUT_S: Final = 1.0
_NO_BODY: Final = frozenset({204, 304})


@dataclass(frozen=True)
class Behaviour:
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    hang_s: float = 0.0


def behaviour(spec: Any) -> Behaviour:
    """A behaviour from its short form (the table above); ValueError if it is none."""
    match spec:
        case Behaviour():
            return spec
        case "ok":
            return Behaviour()
        case ["status", int(status)] if 200 <= status <= 599:
            return Behaviour(status=status)
        case ["status", int(status), dict(headers)] if 200 <= status <= 599:
            return Behaviour(status=status, headers={str(k): str(v) for k, v in headers.items()})
        case ["hang", int(seconds) | float(seconds)] if seconds >= 0:
            return Behaviour(hang_s=float(seconds))
    raise ValueError(f"not a behaviour: {spec!r}")


@dataclass
class Call:
    """One push received. ``status`` is None until answered, and stays so if never."""

    at: float  # time.time() when received
    at_monotonic: float  # time.monotonic(): the same clock for every process on the host
    path: str
    peer: str  # the client's address and port: one for every call on a kept-alive connection
    headers: dict[str, str]
    body: bytes
    json: Any  # the body decoded, None if it is not JSON
    signature_valid: bool | None = None  # None: the gateway has no secret
    signature_error: str | None = None  # the refusal's code when not valid
    status: int | None = None
    # where the push departs from the OpenAPI document's ``webhooks`` entry
    push_problems: list[str] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "at_monotonic": self.at_monotonic,
            "path": self.path,
            "peer": self.peer,
            "headers": self.headers,
            "body": self.body.decode(errors="replace"),
            "json": self.json,
            "signature_valid": self.signature_valid,
            "signature_error": self.signature_error,
            "status": self.status,
            "push_problems": self.push_problems,
        }


class FakeGateway:
    """The gateway's state (calls, script) and the app serving it."""

    def __init__(
        self,
        *,
        secret: str | None = None,
        default: Any = "ok",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.secret = secret
        self.calls: list[Call] = []
        self.url = ""  # the push URL, once started
        self._default = behaviour(default)
        self._script: deque[Behaviour] = deque()
        self._fail_until: tuple[float, Behaviour] | None = None
        self._clock = clock
        self._stopping = asyncio.Event()
        self._in_flight = 0
        self._runner: web.AppRunner | None = None

    # --- what to answer ----------------------------------------------------------------

    def script(self, *specs: Any) -> None:
        """Replace what is left of the script."""
        self._script = deque(behaviour(s) for s in specs)

    def fail_next(
        self, n: int, status: int = 500, *, headers: Mapping[str, str] | None = None
    ) -> None:
        """The next ``n`` calls answer ``status``, the rest of the script dropped."""
        self.script(*[("status", status, dict(headers or {}))] * n)

    def fail_until(self, t: float, spec: Any = ("status", 500)) -> None:
        """Answer every call received before unix time ``t`` with ``spec``."""
        self._fail_until = (t, behaviour(spec))

    def fail_for(self, seconds: float, spec: Any = ("status", 500)) -> None:
        self.fail_until(self._clock() + seconds, spec)

    def reset(self) -> None:
        self.calls.clear()
        self._script.clear()
        self._fail_until = None

    def _next(self) -> Behaviour:
        if self._fail_until is not None and self._clock() < self._fail_until[0]:
            return self._fail_until[1]
        return self._script.popleft() if self._script else self._default

    # --- what was received -------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Calls received and not yet answered (or abandoned)."""
        return self._in_flight

    async def wait_for_calls(self, n: int, timeout_s: float = 5.0) -> list[Call]:
        """The calls once there are at least ``n``; TimeoutError if they do not come."""
        async with asyncio.timeout(timeout_s):
            while len(self.calls) < n:  # noqa: ASYNC110 - calls come from aiohttp's handler, which signals nothing
                await asyncio.sleep(0.01)
        return list(self.calls)

    def _signature(self, header: str | None, body: bytes) -> tuple[bool | None, str | None]:
        if self.secret is None:
            return None, None
        try:
            verify(self.secret, header, body, self._clock())
        except Unauthorized as e:
            return False, e.code
        return True, None

    async def _record(self, request: web.Request) -> Call:
        body = await request.read()
        valid, error = self._signature(request.headers.get(SIGNATURE), body)
        call = Call(
            at=time.time(),
            at_monotonic=time.monotonic(),
            path=request.path,
            peer=_peer(request),
            headers=dict(request.headers),
            body=body,
            json=_json(body),
            signature_valid=valid,
            signature_error=error,
            push_problems=push_problems(request.headers, body),
        )
        self.calls.append(call)
        return call

    # --- the app -----------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/_control/script", self._set_script)
        app.router.add_post("/_control/fail_until", self._set_fail_until)
        app.router.add_get("/_control/calls", self._get_calls)
        app.router.add_post("/_control/reset", self._reset)
        app.router.add_post("/{path:.*}", self._push)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _on_shutdown(self, app: web.Application) -> None:
        self._stopping.set()  # every hang ends now, so shutting down does not wait on it

    async def _push(self, request: web.Request) -> web.Response:
        call = await self._record(request)
        answer = self._next()
        self._in_flight += 1
        try:
            await self._hang(answer.hang_s)
        finally:  # also when cancelled: the client went away
            self._in_flight -= 1
        call.status = answer.status
        return _respond(answer)

    async def _hang(self, seconds: float) -> None:
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _set_script(self, request: web.Request) -> web.Response:
        specs = await _json_body(request)
        if not isinstance(specs, list):
            raise web.HTTPBadRequest(text="expected a JSON list of behaviours")
        _checked(lambda: self.script(*specs))
        return web.json_response({"script": len(self._script)})

    async def _set_fail_until(self, request: web.Request) -> web.Response:
        doc = await _json_body(request)
        until = self._until(doc)
        _checked(lambda: self.fail_until(until, doc.get("behaviour", ("status", 500))))
        return web.json_response({"until": until})

    def _until(self, doc: Any) -> float:
        match doc:
            case {"until": int(t) | float(t)}:
                return float(t)
            case {"for_s": int(s) | float(s)}:
                return self._clock() + s
        raise web.HTTPBadRequest(text='expected {"until": <unix>} or {"for_s": <seconds>}')

    async def _get_calls(self, request: web.Request) -> web.Response:
        return web.json_response([c.as_dict() for c in self.calls])

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"reset": True})

    # --- running it --------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on ``host:port`` (0: a free port); the push URL."""
        self._stopping = asyncio.Event()
        runner = web.AppRunner(
            self.app(),
            handler_cancellation=True,  # a client that gives up ends its hang
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
            access_log=None,
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        self.url = f"http://{bound_host}:{bound_port}{PUSH_PATH}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            self._stopping.set()
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def _peer(request: web.Request) -> str:
    peername = request.transport.get_extra_info("peername") if request.transport else None
    return f"{peername[0]}:{peername[1]}" if peername else "?"


def _json(body: bytes) -> Any:
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None


async def _json_body(request: web.Request) -> Any:
    body = await request.read()
    try:
        return msgspec.json.decode(body) if body else None
    except msgspec.DecodeError:
        raise web.HTTPBadRequest(text="the body is not JSON") from None


def _checked(change: Callable[[], None]) -> None:
    try:
        change()
    except ValueError as e:
        raise web.HTTPBadRequest(text=str(e)) from None


def _respond(answer: Behaviour) -> web.Response:
    if answer.status in _NO_BODY:
        return web.Response(status=answer.status, headers=answer.headers)
    body = msgspec.json.encode({"status": answer.status})
    return web.Response(
        status=answer.status, headers=answer.headers, body=body, content_type="application/json"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.gateway", description="A fake push gateway."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret", default=None)
    args = parser.parse_args(argv)
    gateway = FakeGateway(secret=args.secret)
    web.run_app(
        gateway.app(),
        host=args.host,
        port=args.port,
        handler_cancellation=True,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        access_log=None,
    )


if __name__ == "__main__":
    main()
