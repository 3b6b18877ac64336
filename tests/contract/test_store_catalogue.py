"""The state store's CatalogueStore role: the catalogue (contract §3).

One contract, two stores: every test here runs on the memory store and on real Redis
(the ``store`` fixture of tests/conftest.py)."""

from __future__ import annotations

from typing import Any

import pytest

from geofence.domain.errors import BackendUnavailable
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
