"""Replay a trace offline through the very service HTTP drives.

"Now" is the latest ts seen so far, so a replay of old pings gives the events the service
gave when they arrived live; pings go one by one, in file order, as they would arrive,
through ``PingService.handle``. The service and its store are built outside (``geofence
replay`` builds them in memory, ``bootstrap.replay_service``).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterable
from typing import Any

import msgspec

from geofence.domain.devices import DeviceProfile, device_ref
from geofence.domain.model import Ping
from geofence.domain.times import with_times
from geofence.ports import DeviceStore
from geofence.service.pings import PingService


def _replayed(ref: str) -> DeviceProfile:
    """A device of the trace, with location consent (the trace was recorded with it)."""
    return DeviceProfile(ref=ref, token_hash="", consent={"location": True, "offers": True})


async def replay(
    service: PingService, devices: DeviceStore, trace: Iterable[tuple[str, Ping]]
) -> AsyncIterator[dict[str, Any]]:
    """Every event of the trace's (device id, ping) pairs, as the service answers it (times
    in RFC 3339), with its device_id. Each device of the trace is made in ``devices``
    (the service's store) the first time it is seen."""
    secret = secrets.token_bytes(16)  # pseudonyms for this run only, as in the service
    latest = float("-inf")
    known: set[str] = set()
    for device_id, ping in trace:
        latest = max(latest, ping.ts)
        ref = device_ref(device_id, secret)
        if ref not in known:
            known.add(ref)
            await devices.create_device(_replayed(ref))
        [result] = await service.handle(ref, [ping], now=latest)
        for event in result.events:
            yield with_times({"device_id": device_id, **msgspec.to_builtins(event)})
