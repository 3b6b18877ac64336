"""The in-process state store: the embedded default and the fast test double.

Single process only, and nothing survives a restart: not the outbox either, so in the
embedded default a notification not yet written out when the process stops is lost.
TTLs follow the same rules as the Redis store (checked against an injectable clock on
every read), so the contract suite can hold both to the same behaviour.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import msgspec

from geofence.domain.conversions import MAX_KEPT, Eligible, attributed, remaining
from geofence.domain.devices import DeviceProfile
from geofence.domain.errors import NotFound
from geofence.domain.model import DeviceState, Fence, Fix
from geofence.domain.offers import Ledger, Notification, Offer
from geofence.domain.stats import summed
from geofence.ports import (
    HISTORY_KEPT,
    Catalogue,
    CatalogueChange,
    DeadLetter,
    OutboxItem,
    Persistence,
    Receipt,
    Saved,
    StateWrite,
    StoredState,
)

T = TypeVar("T")
DEAD_LETTER_TTL_S = 14 * 86_400
RECEIPTS_TTL_S = 30 * 86_400
STATS_TTL_S = 400 * 86_400
Clock = Callable[[], float]


class _Expiring(Generic[T]):
    """A dict whose entries vanish ``ttl_s`` after they were last written."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._items: dict[str, tuple[T, float]] = {}

    def get(self, key: str) -> T | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[1] <= self._clock():
            del self._items[key]
            return None
        return item[0]

    def set(self, key: str, value: T, ttl_s: float) -> None:
        self._items[key] = (value, self._clock() + ttl_s)

    def touch(self, key: str, ttl_s: float) -> None:
        value = self.get(key)
        if value is not None:
            self.set(key, value, ttl_s)

    def ttl(self, key: str) -> float | None:
        if self.get(key) is None:
            return None
        return self._items[key][1] - self._clock()

    def pop(self, key: str) -> None:
        self._items.pop(key, None)

    def live(self) -> dict[str, T]:
        """Every entry not yet expired (the expired ones are dropped)."""
        return {key: value for key in list(self._items) if (value := self.get(key)) is not None}


