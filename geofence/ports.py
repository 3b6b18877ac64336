"""The ports the service talks through. Adapters implement them; the core knows only these."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

import msgspec

from geofence.domain.conversions import Eligible
from geofence.domain.delivery import Attempt
from geofence.domain.devices import DeviceProfile
from geofence.domain.model import DeviceState, Fence
from geofence.domain.offers import Ledger, Notification, Offer


class Catalogue(msgspec.Struct, frozen=True, kw_only=True):
    """One consistent version of the store catalogue."""

    version: int
    fences: tuple[Fence, ...]


class CatalogueChange(msgspec.Struct, frozen=True, kw_only=True):
    """One version of the catalogue as its history keeps it: counts, never who."""

    version: int
    at: float
    stores: int
    added: int
    changed: int
    removed: int


class StoredState(msgspec.Struct, frozen=True, kw_only=True):
    """A device's visit state and offer ledger, with the version a compare-and-set must
    name to replace them (one version covers both: they change together)."""

    state: DeviceState
    version: int
    ledger: Ledger = msgspec.field(default_factory=Ledger)


class StateWrite(msgspec.Struct, frozen=True, kw_only=True):
    """One device's compare-and-set, as ``save_state`` takes it (for writing many at once)."""

    ref: str
    state: DeviceState
    version: int
    ledger: Ledger | None = None
    outbox: Sequence[Notification] = ()


Saved = Literal["written", "conflict", "gone"]
HISTORY_KEPT = 50  # catalogue changes kept in the history
# how the state survives a restart of its backend: Redis's append-only file, its snapshots,
# neither, not known (CONFIG refused, as managed Redis may), or not at all (in-process)
Persistence = Literal["aof", "rdb", "off", "unknown", "memory"]


class OutboxItem(msgspec.Struct, frozen=True, kw_only=True):
    """A notification waiting for delivery, with its delivery history."""

    notification: Notification
    attempts: int = 0
    last_error: str | None = None

    @property
    def id(self) -> str:
        return self.notification.notification_id

    @property
    def device_ref(self) -> str:
        return self.notification.device_ref

    def as_kept(self) -> OutboxItem:
        """The item as a store keeps it: without a push token, which the dispatcher reads
        from the device's profile just before each send."""
        if self.notification.push_token is None:
            return self
        notification = msgspec.structs.replace(self.notification, push_token=None)
        return msgspec.structs.replace(self, notification=notification)


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """A notification that will not be delivered, and why."""

    item: OutboxItem
    reason: str
    at: float


class Receipt(msgspec.Struct, frozen=True, kw_only=True):
    """What a receipt counts against: no device in it, only the funnel's keys."""

    notification_id: str
    store_id: str
    offer_id: str


class Backend(Protocol):
    """The backend itself: whether it answers, how it keeps the state, closing it."""

    async def check(self) -> None:
        """Return when the backend answers; raise Unavailable otherwise."""

    async def close(self) -> None: ...

    async def persistence(self) -> Persistence:
        """How the backend keeps the state across its restarts; raises Unavailable only
        when it does not answer at all."""


class CatalogueStore(Protocol):
    """The store catalogue, versioned (contract §3)."""

    async def catalogue_version(self) -> int: ...

    async def load_catalogue(self) -> Catalogue: ...

    async def load_fence(self, fence_id: str) -> Fence | None:
        """One fence of the stored catalogue (None: no such fence), without reading the
        rest: a catalogue may hold a million."""

    async def replace_catalogue(self, fences: Sequence[Fence]) -> int:
        """Swap the whole catalogue in one step; returns the new version."""

    async def upsert_fence(self, fence: Fence) -> int: ...

    async def delete_fence(self, fence_id: str) -> int | None:
        """The new version, or None when there was no such fence.

        Each of these three changes adds a ``CatalogueChange`` to the history."""

    async def catalogue_history(self, limit: int) -> list[CatalogueChange]:
        """The newest changes of the catalogue first; at most the last ``HISTORY_KEPT``."""


