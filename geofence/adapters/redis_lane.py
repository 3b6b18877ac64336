"""The fence around redis-py's internals: the one module of the project that uses them.

Two things here go beneath redis-py's public API, for speed, each measured: the lane (a
connection kept aside for the state store's script calls) and the hiredis packer of the
asyncio connection. They are proven on the redis-py range ``REDIS`` (pinned in
pyproject.toml); tests/contract/test_redis_internals.py fails loudly on an upgrade outside
it or one that moves what they use.

The lane: a connection kept aside for the state store's script calls, one call at a time.

Every flush of single pings makes two script calls, sent together (write its devices'
states, read the next flush's devices), and every batch two (read, write). Through
redis-py's client each call also pays for the connection pool (a lock and a condition to
take a connection and give it back), the retry wrapper, the hooks of each command, and a
task per write (``asyncio.wait_for`` under a socket timeout). Sent here, on a connection
of redis-py's own with no timeout of its own, under one ``asyncio.timeout``, the same call
takes 1.4-1.65× less CPU for 1 to 15 devices (``python -m benchmarks.flush``, its lane
table). redis-py's public API costs about what the client does: a pipeline of the same
EVALSHA calls on a client of its own with one connection, even with no socket timeout
of its own, took 1.2-1.5× the lane's CPU (``python -m benchmarks.flush --lanes``, its
``pipeline`` column).

A lane takes one call at a time. The store keeps a few (``LANES``) and sends a call on
one that is free, through the client when other calls hold them all, so concurrent
callers never wait for a lane. A lane's failures are the client's: a connection the
server closed meanwhile (Redis restarted) is found so before anything is sent on it and
replaced (as the pool does when it hands one out); a call is never sent twice once it
may have reached the server (a broken connection or a timeout mid-call may have left it
applied); a script the server no longer knows is loaded and the call sent again (the
server said it ran nothing); a timeout or a cancellation drops the connection (a reply
still on its way must not be read as the next call's).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Final, Protocol

import hiredis
import redis.asyncio as aioredis
from redis import exceptions as rexc
from redis.asyncio.connection import AbstractConnection
from redis.commands.core import AsyncScript
from redis.connection import HiredisRespSerializer

REDIS: Final = ">=5.0,<8.3"  # the range this module is proven on; pyproject pins it

Arg = bytes | str | int | float
Call = tuple[AsyncScript, Sequence[str], Sequence[Arg]]  # a script, its keys and its args
Wait = tuple[int, int]  # WAIT's replicas and timeout (ms)


class ScriptLane(Protocol):
    """What the store sends its script calls on: ``Lane``, or another way to compare."""

    busy: bool

    async def run_all(self, calls: Sequence[Call], *, wait: Wait | None = None) -> list[Any]: ...

    async def close(self) -> None: ...


class Lane:
    def __init__(self, client: aioredis.Redis) -> None:
        pool = client.connection_pool
        kwargs = dict(pool.connection_kwargs)
        # one timeout over the whole call instead of the connection's own, per read and
        # per write (the write's is a task each time); no health check: a dead
        # connection costs one retry, as in the pool
        self.timeout_s: float | None = kwargs.get("socket_timeout")
        kwargs["socket_timeout"] = None  # not left out: the connection's default is 5 s
        kwargs["health_check_interval"] = 0
        self._kwargs = kwargs
        self._connection_class = pool.connection_class
        self._connection: AbstractConnection | None = None
        self.busy = False

    async def run(self, script: AsyncScript, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """The script's reply; raises what the client would (connection, timeout, reply
        errors), the connection dropped whenever its state is in doubt."""
        [reply] = await self.run_all([(script, keys, args)])
        return reply

    async def run_all(self, calls: Sequence[Call], *, wait: Wait | None = None) -> list[Any]:
        """The reply of each call, the calls sent together in one round trip and run by
        the server one after the other. After a script the server did not know, the
        scripts are loaded and that call and every later one sent again: a later call
        must be one that may run twice (a read). ``wait`` (replicas, timeout in ms): then
        ``WAIT`` on the same connection, whose reply (the replicas that acknowledged
        every write of this connection so far) is appended to the replies."""
        if self.busy:
            raise RuntimeError("the lane takes one call at a time")
        self.busy = True
        try:
            async with asyncio.timeout(self.timeout_s):
                replies = await self._evalsha(calls)
                if wait is not None:
                    replies += await self._call([("WAIT", *wait)])
                return replies
        except BaseException:
            await self.close()
            raise
        finally:
            self.busy = False

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.disconnect(nowait=True)

    async def _evalsha(self, calls: Sequence[Call]) -> list[Any]:
        replies = await self._call([_evalsha(call) for call in calls])
        unknown = [n for n, reply in enumerate(replies) if isinstance(reply, rexc.NoScriptError)]
        if unknown:
            again = calls[unknown[0] :]
            await self._call([("SCRIPT", "LOAD", script.script) for script, _, _ in again])
            replies[unknown[0] :] = await self._call([_evalsha(call) for call in again])
        for reply in replies:
            if isinstance(reply, rexc.ResponseError):
                raise reply
        return replies

    async def _call(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Each command's reply, or the error the server answered it with."""
        connection = await self._open()
        packed = [part for command in commands for part in connection.pack_command(*command)]
        await connection.send_packed_command(packed, check_health=False)
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(await connection.read_response())
            except rexc.ResponseError as e:  # that reply read whole: the next ones follow
                replies.append(e)
        return replies

    async def _open(self) -> AbstractConnection:
        """The lane's connection, a new one when the server closed the last (a check of
        what the socket already received: nothing is sent, nothing waited for)."""
        connection = self._connection
        if connection is not None and connection.is_connected:
            try:
                clean = not await connection.can_read()  # a reply left over: dirty
            except rexc.ConnectionError:  # closed by the server
                clean = False
            if clean:
                return connection
            await self.close()
        if self._connection is None:
            self._connection = self._connection_class(**self._kwargs)
        return self._connection


def _evalsha(call: Call) -> tuple[Any, ...]:
    script, keys, args = call
    return ("EVALSHA", script.sha, len(keys), *keys, *args)


class HiredisPackedConnection(aioredis.Connection):
    """redis-py's asyncio connection, packing commands with hiredis's C packer.

    redis-py's synchronous connection does so when hiredis is installed (a dependency
    here); its asyncio one packs in Python, argument by argument, which was half the CPU
    of a script call carrying a batch of devices. The arguments go to hiredis as they
    are: redis-py's serializer would first copy them one by one to turn any bytearray or
    memoryview into bytes, which the store never sends; such a command, or one whose name
    is two words ("SCRIPT LOAD"), still goes through it.
    """

    # untyped in some redis-py releases, typed in others
    _packer = HiredisRespSerializer()  # type: ignore[no-untyped-call, unused-ignore]

    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str) and " " not in args[0]:
            try:
                return [hiredis.pack_command(args)]
            except TypeError:
                pass
        return self._packer.pack(*args)  # type: ignore[no-any-return]
