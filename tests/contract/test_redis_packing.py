"""The Redis store packs commands with hiredis: the very bytes redis-py's own packer sends."""

from __future__ import annotations

import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st
from redis.typing import EncodableT

from geofence.adapters.redis import RedisStore
from geofence.adapters.redis_lane import HiredisPackedConnection

argument = st.one_of(
    st.binary(max_size=40),
    st.binary(max_size=40).map(bytearray),  # not hiredis's own: through redis-py's serializer
    st.binary(max_size=40).map(lambda data: memoryview(data)),  # noqa: PLW0108 - a type mypy can read
    st.text(max_size=20),
    st.integers(-(2**62), 2**62),
    st.floats(allow_nan=False, allow_infinity=False),
)
command = st.sampled_from(["EVALSHA", "MGET", "HSET", "CONFIG GET", b"ZADD", b"SCRIPT LOAD"])


@given(name=command, args=st.lists(argument, max_size=30))
def test_the_hiredis_packer_sends_what_redis_py_would(
    name: str | bytes, args: list[EncodableT]
) -> None:
    theirs = b"".join(aioredis.Connection().pack_command(name, *args))
    ours = b"".join(HiredisPackedConnection().pack_command(name, *args))
    assert ours == theirs


async def test_the_store_uses_it() -> None:
    store = RedisStore.from_url("redis://127.0.0.1:1/0")  # never connects
    try:
        assert isinstance(store.client, aioredis.Redis)
        assert store.client.connection_pool.connection_class is HiredisPackedConnection
    finally:
        await store.close()
