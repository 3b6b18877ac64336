"""The state store's CatalogueStore role: the catalogue (contract §3).

One contract, two stores: every test here runs on the memory store and on real Redis
(the ``store`` fixture of tests/conftest.py)."""

from __future__ import annotations

from typing import Any

import pytest

from geofence.adapters.redis import RedisStore
from geofence.domain.errors import BackendUnavailable
from geofence.domain.model import Fence
from geofence.ports import CatalogueStore, StateWrite
from tests.contract.store_builders import (
    fence,
    visit_state,
)


async def test_empty_catalogue_has_version_zero(store: CatalogueStore) -> None:
    assert await store.catalogue_version() == 0
    catalogue = await store.load_catalogue()
    assert catalogue.version == 0
    assert catalogue.fences == ()


async def test_replace_catalogue_swaps_everything_and_moves_version(store: CatalogueStore) -> None:
    v1 = await store.replace_catalogue([fence("a"), fence("b")])
    v2 = await store.replace_catalogue([fence("c")])
    assert v2 > v1 > 0
    catalogue = await store.load_catalogue()
    assert catalogue.version == v2 == await store.catalogue_version()
    assert [f.id for f in catalogue.fences] == ["c"]
    assert catalogue.fences[0] == fence("c")


async def test_replace_with_nothing_empties_the_catalogue(store: CatalogueStore) -> None:
    await store.replace_catalogue([fence("a")])
    await store.replace_catalogue([])
    assert (await store.load_catalogue()).fences == ()


async def test_upsert_and_delete_one_fence(store: CatalogueStore) -> None:
    await store.replace_catalogue([fence("a")])
    v = await store.upsert_fence(fence("b", tags=("food",)))
    await store.upsert_fence(fence("a", margin_m=5.0))
    fences = {f.id: f for f in (await store.load_catalogue()).fences}
    assert fences["a"].margin_m == 5.0
    assert fences["b"].tags == ("food",)
    deleted = await store.delete_fence("a")
    assert deleted is not None
    assert deleted > v
    assert await store.delete_fence("a") is None
    assert [f.id for f in (await store.load_catalogue()).fences] == ["b"]


async def test_one_fence_is_read_alone(store: CatalogueStore) -> None:
    await store.replace_catalogue([fence("a"), fence("b", tags=("food",))])
    assert await store.load_fence("b") == fence("b", tags=("food",))
    assert await store.load_fence("zz") is None
    await store.delete_fence("b")
    assert await store.load_fence("b") is None


@pytest.mark.redis
async def test_a_closed_redis_store_answers_unavailable(any_redis_factory: Any) -> None:
    """A task still polling after the store closed (the catalogue's watch, at shutdown)
    gets a 503, not a connection of the client's reopened that nothing would close."""
    store = await any_redis_factory()
    await store.replace_catalogue([fence("a")])
    await store.close()
    with pytest.raises(BackendUnavailable, match="closed"):
        await store.catalogue_version()
    with pytest.raises(BackendUnavailable, match="closed"):
        await store.load_catalogue()
    with pytest.raises(BackendUnavailable, match="closed"):
        await store.save_states([StateWrite(ref="ref1", state=visit_state(), version=0)])


async def test_a_catalogue_of_many_pages_loads_whole_and_in_order(store: CatalogueStore) -> None:
    ids = [f"store-{n:05d}" for n in range(2_500)]  # HSCAN pages of about 1,000
    version = await store.replace_catalogue([fence(i) for i in reversed(ids)])
    catalogue = await store.load_catalogue()
    assert catalogue.version == version
    assert [f.id for f in catalogue.fences] == ids


@pytest.mark.redis
async def test_a_change_during_a_paged_read_is_read_again(
    any_redis_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store: RedisStore = await any_redis_factory()
    await store.replace_catalogue([fence("a"), fence("b")])
    read = store._fences  # noqa: SLF001 - the pages' read, a change slipped in after it
    changes = iter([[fence("c")]])

    async def changed_meanwhile() -> dict[str, Fence]:
        fences = await read()
        for change in changes:  # the first read only: a catalogue replaced under it
            await store.replace_catalogue(change)
        return fences

    monkeypatch.setattr(store, "_fences", changed_meanwhile)
    catalogue = await store.load_catalogue()
    assert [f.id for f in catalogue.fences] == ["c"]
    assert catalogue.version == await store.catalogue_version()


@pytest.mark.redis
async def test_a_catalogue_that_keeps_changing_is_unavailable(
    any_redis_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store: RedisStore = await any_redis_factory()
    read = store._fences  # noqa: SLF001 - the pages' read, a change slipped in after it

    async def always_changed() -> dict[str, Fence]:
        fences = await read()
        await store.upsert_fence(fence("a"))
        return fences

    monkeypatch.setattr(store, "_fences", always_changed)
    with pytest.raises(BackendUnavailable, match="kept changing"):
        await store.load_catalogue()
