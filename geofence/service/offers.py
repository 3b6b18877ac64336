"""Offers (contract §6): the catalogue of offers, and the decision on emitted entries.

``OfferService.decide`` turns a device's new entries into a ``Plan``: which offer each
entry gets, if any, and why every other was refused. Caps and per-device limits live in
the device's ledger, which the ping pipeline writes in the same compare-and-set as the
visit state; budgets live in a counter of their own, reserved here before that write and
given back if the write loses. So a budget is never overspent: at worst a worker that
dies between the two leaves one unit reserved and unsent.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple, Protocol

import msgspec

from geofence.domain.conversions import Eligible, eligible
from geofence.domain.devices import DeviceProfile
from geofence.domain.errors import NotFound
from geofence.domain.explain import explain
from geofence.domain.model import VisitEvent, VisitRules
from geofence.domain.offers import (
    DeviceView,
    Entry,
    Ledger,
    Notification,
    Offer,
    Plan,
    Rules,
    audience,
    offer_doc,
    plan,
    render,
)
from geofence.domain.stats import (
    BUCKET_SIZES,
    GROUP_COUNTERS,
    STAGES,
    Bucket,
    By,
    Stage,
    bucket_of,
    buckets,
    counter,
    funnel,
    lifts,
    series,
    series_starts,
    summed,
    tally,
)
from geofence.engine.index import FenceIndex
from geofence.ports import DeviceStore, OfferStore, Outbox, StatsStore, VisitStore

logger = logging.getLogger(__name__)


class Reserved(msgspec.Struct, frozen=True):
    """A plan whose budget units are held; ``release`` gives them back."""

    plan: Plan
    offers: list[Offer]
    held: list[str]
    ref: str = ""  # whose plan: its eligible entries are kept for attribution


class OfferRoles(OfferStore, StatsStore, DeviceStore, VisitStore, Outbox, Protocol):
    """The roles of the state store the offer service uses: offers and budgets, the
    funnel's counters, profiles (consent) and ledgers of the devices, receipts."""