class DeviceStore(Protocol):
    """Device profiles, and the erasure of everything held about a device (contract §4)."""

    async def create_device(self, profile: DeviceProfile) -> bool:
        """False when the device already exists."""

    async def get_device(self, ref: str) -> DeviceProfile | None: ...

    async def get_devices(self, refs: Sequence[str]) -> list[DeviceProfile | None]:
        """``get_device`` of many devices in one round trip, in the order given."""

    async def put_device(self, profile: DeviceProfile) -> bool:
        """Replace an existing device's profile, refreshing its TTLs; False (and nothing
        written) when the device does not exist, so an erased device never comes back."""

    async def erase_device(self, ref: str) -> None:
        """Remove every key of the device, its notifications in the outbox and its dead
        letters; idempotent."""

    async def erase_notifications(self, ref: str) -> None:
        """Remove the device's notifications in the outbox, its dead letters and its
        eligible entries for attribution (its consent to offers was withdrawn);
        idempotent."""

    async def erase_location(self, ref: str) -> None:
        """Remove the device's visit state and last position, keep its profile."""

    async def device_keys(self, ref: str) -> dict[str, float | None]:
        """Every key held for the device with its remaining TTL in seconds (None: none)."""


class VisitStore(Protocol):
    """Each device's visit state and offer ledger, compared-and-set (contract §5)."""

    async def load_state(self, ref: str) -> StoredState: ...

    async def save_state(
        self,
        ref: str,
        state: DeviceState,
        version: int,
        *,
        ledger: Ledger | None = None,
        outbox: Sequence[Notification] = (),
    ) -> bool:
        """Compare-and-set: write only if the stored version is still ``version``.

        In the same atomic step, replace the ledger (None: unchanged) and put ``outbox``'s
        notifications in the outbox: a notification exists exactly when its spend does.
        Raises NotFound when the device has no profile (it was erased meanwhile), so a
        ping racing an erasure can never bring the device's keys back.
        """

    async def load_states(self, refs: Sequence[str]) -> list[StoredState]:
        """``load_state`` of many devices in one round trip, in the order given."""

    async def load_devices(
        self, refs: Sequence[str]
    ) -> list[tuple[DeviceProfile | None, StoredState]]:
        """``get_devices`` and ``load_states`` of many devices, read together in one
        round trip, in the order given."""

    async def save_states(self, writes: Sequence[StateWrite]) -> list[Saved]:
        """``save_state`` of many devices in one round trip; each write stands alone
        (atomic per device, not across them): written, lost to a newer version
        (conflict), or refused because the device was erased (gone)."""

    async def save_then_load(
        self, writes: Sequence[StateWrite], refs: Sequence[str]
    ) -> tuple[list[Saved], list[tuple[DeviceProfile | None, StoredState]]]:
        """``save_states(writes)``, then ``load_devices(refs)``, in one round trip: the
        load sees the writes (a flush's write and the next flush's read)."""


class OfferStore(Protocol):
    """Offers and their budgets (contract §6)."""

    async def put_offer(self, offer: Offer) -> bool:
        """True when the offer is new."""

    async def get_offer(self, offer_id: str) -> Offer | None: ...

    async def list_offers(self) -> list[Offer]:
        """Every offer, by id."""

    async def delete_offer(self, offer_id: str) -> bool:
        """False when there was no such offer. Its budget counter goes with it."""

    async def budget_spent(self, offer_ids: Sequence[str]) -> dict[str, int]: ...

    async def reserve_budget(self, offer_id: str, budget: int) -> bool:
        """Spend one unit if fewer than ``budget`` are spent; never more than ``budget``."""

    async def release_budget(self, offer_id: str) -> None:
        """Give back a unit reserved for a notification that was not made."""


