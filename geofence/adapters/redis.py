"""The Redis state store.

Every key name is built in ``Keys`` below, in one place. All keys of one device share the
hash tag ``{d:<ref>}`` so they live in one Redis Cluster slot and one script can change
them atomically. Values are msgpack-encoded domain structs. Any connection failure or
timeout becomes the domain's ``Unavailable`` (the HTTP layer answers 503).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import msgspec
import redis.asyncio as aioredis
from redis import exceptions as rexc

from geofence.domain.devices import DeviceProfile
from geofence.domain.errors import NotFound, Unavailable
from geofence.domain.model import DeviceState, Fence, Fix
from geofence.ports import Catalogue, StoredState

T = TypeVar("T")
_REDIS_DOWN = (rexc.ConnectionError, rexc.TimeoutError, rexc.BusyLoadingError, OSError)


class Keys:
    """Every key prefix of the service, in one block."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.fences = f"{prefix}:{{cat}}:fences"
        self.catalogue_version = f"{prefix}:{{cat}}:version"

    def device(self, ref: str) -> str:
        """The hash-tagged stem of every key of one device."""
        return f"{self.prefix}:{{d:{ref}}}"

    def profile(self, ref: str) -> str:
        return f"{self.device(ref)}:profile"

    def state(self, ref: str) -> str:
        return f"{self.device(ref)}:state"

    def fix(self, ref: str) -> str:
        return f"{self.device(ref)}:fix"

    def of_device(self, ref: str) -> list[str]:
        return [self.profile(ref), self.state(ref), self.fix(ref)]


# KEYS: state, fix, profile. Returns -1 when the device is gone (erased while the ping
# was computed: nothing may be written back), 0 on a version conflict, 1 when written.
# ARGV: expected version, state, fix ('' = none), ttl, fix ttl.
SAVE_STATE = """
if redis.call('EXISTS', KEYS[3]) == 0 then return -1 end
local current = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if current ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'v', current + 1, 's', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
if ARGV[3] ~= '' then redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[5]) end
redis.call('EXPIRE', KEYS[3], ARGV[4])
return 1
"""

