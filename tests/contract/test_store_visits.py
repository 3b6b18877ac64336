"""The state store's VisitStore role: visit state and ledger, compared-and-set (contract §5).

One contract, two stores: every test here runs on the memory store and on real Redis
(the ``store`` fixture of tests/conftest.py)."""

from __future__ import annotations

import msgspec

from geofence.domain.model import DeviceState
from geofence.domain.offers import EntryDecision, Ledger
from geofence.ports import StateStore, StateWrite, StoredState
from tests.contract.store_builders import (
    profile,
    visit_state,
)


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