class Outbox(Protocol):
    """Notifications waiting for delivery, dead letters, and receipts (contract §6)."""

    async def claim_outbox(self, now: float, lease_s: float, limit: int) -> list[OutboxItem]:
        """Items due by ``now``, hidden from other claims for ``lease_s``; an item whose
        claimer died comes back when its lease runs out."""

    async def retry_later(self, item: OutboxItem, at: float) -> None:
        """Keep ``item`` (with its updated history) and make it due at ``at``.

        Outbox items and dead letters are kept without a push token (``as_kept``) and
        expire: a dead letter ``dead_letter_ttl_s`` after it was made; an outbox item at
        the latest that long after its notification was made (memory) or after its
        shard's outbox was last written (Redis)."""

    async def settle(self, item: OutboxItem) -> None:
        """Remove a delivered (or dead-lettered) item from the outbox."""

    async def outbox_depth(self) -> int: ...

    async def dead_letter(self, item: OutboxItem, reason: str, at: float) -> None:
        """Take ``item`` out of the outbox and keep it, with ``reason``, for inspection,
        for ``dead_letter_ttl_s``."""

    async def dead_letters(self, limit: int) -> list[DeadLetter]:
        """The newest dead letters first; those older than the TTL are gone."""

    async def requeue(self, notification_id: str, at: float) -> DeadLetter | None:
        """Put a dead letter back in the outbox, due at ``at``, unless it has expired by
        then (it stays a dead letter). The dead letter found, or None."""

    # receipts (contract §6)
    async def expect_receipts(self, *receipts: Receipt) -> None:
        """Remember what each sent notification's receipts count against."""

    async def record_receipt(self, notification_id: str, event: str, at: float) -> Receipt | None:
        """The receipt's target the first time (notification, event) is seen, else None.

        Raises NotFound for a notification this service never sent.
        """


class StatsStore(Protocol):
    """Aggregate counters by time bucket (contract §6, stats): no device in them."""

    async def add_counts(self, bucket: int, counts: dict[str, int]) -> None: ...

    async def read_counts(self, buckets: Sequence[int]) -> dict[str, int]:
        """The counters summed over ``buckets``."""

    async def read_buckets(self, buckets: Sequence[int]) -> dict[int, dict[str, int]]:
        """The counters of each of ``buckets`` that has any."""

    # attribution (issue 27): a device's eligible entries, kept with its keys
    async def remember_eligible(self, eligible: Sequence[tuple[str, Eligible]]) -> None:
        """Keep each (device ref, eligible entry), the latest ``MAX_KEPT`` per device,
        for as long as the longest window among them; not for an erased device."""

    async def take_eligible(self, ref: str, at: float, store_id: str | None) -> Eligible | None:
        """The entry a conversion at ``at`` is attributed to (``conversions.attributed``),
        forgetting it and the entries before it; each entry is taken at most once."""


class StateStore(
    Backend, CatalogueStore, DeviceStore, VisitStore, OfferStore, Outbox, StatsStore, Protocol
):
    """All durable state, every role at once: what an adapter implements and the bootstrap
    builds. A service declares only the roles it uses. Every method raises domain
    ``Unavailable`` when the backend is down."""


class PushGateway(Protocol):
    """Where notifications go: the HTTP push gateway, or stdout in the embedded default."""

    needs_token: bool  # whether a device without a push token can be reached at all

    async def send(self, body: bytes, notification_id: str) -> Attempt:
        """One try; the outcome, never an exception for a failure of the far side."""

    async def close(self) -> None: ...


# the metrics the services count into (geofence/metrics.py's prometheus ones, or doubles)
class Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class Gauge(Protocol):
    def set(self, value: float) -> None: ...


class Histogram(Protocol):
    def observe(self, amount: float) -> None: ...


class Labelled(Protocol):
    """A counter by label values, in the order its labels were declared."""

    def labels(self, *values: str) -> Counter: ...


class CatalogueMetrics(Protocol):
    @property
    def fences(self) -> Gauge: ...
    @property
    def index_cells(self) -> Gauge: ...
    @property
    def catalogue_version(self) -> Gauge: ...


class PingMetrics(Protocol):
    @property
    def pings(self) -> Labelled: ...  # by status, reason
    @property
    def events(self) -> Labelled: ...  # by type, reason
    @property
    def notifications(self) -> Labelled: ...  # by offer
    @property
    def state_conflicts(self) -> Counter: ...


class DeliveryMetrics(Protocol):
    @property
    def outbox_depth(self) -> Gauge: ...
    @property
    def deliveries(self) -> Counter: ...
    @property
    def delivery_latency(self) -> Histogram: ...
    @property
    def delivery_retries(self) -> Labelled: ...  # by cause
    @property
    def dead_letters(self) -> Labelled: ...  # by reason