# KEYS: profile, state. ARGV: profile, ttl. Refreshes the state's TTL with the profile's.
# Only an existing device: an erasure that won the race is not undone.
PUT_DEVICE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
"""


class RedisStore:
    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "geofence",
        device_ttl_s: int = 30 * 86_400,
        position_ttl_s: int = 86_400,
    ) -> None:
        self.client = client
        self.keys = Keys(prefix)
        self.device_ttl_s = device_ttl_s
        self.position_ttl_s = position_ttl_s
        self._save_state = client.register_script(SAVE_STATE)
        self._put_device = client.register_script(PUT_DEVICE)

    @classmethod
    def from_url(cls, url: str, *, timeout_s: float = 2.0, **kwargs: Any) -> RedisStore:
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            health_check_interval=30,
        )
        return cls(client, **kwargs)

    async def check(self) -> None:
        async with _guard():
            await self.client.ping()

    async def close(self) -> None:
        await self.client.aclose()

    # the catalogue
    async def catalogue_version(self) -> int:
        async with _guard():
            return int(await self.client.get(self.keys.catalogue_version) or 0)

    async def load_catalogue(self) -> Catalogue:
        async with _guard(), self.client.pipeline(transaction=True) as pipe:
            pipe.get(self.keys.catalogue_version)
            pipe.hgetall(self.keys.fences)
            version, raw = await pipe.execute()
        fences = sorted((_decode(v, Fence) for v in raw.values()), key=lambda f: f.id)
        return Catalogue(version=int(version or 0), fences=tuple(fences))

    async def replace_catalogue(self, fences: Sequence[Fence]) -> int:
        async with _guard(), self.client.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.fences)
            if fences:
                pipe.hset(self.keys.fences, mapping={f.id: _encode(f) for f in fences})
            pipe.incr(self.keys.catalogue_version)
            results = await pipe.execute()
        return int(results[-1])

    async def upsert_fence(self, fence: Fence) -> int:
        async with _guard(), self.client.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.fences, fence.id, _encode(fence))
            pipe.incr(self.keys.catalogue_version)
            results = await pipe.execute()
        return int(results[-1])

    async def delete_fence(self, fence_id: str) -> int | None:
        async with _guard(), self.client.pipeline(transaction=True) as pipe:
            pipe.hdel(self.keys.fences, fence_id)
            pipe.incr(self.keys.catalogue_version)
            removed, version = await pipe.execute()
        # the version moves even when nothing was removed: harmless, workers just reload
        return int(version) if removed else None

    # devices
    async def create_device(self, profile: DeviceProfile) -> bool:
        key = self.keys.profile(profile.ref)
        async with _guard():
            created = await self.client.set(key, _encode(profile), nx=True, ex=self.device_ttl_s)
        return bool(created)

    async def get_device(self, ref: str) -> DeviceProfile | None:
        async with _guard():
            raw = await self.client.get(self.keys.profile(ref))
        return None if raw is None else _decode(raw, DeviceProfile)

    async def put_device(self, profile: DeviceProfile) -> bool:
        keys = [self.keys.profile(profile.ref), self.keys.state(profile.ref)]
        async with _guard():
            written = await self._put_device(keys=keys, args=[_encode(profile), self.device_ttl_s])
        return bool(written)

    async def erase_device(self, ref: str) -> None:
        async with _guard():
            await self.client.delete(*self.keys.of_device(ref))

    async def erase_location(self, ref: str) -> None:
        async with _guard():
            await self.client.delete(self.keys.state(ref), self.keys.fix(ref))

    async def device_keys(self, ref: str) -> dict[str, float | None]:
        found: dict[str, float | None] = {}
        async with _guard():
            async for key in self.client.scan_iter(match=_escape(self.keys.device(ref)) + "*"):
                ttl = await self.client.ttl(key)
                name = key.decode() if isinstance(key, bytes) else str(key)
                found[name] = float(ttl) if ttl >= 0 else None
        return found

    # visit state
    async def load_state(self, ref: str) -> StoredState:
        async with _guard(), self.client.pipeline(transaction=False) as pipe:
            pipe.hmget(self.keys.state(ref), ["v", "s"])
            pipe.get(self.keys.fix(ref))
            (version, raw_state), raw_fix = await pipe.execute()
        state = DeviceState() if raw_state is None else _decode(raw_state, DeviceState)
        fix = None if raw_fix is None else _decode(raw_fix, Fix)
        state = msgspec.structs.replace(state, last_fix=fix)
        return StoredState(state=state, version=int(version or 0))

    async def save_state(self, ref: str, state: DeviceState, version: int) -> bool:
        keys = [self.keys.state(ref), self.keys.fix(ref), self.keys.profile(ref)]
        fix = b"" if state.last_fix is None else _encode(state.last_fix)
        body = _encode(msgspec.structs.replace(state, last_fix=None))
        args: list[bytes | int] = [version, body, fix, self.device_ttl_s, self.position_ttl_s]
        async with _guard():
            written = int(await self._save_state(keys=keys, args=args))
        if written < 0:
            raise NotFound("the device was erased")
        return bool(written)


@asynccontextmanager
async def _guard() -> AsyncIterator[None]:
    """Turn every way of Redis being unreachable into the domain's Unavailable."""
    try:
        yield
    except _REDIS_DOWN as e:
        raise Unavailable(f"state store unavailable: {type(e).__name__}") from e


_encoder = msgspec.msgpack.Encoder()


def _encode(value: Any) -> bytes:
    return _encoder.encode(value)


def _decode(raw: bytes | str, kind: type[T]) -> T:
    data = raw.encode() if isinstance(raw, str) else raw
    return msgspec.msgpack.decode(data, type=kind)


def _escape(pattern: str) -> str:
    """Escape glob characters (the hash tag's braces are literal here, but [ ] * ? are not)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in pattern)
