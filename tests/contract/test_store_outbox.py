"""The state store's Outbox role: the outbox, dead letters and receipts (contract §6,
delivery); they expire and go with their device.

One contract, two stores: every test here runs on the memory store and on real Redis
(the ``store`` fixture of tests/conftest.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

from geofence.adapters.memory import MemoryStore
from geofence.adapters.redis import DEAD_LETTER_TTL_S
from geofence.domain.errors import NotFound
from geofence.ports import Outbox, Receipt, StateStore
from tests.contract.store_builders import (
    Clock,
    dead_lettered,
    notification,
    profile,
    visit_state,
)


async def test_redis_claims_take_the_outbox_shards_in_turn(any_redis_factory: Any) -> None:
    """A shard with many items due does not keep the others waiting: each claim starts
    at the shard after the last one it served."""
    store = await any_redis_factory()
    by_shard = {store.keys.shard_of(f"ref{i}"): f"ref{i}" for i in range(40)}
    refs = [by_shard[shard] for shard in sorted(by_shard)[:4]]
    for ref in refs:
        await store.create_device(profile(ref))
        outbox = [notification(f"{ref}-n{k}", ref) for k in range(3)]
        await store.save_state(ref, visit_state(), 0, outbox=outbox)
    served = [(await store.claim_outbox(5_000.0, 30, 1))[0].device_ref for _ in range(8)]
    assert served == refs * 2
    rest = await store.claim_outbox(5_000.0, 30, 10)
    assert sorted(i.id for i in rest) == sorted(f"{ref}-n2" for ref in refs)
    assert await store.claim_outbox(5_000.0, 30, 10) == []  # all leased


async def test_outbox_claim_lease_retry_settle(store: StateStore) -> None:
    await store.create_device(profile())
    await store.create_device(profile("ref2"))
    await store.save_state("ref1", visit_state(), 0, outbox=[notification("n1")])
    await store.save_state("ref2", visit_state(), 0, outbox=[notification("n2", "ref2", 1_001.0)])
    assert await store.outbox_depth() == 2
    assert await store.claim_outbox(999.0, 30, 10) == []  # not due yet
    claimed = await store.claim_outbox(1_001.0, 30, 10)
    assert sorted(i.id for i in claimed) == ["n1", "n2"]
    assert await store.claim_outbox(1_020.0, 30, 10) == []  # leased
    again = await store.claim_outbox(1_031.0, 30, 1)  # the lease ran out: back again
    assert len(again) == 1
    item = msgspec.structs.replace(again[0], attempts=1, last_error="http-500")
    await store.retry_later(item, 2_000.0)
    # the other one's lease ran out too; the retried one waits for its time
    assert [i.id for i in await store.claim_outbox(1_999.0, 30, 10)] == [
        i.id for i in claimed if i.id != item.id
    ]
    retried = [i for i in await store.claim_outbox(2_000.0, 30, 10) if i.id == item.id]
    assert retried == [item]
    await store.settle(item)
    assert await store.outbox_depth() == 1


async def test_erasure_removes_pending_notifications(store: StateStore) -> None:
    await store.create_device(profile())
    await store.create_device(profile("ref2"))
    await store.save_state("ref1", visit_state(), 0, outbox=[notification("n1")])
    await store.save_state("ref2", visit_state(), 0, outbox=[notification("n2", "ref2")])
    await store.erase_device("ref1")
    assert [i.id for i in await store.claim_outbox(5_000.0, 30, 10)] == ["n2"]
    assert await store.outbox_depth() == 1
    assert await store.device_keys("ref1") == {}


async def test_an_erased_device_is_not_rescheduled(store: StateStore) -> None:
    await store.create_device(profile())
    await store.save_state("ref1", visit_state(), 0, outbox=[notification("n1")])
    [item] = await store.claim_outbox(5_000.0, 30, 10)
    await store.erase_device("ref1")
    await store.retry_later(item, 6_000.0)
    assert await store.outbox_depth() == 0


async def test_dead_letters_are_kept_listed_requeued_and_retired(store: StateStore) -> None:
    await store.create_device(profile())
    await store.save_state(
        "ref1", visit_state(), 0, outbox=[notification("n1"), notification("n2")]
    )
    [first, second] = sorted(await store.claim_outbox(5_000.0, 30, 10), key=lambda i: i.id)
    await store.dead_letter(first, "rejected", 5_001.0)
    await store.dead_letter(second, "expired", 5_002.0)
    assert await store.outbox_depth() == 0
    letters = await store.dead_letters(10)
    assert [(d.item.id, d.reason) for d in letters] == [("n2", "expired"), ("n1", "rejected")]
    expired = await store.requeue("n2", 1_000.0 + 3_600)  # n2 expires at 4600
    assert expired is not None
    assert expired.reason == "expired"
    assert [d.item.id for d in await store.dead_letters(10)] == ["n2", "n1"]  # still there
    requeued = await store.requeue("n1", 4_000.0)
    assert requeued is not None
    assert requeued.item == first
    assert await store.requeue("n1", 4_000.0) is None
    assert await store.requeue("nope", 6_000.0) is None
    assert await store.claim_outbox(4_000.0, 30, 10) == [first]
    # a TTL later the old ones are gone
    await store.dead_letter(first, "rejected", 5_002.0 + DEAD_LETTER_TTL_S)
    assert [d.item.id for d in await store.dead_letters(10)] == ["n1"]


async def test_an_erased_device_is_notdead_lettered(store: StateStore) -> None:
    await store.create_device(profile())
    await store.save_state("ref1", visit_state(), 0, outbox=[notification("n1")])
    [item] = await store.claim_outbox(5_000.0, 30, 10)
    await store.erase_device("ref1")
    await store.dead_letter(item, "rejected", 5_001.0)
    assert await store.dead_letters(10) == []


async def test_erasure_removes_dead_letters_too(store: StateStore) -> None:
    await store.create_device(profile())
    await store.save_state("ref1", visit_state(), 0, outbox=[notification("n1")])
    [item] = await store.claim_outbox(5_000.0, 30, 10)
    await store.dead_letter(item, "rejected", 5_001.0)
    await store.erase_device("ref1")
    assert await store.dead_letters(10) == []


async def test_receipts_count_once_per_event(store: Outbox) -> None:
    target = Receipt(notification_id="n1", store_id="a", offer_id="o1")
    with pytest.raises(NotFound):
        await store.record_receipt("n1", "delivered", 10.0)
    await store.expect_receipts(target)
    await store.expect_receipts(target)
    assert await store.record_receipt("n1", "delivered", 10.0) == target
    assert await store.record_receipt("n1", "delivered", 11.0) is None
    assert await store.record_receipt("n1", "opened", 12.0) == target


async def test_withdrawing_offers_erases_the_notifications_and_dead_letters(
    store: StateStore,
) -> None:
    await dead_lettered(store, "n1")
    await store.save_state("ref1", visit_state(), 1, outbox=[notification("n2")])
    await dead_lettered(store, "n3", "ref2")
    await store.erase_notifications("ref1")
    await store.erase_notifications("ref1")
    assert [d.item.id for d in await store.dead_letters(10)] == ["n3"]
    assert await store.outbox_depth() == 0
    assert await store.requeue("n1", 4_000.0) is None
    # the device itself stays, with its state
    assert await store.get_device("ref1") is not None
    assert (await store.load_state("ref1")).version == 2


async def test_no_push_token_is_kept_in_the_outbox_or_dead_letters(store: StateStore) -> None:
    await store.create_device(profile())
    await store.save_state("ref1", visit_state(), 0, outbox=[notification("n1")])
    [item] = await store.claim_outbox(5_000.0, 30, 10)
    with_token = msgspec.structs.replace(item.notification, push_token="secret-push-token")
    item = msgspec.structs.replace(item, notification=with_token)
    await store.retry_later(item, 5_000.0)
    [again] = await store.claim_outbox(5_000.0, 30, 10)
    assert again.notification.push_token is None
    await store.dead_letter(item, "rejected", 5_001.0)
    [letter] = await store.dead_letters(10)
    assert letter.item.notification.push_token is None


async def test_memory_dead_letters_and_outbox_items_expire_after_the_ttl() -> None:
    clock = Clock()
    store = MemoryStore(dead_letter_ttl_s=100, clock=clock)
    await dead_lettered(store, "n1")
    await store.save_state("ref1", visit_state(), 1, outbox=[notification("n2")])
    clock.now += 99
    assert [d.item.id for d in await store.dead_letters(10)] == ["n1"]
    assert await store.outbox_depth() == 1
    clock.now += 1
    assert await store.dead_letters(10) == []
    assert await store.outbox_depth() == 0
    assert await store.claim_outbox(9_000.0, 30, 10) == []
    assert await store.requeue("n1", 4_000.0) is None


async def test_redis_dead_letters_and_outbox_keys_expire_after_the_ttl(
    any_redis_factory: Any,
) -> None:
    """Each dead letter is a key of its own with the TTL; the outbox and the index of dead
    letters expire the TTL after their last write, and the pending ids no sooner."""
    store = await any_redis_factory(dead_letter_ttl_s=500, device_ttl_s=100)
    await dead_lettered(store, "n1")
    await store.save_state("ref1", visit_state(), 1, outbox=[notification("n2")])
    shard = store.keys.shard_of("ref1")
    letter = store.keys.letter(shard, "n1")
    outbox_and_index = [*store.keys.outbox(shard), store.keys.dead(shard)]
    for key in [letter, *outbox_and_index, store.keys.pending("ref1")]:
        assert 490 < await store.client.ttl(key) <= 500, key
    # with a TTL of one second, nothing is left a moment later
    store.dead_letter_ttl_s = 1
    await dead_lettered(store, "n3", "ref2")
    await asyncio.sleep(1.2)
    assert [d.item.id for d in await store.dead_letters(10)] == ["n1"]
    assert await store.client.exists(store.keys.letter(store.keys.shard_of("ref2"), "n3")) == 0
