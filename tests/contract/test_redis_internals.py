"""The fence: ``geofence.adapters.redis_lane`` uses redis-py's internals (the lane's own
connection, the hiredis packer), proven on the redis-py range pinned in pyproject.toml.
An upgrade outside it, or one that moves what the module uses, fails here by name before
it can break a flush (tests/contract/test_redis_lane.py then proves the behaviour)."""

from __future__ import annotations

import importlib.metadata
import inspect

import redis.asyncio as aioredis
from packaging.specifiers import SpecifierSet
from redis import exceptions as rexc
from redis.asyncio.connection import AbstractConnection
from redis.commands.core import AsyncScript
from redis.connection import HiredisRespSerializer

from geofence.adapters import redis_lane
from tests.pins import pinned


def test_the_pin_in_pyproject_is_the_proven_range() -> None:
    assert pinned("redis") == SpecifierSet(redis_lane.REDIS)
    assert any(spec.operator == "<" for spec in pinned("redis")), "the pin needs an upper bound"


def test_the_installed_redis_py_is_in_the_proven_range() -> None:
    installed = importlib.metadata.version("redis")
    assert installed in SpecifierSet(redis_lane.REDIS), (
        f"redis-py {installed} is outside {redis_lane.REDIS}, the range"
        " geofence/adapters/redis_lane.py is proven on: run tests/contract/test_redis_*.py,"
        " then widen REDIS and the pin in pyproject.toml"
    )


def parameters(function: object) -> set[str]:
    return set(inspect.signature(function).parameters)  # type: ignore[arg-type]


def test_the_connection_internals_the_lane_uses_are_there() -> None:
    connection = aioredis.Connection
    assert issubclass(connection, AbstractConnection)
    for name in ("pack_command", "send_packed_command", "read_response", "can_read"):
        assert callable(getattr(connection, name, None)), f"Connection.{name} is gone"
    assert {"check_health"} <= parameters(connection.send_packed_command)
    assert {"nowait"} <= parameters(connection.disconnect)
    assert isinstance(inspect.getattr_static(connection, "is_connected"), property)
    assert {"socket_timeout", "health_check_interval"} <= parameters(AbstractConnection.__init__)


def test_the_pool_says_how_it_makes_connections() -> None:
    pool = aioredis.ConnectionPool.from_url("redis://127.0.0.1:1/0", socket_timeout=0.5)
    assert pool.connection_class is aioredis.Connection
    assert pool.connection_kwargs["socket_timeout"] == 0.5


def test_a_script_names_its_sha_and_source() -> None:
    script = AsyncScript(aioredis.Redis(), "return 1")
    assert script.script == "return 1"
    assert len(script.sha) == 40
    assert issubclass(rexc.NoScriptError, rexc.ResponseError)


def test_the_hiredis_packer_is_there_and_packs() -> None:
    packed = b"".join(
        HiredisRespSerializer().pack("SCRIPT", "LOAD", "return 1")  # type: ignore[no-untyped-call, arg-type]  # redis-py types pack loosely
    )
    assert packed == b"*3\r\n$6\r\nSCRIPT\r\n$4\r\nLOAD\r\n$8\r\nreturn 1\r\n"
    assert issubclass(redis_lane.HiredisPackedConnection, aioredis.Connection)