class MemoryStore:
    def __init__(
        self,
        *,
        device_ttl_s: float = 30 * 86_400,
        position_ttl_s: float = 86_400,
        dead_letter_ttl_s: float = DEAD_LETTER_TTL_S,
        stats_ttl_s: float = STATS_TTL_S,
        clock: Clock = time.time,
    ) -> None:
        self.device_ttl_s = device_ttl_s
        self.position_ttl_s = position_ttl_s
        self.dead_letter_ttl_s = dead_letter_ttl_s
        self.stats_ttl_s = stats_ttl_s
        self._clock = clock
        self._fences: dict[str, Fence] = {}
        self._version = 0
        self._history: list[CatalogueChange] = []  # newest first
        self._profiles: _Expiring[DeviceProfile] = _Expiring(clock)
        # a device's visit state and offer ledger share one version (and one key in Redis)
        self._states: _Expiring[tuple[DeviceState, int, Ledger]] = _Expiring(clock)
        self._fixes: _Expiring[Fix] = _Expiring(clock)
        self._offers: dict[str, Offer] = {}
        self._spent: dict[str, int] = {}
        self._outbox: dict[str, tuple[OutboxItem, float]] = {}  # id -> (item, due at)
        self._outbox_until: dict[str, float] = {}  # id -> when it is dropped, by the clock
        self._counts: _Expiring[dict[str, int]] = _Expiring(clock)  # by str(bucket)
        self._eligible: _Expiring[tuple[Eligible, ...]] = _Expiring(clock)
        self._dead: _Expiring[DeadLetter] = _Expiring(clock)
        self._receipts: _Expiring[tuple[Receipt, frozenset[str]]] = _Expiring(clock)

    async def check(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def persistence(self) -> Persistence:
        return "memory"

    # the catalogue
    async def catalogue_version(self) -> int:
        return self._version

    async def load_catalogue(self) -> Catalogue:
        fences = tuple(self._fences[k] for k in sorted(self._fences))
        return Catalogue(version=self._version, fences=fences)

    async def load_fence(self, fence_id: str) -> Fence | None:
        return self._fences.get(fence_id)

    async def replace_catalogue(self, fences: Sequence[Fence]) -> int:
        return self._changed({f.id: f for f in fences})

    async def upsert_fence(self, fence: Fence) -> int:
        return self._changed({**self._fences, fence.id: fence})

    async def delete_fence(self, fence_id: str) -> int | None:
        if fence_id not in self._fences:
            return None
        return self._changed({k: f for k, f in self._fences.items() if k != fence_id})

    def _changed(self, fences: dict[str, Fence]) -> int:
        """Install ``fences`` as the next version, and note the change in the history."""
        before, self._fences = self._fences, fences
        self._version += 1
        change = CatalogueChange(
            version=self._version,
            at=self._clock(),
            stores=len(fences),
            added=len(fences.keys() - before.keys()),
            changed=sum(1 for k, f in fences.items() if k in before and before[k] != f),
            removed=len(before.keys() - fences.keys()),
        )
        self._history = [change, *self._history][:HISTORY_KEPT]
        return self._version

    async def catalogue_history(self, limit: int) -> list[CatalogueChange]:
        return self._history[:limit]

    # devices
    async def create_device(self, profile: DeviceProfile) -> bool:
        if self._profiles.get(profile.ref) is not None:
            return False
        self._profiles.set(profile.ref, profile, self.device_ttl_s)
        return True

    async def get_device(self, ref: str) -> DeviceProfile | None:
        return self._profiles.get(ref)

    async def get_devices(self, refs: Sequence[str]) -> list[DeviceProfile | None]:
        return [self._profiles.get(ref) for ref in refs]

    async def put_device(self, profile: DeviceProfile) -> bool:
        if self._profiles.get(profile.ref) is None:
            return False
        self._profiles.set(profile.ref, profile, self.device_ttl_s)
        self._states.touch(profile.ref, self.device_ttl_s)
        return True

    async def erase_device(self, ref: str) -> None:
        for table in (self._profiles, self._states, self._fixes, self._eligible):
            table.pop(ref)
        await self.erase_notifications(ref)

    async def erase_notifications(self, ref: str) -> None:
        self._eligible.pop(ref)  # what attribution keeps goes with the consent to offers
        pending = [k for k, (item, _) in self._outbox.items() if item.device_ref == ref]
        for key in pending:
            self._drop(key)
        dead = [k for k, letter in self._dead.live().items() if letter.item.device_ref == ref]
        for key in dead:
            self._dead.pop(key)

    async def erase_location(self, ref: str) -> None:
        stored = self._states.get(ref)
        if stored is not None:  # keep the version and the ledger (see save_state)
            _, version, ledger = stored
            self._states.set(ref, (DeviceState(), version + 1, ledger), self.device_ttl_s)
        self._fixes.pop(ref)

    async def device_keys(self, ref: str) -> dict[str, float | None]:
        ttls = {
            "profile": self._profiles.ttl(ref),
            "state": self._states.ttl(ref),
            "fix": self._fixes.ttl(ref),
            "eligible": self._eligible.ttl(ref),
        }
        return {name: ttl for name, ttl in ttls.items() if ttl is not None}

    # visit state
    async def load_state(self, ref: str) -> StoredState:
        stored = self._states.get(ref)
        state, version, ledger = stored if stored is not None else (DeviceState(), 0, Ledger())
        state = _with_fix(state, self._fixes.get(ref))
        return StoredState(state=state, version=version, ledger=ledger)

    async def save_state(
        self,
        ref: str,
        state: DeviceState,
        version: int,
        *,
        ledger: Ledger | None = None,
        outbox: Sequence[Notification] = (),
    ) -> bool:
        if self._profiles.get(ref) is None:
            raise NotFound("the device was erased")
        stored = self._states.get(ref)
        current, old_ledger = (stored[1], stored[2]) if stored is not None else (0, Ledger())
        if current != version:
            return False
        # erase_location keeps the version moving (it never resets it), so a stale
        # compare-and-set can never overwrite a newer ledger
        new = (_with_fix(state, None), version + 1, old_ledger if ledger is None else ledger)
        self._states.set(ref, new, self.device_ttl_s)
        if state.last_fix is not None:
            self._fixes.set(ref, state.last_fix, self.position_ttl_s)
        self._profiles.touch(ref, self.device_ttl_s)
        for notification in outbox:
            item = OutboxItem(notification=notification).as_kept()
            self._put(item, notification.created_at)
        return True

    async def load_states(self, refs: Sequence[str]) -> list[StoredState]:
        return [await self.load_state(ref) for ref in refs]

    async def load_devices(
        self, refs: Sequence[str]
    ) -> list[tuple[DeviceProfile | None, StoredState]]:
        return [(self._profiles.get(ref), await self.load_state(ref)) for ref in refs]

    async def save_states(self, writes: Sequence[StateWrite]) -> list[Saved]:
        return [await self._save_one(w) for w in writes]

    async def save_then_load(
        self, writes: Sequence[StateWrite], refs: Sequence[str]
    ) -> tuple[list[Saved], list[tuple[DeviceProfile | None, StoredState]]]:
        return await self.save_states(writes), await self.load_devices(refs)

    async def _save_one(self, w: StateWrite) -> Saved:
        try:
            saved = await self.save_state(
                w.ref, w.state, w.version, ledger=w.ledger, outbox=w.outbox
            )
        except NotFound:
            return "gone"
        return "written" if saved else "conflict"

    # offers
    async def put_offer(self, offer: Offer) -> bool:
        created = offer.id not in self._offers
        self._offers[offer.id] = offer
        return created

    async def get_offer(self, offer_id: str) -> Offer | None:
        return self._offers.get(offer_id)

    async def list_offers(self) -> list[Offer]:
        return [self._offers[k] for k in sorted(self._offers)]

    async def delete_offer(self, offer_id: str) -> bool:
        self._spent.pop(offer_id, None)
        return self._offers.pop(offer_id, None) is not None

    async def budget_spent(self, offer_ids: Sequence[str]) -> dict[str, int]:
        return {k: self._spent.get(k, 0) for k in offer_ids}

    async def reserve_budget(self, offer_id: str, budget: int) -> bool:
        if self._spent.get(offer_id, 0) >= budget:
            return False
        self._spent[offer_id] = self._spent.get(offer_id, 0) + 1
        return True

    async def release_budget(self, offer_id: str) -> None:
        if self._spent.get(offer_id, 0) > 0:
            self._spent[offer_id] -= 1

    # the outbox
    def _put(self, item: OutboxItem, due: float) -> None:
        self._outbox[item.id] = (item, due)
        self._outbox_until[item.id] = self._clock() + self.dead_letter_ttl_s

    def _drop(self, notification_id: str) -> OutboxItem | None:
        self._outbox_until.pop(notification_id, None)
        kept = self._outbox.pop(notification_id, None)
        return None if kept is None else kept[0]

    def _kept(self) -> dict[str, tuple[OutboxItem, float]]:
        """The outbox without the items that outlived the TTL (dropped)."""
        now = self._clock()
        for key in [k for k, until in self._outbox_until.items() if until <= now]:
            self._drop(key)
        return self._outbox

    async def claim_outbox(self, now: float, lease_s: float, limit: int) -> list[OutboxItem]:
        outbox = self._kept()
        due = sorted((at, key) for key, (_, at) in outbox.items() if at <= now)[:limit]
        claimed = []
        for _, key in due:
            item = outbox[key][0]
            outbox[key] = (item, now + lease_s)
            claimed.append(item)
        return claimed

    async def retry_later(self, item: OutboxItem, at: float) -> None:
        if item.id in self._kept():  # not if the device was erased meanwhile
            self._outbox[item.id] = (item.as_kept(), at)

    async def settle(self, item: OutboxItem) -> None:
        self._drop(item.id)

    async def outbox_depth(self) -> int:
        return len(self._kept())

    async def dead_letter(self, item: OutboxItem, reason: str, at: float) -> None:
        if item.id not in self._kept():
            return  # erased meanwhile
        self._drop(item.id)
        letter = DeadLetter(item=item.as_kept(), reason=reason, at=at)
        self._dead.set(item.id, letter, self.dead_letter_ttl_s)
        cutoff = at - self.dead_letter_ttl_s
        for key in [k for k, d in self._dead.live().items() if d.at <= cutoff]:
            self._dead.pop(key)

    async def dead_letters(self, limit: int) -> list[DeadLetter]:
        letters = self._dead.live().values()
        return sorted(letters, key=lambda d: (-d.at, d.item.id))[:limit]

    async def requeue(self, notification_id: str, at: float) -> DeadLetter | None:
        letter = self._dead.get(notification_id)
        if letter is None or letter.item.notification.expires_at <= at:
            return letter
        self._dead.pop(notification_id)
        self._put(letter.item, at)
        return letter

    # receipts
    async def expect_receipts(self, *receipts: Receipt) -> None:
        for receipt in receipts:
            if self._receipts.get(receipt.notification_id) is None:
                self._receipts.set(receipt.notification_id, (receipt, frozenset()), RECEIPTS_TTL_S)

    async def record_receipt(self, notification_id: str, event: str, at: float) -> Receipt | None:
        known = self._receipts.get(notification_id)
        if known is None:
            raise NotFound(f"No notification {notification_id!r} was sent.")
        receipt, seen = known
        if event in seen:
            return None
        ttl = self._receipts.ttl(notification_id) or RECEIPTS_TTL_S
        self._receipts.set(notification_id, (receipt, seen | {event}), ttl)
        return receipt

    # aggregate counters
    async def add_counts(self, bucket: int, counts: dict[str, int]) -> None:
        table = self._counts.get(str(bucket)) or {}
        for name, n in counts.items():
            table[name] = table.get(name, 0) + n
        self._counts.set(str(bucket), table, self.stats_ttl_s)

    async def read_counts(self, buckets: Sequence[int]) -> dict[str, int]:
        return summed((await self.read_buckets(buckets)).values())

    async def read_buckets(self, buckets: Sequence[int]) -> dict[int, dict[str, int]]:
        found = {b: self._counts.get(str(b)) for b in buckets}
        return {b: dict(table) for b, table in found.items() if table}

    def counts_ttl(self, bucket: int) -> float | None:
        """The remaining life of a bucket's counters (for tests, as Redis's TTL)."""
        return self._counts.ttl(str(bucket))

    # attribution
    async def remember_eligible(self, eligible: Sequence[tuple[str, Eligible]]) -> None:
        for ref, entry in eligible:
            if self._profiles.get(ref) is None:
                continue  # erased meanwhile: nothing may come back
            kept = (*(self._eligible.get(ref) or ()), entry)[-MAX_KEPT:]
            ttl = max(self._eligible.ttl(ref) or 0.0, entry.window_s)
            self._eligible.set(ref, kept, ttl)

    async def take_eligible(self, ref: str, at: float, store_id: str | None) -> Eligible | None:
        kept = self._eligible.get(ref) or ()
        taken = attributed(kept, at, store_id)
        if taken is None:
            return None
        left = remaining(kept, taken)
        if left:
            self._eligible.set(ref, tuple(left), self._eligible.ttl(ref) or 0.0)
        else:
            self._eligible.pop(ref)
        return taken


def _with_fix(state: DeviceState, fix: Fix | None) -> DeviceState:
    """The position lives apart from the visit state so that it can expire sooner."""
    return state if state.last_fix == fix else msgspec.structs.replace(state, last_fix=fix)
