"""Offers and the decision on an emitted entry (contract §6). Pure: time is an argument.

An entry makes at most one notification: the eligible offer of highest priority, then
lowest id. Every offer considered carries the reason it was refused, so ``explain`` can
show why nothing (or something else) was sent.

Device-level reasons come first and then apply to every offer, in this order:

==================  ================================================================
no-offers-consent   the device has not granted ``offers`` consent (contract §4)
quiet-hours         now is inside the quiet hours, in the device's time zone, else the
                    store's
device-cap          ``device_cap`` notifications or more in the rolling window before now
entry-too-late      now - entry_at > ``notify_max_lag_s``
==================  ================================================================

Then each offer on its own, in this order:

====================  ==============================================================
inactive              ``active`` is false
not-started           now < starts_at
ended                 now >= ends_at
outside-hours         ``hours`` given and now is outside them in the store's local time
store-not-targeted    neither the store's id nor any of its tags is targeted
tier-not-matched      ``tiers`` given and the device's tier is not one of them
segment-not-matched   ``segments`` given and the device is in none of them
per-device-limit      the device already got the offer ``per_device_limit`` times
per-device-cooldown   the device got the offer less than ``per_device_cooldown_s`` ago
budget-spent          the offer's budget has nothing left
====================  ==============================================================

The offer chosen may still hold the device out: with ``control_pct`` above 0, a fixed
share of devices (``in_control``: a hash of the device's ref and the offer's id) is its
control group. Their entry is decided ``control`` (rule ``control-group``): no
notification, nothing spent of the device cap, the per-device limit or the budget, and
no other offer in its place; the entry is eligible all the same, and a conversion after
it counts for the control group (``domain/lift.py``).

Every rule is judged at ``now``, the moment the notification would be made. Hours are
wall-clock ranges; one that ends before it starts (``22:00-02:00``) crosses midnight and
belongs to the weekday it starts on.

An offer arrives here already valid: the API checks what it is sent at the edge
(``geofence/http/offer_schema.py``), with the bounds this module names.
"""

from __future__ import annotations

import hashlib
import re
import zoneinfo
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from functools import cache
from typing import Any, Final, Literal, get_args

import msgspec

from geofence.domain.devices import DeviceProfile
from geofence.domain.times import format_time

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: Final[tuple[Weekday, ...]] = get_args(Weekday)
PLACEHOLDER: Final = "{store_name}"
DAY_S: Final = 86_400

MAX_PER_DEVICE_LIMIT: Final = 1_000  # the most sends of one offer the ledger keeps
MAX_DECISIONS: Final = 10
MAX_CONTROL_PCT: Final = 50
ATTRIBUTION_WINDOW_S: Final = 7 * DAY_S
CONTROL_GROUP: Final = "control-group"
Group = Literal["treated", "control"]
RANGE_PATTERN: Final = r"^(\d\d):(\d\d)-(\d\d):(\d\d)$"
_RANGE = re.compile(RANGE_PATTERN)
_OFF: Final = frozenset({"", "off", "none"})


