"""One contract, two stores: everything here runs on the memory store and on real Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

from geofence.adapters.memory import MemoryStore
from geofence.adapters.redis import COUNTS_TTL_S, DEAD_LETTER_TTL_S, Keys, RedisStore
from geofence.domain.devices import ConsentChange, DeviceProfile
from geofence.domain.errors import NotFound
from geofence.domain.model import DeviceState, Fence, Fix, Visit
from geofence.domain.offers import EntryDecision, Ledger, Notification, Offer
from geofence.ports import Receipt, StateStore, StateWrite, StoredState

SQUARE = {
    "type": "Polygon",
    "coordinates": [
        [[24.94, 60.17], [24.941, 60.17], [24.941, 60.171], [24.94, 60.171], [24.94, 60.17]]
    ],
}


def fence(fence_id: str, **kw: object) -> Fence:
    return Fence(id=fence_id, geometry=SQUARE, name=f"Store {fence_id}", **kw)  # type: ignore[arg-type]


def profile(ref: str = "ref1", **kw: object) -> DeviceProfile:
    base: dict[str, object] = {
        "ref": ref,
        "token_hash": "h" * 64,
        "consent": {"location": True, "offers": True},
        "ledger": (ConsentChange(purpose="location", granted=True, at=1.0),),
        "created_at": 1.0,
        "updated_at": 1.0,
    }
    return DeviceProfile(**{**base, **kw})  # type: ignore[arg-type]


def visit_state(ts: float = 100.0) -> DeviceState:
    visit = Visit(store_id="a", fence_rev="r1", arrived_at=ts - 10, last_inside_at=ts)
    return DeviceState(
        last_ts=ts,
        last_fix=Fix(lat=60.17, lng=24.94, ts=ts),
        last_accepted_ts=ts,
        visits={"a": visit},
        last_entry_at={"a": ts - 5},
    )


# the catalogue


async def test_empty_catalogue_has_version_zero(store: StateStore) -> None:
    assert await store.catalogue_version() == 0
    catalogue = await store.load_catalogue()
    assert catalogue.version == 0
    assert catalogue.fences == ()


async def test_replace_catalogue_swaps_everything_and_moves_version(store: StateStore) -> None:
    v1 = await store.replace_catalogue([fence("a"), fence("b")])
    v2 = await store.replace_catalogue([fence("c")])
    assert v2 > v1 > 0
    catalogue = await store.load_catalogue()
    assert catalogue.version == v2 == await store.catalogue_version()
    assert [f.id for f in catalogue.fences] == ["c"]
    assert catalogue.fences[0] == fence("c")


async def test_replace_with_nothing_empties_the_catalogue(store: StateStore) -> None:
    await store.replace_catalogue([fence("a")])
    await store.replace_catalogue([])
    assert (await store.load_catalogue()).fences == ()


async def test_upsert_and_delete_one_fence(store: StateStore) -> None:
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


# devices


async def test_create_device_once(store: StateStore) -> None:
    assert await store.create_device(profile()) is True
    assert await store.create_device(profile(tier="gold")) is False
    stored = await store.get_device("ref1")
    assert stored == profile()
    assert await store.get_device("nobody") is None


async def test_put_device_replaces_profile(store: StateStore) -> None:
    await store.create_device(profile())
    await store.put_device(profile(tier="gold", segments=("vip",)))
    stored = await store.get_device("ref1")
    assert stored is not None
    assert stored.tier == "gold"
    assert stored.segments == ("vip",)


async def test_put_device_never_brings_back_an_erased_device(store: StateStore) -> None:
    assert await store.put_device(profile()) is False
    await store.create_device(profile())
    assert await store.put_device(profile(tier="gold")) is True
    await store.erase_device("ref1")
    assert await store.put_device(profile(tier="silver")) is False
    assert await store.get_device("ref1") is None
    assert await store.device_keys("ref1") == {}


async def test_put_device_refreshes_the_ttls(store: StateStore) -> None:
    store.device_ttl_s = 100  # type: ignore[attr-defined]
    store.position_ttl_s = 50  # type: ignore[attr-defined]
    await store.create_device(profile())
    await store.save_state("ref1", visit_state(), 0)
    store.device_ttl_s = 10_000  # type: ignore[attr-defined]
    await store.put_device(profile(tier="gold"))
    ttls = sorted(t or 0 for t in (await store.device_keys("ref1")).values())
    # profile and visit state start again; the position keeps its own, shorter life
    assert len(ttls) == 3
    assert 0 < ttls[0] <= 50
    assert ttls[1] > 100
    assert ttls[2] > 100


async def test_every_device_key_has_a_ttl(store: StateStore) -> None:
    await store.create_device(profile())
    assert await store.save_state("ref1", visit_state(), 0)
    keys = await store.device_keys("ref1")
    assert len(keys) == 3
    assert all(ttl is not None and ttl > 0 for ttl in keys.values())


async def test_position_expires_sooner_than_visit_state(store: StateStore) -> None:
    store_ttls = {"device_ttl_s": 1000, "position_ttl_s": 10}
    for name, value in store_ttls.items():
        setattr(store, name, value)
    await store.create_device(profile())
    await store.save_state("ref1", visit_state(), 0)
    ttls = sorted(t for t in (await store.device_keys("ref1")).values() if t is not None)
    assert ttls[0] <= 10
    assert ttls[-1] >= 900


async def test_erase_device_removes_every_key_and_is_idempotent(store: StateStore) -> None:
    await store.create_device(profile())
    await store.save_state("ref1", visit_state(), 0)
    await store.create_device(profile("other"))
    await store.erase_device("ref1")
    await store.erase_device("ref1")
    assert await store.device_keys("ref1") == {}
    assert await store.get_device("ref1") is None
    assert (await store.load_state("ref1")).version == 0
    assert await store.get_device("other") is not None


async def test_erase_location_keeps_the_profile(store: StateStore) -> None:
    await store.create_device(profile())
    await store.save_state("ref1", visit_state(), 0)
    await store.erase_location("ref1")
    loaded = await store.load_state("ref1")
    assert loaded.state == DeviceState()
    # the version moves on, never back: a write computed before the erasure cannot land
    assert loaded.version > 1
    assert await store.save_state("ref1", visit_state(), 1) is False
    assert await store.get_device("ref1") is not None


# visit state


async def test_state_round_trip_with_compare_and_set(store: StateStore) -> None:
    await store.create_device(profile())
    empty = await store.load_state("ref1")
    assert empty.version == 0
    assert empty.state == DeviceState()
    assert await store.save_state("ref1", visit_state(100.0), 0) is True
    loaded = await store.load_state("ref1")
    assert loaded.version == 1
    assert loaded.state == visit_state(100.0)
    # a writer that read version 0 lost the race and must not overwrite
    assert await store.save_state("ref1", visit_state(200.0), 0) is False
    assert await store.save_state("ref1", visit_state(300.0), 1) is True
    final = await store.load_state("ref1")
    assert final.version == 2
    assert final.state.last_ts == 300.0


async def test_state_without_position_keeps_no_position(store: StateStore) -> None:
    await store.create_device(profile())
    state = msgspec.structs.replace(visit_state(), last_fix=None)
    await store.save_state("ref1", state, 0)
    assert (await store.load_state("ref1")).state.last_fix is None


async def test_devices_load_with_their_states_as_each_is_read_alone(store: StateStore) -> None:
    """A profile with a written state (ledger and position too), one with none yet, a ref
    with neither, an erased device, and the same ref twice."""
    ledger = Ledger(device_sent=(1.0,))
    for ref in ("written", "fresh", "erased"):
        await store.create_device(profile(ref))
    await store.save_state("written", visit_state(100.0), 0, ledger=ledger)
    await store.save_state("erased", visit_state(100.0), 0)
    await store.erase_device("erased")
    refs = ["written", "fresh", "unknown", "erased", "written"]
    together = await store.load_devices(refs)
    alone = list(zip(await store.get_devices(refs), await store.load_states(refs), strict=True))
    assert together == alone
    assert together[0][0] == profile("written")
    assert together[0][1].state == visit_state(100.0)
    assert together[0][1].ledger == ledger
    assert together[1][1].version == 0
    assert together[2] == (None, together[1][1])
    assert await store.load_devices([]) == []


async def test_save_then_load_reads_what_it_wrote(store: StateStore) -> None:
    """A flush's write and the next flush's read in one call: the read sees the write,
    a lost write and an erased device answer as ``save_states`` does, either half may be
    empty."""
    for ref in ("a", "b", "gone"):
        await store.create_device(profile(ref))
    await store.save_state("b", visit_state(50.0), 0)
    await store.erase_device("gone")
    writes = [
        StateWrite(ref="a", state=visit_state(100.0), version=0),
        StateWrite(ref="b", state=visit_state(100.0), version=0),  # b is at version 1
        StateWrite(ref="gone", state=visit_state(100.0), version=0),
    ]
    saved, loaded = await store.save_then_load(writes, ["a", "b", "new", "a"])
    assert saved == ["written", "conflict", "gone"]
    assert loaded == await store.load_devices(["a", "b", "new", "a"])
    assert loaded[0] == (profile("a"), StoredState(state=visit_state(100.0), version=1))
    assert loaded[1][1].state == visit_state(50.0)
    assert loaded[2][0] is None
    later = [StateWrite(ref="a", state=visit_state(150.0), version=1)]
    assert await store.save_then_load(later, []) == (["written"], [])
    assert await store.save_then_load([], ["a"]) == ([], await store.load_devices(["a"]))
    assert await store.save_then_load([], []) == ([], [])


@pytest.mark.redis
async def test_redis_keys_of_a_device_share_one_hash_tag(redis_store_factory: object) -> None:
    store: RedisStore = await redis_store_factory()  # type: ignore[operator]
    await store.create_device(profile())
    await store.save_state("ref1", visit_state(), 0)
    await store.save_state("ref1", visit_state(200.0), 1, outbox=[notification("n1")])
    keys = list(await store.device_keys("ref1"))
    assert len(keys) == 4  # profile, state, position, pending notifications
    tags = {k[k.index("{") : k.index("}") + 1] for k in keys}
    shard = store.keys.shard_of("ref1")
    assert tags == {f"{{s{shard}}}"}
    # the outbox the same script writes shares the tag
    assert all(f"{{s{shard}}}" in k for k in store.keys.outbox(shard))


# offers, ledger, outbox, budgets, counters (contract §6)


def notification(nid: str, ref: str = "ref1", created_at: float = 1_000.0) -> Notification:
    return Notification(
        notification_id=nid,
        device_ref=ref,
        offer_id="o1",
        store_id="a",
        title="Hi",
        body="At Store a",
        created_at=created_at,
        expires_at=created_at + 3_600,
    )


def offer(offer_id: str = "o1", **kw: object) -> Offer:
    base: dict[str, object] = {
        "id": offer_id,
        "title": "T",
        "body": "B",
        "store_ids": ("a",),
        "starts_at": 0.0,
        "ends_at": 2e9,
    }
    return Offer(**{**base, **kw})  # type: ignore[arg-type]


async def test_offers_round_trip(store: StateStore) -> None:
    assert await store.put_offer(offer("o2")) is True
    assert await store.put_offer(offer("o1", priority=3)) is True
    assert await store.put_offer(offer("o1", priority=5)) is False
    assert [o.id for o in await store.list_offers()] == ["o1", "o2"]
    assert await store.get_offer("o1") == offer("o1", priority=5)
    assert await store.delete_offer("o1") is True
    assert await store.delete_offer("o1") is False
    assert await store.get_offer("o1") is None


async def test_budget_is_never_overspent_and_never_negative(store: StateStore) -> None:
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


async def test_deleting_an_offer_forgets_its_budget(store: StateStore) -> None:
    await store.put_offer(offer("o1", budget=1))
    await store.reserve_budget("o1", 1)
    await store.delete_offer("o1")
    assert await store.budget_spent(["o1"]) == {"o1": 0}


async def test_ledger_is_written_with_the_state(store: StateStore) -> None:
    await store.create_device(profile())
    ledger = Ledger(device_sent=(5.0,), per_offer_sent={"o1": (5.0,)})
    assert await store.save_state("ref1", visit_state(), 0, ledger=ledger)
    assert (await store.load_state("ref1")).ledger == ledger
    # None leaves it alone
    assert await store.save_state("ref1", visit_state(200.0), 1)
    assert (await store.load_state("ref1")).ledger == ledger
    # a lost compare-and-set writes no ledger
    assert not await store.save_state("ref1", visit_state(), 0, ledger=Ledger())
    assert (await store.load_state("ref1")).ledger == ledger


async def test_erase_location_keeps_the_ledger(store: StateStore) -> None:
    await store.create_device(profile())
    decision = EntryDecision(
        store_id="a", entry_at=1.0, decided_at=2.0, device_refused=None, considered=[]
    )
    ledger = Ledger(device_sent=(5.0,), decisions=(decision,))
    await store.save_state("ref1", visit_state(), 0, ledger=ledger)
    await store.erase_location("ref1")
    assert (await store.load_state("ref1")).ledger == ledger


async def test_redis_claims_take_the_outbox_shards_in_turn(redis_store_factory: Any) -> None:
    """A shard with many items due does not keep the others waiting: each claim starts
    at the shard after the last one it served."""
    store = await redis_store_factory()
    by_shard = {Keys.shard_of(f"ref{i}"): f"ref{i}" for i in range(40)}
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


async def test_counters_sum_over_buckets(store: StateStore) -> None:
    await store.add_counts(0, {"entries|store|a": 2, "entries|offer|o1": 1})
    await store.add_counts(3_600, {"entries|store|a": 1})
    await store.add_counts(7_200, {"entries|store|b": 5})
    assert await store.read_counts([0, 3_600]) == {"entries|store|a": 3, "entries|offer|o1": 1}
    assert await store.read_counts([]) == {}


async def test_redis_counters_are_added_atomically_and_kept_a_while(
    redis_store_factory: Any,
) -> None:
    store = await redis_store_factory()
    await asyncio.gather(*(store.add_counts(0, {"a": 1, "b": 2}) for _ in range(20)))
    assert await store.read_counts([0]) == {"a": 20, "b": 40}
    ttl = await store.client.ttl(store.keys.counts(0))
    assert COUNTS_TTL_S - 60 < ttl <= COUNTS_TTL_S


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


async def test_an_erased_device_is_not_dead_lettered(store: StateStore) -> None:
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


async def test_receipts_count_once_per_event(store: StateStore) -> None:
    target = Receipt(notification_id="n1", store_id="a", offer_id="o1")
    with pytest.raises(NotFound):
        await store.record_receipt("n1", "delivered", 10.0)
    await store.expect_receipts(target)
    await store.expect_receipts(target)
    assert await store.record_receipt("n1", "delivered", 10.0) == target
    assert await store.record_receipt("n1", "delivered", 11.0) is None
    assert await store.record_receipt("n1", "opened", 12.0) == target


# dead letters and outbox items expire and go with their device


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def _dead_lettered(store: StateStore, nid: str = "n1", ref: str = "ref1") -> None:
    """A device with one notification claimed and dead-lettered (rejected)."""
    if await store.get_device(ref) is None:
        await store.create_device(profile(ref))
    version = (await store.load_state(ref)).version
    await store.save_state(ref, visit_state(), version, outbox=[notification(nid, ref)])
    [item] = [i for i in await store.claim_outbox(5_000.0, 30, 10) if i.id == nid]
    await store.dead_letter(item, "rejected", 5_001.0)


async def test_withdrawing_offers_erases_the_notifications_and_dead_letters(
    store: StateStore,
) -> None:
    await _dead_lettered(store, "n1")
    await store.save_state("ref1", visit_state(), 1, outbox=[notification("n2")])
    await _dead_lettered(store, "n3", "ref2")
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
    await _dead_lettered(store, "n1")
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
    redis_store_factory: Any,
) -> None:
    """Each dead letter is a key of its own with the TTL; the outbox and the index of dead
    letters expire the TTL after their last write, and the pending ids no sooner."""
    store = await redis_store_factory(dead_letter_ttl_s=500, device_ttl_s=100)
    await _dead_lettered(store, "n1")
    await store.save_state("ref1", visit_state(), 1, outbox=[notification("n2")])
    shard = Keys.shard_of("ref1")
    letter = store.keys.letter(shard, "n1")
    outbox_and_index = [*store.keys.outbox(shard), store.keys.dead(shard)]
    for key in [letter, *outbox_and_index, store.keys.pending("ref1")]:
        assert 490 < await store.client.ttl(key) <= 500, key
    # with a TTL of one second, nothing is left a moment later
    store.dead_letter_ttl_s = 1
    await _dead_lettered(store, "n3", "ref2")
    await asyncio.sleep(1.2)
    assert [d.item.id for d in await store.dead_letters(10)] == ["n1"]
    assert await store.client.exists(store.keys.letter(Keys.shard_of("ref2"), "n3")) == 0


async def test_redis_pending_ids_live_as_long_as_the_profile(redis_store_factory: Any) -> None:
    """A profile refreshed by a patch keeps the ids erasure needs to find its notifications."""
    store = await redis_store_factory(device_ttl_s=100, dead_letter_ttl_s=50)
    await _dead_lettered(store, "n1")
    store.device_ttl_s = 10_000
    await store.put_device(profile(tier="gold"))
    assert await store.client.ttl(store.keys.pending("ref1")) > 9_000
