"""The ports the service talks through. Adapters implement them; the core knows only these."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import msgspec

from geofence.domain.devices import DeviceProfile
from geofence.domain.model import DeviceState, Fence


class Catalogue(msgspec.Struct, frozen=True, kw_only=True):
    """One consistent version of the store catalogue."""

    version: int
    fences: tuple[Fence, ...]


class StoredState(msgspec.Struct, frozen=True, kw_only=True):
    """A device's visit state with the version a compare-and-set must name to replace it."""

    state: DeviceState
    version: int


class StateStore(Protocol):
    """All durable state. Every method raises domain ``Unavailable`` when the backend is down."""

    async def check(self) -> None:
        """Return when the backend answers; raise Unavailable otherwise."""

    async def close(self) -> None: ...

    # the catalogue (contract §3)
    async def catalogue_version(self) -> int: ...

    async def load_catalogue(self) -> Catalogue: ...

    async def replace_catalogue(self, fences: Sequence[Fence]) -> int:
        """Swap the whole catalogue in one step; returns the new version."""

    async def upsert_fence(self, fence: Fence) -> int: ...

    async def delete_fence(self, fence_id: str) -> int | None:
        """The new version, or None when there was no such fence."""

    # devices (contract §4)
    async def create_device(self, profile: DeviceProfile) -> bool:
        """False when the device already exists."""

    async def get_device(self, ref: str) -> DeviceProfile | None: ...

    async def put_device(self, profile: DeviceProfile) -> bool:
        """Replace an existing device's profile, refreshing its TTLs; False (and nothing
        written) when the device does not exist, so an erased device never comes back."""

    async def erase_device(self, ref: str) -> None:
        """Remove every key of the device; idempotent."""

    async def erase_location(self, ref: str) -> None:
        """Remove the device's visit state and last position, keep its profile."""

    async def device_keys(self, ref: str) -> dict[str, float | None]:
        """Every key held for the device with its remaining TTL in seconds (None: none)."""

    # visit state (contract §5)
    async def load_state(self, ref: str) -> StoredState: ...

    async def save_state(self, ref: str, state: DeviceState, version: int) -> bool:
        """Compare-and-set: write only if the stored version is still ``version``.

        Raises NotFound when the device has no profile (it was erased meanwhile), so a
        ping racing an erasure can never bring the device's keys back.
        """


class PushGateway(Protocol):
    """Where notifications go: the HTTP push gateway, or stdout in the embedded default."""

    async def send(self, payload: dict[str, Any]) -> None: ...

    async def close(self) -> None: ...