class OfferService:
    def __init__(self, rules: Rules, visit_rules: VisitRules, store: OfferRoles) -> None:
        self.rules = rules
        self.visit_rules = visit_rules
        self.store = store

    # the catalogue of offers
    async def put(self, offer: Offer) -> tuple[dict[str, Any], bool]:
        """Store ``offer`` (checked where it came in); True when it is new."""
        created = await self.store.put_offer(offer)
        logger.info("offer saved", extra={"offer": offer.id, "new": created})
        return await self._doc(offer), created

    async def get(self, offer_id: str) -> dict[str, Any]:
        offer = await self.store.get_offer(offer_id)
        if offer is None:
            raise NotFound(f"No offer {offer_id!r}.")
        return await self._doc(offer)

    async def all(self) -> list[dict[str, Any]]:
        offers = await self.store.list_offers()
        spent = await self.store.budget_spent([o.id for o in offers])
        return [{**offer_doc(o), "budget_spent": spent[o.id]} for o in offers]

    async def delete(self, offer_id: str) -> None:
        if not await self.store.delete_offer(offer_id):
            raise NotFound(f"No offer {offer_id!r}.")
        logger.info("offer deleted", extra={"offer": offer_id})

    async def _doc(self, offer: Offer) -> dict[str, Any]:
        spent = await self.store.budget_spent([offer.id])
        return {**offer_doc(offer), "budget_spent": spent[offer.id]}

    # reading the results
    async def explain(self, ref: str, now: float) -> dict[str, Any]:
        """Why this device got what it got: visits, cooldowns, caps, limits, decisions."""
        stored = await self.store.load_state(ref)
        offers = await self.store.list_offers()
        spent = await self.store.budget_spent([o.id for o in offers])
        return explain(
            stored.state,
            stored.ledger,
            offers,
            spent,
            now=now,
            visit_rules=self.visit_rules,
            rules=self.rules,
        )

    async def stats(
        self, start: float, end: float, by: By, key: str | None = None
    ) -> dict[str, Any]:
        """The funnel's totals in [start, end), of every store (or offer) or of ``key``;
        by offer, with each offer's lift over its control group."""
        counts = await self.store.read_counts(buckets(start, end))
        rows = [r for r in funnel(counts, by) if key is None or r[f"{by}_id"] == key]
        totals = {stage: sum(int(r[stage]) for r in rows) for stage in STAGES}  # type: ignore[call-overload]
        report = {"from": start, "to": end, "by": by, "rows": rows, "totals": totals}
        return report | self._lift(counts, by, rows, key)

    async def series(
        self, start: float, end: float, by: By, bucket: Bucket, key: str | None = None
    ) -> dict[str, Any]:
        """The counters of every hour (or UTC day) in [start, end), per store (or offer)."""
        starts = series_starts(start, end, bucket)
        hours = buckets(starts[0], starts[-1] + BUCKET_SIZES[bucket])
        per_hour = await self.store.read_buckets(hours)
        lines = series(per_hour, by, starts, bucket, keys=() if key is None else (key,))
        lines = [line for line in lines if key is None or line["key"] == key]
        counts = summed(per_hour.values())
        rows = [{f"{by}_id": line["key"]} for line in lines]
        report = {"from": start, "to": end, "by": by, "bucket": bucket, "series": lines}
        return report | self._lift(counts, by, rows, key)

    @staticmethod
    def _lift(
        counts: dict[str, int], by: By, rows: list[dict[str, Any]], key: str | None
    ) -> dict[str, Any]:
        if by != "offer":
            return {}
        offer_ids = [str(r["offer_id"]) for r in rows] + ([key] if key else [])
        return {"lift": lifts(counts, offer_ids)}

    async def preview(self, offer_id: str, store_name: str) -> dict[str, str]:
        """The offer's title and body as a notification at that store would show them."""
        offer = await self.store.get_offer(offer_id)
        if offer is None:
            raise NotFound(f"No offer {offer_id!r}.")
        return {"title": offer.title, "body": render(offer.body, store_name)}

    async def convert(
        self, profile: DeviceProfile, store_id: str | None, at: float
    ) -> Eligible | None:
        """Attribute a conversion to the device's latest eligible entry, and count it;
        None when none is in its window, or the device gave no consent to offers."""
        if not profile.allows("offers"):
            return None
        taken = await self.store.take_eligible(profile.ref, at, store_id)
        if taken is None:
            return None
        names = [
            counter("conversions", "offer", taken.offer_id),
            counter("conversions", "store", taken.store_id),
            counter(GROUP_COUNTERS[taken.group], "offer", taken.offer_id),
        ]
        await self.store.add_counts(bucket_of(at), tally(names))
        logger.info("conversion attributed", extra={"offer": taken.offer_id, "group": taken.group})
        return taken

    async def receipt(self, notification_id: str, event: Stage, at: float) -> bool:
        """Count a gateway's receipt into the funnel; False when it was counted before."""
        target = await self.store.record_receipt(notification_id, event, at)
        if target is None:
            return False
        names = [
            counter(event, "store", target.store_id),
            counter(event, "offer", target.offer_id),
        ]
        await self.store.add_counts(bucket_of(at), tally(names))
        return True

    # the decision on entries
    async def decide(
        self, ref: str, entries: Sequence[Entry], ledger: Ledger, now: float
    ) -> Reserved:
        """Plan the entries and hold the budget units the plan spends."""
        [reserved] = await self.decide_many([Asked(ref, entries, ledger)], now)
        if isinstance(reserved, NotFound):
            raise reserved
        return reserved

    async def decide_many(self, asks: Sequence[Asked], now: float) -> list[Reserved | NotFound]:
        """:meth:`decide` for many devices, with one read of their profiles, the offers
        and the budgets; NotFound for a device erased meanwhile.

        Each device's units are held before the next one is planned, in the order given,
        as one call per device would.
        """
        profiles = await self.store.get_devices([ask.ref for ask in asks])
        offers = await self.store.list_offers()
        left = await self._budget_left(offers)
        out: list[Reserved | NotFound] = []
        for ask, profile in zip(asks, profiles, strict=True):
            if profile is None:
                out.append(NotFound("the device was erased"))
                continue
            reserved = await self._reserve(ask, DeviceView.of(profile), offers, left, now)
            for offer_id in reserved.held:
                left[offer_id] = (left[offer_id] or 0) - 1
            out.append(reserved)
        return out

    async def _reserve(
        self,
        ask: Asked,
        device: DeviceView,
        offers: list[Offer],
        left: dict[str, int | None],
        now: float,
    ) -> Reserved:
        """One device's plan with its budget units held.

        A budget the counter refuses (another worker took the last unit) is read as
        spent (in ``left``, for the devices after this one too) and the entries are planned
        again, so the plan never names an offer whose unit is not held.
        """
        ledger = ask.ledger.pruned(now, self.rules, (o.id for o in offers))
        while True:
            the_plan = plan(
                ask.entries,
                offers,
                ledger,
                device=device,
                now=now,
                rules=self.rules,
                budget_left=left,
                notification_id=lambda entry: notification_id(ask.ref, entry),
                device_ref=ask.ref,
            )
            refused = await self._hold(the_plan, offers)
            if isinstance(refused, list):
                notifications = [_addressed(n, ask.ref) for n in the_plan.notifications]
                final = msgspec.structs.replace(the_plan, notifications=notifications)
                return Reserved(final, offers, refused, ask.ref)
            left[refused] = 0

    async def release(self, reserved: Reserved) -> None:
        for offer_id in reserved.held:
            await self.store.release_budget(offer_id)

    async def _budget_left(self, offers: Sequence[Offer]) -> dict[str, int | None]:
        budgeted = [o for o in offers if o.budget is not None]
        spent = await self.store.budget_spent([o.id for o in budgeted])
        return {o.id: (o.budget or 0) - spent[o.id] for o in budgeted}

    async def _hold(self, the_plan: Plan, offers: Sequence[Offer]) -> list[str] | str:
        """Reserve a unit for each budgeted notification; the id of the first refused."""
        budgets = {o.id: o.budget for o in offers}
        held: list[str] = []
        for n in the_plan.notifications:
            budget = budgets.get(n.offer_id)
            if budget is None:
                continue
            if not await self.store.reserve_budget(n.offer_id, budget):
                for offer_id in held:
                    await self.store.release_budget(offer_id)
                return n.offer_id
            held.append(n.offer_id)
        return held

    async def count(self, written: Sequence[tuple[Reserved | None, Sequence[Entry]]]) -> None:
        """Feed the funnel once plans are written: their entries, notifications and
        held-out entries, one addition per time bucket however many devices; then keep
        the eligible entries for attribution, in one more call when there are any."""
        names: dict[int, list[str]] = {}
        for reserved, entries in written:
            for bucket, bucket_names in _funnel_names(reserved, entries):
                names.setdefault(bucket, []).extend(bucket_names)
        for bucket, bucket_names in names.items():
            await self.store.add_counts(bucket, tally(bucket_names))
        kept = [
            (reserved.ref, e)
            for reserved, _ in written
            if reserved is not None
            for e in eligible(reserved.plan.decisions, reserved.offers)
        ]
        if kept:
            await self.store.remember_eligible(kept)


