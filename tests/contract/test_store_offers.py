"""The state store's OfferStore role: offers and their budgets (contract §6).

One contract, two stores: every test here runs on the memory store and on real Redis
(the ``store`` fixture of tests/conftest.py)."""

from __future__ import annotations

from geofence.ports import OfferStore
from tests.contract.store_builders import (
    offer,
)


async def test_offers_round_trip(store: OfferStore) -> None:
    assert await store.put_offer(offer("o2")) is True
    assert await store.put_offer(offer("o1", priority=3)) is True
    assert await store.put_offer(offer("o1", priority=5)) is False
    assert [o.id for o in await store.list_offers()] == ["o1", "o2"]
    assert await store.get_offer("o1") == offer("o1", priority=5)
    assert await store.delete_offer("o1") is True
    assert await store.delete_offer("o1") is False
    assert await store.get_offer("o1") is None


async def test_budget_is_never_overspent_and_never_negative(store: OfferStore) -> None:
    assert await store.reserve_budget("o1", 2) is True
    assert await store.reserve_budget("o1", 2) is True
    assert await store.reserve_budget("o1", 2) is False
    assert await store.budget_spent(["o1", "o2"]) == {"o1": 2, "o2": 0}
    await store.release_budget("o1")
    assert await store.reserve_budget("o1", 2) is True
    for _ in range(4):
        await store.release_budget("o2")
    assert await store.budget_spent(["o2"]) == {"o2": 0}
    # a lowered budget refuses at once, a raised one frees units
    assert await store.reserve_budget("o1", 1) is False
    assert await store.reserve_budget("o1", 3) is True


async def test_deleting_an_offer_forgets_its_budget(store: OfferStore) -> None:
    await store.put_offer(offer("o1", budget=1))
    await store.reserve_budget("o1", 1)
    await store.delete_offer("o1")
    assert await store.budget_spent(["o1"]) == {"o1": 0}
