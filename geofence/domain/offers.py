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

Every rule is judged at ``now``, the moment the notification would be made. Hours are
wall-clock ranges; one that ends before it starts (``22:00-02:00``) crosses midnight and
belongs to the weekday it starts on.

``parse_offer`` validates an offer as the API receives it, listing every problem with a
path and one of these codes: ``wrong-type``, ``unknown-field``, ``missing-field``,
``bad-id``, ``id-mismatch``, ``bad-time``, ``ends-before-starts``, ``bad-hours``,
``no-target``, ``bad-template``, ``out-of-range``.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from functools import cache
from typing import Any, Final

import msgspec

from geofence.domain.devices import DeviceProfile
from geofence.domain.errors import InvalidInput, Problem
from geofence.domain.times import format_time

WEEKDAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
PLACEHOLDER: Final = "{store_name}"
DAY_S: Final = 86_400

MAX_ID_LEN: Final = 128
MAX_NAME_LEN: Final = 64
MAX_NAMES: Final = 1_000
MAX_TITLE_LEN: Final = 200
MAX_BODY_LEN: Final = 2_000
MAX_RANGES_PER_DAY: Final = 10
MAX_PRIORITY: Final = 1_000_000
MAX_PER_DEVICE_LIMIT: Final = 1_000
MAX_COOLDOWN_S: Final = 366 * DAY_S
MAX_TTL_S: Final = 7 * DAY_S
MAX_BUDGET: Final = 1_000_000_000
MAX_EPOCH_S: Final = 253_402_300_799  # 9999-12-31T23:59:59Z
MAX_DECISIONS: Final = 10

_RANGE = re.compile(r"^(\d\d):(\d\d)-(\d\d):(\d\d)$")
_RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\d)[Tt ](\d\d:\d\d:\d\d)(\.\d+)?([Zz]|[+-]\d\d:\d\d)$")
_NUMBER = re.compile(r"^\d+(\.\d+)?$")
_ID = re.compile(r"^[A-Za-z0-9._~:-]+$")
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


def plan(
    entries: Sequence[Entry],
    offers: Sequence[Offer],
    ledger: Ledger,
    *,
    device: DeviceView,
    now: float,
    rules: Rules,
    budget_left: dict[str, int | None],
    notification_id: NotificationId,
) -> Plan:
    """Decide every entry in order; a notification made counts against the next ones."""
    decisions: list[EntryDecision] = []
    notifications: list[Notification] = []
    budget = dict(budget_left)
    for entry in entries:
        ctx = _context(entry, device, now, ledger, budget)
        decision = decide(offers, ctx, rules)
        made = _notify(decision, ctx, entry, notification_id)
        if made is not None:
            notifications.append(made)
            ledger = ledger.spend(made.offer_id, now)
            _spend_budget(budget, decision.chosen)
        record = _record(entry, now, decision, made)
        decisions.append(record)
        ledger = ledger.remember(record)
    return Plan(ledger=ledger, decisions=decisions, notifications=notifications)


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
        offer_id=None if made is None else made.offer_id,
    )


# --- parsing ----------------------------------------------------------------------------


