"""Whether the state survives a restart of Redis: what ``/readyz`` and the start-up log say.

Durability depends on how Redis runs (README, "Durability"): with persistence off, a
Redis restart loses the outbox, the dead letters, every device's state and the stats.
"""

from __future__ import annotations

import logging

from geofence.domain.errors import Unavailable
from geofence.ports import Backend, Persistence

logger = logging.getLogger(__name__)

PERSISTENCE_OFF = (
    "Redis persistence is off (appendonly no, no save points): a Redis restart loses the "
    "outbox, the dead letters and all device state; run Redis with --appendonly yes "
    "--appendfsync everysec"
)


def warnings_of(persistence: Persistence) -> list[str]:
    """What an operator should hear about it: only that persistence is off."""
    return [PERSISTENCE_OFF] if persistence == "off" else []


async def log_persistence(store: Backend) -> None:
    """One line at start: a WARNING when persistence is off, INFO when it cannot be told;
    nothing when the store does not answer yet (``/readyz`` says so)."""
    try:
        persistence = await store.persistence()
    except Unavailable:
        return
    for warning in warnings_of(persistence):
        logger.warning(warning)
    if persistence == "unknown":
        logger.info("Redis persistence unknown: CONFIG GET refused (managed Redis?)")
