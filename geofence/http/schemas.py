"""Request and response types at the edge, and the one way bodies are read and decoded.

msgspec rejects what JSON does not allow (NaN, Infinity, trailing garbage), numbers that
overflow, booleans where numbers belong and, with ``forbid_unknown_fields``, any field the
contract does not name.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Collection
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from geofence.domain.times import with_times
from geofence.http.errors import HTTPProblem
from geofence.http.keys import METRICS, SETTINGS

T = TypeVar("T")

JSON_TYPES = ("application/json",)
_AT_PATH = re.compile(r"^(?P<detail>.*?)(?: - at `(?P<path>[^`]*)`)?$", re.DOTALL)

_encoder = msgspec.json.Encoder()


def json_response(
    data: Any, *, status: int = 200, content_type: str = "application/json", verbatim: bool = False
) -> web.Response:
    """``data`` as JSON, its times in RFC 3339 (``domain.times``); ``verbatim`` sends a
    document as it is (GeoJSON as uploaded, the OpenAPI document), untouched."""
    body = _encoder.encode(data if verbatim else with_times(data))
    return web.Response(body=body, status=status, content_type=content_type)


def private_json(data: Any, *, status: int = 200) -> web.Response:
    """A JSON answer that carries a token or personal data: never cached."""
    response = json_response(data, status=status)
    response.headers["Cache-Control"] = "no-store"
    return response


async def read_body(request: web.Request, *, limit: int, also: Collection[str] = ()) -> bytes:
    """The raw body, refusing anything but JSON (or a media type in ``also``) and anything
    over ``limit`` bytes (413).

    The whole body must arrive within ``GEOFENCE_BODY_TIMEOUT_S`` (408 ``body-timeout``,
    and whatever slot the request held is free again). A client that hangs up on the way
    is no error of ours: it is counted (``client-abort``) and answered 499, which it
    never reads, so that no 5xx is recorded for it.
    """
    media = request.content_type
    if media not in JSON_TYPES and not media.endswith("+json") and media not in also:
        raise HTTPProblem(415, "unsupported-media-type", "Send the body as application/json.")
    if request.content.is_eof():  # the whole body is in already (most pings): no wait
        return _body_in(request, limit=limit)
    timeout_s = request.app[SETTINGS].body_timeout_s
    try:
        async with asyncio.timeout(timeout_s):
            return await _read_body(request, limit=limit)
    except TimeoutError:
        detail = f"The body did not arrive within {timeout_s:g} s."
        raise HTTPProblem(408, "body-timeout", detail, headers={"Connection": "close"}) from None
    except ConnectionError:
        request.app[METRICS].refused.labels("client-abort").inc()
        raise HTTPProblem(499, "client-abort", "The client closed the connection.") from None


def _body_in(request: web.Request, *, limit: int) -> bytes:
    """A body the parser has handed over whole, taken as it is: no timer, no await."""
    length = request.content_length
    if length is not None and length > limit:
        raise _too_large(limit)
    body = request.content.read_nowait()
    if len(body) > limit:  # a chunked body, its size known only now
        raise _too_large(limit)
    return body


async def _read_body(request: web.Request, *, limit: int) -> bytes:
    length = request.content_length
    if length is not None:
        if length > limit:
            raise _too_large(limit)
        # the parser hands over exactly this many bytes: one read, not a loop to the end
        # (an empty body has a stream of its own, which refuses even to read 0 bytes)
        return await request.content.readexactly(length) if length else b""
    # read() returns what has arrived so far: a chunked body comes in several pieces
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(limit + 1 - size):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
    return b"".join(chunks)


def decode(body: bytes, kind: type[T]) -> T:
    """Decode JSON into ``kind``: 400 for malformed JSON, 422 with the path for wrong shape."""
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as e:
        raise invalid(str(e)) from None
    except msgspec.DecodeError as e:
        raise HTTPProblem(400, "malformed-json", f"The body is not valid JSON: {e}") from None
    except UnicodeDecodeError:
        raise HTTPProblem(400, "malformed-json", "The body is not valid UTF-8.") from None
    except RecursionError:  # msgspec's depth guard, e.g. deep inside an untyped value
        raise HTTPProblem(400, "malformed-json", "The body nests too deeply.") from None


async def read_json(request: web.Request, kind: type[T], *, limit: int) -> T:
    return decode(await read_body(request, limit=limit), kind)


def located(message: str, *, prefix: str = "$") -> tuple[str, str]:
    """A msgspec validation message as (the JSON path it names below ``prefix``, detail)."""
    match = _AT_PATH.match(message)
    if match is None:  # never: the pattern matches any string
        return prefix, message
    path = match.group("path")
    if path is None:
        path = prefix
    elif path.startswith("$"):
        path = prefix + path[1:]
    return path, match.group("detail")


def invalid(message: str, *, prefix: str = "$") -> HTTPProblem:
    """A 422 for one msgspec validation message, with the JSON path it names."""
    path, detail = located(message, prefix=prefix)
    error = {"path": path, "code": _code_of(detail), "detail": detail}
    return HTTPProblem(422, "validation-error", f"{detail} at {path}", errors=[error])


def unprocessable(path: str, code: str, detail: str) -> HTTPProblem:
    """A 422 for one problem at ``path`` (``$.field`` in a body, ``?name`` in the query)."""
    error = {"path": path, "code": code, "detail": detail}
    return HTTPProblem(422, code, f"{detail} at {path}", errors=[error])


def _code_of(detail: str) -> str:
    if detail.startswith("Object contains unknown field"):
        return "unknown-field"
    if detail.startswith("Object missing required field"):
        return "missing-field"
    if detail.startswith("Expected"):
        return "wrong-type-or-range"
    return "invalid"


def _too_large(limit: int) -> HTTPProblem:
    return HTTPProblem(413, "payload-too-large", f"The body is larger than {limit} bytes.")


def flag(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "false").lower()
    if raw in ("true", "1"):
        return True
    if raw in ("false", "0", ""):
        return False
    raise HTTPProblem(400, "bad-query", f"?{name} takes true or false, not {raw!r}.")
