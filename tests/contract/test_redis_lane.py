"""The store's lane (``geofence/adapters/redis_lane.py``): one call at a time on a connection
kept aside; every failure leaves it ready for the next call, which gets its own reply."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from geofence.adapters.redis import RedisStore
from geofence.adapters.redis_lane import Lane
from geofence.domain.errors import Unavailable
from tests.conftest import REDIS_URL, redis_client_or_skip

pytestmark = pytest.mark.redis

ECHO = "return ARGV[1]"
# busy for ARGV[1] ms, then answers 'slow': Redis runs nothing else meanwhile
SLOW = """
local t = redis.call('TIME')
local until_us = t[1] * 1000000 + t[2] + tonumber(ARGV[1]) * 1000
repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] >= until_us
return 'slow'
"""


@pytest.fixture
async def client() -> AsyncIterator[aioredis.Redis]:
    admin = await redis_client_or_skip()
    await admin.aclose()
    client = aioredis.Redis.from_url(REDIS_URL, socket_timeout=0.3, socket_connect_timeout=2)
    yield client
    await client.aclose()


@pytest.fixture
async def lane(client: aioredis.Redis) -> AsyncIterator[Lane]:
    lane = Lane(client)
    yield lane
    await lane.close()


def scripts(client: aioredis.Redis) -> tuple[AsyncScript, AsyncScript]:
    return client.register_script(ECHO), client.register_script(SLOW)


async def test_a_call_answers_as_through_the_client(client: aioredis.Redis, lane: Lane) -> None:
    echo, _ = scripts(client)
    assert await lane.run(echo, [], ["one"]) == await echo(args=["one"]) == b"one"
    assert await lane.run(echo, [], [2]) == b"2"
    # one timeout over the whole call, none of the connection's own (a task per write)
    assert lane.timeout_s == 0.3
    assert lane._connection is not None
    assert lane._connection.socket_timeout is None


async def test_a_script_the_server_forgot_is_loaded_again(
    client: aioredis.Redis, lane: Lane
) -> None:
    echo, _ = scripts(client)
    assert await lane.run(echo, [], ["before"]) == b"before"
    await client.script_flush()
    assert await lane.run(echo, [], ["after"]) == b"after"


async def test_calls_sent_together_run_in_order_and_a_write_runs_once(
    client: aioredis.Redis, lane: Lane
) -> None:
    """A write then a read in one round trip, also when the server forgot both scripts
    (each sent again once loaded) or only the read's (the read alone sent again)."""
    key = f"gftest-lane-{uuid.uuid4().hex}"
    add = client.register_script("return redis.call('INCR', KEYS[1])")
    read = client.register_script("return redis.call('GET', KEYS[1])")
    try:
        assert await lane.run_all([(add, [key], []), (read, [key], [])]) == [1, b"1"]
        await client.script_flush()
        assert await lane.run_all([(add, [key], []), (read, [key], [])]) == [2, b"2"]
        await client.script_flush()
        await add(keys=[key])  # the write's script known again, the read's not
        assert await lane.run_all([(add, [key], []), (read, [key], [])]) == [4, b"4"]
        assert await lane.run_all([]) == []
    finally:
        await client.delete(key)


async def test_an_error_answer_is_raised_and_the_lane_goes_on(
    client: aioredis.Redis, lane: Lane
) -> None:
    echo, _ = scripts(client)
    failing = client.register_script("return redis.error_reply('no such thing')")
    with pytest.raises(ResponseError, match="no such thing"):
        await lane.run_all([(echo, [], ["first"]), (failing, [], [])])
    assert await lane.run(echo, [], ["after"]) == b"after"


async def test_a_cancelled_call_leaves_no_reply_for_the_next(
    client: aioredis.Redis, lane: Lane
) -> None:
    echo, slow = scripts(client)
    await echo(args=["load"]), await slow(args=[0])
    call = asyncio.create_task(lane.run(slow, [], [150]))
    await asyncio.sleep(0.05)  # sent, its reply not yet come
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert not lane.busy
    await asyncio.sleep(0.15)  # the slow one ends meanwhile: its reply is there to be misread
    assert await lane.run(echo, [], ["mine"]) == b"mine"  # not the slow one's 'slow'


async def test_a_call_past_the_timeout_fails_and_the_next_gets_its_own_reply(
    client: aioredis.Redis, lane: Lane
) -> None:
    echo, slow = scripts(client)
    await echo(args=["load"]), await slow(args=[0])
    assert lane.timeout_s == 0.3
    with pytest.raises(TimeoutError):
        await lane.run(slow, [], [450])
    await asyncio.sleep(0.3)  # the slow one ends meanwhile (Redis runs nothing else till then)
    assert await lane.run(echo, [], ["mine"]) == b"mine"  # its reply, late, is not read