class Asked(NamedTuple):
    """A device's new entries, for a decision: whose, which, and its ledger."""

    ref: str
    entries: Sequence[Entry]
    ledger: Ledger


def _funnel_names(
    reserved: Reserved | None, entries: Sequence[Entry]
) -> Iterator[tuple[int, list[str]]]:
    """The funnel counters of one written plan, each with its time bucket."""
    offers = [] if reserved is None else reserved.offers
    for entry in entries:
        targeted = audience(offers, entry.store_id, entry.store_tags, entry.at)
        yield (
            bucket_of(entry.at),
            [
                counter("entries", "store", entry.store_id),
                *(counter("entries", "offer", offer_id) for offer_id in targeted),
            ],
        )
    for n in [] if reserved is None else reserved.plan.notifications:
        yield (
            bucket_of(n.created_at),
            [
                counter("notifications", "store", n.store_id),
                counter("notifications", "offer", n.offer_id),
            ],
        )
    for d in [] if reserved is None else reserved.plan.decisions:
        if d.group == "control" and d.offer_id is not None:
            names = [
                counter("control", "store", d.store_id),
                counter("control", "offer", d.offer_id),
            ]
            yield bucket_of(d.decided_at), names


def entries_of(index: FenceIndex, events: Sequence[VisitEvent]) -> list[Entry]:
    """The emitted entries with what the decision needs of their stores."""
    return [_entry(index, e) for e in events if e.type == "entry" and e.store_id in index]


def _entry(index: FenceIndex, event: VisitEvent) -> Entry:
    fence = index.fence(event.store_id)
    return Entry(
        store_id=fence.id,
        at=event.at,
        store_name=fence.name or fence.id,
        store_tags=fence.tags,
        store_timezone=fence.timezone,
    )


def notification_id(ref: str, entry: Entry) -> str:
    """The same entry always makes the same id: a retried write cannot make a second."""
    digest = hashlib.blake2b(f"{ref}|{entry.store_id}|{entry.at!r}".encode(), digest_size=16)
    return str(uuid.UUID(bytes=digest.digest()))


def _addressed(n: Notification, ref: str) -> Notification:
    return msgspec.structs.replace(n, device_ref=ref)


def public(n: Notification) -> dict[str, Any]:
    """A notification as the ping's caller sees it: not whom it goes to."""
    return {
        "notification_id": n.notification_id,
        "offer_id": n.offer_id,
        "store_id": n.store_id,
        "title": n.title,
        "body": n.body,
        "created_at": n.created_at,
        "expires_at": n.expires_at,
    }
