"""A connection kept aside for the state store's script calls, one call at a time.

Every flush of single pings makes two script calls (read the devices, write their
states), and so does every batch. Through redis-py's client each call also pays for the
connection pool (a lock and a condition to take a connection and give it back), the
retry wrapper, the hooks of each command, and a task per write (``asyncio.wait_for``
under a socket timeout). Sent here, on a connection of redis-py's own under one
``asyncio.timeout``, the same call takes 1.2× less CPU for 1 to 15 devices (``python -m
benchmarks.flush``, its lane table): 6% more single pings per CPU second over HTTP at
50 connections.

The lane takes one call at a time. The store sends a call through it when it is free,
and through the client when another call holds it, so concurrent callers never wait for
it. Its failures are the client's: a broken connection is dropped and the call tried once
more on a new one (as the pool's ``Retry`` does), a script the server no longer knows
(Redis restarted) is loaded and the call sent again, a timeout or a cancellation drops
the connection (a reply still on its way must not be read as the next call's).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as rexc
from redis.asyncio.connection import AbstractConnection
from redis.commands.core import AsyncScript

Arg = bytes | str | int | float


class Lane:
    def __init__(self, client: aioredis.Redis) -> None:
        pool = client.connection_pool
        kwargs = dict(pool.connection_kwargs)
        # one timeout over the whole call instead of the connection's own, per read and
        # per write (the write's is a task each time); no health check: a dead
        # connection costs one retry, as in the pool
        self.timeout_s: float | None = kwargs.pop("socket_timeout", None)
        kwargs["health_check_interval"] = 0
        self._kwargs = kwargs
        self._connection_class = pool.connection_class
        self._connection: AbstractConnection | None = None
        self.busy = False

    async def run(self, script: AsyncScript, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """The script's reply; raises what the client would (connection, timeout, reply
        errors), the connection dropped whenever its state is in doubt."""
        if self.busy:
            raise RuntimeError("the lane takes one call at a time")
        self.busy = True
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._evalsha(script, keys, args)
        except BaseException:
            await self.close()
            raise
        finally:
            self.busy = False

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.disconnect(nowait=True)

    async def _evalsha(self, script: AsyncScript, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            return await self._retried(command)
        except rexc.NoScriptError:
            await self._retried(("SCRIPT", "LOAD", script.script))
            return await self._retried(command)

    async def _retried(self, command: tuple[Any, ...]) -> Any:
        try:
            return await self._call(command)
        except rexc.ConnectionError:
            await self.close()
            return await self._call(command)

    async def _call(self, command: tuple[Any, ...]) -> Any:
        connection = self._connection
        if connection is None:
            connection = self._connection = self._connection_class(**self._kwargs)
        await connection.send_packed_command(connection.pack_command(*command), check_health=False)
        return await connection.read_response()
