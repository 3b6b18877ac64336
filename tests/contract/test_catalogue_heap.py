"""A catalogue installed is announced, and ``serve`` takes it out of the collector's sight."""

from __future__ import annotations

import gc

from geofence import bootstrap
from geofence.adapters.memory import MemoryStore
from geofence.cli import settle_heap
from geofence.config import Settings
from geofence.metrics import Metrics
from tests.contract.test_pings_service import FENCES


async def test_each_catalogue_installed_is_announced() -> None:
    store = MemoryStore()
    await store.replace_catalogue(FENCES)
    catalogue = bootstrap.catalogue_service(Settings(stores=""), store, Metrics())
    installed: list[int] = []
    catalogue.on_installed = lambda: installed.append(len(catalogue.index))
    await catalogue.start()
    await store.replace_catalogue(FENCES[:1])
    assert await catalogue.refresh()
    assert not await catalogue.refresh()  # the same version: nothing new installed
    assert installed == [2, 1]


def test_settling_the_heap_freezes_what_is_alive() -> None:
    gc.unfreeze()
    try:
        settle_heap()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