class _Bad(Exception):
    """One problem with a value; raised by the field checks, collected by parse_offer."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


Check = Callable[[Any, str, list[Problem]], Any]


def _typed(value: Any, kind: type | tuple[type, ...], name: str) -> Any:
    if isinstance(value, bool) and kind is not bool:
        raise _Bad("wrong-type", f"expected {name}, got a boolean")
    if not isinstance(value, kind):
        raise _Bad("wrong-type", f"expected {name}, got {type(value).__name__}")
    return value


def _text(max_len: int) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        text: str = _typed(value, str, "a string")
        if not 0 < len(text) <= max_len:
            raise _Bad("out-of-range", f"length must be 1..{max_len}, got {len(text)}")
        return text

    return check


def _check_template(body: str) -> None:
    """Only ``{store_name}`` may appear in braces; any other brace is refused."""
    rest = body.replace(PLACEHOLDER, "")
    if "{" in rest or "}" in rest:
        raise _Bad("bad-template", "only {store_name} may be used in braces")


def _body(value: Any) -> str:
    body = _text(MAX_BODY_LEN)(value)
    _check_template(body)
    return body


def _bounded(lo: float, hi: float, kind: type | tuple[type, ...], name: str) -> Any:
    def check(value: Any) -> Any:
        number = _typed(value, kind, name)
        if not lo <= number <= hi:  # also refuses NaN and inf; big ints compare exactly
            raise _Bad("out-of-range", f"must be within {lo}..{hi}")
        return number

    return check


def _float(lo: float, hi: float) -> Callable[[Any], float]:
    check = _bounded(lo, hi, (int, float), "a number")
    return lambda value: float(check(value))


def _bool(value: Any) -> bool:
    flag: bool = _typed(value, bool, "a boolean")
    return flag


def _nullable(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else check(value)


def parse_time(value: Any) -> float:
    """RFC 3339 with an offset (``Z`` or ``±HH:MM``), or epoch seconds, as epoch seconds."""
    epoch = _epoch(value) if isinstance(value, str) else value
    if isinstance(epoch, bool) or not isinstance(epoch, (int, float)):
        raise _Bad("bad-time", "expected RFC 3339 with an offset, or epoch seconds")
    if not 0 <= epoch <= MAX_EPOCH_S:
        raise _Bad("bad-time", "must be between 1970 and 9999")
    return float(epoch)


def parse_time_param(value: str | float) -> float:
    """Epoch seconds (also as text, as in a query) or RFC 3339; else ValueError."""
    if isinstance(value, str) and _NUMBER.match(value):
        value = float(value)
    try:
        return parse_time(value)
    except _Bad as bad:
        raise ValueError(bad.detail) from None


def _epoch(value: str) -> float:
    match = _RFC3339.match(value)
    if match is None:
        raise _Bad("bad-time", "expected RFC 3339 with an offset, or epoch seconds")
    day, clock, fraction, offset = match.groups()
    offset = "+00:00" if offset in ("Z", "z") else offset
    try:
        moment = datetime.fromisoformat(f"{day}T{clock}{(fraction or '')[:7]}{offset}")
    except ValueError as e:
        raise _Bad("bad-time", f"{value!r}: {e}") from None
    return moment.timestamp()


def _names(value: Any, path: str, problems: list[Problem]) -> Any:
    items = _typed(value, list, "a list of strings")
    if len(items) > MAX_NAMES:
        raise _Bad("out-of-range", f"at most {MAX_NAMES} entries")
    check = _text(MAX_NAME_LEN)
    names, bad = _collect([(f"{path}[{i}]", check, item) for i, item in enumerate(items)])
    problems.extend(bad)
    return _INVALID if bad else tuple(names)


def _some_names(value: Any, path: str, problems: list[Problem]) -> Any:
    if value is None:
        return None
    if value == []:
        raise _Bad("out-of-range", "give at least one, or null for everyone")
    return _names(value, path, problems)


def _hours(value: Any, path: str, problems: list[Problem]) -> Any:
    if value is None:
        return None
    days = _typed(value, dict, "an object of weekdays")
    if not days:
        raise _Bad("bad-hours", "give at least one weekday, or null for any time")
    before = len(problems)
    hours = {day: _day(day, ranges, f"{path}.{day}", problems) for day, ranges in days.items()}
    return hours if len(problems) == before else _INVALID


def _day(day: str, ranges: Any, path: str, problems: list[Problem]) -> tuple[str, ...]:
    if day not in WEEKDAYS:
        problems.append(Problem(path=path, code="bad-hours", detail="weekdays are mon..sun"))
        return ()
    if not isinstance(ranges, list) or len(ranges) > MAX_RANGES_PER_DAY:
        detail = f"expected a list of at most {MAX_RANGES_PER_DAY} ranges"
        problems.append(Problem(path=path, code="bad-hours", detail=detail))
        return ()
    valid, bad = _collect([(f"{path}[{i}]", _time_range, r) for i, r in enumerate(ranges)])
    problems.extend(bad)
    return tuple(valid)


def _time_range(value: Any) -> str:
    if not isinstance(value, str):
        raise _Bad("bad-hours", "expected a string HH:MM-HH:MM")
    try:
        parse_range(value)
    except ValueError as e:
        raise _Bad("bad-hours", str(e)) from None
    return value


_INVALID: Final = object()


def _collect(
    checks: list[tuple[str, Callable[[Any], Any], Any]],
) -> tuple[list[Any], list[Problem]]:
    values: list[Any] = []
    problems: list[Problem] = []
    for path, check, value in checks:
        try:
            values.append(check(value))
        except _Bad as bad:
            problems.append(Problem(path=path, code=bad.code, detail=bad.detail))
    return values, problems


def _simple(check: Callable[[Any], Any]) -> Check:
    return lambda value, path, problems: check(value)


_FIELDS: Final[dict[str, Check]] = {
    "title": _simple(_text(MAX_TITLE_LEN)),
    "body": _simple(_body),
    "store_ids": _names,
    "store_tags": _names,
    "tiers": _some_names,
    "segments": _some_names,
    "starts_at": _simple(parse_time),
    "ends_at": _simple(parse_time),
    "hours": _hours,
    "priority": _simple(_bounded(-MAX_PRIORITY, MAX_PRIORITY, int, "an integer")),
    "per_device_limit": _simple(_bounded(1, MAX_PER_DEVICE_LIMIT, int, "an integer")),
    "per_device_cooldown_s": _simple(_float(0, MAX_COOLDOWN_S)),
    "budget": _simple(_nullable(_bounded(0, MAX_BUDGET, int, "an integer"))),
    "ttl_s": _simple(_float(1, MAX_TTL_S)),
    "active": _simple(_bool),
}
REQUIRED: Final = ("title", "body", "starts_at", "ends_at")


def parse_offer(offer_id: str, doc: Any) -> Offer:
    """The offer ``doc`` (a decoded JSON object) describes, or InvalidInput with every problem."""
    if not isinstance(doc, dict):
        problem = Problem(path="$", code="wrong-type", detail="an offer is a JSON object")
        raise InvalidInput([problem], "an offer is a JSON object")
    problems = _id_problems(offer_id, doc) + _unknown_fields(doc) + _missing_fields(doc)
    values = _field_values(doc, problems)
    problems.extend(_cross_problems(doc, values))
    if problems:
        raise InvalidInput(problems, f"{len(problems)} problem(s) in the offer")
    return Offer(id=offer_id, **values)


def _id_problems(offer_id: str, doc: dict[str, Any]) -> list[Problem]:
    if not (len(offer_id) <= MAX_ID_LEN and _ID.match(offer_id)):
        detail = f"1..{MAX_ID_LEN} of letters, digits and ._~:-"
        return [Problem(path="$.id", code="bad-id", detail=detail)]
    if "id" in doc and doc["id"] != offer_id:
        return [Problem(path="$.id", code="id-mismatch", detail="differs from the URL's id")]
    return []


def _unknown_fields(doc: dict[str, Any]) -> list[Problem]:
    known = {*_FIELDS, "id"}
    return [
        Problem(path=f"$.{name}", code="unknown-field", detail=f"{name!r} is not an offer field")
        for name in doc
        if name not in known
    ]


def _missing_fields(doc: dict[str, Any]) -> list[Problem]:
    return [
        Problem(path=f"$.{name}", code="missing-field", detail=f"{name!r} is required")
        for name in REQUIRED
        if name not in doc
    ]


def _field_values(doc: dict[str, Any], problems: list[Problem]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, check in _FIELDS.items():
        if name not in doc:
            continue
        try:
            value = check(doc[name], f"$.{name}", problems)
        except _Bad as bad:
            problems.append(Problem(path=f"$.{name}", code=bad.code, detail=bad.detail))
            continue
        if value is not _INVALID:
            values[name] = value
    return values


def _cross_problems(doc: dict[str, Any], values: dict[str, Any]) -> list[Problem]:
    """Rules between fields, judged only on fields that are valid themselves."""
    problems: list[Problem] = []
    targets_known = all(name in values for name in ("store_ids", "store_tags") if name in doc)
    if targets_known and not (values.get("store_ids") or values.get("store_tags")):
        detail = "give store_ids and/or store_tags"
        problems.append(Problem(path="$.store_ids", code="no-target", detail=detail))
    starts, ends = values.get("starts_at"), values.get("ends_at")
    if starts is not None and ends is not None and ends <= starts:
        detail = "ends_at must be after starts_at"
        problems.append(Problem(path="$.ends_at", code="ends-before-starts", detail=detail))
    return problems


def offer_doc(offer: Offer) -> dict[str, Any]:
    """The offer as the API shows it: times in RFC 3339 (UTC)."""
    doc: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(offer))
    doc["starts_at"] = format_time(offer.starts_at)
    doc["ends_at"] = format_time(offer.ends_at)
    return doc
