"""The in-process state store: the embedded default and the fast test double.

Single process only, and nothing survives a restart. TTLs follow the same rules as the
Redis store (checked against an injectable clock on every read), so the contract suite
can hold both to the same behaviour.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import msgspec

from geofence.domain.devices import DeviceProfile
from geofence.domain.errors import NotFound
from geofence.domain.model import DeviceState, Fence, Fix
from geofence.ports import Catalogue, StoredState

T = TypeVar("T")
Clock = Callable[[], float]


class _Expiring(Generic[T]):
    """A dict whose entries vanish ``ttl_s`` after they were last written."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._items: dict[str, tuple[T, float]] = {}

    def get(self, key: str) -> T | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[1] <= self._clock():
            del self._items[key]
            return None
        return item[0]

    def set(self, key: str, value: T, ttl_s: float) -> None:
        self._items[key] = (value, self._clock() + ttl_s)

    def touch(self, key: str, ttl_s: float) -> None:
        value = self.get(key)
        if value is not None:
            self.set(key, value, ttl_s)

    def ttl(self, key: str) -> float | None:
        if self.get(key) is None:
            return None
        return self._items[key][1] - self._clock()

    def pop(self, key: str) -> None:
        self._items.pop(key, None)


class MemoryStore:
    def __init__(
        self,
        *,
        device_ttl_s: float = 30 * 86_400,
        position_ttl_s: float = 86_400,
        clock: Clock = time.time,
    ) -> None:
        self.device_ttl_s = device_ttl_s
        self.position_ttl_s = position_ttl_s
        self._fences: dict[str, Fence] = {}
        self._version = 0
        self._profiles: _Expiring[DeviceProfile] = _Expiring(clock)
        self._states: _Expiring[tuple[DeviceState, int]] = _Expiring(clock)
        self._fixes: _Expiring[Fix] = _Expiring(clock)

    async def check(self) -> None:
        return None

    async def close(self) -> None:
        return None

    # the catalogue
    async def catalogue_version(self) -> int:
        return self._version

    async def load_catalogue(self) -> Catalogue:
        fences = tuple(self._fences[k] for k in sorted(self._fences))
        return Catalogue(version=self._version, fences=fences)

    async def replace_catalogue(self, fences: Sequence[Fence]) -> int:
        self._fences = {f.id: f for f in fences}
        self._version += 1
        return self._version

    async def upsert_fence(self, fence: Fence) -> int:
        self._fences[fence.id] = fence
        self._version += 1
        return self._version

    async def delete_fence(self, fence_id: str) -> int | None:
        if self._fences.pop(fence_id, None) is None:
            return None
        self._version += 1
        return self._version

    # devices
    async def create_device(self, profile: DeviceProfile) -> bool:
        if self._profiles.get(profile.ref) is not None:
            return False
        self._profiles.set(profile.ref, profile, self.device_ttl_s)
        return True

    async def get_device(self, ref: str) -> DeviceProfile | None:
        return self._profiles.get(ref)

    async def put_device(self, profile: DeviceProfile) -> bool:
        if self._profiles.get(profile.ref) is None:
            return False
        self._profiles.set(profile.ref, profile, self.device_ttl_s)
        self._states.touch(profile.ref, self.device_ttl_s)
        return True

    async def erase_device(self, ref: str) -> None:
        for table in (self._profiles, self._states, self._fixes):
            table.pop(ref)

    async def erase_location(self, ref: str) -> None:
        self._states.pop(ref)
        self._fixes.pop(ref)

    async def device_keys(self, ref: str) -> dict[str, float | None]:
        ttls = {
            "profile": self._profiles.ttl(ref),
            "state": self._states.ttl(ref),
            "fix": self._fixes.ttl(ref),
        }
        return {name: ttl for name, ttl in ttls.items() if ttl is not None}

    # visit state
    async def load_state(self, ref: str) -> StoredState:
        stored = self._states.get(ref)
        state, version = stored if stored is not None else (DeviceState(), 0)
        return StoredState(state=_with_fix(state, self._fixes.get(ref)), version=version)

    async def save_state(self, ref: str, state: DeviceState, version: int) -> bool:
        if self._profiles.get(ref) is None:
            raise NotFound("the device was erased")
        stored = self._states.get(ref)
        if (stored[1] if stored is not None else 0) != version:
            return False
        self._states.set(ref, (_with_fix(state, None), version + 1), self.device_ttl_s)
        if state.last_fix is not None:
            self._fixes.set(ref, state.last_fix, self.position_ttl_s)
        self._profiles.touch(ref, self.device_ttl_s)
        return True


def _with_fix(state: DeviceState, fix: Fix | None) -> DeviceState:
    """The position lives apart from the visit state so that it can expire sooner."""
    return state if state.last_fix == fix else msgspec.structs.replace(state, last_fix=fix)
