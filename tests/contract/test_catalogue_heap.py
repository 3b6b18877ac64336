"""A catalogue installed is announced, and ``serve`` takes it out of the collector's sight."""

from __future__ import annotations

import gc

from geofence import bootstrap
from geofence.adapters.memory import MemoryStore
from geofence.cli import prebuilt_catalogue, settle_heap
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


async def test_an_adopted_index_is_not_built_again() -> None:
    """A worker adopts the index its parent built before the fork: starting finds that
    version in and builds nothing; a later version it builds for itself."""
    store = MemoryStore()
    await store.replace_catalogue(FENCES)
    parent = bootstrap.catalogue_service(Settings(stores=""), store, Metrics())
    await parent.start()
    assert parent.loaded is not None
    worker = bootstrap.catalogue_service(Settings(stores=""), store, Metrics())
    worker.adopt(parent.loaded)
    installed: list[int] = []
    worker.on_installed = lambda: installed.append(len(worker.index))
    await worker.start()
    assert worker.index is parent.index
    assert installed == []
    await store.replace_catalogue(FENCES[:1])
    assert await worker.refresh()
    assert installed == [1]


def test_the_catalogue_is_built_before_the_workers_are_forked() -> None:
    loaded = prebuilt_catalogue(Settings(stores="stores.geojson"))
    assert loaded is not None
    assert loaded.version == 1
    assert len(loaded.index) > 100