async def test_a_broken_connection_is_replaced_within_the_call(
    client: aioredis.Redis, lane: Lane
) -> None:
    echo, _ = scripts(client)
    assert await lane.run(echo, [], ["first"]) == b"first"
    assert lane._connection is not None
    assert lane._connection._writer is not None
    host, port = lane._connection._writer.get_extra_info("sockname")[:2]
    assert await client.client_kill_filter(addr=f"{host}:{port}") == 1
    assert await lane.run(echo, [], ["second"]) == b"second"


async def test_one_call_at_a_time(client: aioredis.Redis, lane: Lane) -> None:
    echo, slow = scripts(client)
    first = asyncio.create_task(lane.run(slow, [], [50]))
    await asyncio.sleep(0.01)
    assert lane.busy
    with pytest.raises(RuntimeError):
        await lane.run(echo, [], ["second"])
    assert await first == b"slow"
    assert not lane.busy


@pytest.mark.parametrize("lanes", [1, 2, 3])
async def test_the_store_sends_beside_busy_lanes_through_its_client(
    client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch, lanes: int
) -> None:
    store = RedisStore(client, prefix="gftest-lane", lanes=lanes)
    refs = [f"lane-{n}" for n in range(20)]
    on_lanes: list[int] = []

    def counted(n: int, run_all: Any) -> Any:
        async def run(*args: Any, **kwargs: Any) -> Any:
            on_lanes.append(n)
            return await run_all(*args, **kwargs)

        return run

    for n, lane in enumerate(store._lanes):
        monkeypatch.setattr(lane, "run_all", counted(n, lane.run_all))
    try:
        loaded = await asyncio.gather(*(store.load_devices([ref]) for ref in refs))
        assert [[(profile, s.version) for profile, s in one] for one in loaded] == [
            [(None, 0)]
        ] * len(refs)
        # the first calls took a lane each, the rest the client
        assert on_lanes[:lanes] == list(range(lanes))
        assert len(on_lanes) < len(refs)
    finally:
        await store.close()


async def test_the_store_answers_unavailable_when_redis_is_not_there() -> None:
    store = RedisStore.from_url("redis://127.0.0.1:1/0", timeout_s=0.5)  # nothing listens
    try:
        with pytest.raises(Unavailable):
            await store.load_devices(["someone"])
        with pytest.raises(Unavailable):
            await store.load_states(["someone"])
    finally:
        await store.close()


# adds one to KEYS[1], then keeps Redis busy for ARGV[1] ms: a write whose reply comes late
COUNT_SLOWLY = """
redis.call('INCR', KEYS[1])
local t = redis.call('TIME')
local until_us = t[1] * 1000000 + t[2] + tonumber(ARGV[1]) * 1000
repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] >= until_us
return 1
"""


async def test_a_command_past_the_timeout_is_not_sent_again(client: aioredis.Redis) -> None:
    """A write whose reply is late was applied all the same: sent again (redis-py's
    ``Retry`` retries timeouts by default) it would apply twice."""
    store = RedisStore.from_url(REDIS_URL, timeout_s=0.1, lanes=0)
    key = f"gftest-once-{uuid.uuid4().hex[:8]}"
    try:
        with pytest.raises((TimeoutError, RedisTimeoutError)):
            await store.client.eval(COUNT_SLOWLY, 1, key, 150)
        await asyncio.sleep(0.4)  # a second try, had there been one, is over by then
        assert await client.get(key) == b"1"
        assert isinstance(store.client, aioredis.Redis)
        assert store.client.connection_pool.connection_kwargs["retry"].get_retries() == 0
    finally:
        await client.delete(key)
        await store.close()


def silent_store(url: str, way: str) -> RedisStore:
    if way == "client's timeouts":  # the lanes bound their calls, as the store would
        return RedisStore.from_url(url, timeout_s=0.3)
    if way == "no lane":
        return RedisStore.from_url(url, timeout_s=0.3, lanes=0)
    # the connections have no timeout: lanes on them do not bound their calls
    return RedisStore(aioredis.Redis.from_url(url), timeout_s=0.3)


@pytest.mark.parametrize("way", ["client's timeouts", "no lane", "store's timeout only"])
async def test_a_flush_to_a_redis_that_never_answers_is_unavailable_within_the_bound(
    way: str,
) -> None:
    """On a lane that bounds its calls, its bound is the only one (the store keeps none of
    its own around it); else the store's: either way BackendUnavailable, in time."""
    silent: list[asyncio.StreamWriter] = []

    async def never_answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        silent.append(writer)

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    store = silent_store(f"redis://127.0.0.1:{port}/0", way)
    try:
        for _ in range(2):  # the second on a lane the first left free
            started = asyncio.get_running_loop().time()
            with pytest.raises(Unavailable):
                await asyncio.wait_for(store.save_then_load([], ["a-ref"]), 3.0)
            assert asyncio.get_running_loop().time() - started < 1.5
            assert not any(lane.busy for lane in store._lanes)
    finally:
        await store.close()
        for writer in silent:
            writer.close()
        server.close()
        await server.wait_closed()
