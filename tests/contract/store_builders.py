"""What the state-store contract tests (tests/contract/test_store_*.py) build their data from."""

from __future__ import annotations

from geofence.domain.devices import ConsentChange, DeviceProfile
from geofence.domain.model import DeviceState, Fence, Fix, Visit
from geofence.domain.offers import Notification, Offer
from geofence.ports import StateStore

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


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def dead_lettered(store: StateStore, nid: str = "n1", ref: str = "ref1") -> None:
    """A device with one notification claimed and dead-lettered (rejected)."""
    if await store.get_device(ref) is None:
        await store.create_device(profile(ref))
    version = (await store.load_state(ref)).version
    await store.save_state(ref, visit_state(), version, outbox=[notification(nid, ref)])
    [item] = [i for i in await store.claim_outbox(5_000.0, 30, 10) if i.id == nid]
    await store.dead_letter(item, "rejected", 5_001.0)