class Offer(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An offer as stored: times are epoch seconds, ``hours`` maps weekdays to ranges."""

    id: str
    title: str
    body: str
    store_ids: tuple[str, ...] = ()
    store_tags: tuple[str, ...] = ()
    tiers: tuple[str, ...] | None = None
    segments: tuple[str, ...] | None = None
    starts_at: float
    ends_at: float
    hours: dict[str, tuple[str, ...]] | None = None
    priority: int = 0
    per_device_limit: int = 1
    per_device_cooldown_s: float = 86_400.0
    budget: int | None = None
    ttl_s: float = 3_600.0
    active: bool = True
    control_pct: float = 0
    attribution_window_s: float = ATTRIBUTION_WINDOW_S


class Rules(msgspec.Struct, frozen=True, kw_only=True):
    """Device-level limits (GEOFENCE_QUIET_HOURS, GEOFENCE_DEVICE_CAP, ...).

    ``quiet_hours`` is ``"HH:MM-HH:MM"``, or ``""``/``"off"`` for none.
    """

    quiet_hours: str = "21:00-08:00"
    device_cap: int = 2
    device_cap_window_s: float = 48 * 3_600.0
    notify_max_lag_s: float = 900.0

    def __post_init__(self) -> None:
        quiet_window(self.quiet_hours)  # a bad setting fails at start, not on an entry


class DeviceView(msgspec.Struct, frozen=True, kw_only=True):
    """What the decision needs of a device."""

    offers_consent: bool
    tier: str | None = None
    segments: tuple[str, ...] = ()
    timezone: str | None = None

    @classmethod
    def of(cls, profile: DeviceProfile) -> DeviceView:
        return cls(
            offers_consent=profile.allows("offers"),
            tier=profile.tier,
            segments=profile.segments,
            timezone=profile.timezone,
        )


class Context(msgspec.Struct, frozen=True, kw_only=True):
    """One emitted entry and what the device has already received."""

    store_id: str
    store_tags: tuple[str, ...] = ()
    store_timezone: str
    store_name: str
    entry_at: float
    now: float
    device: DeviceView
    device_sent: list[float] = msgspec.field(default_factory=list)
    per_offer_sent: dict[str, list[float]] = msgspec.field(default_factory=dict)
    # absent: nothing spent yet (the offer's own budget); None: no budget
    budget_left: dict[str, int | None] = msgspec.field(default_factory=dict)


class Considered(msgspec.Struct, frozen=True, kw_only=True):
    offer_id: str
    refused: str | None = None


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    """``considered`` lists every offer, best ranked first; ``chosen`` is never refused."""

    chosen: Offer | None
    considered: list[Considered]
    device_refused: str | None = None
    control: Offer | None = None  # the offer chosen, then held out (its control group)


class Notification(msgspec.Struct, frozen=True, kw_only=True):
    """The push of contract §6; the caller fills ``device_ref`` and ``push_token``."""

    notification_id: str
    device_ref: str = ""
    push_token: str | None = None
    offer_id: str
    store_id: str
    title: str
    body: str
    created_at: float
    expires_at: float


class EntryDecision(msgspec.Struct, frozen=True, kw_only=True):
    """What was decided on one emitted entry: kept for ``explain``, without coordinates."""

    store_id: str
    entry_at: float
    decided_at: float
    device_refused: str | None
    considered: list[Considered]
    notification_id: str | None = None
    offer_id: str | None = None
    group: Group | None = None  # the offer_id's: notified (treated) or held out (control)


class Ledger(msgspec.Struct, frozen=True, kw_only=True):
    """What a device has received: only what the caps and ``explain`` need.

    ``device_sent`` keeps the sends inside the device cap's window; ``per_offer_sent``
    keeps each live offer's sends (at most its largest possible per-device limit);
    ``decisions`` the last ``MAX_DECISIONS`` entries' decisions.
    """

    device_sent: tuple[float, ...] = ()
    per_offer_sent: dict[str, tuple[float, ...]] = msgspec.field(default_factory=dict)
    decisions: tuple[EntryDecision, ...] = ()

    def spend(self, offer_id: str, at: float) -> Ledger:
        sent = (*self.per_offer_sent.get(offer_id, ()), at)[-MAX_PER_DEVICE_LIMIT:]
        return Ledger(
            device_sent=(*self.device_sent, at),
            per_offer_sent={**self.per_offer_sent, offer_id: sent},
            decisions=self.decisions,
        )

    def remember(self, decision: EntryDecision) -> Ledger:
        decisions = (*self.decisions, decision)[-MAX_DECISIONS:]
        return msgspec.structs.replace(self, decisions=decisions)

    def pruned(self, now: float, rules: Rules, live_offers: Iterable[str]) -> Ledger:
        """Forget sends outside the cap window and the sends of offers that are gone."""
        since = now - rules.device_cap_window_s
        live = set(live_offers)
        return msgspec.structs.replace(
            self,
            device_sent=tuple(t for t in self.device_sent if t > since),
            per_offer_sent={k: v for k, v in self.per_offer_sent.items() if k in live},
        )


class Entry(msgspec.Struct, frozen=True, kw_only=True):
    """An emitted entry with what the decision needs of its store."""

    store_id: str
    at: float
    store_name: str
    store_tags: tuple[str, ...] = ()
    store_timezone: str


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    """The decisions on a run of entries, the notifications to make and the new ledger."""

    ledger: Ledger
    decisions: list[EntryDecision]
    notifications: list[Notification]


NotificationId = Callable[[Entry], str]


# --- time ranges -----------------------------------------------------------------------


@cache
def parse_range(text: str) -> tuple[int, int]:
    """``"HH:MM-HH:MM"`` as seconds of the day; an end before the start crosses midnight.

    ``24:00`` is allowed as an end. A range that starts where it ends is refused.
    """
    match = _RANGE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not HH:MM-HH:MM")
    h1, m1, h2, m2 = (int(part) for part in match.groups())
    if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2 != 0):
        raise ValueError(f"{text!r} is not a time of day")
    start, end = h1 * 3_600 + m1 * 60, h2 * 3_600 + m2 * 60
    if start == end:
        raise ValueError(f"{text!r} is empty")
    return start, end


def quiet_window(text: str) -> tuple[int, int] | None:
    """The quiet hours setting as a range, or None when switched off."""
    return None if text.strip().lower() in _OFF else parse_range(text)


def in_range(window: tuple[int, int], second: float) -> bool:
    start, end = window
    if start < end:
        return start <= second < end
    return second >= start or second < end


def local_time(ts: float, timezone: str) -> datetime:
    return datetime.fromtimestamp(ts, zoneinfo.ZoneInfo(timezone))


def second_of_day(moment: datetime) -> float:
    return moment.hour * 3_600 + moment.minute * 60 + moment.second + moment.microsecond / 1e6


def within_hours(hours: dict[str, tuple[str, ...]], moment: datetime) -> bool:
    """Open on the local ``moment``: a range of its weekday, or the spill of yesterday's."""
    second = second_of_day(moment)
    today = WEEKDAYS[moment.weekday()]
    yesterday = WEEKDAYS[(moment.weekday() - 1) % 7]
    if any(_starts_today(parse_range(r), second) for r in hours.get(today, ())):
        return True
    return any(_spills_over(parse_range(r), second) for r in hours.get(yesterday, ()))


def _starts_today(window: tuple[int, int], second: float) -> bool:
    start, end = window
    return start <= second < end if start < end else second >= start


def _spills_over(window: tuple[int, int], second: float) -> bool:
    start, end = window
    return end < start and second < end


# --- eligibility ----------------------------------------------------------------------


def _quiet(ctx: Context, rules: Rules) -> bool:
    window = quiet_window(rules.quiet_hours)
    if window is None:
        return False
    moment = local_time(ctx.now, ctx.device.timezone or ctx.store_timezone)
    return in_range(window, second_of_day(moment))


def _device_capped(ctx: Context, rules: Rules) -> bool:
    since = ctx.now - rules.device_cap_window_s
    return sum(1 for t in ctx.device_sent if t > since) >= rules.device_cap


_DEVICE_CHECKS: Final[tuple[tuple[str, Callable[[Context, Rules], bool]], ...]] = (
    ("no-offers-consent", lambda ctx, rules: not ctx.device.offers_consent),
    ("quiet-hours", _quiet),
    ("device-cap", _device_capped),
    ("entry-too-late", lambda ctx, rules: ctx.now - ctx.entry_at > rules.notify_max_lag_s),
)


def device_refusal(ctx: Context, rules: Rules) -> str | None:
    """The first device-level reason no offer may be sent on this entry, if any."""
    return next((code for code, refused in _DEVICE_CHECKS if refused(ctx, rules)), None)


def _outside_hours(offer: Offer, ctx: Context) -> bool:
    if offer.hours is None:
        return False
    return not within_hours(offer.hours, local_time(ctx.now, ctx.store_timezone))


def _store_not_targeted(offer: Offer, ctx: Context) -> bool:
    return ctx.store_id not in offer.store_ids and not set(offer.store_tags) & set(ctx.store_tags)


def _segment_not_matched(offer: Offer, ctx: Context) -> bool:
    return offer.segments is not None and not set(offer.segments) & set(ctx.device.segments)


def _cooling_down(offer: Offer, ctx: Context) -> bool:
    sent = ctx.per_offer_sent.get(offer.id, ())
    return any(ctx.now - t < offer.per_device_cooldown_s for t in sent)


def _budget_spent(offer: Offer, ctx: Context) -> bool:
    left = ctx.budget_left.get(offer.id, offer.budget)
    return offer.budget is not None and left is not None and left <= 0


_OFFER_CHECKS: Final[tuple[tuple[str, Callable[[Offer, Context], bool]], ...]] = (
    ("inactive", lambda offer, ctx: not offer.active),
    ("not-started", lambda offer, ctx: ctx.now < offer.starts_at),
    ("ended", lambda offer, ctx: ctx.now >= offer.ends_at),
    ("outside-hours", _outside_hours),
    ("store-not-targeted", _store_not_targeted),
    (
        "tier-not-matched",
        lambda offer, ctx: offer.tiers is not None and ctx.device.tier not in offer.tiers,
    ),
    ("segment-not-matched", _segment_not_matched),
    (
        "per-device-limit",
        lambda offer, ctx: len(ctx.per_offer_sent.get(offer.id, ())) >= offer.per_device_limit,
    ),
    ("per-device-cooldown", _cooling_down),
    ("budget-spent", _budget_spent),
)

OFFER_REASONS: Final = tuple(code for code, _ in _OFFER_CHECKS)
DEVICE_REASONS: Final = tuple(code for code, _ in _DEVICE_CHECKS)


def refusal(offer: Offer, ctx: Context, rules: Rules) -> str | None:
    """The first reason ``offer`` may not be sent on this entry, device-level ones first."""
    return device_refusal(ctx, rules) or offer_refusal(offer, ctx)


def offer_refusal(offer: Offer, ctx: Context) -> str | None:
    """The first of the offer's own reasons, device-level ones left aside."""
    return next((code for code, refused in _OFFER_CHECKS if refused(offer, ctx)), None)


def rank(offer: Offer) -> tuple[int, str]:
    """Sort key: highest priority first, then lowest id."""
    return -offer.priority, offer.id


def decide(offers: Iterable[Offer], ctx: Context, rules: Rules) -> Decision:
    """At most one offer for this entry, and the verdict on every offer."""
    ranked = sorted(offers, key=rank)
    device = device_refusal(ctx, rules)
    verdicts = [(o, device or offer_refusal(o, ctx)) for o in ranked]
    chosen = next((o for o, refused in verdicts if refused is None), None)
    considered = [Considered(offer_id=o.id, refused=refused) for o, refused in verdicts]
    return Decision(chosen=chosen, considered=considered, device_refused=device)


def audience(
    offers: Iterable[Offer], store_id: str, store_tags: Sequence[str], now: float
) -> list[str]:
    """The offers that ran at ``now`` and target the store: whose funnel the entry enters."""
    tags = set(store_tags)
    return [
        o.id
        for o in offers
        if o.active
        and o.starts_at <= now < o.ends_at
        and (store_id in o.store_ids or bool(tags & set(o.store_tags)))
    ]


def render(body: str, store_name: str) -> str:
    """The body with the store's name in place: plain replacement, nothing evaluated."""
    return body.replace(PLACEHOLDER, store_name)


def make_notification(offer: Offer, ctx: Context, notification_id: str) -> Notification:
    return Notification(
        notification_id=notification_id,
        offer_id=offer.id,
        store_id=ctx.store_id,
        title=offer.title,
        body=render(offer.body, ctx.store_name),
        created_at=ctx.now,
        expires_at=ctx.now + offer.ttl_s,
    )


def plan(  # noqa: PLR0913 - the entries and offers, then the context, each by name
    entries: Sequence[Entry],
    offers: Sequence[Offer],
    ledger: Ledger,
    *,
    device: DeviceView,
    now: float,
    rules: Rules,
    budget_left: dict[str, int | None],
    notification_id: NotificationId,
    device_ref: str = "",
) -> Plan:
    """Decide every entry in order; a notification made counts against the next ones.
    ``device_ref`` places the device in or out of each offer's control group."""
    decisions: list[EntryDecision] = []
    notifications: list[Notification] = []
    budget = dict(budget_left)
    for entry in entries:
        ctx = _context(entry, device, now, ledger, budget)
        decision = held_out(decide(offers, ctx, rules), device_ref)
        made = _notify(decision, ctx, entry, notification_id)
        if made is not None:
            notifications.append(made)
            ledger = ledger.spend(made.offer_id, now)
            _spend_budget(budget, decision.chosen)
        record = _record(entry, now, decision, made)
        decisions.append(record)
        ledger = ledger.remember(record)
    return Plan(ledger=ledger, decisions=decisions, notifications=notifications)


def in_control(device_ref: str, offer: Offer) -> bool:
    """Whether the device is in the offer's control group: the same answer on every
    entry, about ``control_pct`` in a hundred devices, independently for each offer."""
    if offer.control_pct <= 0:
        return False
    digest = hashlib.blake2b(f"{device_ref}|{offer.id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest) % 10_000 < offer.control_pct * 100


def held_out(decision: Decision, device_ref: str) -> Decision:
    """The decision with its chosen offer held out when the device is in its control
    group: nothing chosen, and the offer marked ``control-group``."""
    chosen = decision.chosen
    if chosen is None or not in_control(device_ref, chosen):
        return decision
    considered = [
        Considered(offer_id=c.offer_id, refused=CONTROL_GROUP) if c.offer_id == chosen.id else c
        for c in decision.considered
    ]
    return Decision(
        chosen=None,
        considered=considered,
        device_refused=decision.device_refused,
        control=chosen,
    )


def _context(
    entry: Entry, device: DeviceView, now: float, ledger: Ledger, budget: dict[str, int | None]
) -> Context:
    return Context(
        store_id=entry.store_id,
        store_tags=entry.store_tags,
        store_timezone=entry.store_timezone,
        store_name=entry.store_name,
        entry_at=entry.at,
        now=now,
        device=device,
        device_sent=list(ledger.device_sent),
        per_offer_sent={k: list(v) for k, v in ledger.per_offer_sent.items()},
        budget_left=budget,
    )


def _notify(
    decision: Decision, ctx: Context, entry: Entry, notification_id: NotificationId
) -> Notification | None:
    if decision.chosen is None:
        return None
    return make_notification(decision.chosen, ctx, notification_id(entry))


def _spend_budget(budget: dict[str, int | None], offer: Offer | None) -> None:
    if offer is not None and offer.budget is not None:
        left = budget.get(offer.id, offer.budget)
        budget[offer.id] = None if left is None else left - 1


def _record(
    entry: Entry, now: float, decision: Decision, made: Notification | None
) -> EntryDecision:
    return EntryDecision(
        store_id=entry.store_id,
        entry_at=entry.at,
        decided_at=now,
        device_refused=decision.device_refused,
        considered=decision.considered,
        notification_id=None if made is None else made.notification_id,
        **_eligible(decision, made),
    )


def _eligible(decision: Decision, made: Notification | None) -> dict[str, Any]:
    """The offer the entry was eligible for, and its group, if any."""
    if made is not None:
        return {"offer_id": made.offer_id, "group": "treated"}
    if decision.control is not None:
        return {"offer_id": decision.control.id, "group": "control"}
    return {}


# --- the API view ----------------------------------------------------------------------


def offer_doc(offer: Offer) -> dict[str, Any]:
    """The offer as the API shows it: times in RFC 3339 (UTC)."""
    doc: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(offer))
    doc["starts_at"] = format_time(offer.starts_at)
    doc["ends_at"] = format_time(offer.ends_at)
    return doc
