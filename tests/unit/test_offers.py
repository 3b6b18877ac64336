"""Offers of contract §6: eligibility per rule and its boundary, time zones, the choice."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geofence.domain.devices import DeviceProfile
from geofence.domain.offers import (
    DEVICE_REASONS,
    OFFER_REASONS,
    Context,
    DeviceView,
    Offer,
    Rules,
    decide,
    device_refusal,
    in_range,
    make_notification,
    parse_range,
    quiet_window,
    refusal,
    render,
)

HOUR, DAY = 3_600.0, 86_400.0
HELSINKI, NEW_YORK, KOLKATA = "Europe/Helsinki", "America/New_York", "Asia/Kolkata"
RULES = Rules()


def utc(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


NOW = utc("2026-06-15T09:00:00Z")  # a Monday; 12:00 in Helsinki


def offer(**changes: Any) -> Offer:
    base: dict[str, Any] = {
        "id": "o1",
        "title": "Coffee",
        "body": "Free coffee at {store_name}",
        "store_ids": ("s1",),
        "starts_at": NOW - DAY,
        "ends_at": NOW + DAY,
    }
    return Offer(**(base | changes))


def device(**changes: Any) -> DeviceView:
    base: dict[str, Any] = {"offers_consent": True, "tier": "gold", "segments": ("students",)}
    return DeviceView(**(base | changes))


def ctx(**changes: Any) -> Context:
    base: dict[str, Any] = {
        "store_id": "s1",
        "store_tags": ("mall",),
        "store_timezone": HELSINKI,
        "store_name": "Kamppi",
        "entry_at": NOW - 60,
        "now": NOW,
        "device": device(),
    }
    return Context(**(base | changes))


def at(when: str) -> Context:
    """An entry emitted at ``when`` and decided at once."""
    return ctx(now=utc(when), entry_at=utc(when))


# --- eligibility, one rule at a time -------------------------------------------------------

O, C = offer, ctx  # noqa: E741  (short, so the table reads one case a line)
ELIGIBILITY: list[tuple[str, Offer, Context, str | None]] = [
    ("eligible", O(), C(), None),
    ("inactive", O(active=False), C(), "inactive"),
    ("starts later", O(starts_at=NOW + 1), C(), "not-started"),
    ("starts now", O(starts_at=NOW), C(), None),
    ("ends now", O(ends_at=NOW), C(), "ended"),
    ("ends next second", O(ends_at=NOW + 1), C(), None),
    ("closed hours", O(hours={"mon": ("11:00-12:00",)}), C(), "outside-hours"),
    ("open hours", O(hours={"mon": ("12:00-13:00",)}), C(), None),
    ("closed weekday", O(hours={"tue": ("00:00-24:00",)}), C(), "outside-hours"),
    ("other store", O(store_ids=("s2",)), C(), "store-not-targeted"),
    ("other tag", O(store_ids=(), store_tags=("outlet",)), C(), "store-not-targeted"),
    ("tag matches", O(store_ids=(), store_tags=("outlet", "mall")), C(), None),
    ("id or tag", O(store_ids=("s2",), store_tags=("mall",)), C(), None),
    ("other tier", O(tiers=("silver",)), C(), "tier-not-matched"),
    ("one of tiers", O(tiers=("silver", "gold")), C(), None),
    ("no tier", O(tiers=("gold",)), C(device=device(tier=None)), "tier-not-matched"),
    ("other segment", O(segments=("retired",)), C(), "segment-not-matched"),
    ("one segment", O(segments=("retired", "students")), C(), None),
    ("no segments", O(segments=("pupils",)), C(device=device(segments=())), "segment-not-matched"),
    ("limit used", O(), C(per_offer_sent={"o1": [NOW - 9 * DAY]}), "per-device-limit"),
    ("limit left", O(per_device_limit=2), C(per_offer_sent={"o1": [NOW - 9 * DAY]}), None),
    ("other offer's sends", O(), C(per_offer_sent={"o2": [NOW - 60]}), None),
    (
        "cooling down",
        O(per_device_limit=2),
        C(per_offer_sent={"o1": [NOW - DAY + 1]}),
        "per-device-cooldown",
    ),
    ("cooled down", O(per_device_limit=2), C(per_offer_sent={"o1": [NOW - DAY]}), None),
    ("budget spent", O(budget=10), C(budget_left={"o1": 0}), "budget-spent"),
    ("budget left", O(budget=10), C(budget_left={"o1": 1}), None),
    ("budget zero", O(budget=0), C(), "budget-spent"),
    ("no budget", O(budget=None), C(budget_left={"o1": 0}), None),
    ("no consent", O(), C(device=device(offers_consent=False)), "no-offers-consent"),
    ("quiet", O(), at("2026-06-15T18:00:00Z"), "quiet-hours"),
    ("not yet quiet", O(), at("2026-06-15T17:59:59Z"), None),
    ("cap reached", O(), C(device_sent=[NOW - 2 * DAY + 1, NOW - 1]), "device-cap"),
    ("cap window passed", O(), C(device_sent=[NOW - 2 * DAY, NOW - 1]), None),
    ("cap not reached", O(), C(device_sent=[NOW - HOUR]), None),
    ("entry late", O(), C(entry_at=NOW - 901), "entry-too-late"),
    ("entry in time", O(), C(entry_at=NOW - 900), None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("the_offer", "the_ctx", "reason"),
    [case[1:] for case in ELIGIBILITY],
    ids=[case[0] for case in ELIGIBILITY],
)
def test_eligibility(the_offer: Offer, the_ctx: Context, reason: str | None) -> None:
    assert refusal(the_offer, the_ctx, RULES) == reason


def test_every_reason_has_a_case() -> None:
    produced = {case[3] for case in ELIGIBILITY}
    assert produced == {*OFFER_REASONS, *DEVICE_REASONS, None}


def test_reasons_are_checked_in_the_documented_order() -> None:
    """Fix the first failing rule each time: the next reason is the next one in the order."""
    fixes: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
        ("no-offers-consent", {}, {"device": device(offers_consent=True, tier=None, segments=())}),
        ("quiet-hours", {}, {"now": NOW + 10 * DAY}),
        ("device-cap", {}, {"device_sent": []}),
        ("entry-too-late", {}, {"entry_at": NOW + 10 * DAY}),
        ("inactive", {"active": True}, {}),
        ("not-started", {"starts_at": NOW}, {}),
        ("ended", {"ends_at": NOW + 20 * DAY}, {}),
        ("outside-hours", {"hours": None}, {}),
        ("store-not-targeted", {"store_ids": ("s1",)}, {}),
        ("tier-not-matched", {"tiers": None}, {}),
        ("segment-not-matched", {"segments": None}, {}),
        ("per-device-limit", {"per_device_limit": 5}, {}),
        ("per-device-cooldown", {"per_device_cooldown_s": 0.0}, {}),
        ("budget-spent", {"budget": None}, {}),
    ]
    the_offer = offer(
        active=False,
        starts_at=NOW + 11 * DAY,
        ends_at=NOW + 10 * DAY,
        hours={"sun": ("01:00-02:00",)},
        store_ids=("s9",),
        tiers=("gold",),
        segments=("students",),
        budget=1,
    )
    the_ctx = ctx(
        device=device(offers_consent=False, tier=None, segments=()),
        now=utc("2026-06-15T20:00:00Z"),
        device_sent=[NOW + 10 * DAY - 1] * 2,
        entry_at=0.0,
        per_offer_sent={"o1": [NOW + 10 * DAY]},
        budget_left={"o1": 0},
    )
    seen = []
    for _, offer_fix, ctx_fix in fixes:
        seen.append(refusal(the_offer, the_ctx, RULES))
        the_offer = msgspec.structs.replace(the_offer, **offer_fix)
        the_ctx = msgspec.structs.replace(the_ctx, **ctx_fix)
    assert seen == [reason for reason, _, _ in fixes]
    assert seen == [*DEVICE_REASONS, *OFFER_REASONS]
    assert refusal(the_offer, the_ctx, RULES) is None


def test_rules_change_the_device_limits() -> None:
    rules = Rules(quiet_hours="off", device_cap=3, device_cap_window_s=HOUR, notify_max_lag_s=60)
    late = ctx(now=utc("2026-06-15T20:00:00Z"), entry_at=utc("2026-06-15T19:59:00Z"))
    assert device_refusal(late, rules) is None
    assert device_refusal(ctx(device_sent=[NOW - 10] * 3), rules) == "device-cap"
    assert device_refusal(ctx(device_sent=[NOW - HOUR] * 3), rules) is None
    assert device_refusal(ctx(entry_at=NOW - 61), rules) == "entry-too-late"


# --- hours and quiet hours in local time ---------------------------------------------------

TWO_RANGES = ("08:00-10:00", "16:00-18:00")
HOURS_CASES: list[tuple[str, dict[str, tuple[str, ...]], str, str, bool]] = [
    # Helsinki springs forward on Sunday 2026-03-29 at 01:00Z (03:00 EET -> 04:00 EEST)
    ("sat EET before 9", {"sat": ("09:00-21:00",)}, HELSINKI, "2026-03-28T06:59:59Z", False),
    ("sat EET 9", {"sat": ("09:00-21:00",)}, HELSINKI, "2026-03-28T07:00:00Z", True),
    ("sun EEST before 9", {"sun": ("09:00-21:00",)}, HELSINKI, "2026-03-29T05:59:59Z", False),
    ("sun EEST 9", {"sun": ("09:00-21:00",)}, HELSINKI, "2026-03-29T06:00:00Z", True),
    ("sun EEST before 21", {"sun": ("09:00-21:00",)}, HELSINKI, "2026-03-29T17:59:59Z", True),
    ("sun EEST 21", {"sun": ("09:00-21:00",)}, HELSINKI, "2026-03-29T18:00:00Z", False),
    ("night before the jump", {"sat": ("22:00-04:00",)}, HELSINKI, "2026-03-29T00:59:59Z", True),
    ("night after the jump", {"sat": ("22:00-04:00",)}, HELSINKI, "2026-03-29T01:00:00Z", False),
    # and falls back on Sunday 2026-10-25 at 01:00Z (04:00 EEST -> 03:00 EET)
    ("sat EEST 9", {"sat": ("09:00-21:00",)}, HELSINKI, "2026-10-24T06:00:00Z", True),
    ("sun EET before 9", {"sun": ("09:00-21:00",)}, HELSINKI, "2026-10-25T06:59:59Z", False),
    ("sun EET 9", {"sun": ("09:00-21:00",)}, HELSINKI, "2026-10-25T07:00:00Z", True),
    ("night, first 03:59", {"sat": ("22:00-04:00",)}, HELSINKI, "2026-10-25T00:59:59Z", True),
    ("night, second 03:00", {"sat": ("22:00-04:00",)}, HELSINKI, "2026-10-25T01:00:00Z", True),
    ("night, second 03:59", {"sat": ("22:00-04:00",)}, HELSINKI, "2026-10-25T01:59:59Z", True),
    ("night, 04:00 EET", {"sat": ("22:00-04:00",)}, HELSINKI, "2026-10-25T02:00:00Z", False),
    # New York springs forward on 2026-03-08
    ("NY sat EST 9", {"sat": ("09:00-17:00",)}, NEW_YORK, "2026-03-07T14:00:00Z", True),
    ("NY sat EST before 9", {"sat": ("09:00-17:00",)}, NEW_YORK, "2026-03-07T13:59:59Z", False),
    ("NY sun EDT 9", {"sun": ("09:00-17:00",)}, NEW_YORK, "2026-03-08T13:00:00Z", True),
    ("NY sun EDT before 9", {"sun": ("09:00-17:00",)}, NEW_YORK, "2026-03-08T12:59:59Z", False),
    ("NY 23:30 is still fri", {"fri": ("23:00-24:00",)}, NEW_YORK, "2026-06-13T03:30:00Z", True),
    # Kolkata, +05:30 all year
    ("IST before 9", {"mon": ("09:00-21:00",)}, KOLKATA, "2026-06-15T03:29:59Z", False),
    ("IST 9", {"mon": ("09:00-21:00",)}, KOLKATA, "2026-06-15T03:30:00Z", True),
    ("IST before 21", {"mon": ("09:00-21:00",)}, KOLKATA, "2026-06-15T15:29:59Z", True),
    ("IST 21", {"mon": ("09:00-21:00",)}, KOLKATA, "2026-06-15T15:30:00Z", False),
    # midnight-crossing ranges belong to the day they start on, across the week's end too
    ("sun night into mon", {"sun": ("22:00-02:00",)}, KOLKATA, "2026-06-14T19:00:00Z", True),
    ("mon night not mon 00:30", {"mon": ("22:00-02:00",)}, KOLKATA, "2026-06-14T19:00:00Z", False),
    ("mon night at 22", {"mon": ("22:00-02:00",)}, KOLKATA, "2026-06-15T16:30:00Z", True),
    ("sun night ends at 2", {"sun": ("22:00-02:00",)}, KOLKATA, "2026-06-14T20:30:00Z", False),
    ("until midnight", {"mon": ("22:00-00:00",)}, KOLKATA, "2026-06-15T18:29:59Z", True),
    ("two ranges, gap", {"mon": TWO_RANGES}, KOLKATA, "2026-06-15T06:00:00Z", False),
    ("two ranges, second", {"mon": TWO_RANGES}, KOLKATA, "2026-06-15T10:30:00Z", True),
    ("closed day", {"mon": ()}, KOLKATA, "2026-06-15T06:00:00Z", False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("hours", "timezone", "when", "open_"),
    [case[1:] for case in HOURS_CASES],
    ids=[case[0] for case in HOURS_CASES],
)
def test_store_hours_in_local_time(
    hours: dict[str, tuple[str, ...]], timezone: str, when: str, open_: bool
) -> None:
    now = utc(when)
    the_ctx = ctx(store_timezone=timezone, now=now, entry_at=now)
    always = {"starts_at": 0.0, "ends_at": 2e9}
    reason = refusal(offer(hours=hours, **always), the_ctx, Rules(quiet_hours="off"))
    assert reason == (None if open_ else "outside-hours")


QUIET_CASES: list[tuple[str, str | None, str, str, str, bool]] = [
    ("EET morning", None, HELSINKI, "21:00-08:00", "2026-03-28T05:59:59Z", True),
    ("EET 8", None, HELSINKI, "21:00-08:00", "2026-03-28T06:00:00Z", False),
    ("EEST morning", None, HELSINKI, "21:00-08:00", "2026-03-29T04:59:59Z", True),
    ("EEST 8", None, HELSINKI, "21:00-08:00", "2026-03-29T05:00:00Z", False),
    ("EEST before 21", None, HELSINKI, "21:00-08:00", "2026-03-29T17:59:59Z", False),
    ("EEST 21", None, HELSINKI, "21:00-08:00", "2026-03-29T18:00:00Z", True),
    ("autumn EET morning", None, HELSINKI, "21:00-08:00", "2026-10-25T05:59:59Z", True),
    ("autumn EET 8", None, HELSINKI, "21:00-08:00", "2026-10-25T06:00:00Z", False),
    ("device's zone wins", NEW_YORK, HELSINKI, "21:00-08:00", "2026-06-15T19:00:00Z", False),
    ("store's zone", None, HELSINKI, "21:00-08:00", "2026-06-15T19:00:00Z", True),
    ("NY device at 07:59 EDT", NEW_YORK, KOLKATA, "21:00-08:00", "2026-06-15T11:59:59Z", True),
    ("NY device at 08:00 EDT", NEW_YORK, KOLKATA, "21:00-08:00", "2026-06-15T12:00:00Z", False),
    ("IST before 21", KOLKATA, HELSINKI, "21:00-08:00", "2026-06-15T15:29:59Z", False),
    ("IST 21", KOLKATA, HELSINKI, "21:00-08:00", "2026-06-15T15:30:00Z", True),
    ("IST midnight", KOLKATA, HELSINKI, "21:00-08:00", "2026-06-14T18:30:00Z", True),
    ("IST 8", KOLKATA, HELSINKI, "21:00-08:00", "2026-06-15T02:30:00Z", False),
    ("same-day range, inside", KOLKATA, HELSINKI, "01:00-05:00", "2026-06-14T20:00:00Z", True),
    ("same-day range, after", KOLKATA, HELSINKI, "01:00-05:00", "2026-06-14T23:30:00Z", False),
    ("off", KOLKATA, HELSINKI, "off", "2026-06-14T20:00:00Z", False),
]


@pytest.mark.parametrize(
    ("device_tz", "store_tz", "quiet", "when", "quiet_now"),
    [case[1:] for case in QUIET_CASES],
    ids=[case[0] for case in QUIET_CASES],
)
def test_quiet_hours_in_the_devices_zone_else_the_stores(
    device_tz: str | None, store_tz: str, quiet: str, when: str, quiet_now: bool
) -> None:
    now = utc(when)
    the_ctx = ctx(device=device(timezone=device_tz), store_timezone=store_tz, now=now, entry_at=now)
    reason = device_refusal(the_ctx, Rules(quiet_hours=quiet))
    assert reason == ("quiet-hours" if quiet_now else None)


@pytest.mark.parametrize(
    ("text", "window"),
    [
        ("21:00-08:00", (75_600, 28_800)),
        ("00:00-24:00", (0, 86_400)),
        ("22:00-00:00", (79_200, 0)),
        ("09:30-17:45", (34_200, 63_900)),
    ],
)
def test_parse_range(text: str, window: tuple[int, int]) -> None:
    assert parse_range(text) == window


@pytest.mark.parametrize(
    "text", ["", "9:00-17:00", "09:00-17:00 ", "24:00-01:00", "09:60-10:00", "24:30-01:00",
             "10:00-24:01", "10:00-10:00", "00:00-00:00", "24:00-24:00", "10-12", "ab:cd-ef:gh"],
)  # fmt: skip
def test_parse_range_refuses(text: str) -> None:
    with pytest.raises(ValueError, match=r"is not|is empty"):
        parse_range(text)


def test_quiet_hours_setting() -> None:
    assert quiet_window("off") is None
    assert quiet_window("") is None
    assert quiet_window("21:00-08:00") == (75_600, 28_800)
    with pytest.raises(ValueError, match="is not HH:MM-HH:MM"):
        Rules(quiet_hours="9pm-8am")


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 1_439), st.integers(0, 1_439), st.floats(0, DAY, exclude_max=True))
def test_a_range_and_its_complement_split_the_day(a: int, b: int, second: float) -> None:
    if a != b:
        window, other = (a * 60, b * 60), (b * 60, a * 60)
        assert in_range(window, second) != in_range(other, second)


# --- the choice -------------------------------------------------------------------------


def test_highest_priority_then_lowest_id() -> None:
    offers = [
        offer(id="b", priority=5),
        offer(id="c", priority=9, active=False),
        offer(id="a", priority=5),
        offer(id="d", priority=1),
    ]
    decision = decide(offers, ctx(), RULES)
    assert decision.chosen is not None
    assert decision.chosen.id == "a"
    assert [(c.offer_id, c.refused) for c in decision.considered] == [
        ("c", "inactive"),
        ("a", None),
        ("b", None),
        ("d", None),
    ]
    assert decision.device_refused is None


def test_nothing_eligible_nothing_chosen() -> None:
    decision = decide([offer(id="a", ends_at=NOW)], ctx(), RULES)
    assert decision.chosen is None
    assert [(c.offer_id, c.refused) for c in decision.considered] == [("a", "ended")]
    assert decide([], ctx(), RULES).chosen is None


@pytest.mark.parametrize(
    ("the_ctx", "reason"),
    [
        (ctx(device=device(offers_consent=False)), "no-offers-consent"),
        (ctx(now=NOW + 9 * HOUR, entry_at=NOW + 9 * HOUR), "quiet-hours"),
        (ctx(device_sent=[NOW - 1, NOW - 2]), "device-cap"),
        (ctx(entry_at=NOW - 1_000), "entry-too-late"),
    ],
)
def test_a_device_refusal_applies_to_every_offer(the_ctx: Context, reason: str) -> None:
    decision = decide([offer(id="a"), offer(id="b", active=False)], the_ctx, RULES)
    assert decision.chosen is None
    assert decision.device_refused == reason
    assert [c.refused for c in decision.considered] == [reason, reason]


def test_every_offer_reason_shows_in_considered() -> None:
    offers = [
        offer(id="inactive", active=False),
        offer(id="not-started", starts_at=NOW + 1),
        offer(id="ended", ends_at=NOW),
        offer(id="outside-hours", hours={"tue": ("09:00-17:00",)}),
        offer(id="store-not-targeted", store_ids=("elsewhere",)),
        offer(id="tier-not-matched", tiers=("platinum",)),
        offer(id="segment-not-matched", segments=("retired",)),
        offer(id="per-device-limit"),
        offer(id="per-device-cooldown", per_device_limit=3),
        offer(id="budget-spent", budget=5),
        offer(id="winner", priority=-1),
    ]
    the_ctx = ctx(
        per_offer_sent={"per-device-limit": [NOW - 9 * DAY], "per-device-cooldown": [NOW - 60]},
        budget_left={"budget-spent": 0},
    )
    decision = decide(offers, the_ctx, RULES)
    assert decision.chosen is not None
    assert decision.chosen.id == "winner"
    for considered in decision.considered:
        expected = None if considered.offer_id == "winner" else considered.offer_id
        assert considered.refused == expected
    assert {c.refused for c in decision.considered} == {*OFFER_REASONS, None}


names = st.sampled_from(["a", "b", "c", "d"])


@st.composite
def offers_(draw: st.DrawFn) -> Offer:
    return offer(
        id=draw(st.text("abcdef", min_size=1, max_size=3)),
        priority=draw(st.integers(-2, 2)),
        active=draw(st.booleans()),
        starts_at=NOW + draw(st.sampled_from([-DAY, 0, 1])),
        ends_at=NOW + draw(st.sampled_from([0, 1, DAY])),
        store_ids=tuple(draw(st.lists(st.sampled_from(["s1", "s2"]), max_size=2))),
        store_tags=tuple(draw(st.lists(st.sampled_from(["mall", "outlet"]), max_size=2))),
        tiers=draw(st.none() | st.tuples(st.sampled_from(["gold", "silver"]))),
        segments=draw(st.none() | st.tuples(names)),
        per_device_limit=draw(st.integers(1, 2)),
        budget=draw(st.none() | st.integers(0, 2)),
    )


@st.composite
def contexts(draw: st.DrawFn) -> Context:
    return ctx(
        device=device(
            offers_consent=draw(st.booleans()),
            tier=draw(st.sampled_from([None, "gold", "silver"])),
            segments=tuple(draw(st.lists(names, max_size=2))),
        ),
        entry_at=NOW - draw(st.sampled_from([0, 900, 901])),
        device_sent=draw(st.lists(st.sampled_from([NOW - 1, NOW - 3 * DAY]), max_size=3)),
        per_offer_sent=draw(
            st.dictionaries(
                st.text("abcdef", min_size=1, max_size=3), st.lists(st.just(NOW - HOUR))
            )
        ),
        budget_left=draw(
            st.dictionaries(
                st.text("abcdef", min_size=1, max_size=3), st.none() | st.integers(0, 1)
            )
        ),
    )


@settings(max_examples=150, deadline=None)
@given(st.lists(offers_(), max_size=8), contexts())
def test_the_chosen_offer_is_eligible_and_ranks_first(
    offers: list[Offer], the_ctx: Context
) -> None:
    decision = decide(offers, the_ctx, RULES)
    verdicts = [refusal(o, the_ctx, RULES) for o in offers]
    eligible = [o for o, refused in zip(offers, verdicts, strict=True) if refused is None]
    assert len(decision.considered) == len(offers)
    assert Counter((c.offer_id, c.refused) for c in decision.considered) == Counter(
        zip([o.id for o in offers], verdicts, strict=True)
    )
    if not eligible:
        assert decision.chosen is None
        return
    assert decision.chosen is not None
    assert refusal(decision.chosen, the_ctx, RULES) is None
    best = min(eligible, key=lambda o: (-o.priority, o.id))
    assert (decision.chosen.priority, decision.chosen.id) == (best.priority, best.id)


# --- the notification -------------------------------------------------------------------


def test_make_notification() -> None:
    note = make_notification(offer(ttl_s=600.0), ctx(), "n-1")
    assert msgspec.to_builtins(note) == {
        "notification_id": "n-1",
        "device_ref": "",
        "push_token": None,
        "offer_id": "o1",
        "store_id": "s1",
        "title": "Coffee",
        "body": "Free coffee at Kamppi",
        "created_at": NOW,
        "expires_at": NOW + 600,
    }


def test_device_view_of_a_profile() -> None:
    profile = DeviceProfile(
        ref="r",
        token_hash="h",
        consent={"location": True, "offers": True},
        tier="gold",
        segments=("students",),
        timezone=KOLKATA,
    )
    assert DeviceView.of(profile) == device(timezone=KOLKATA)
    no_offers = msgspec.structs.replace(profile, consent={"location": True})
    assert not DeviceView.of(no_offers).offers_consent


@pytest.mark.parametrize(
    ("body", "name", "rendered"),
    [
        ("At {store_name}", "Kamppi", "At Kamppi"),
        ("{store_name}, {store_name}!", "K", "K, K!"),
        ("No placeholder", "K", "No placeholder"),
        ("At {store_name}", "{store_name.__class__}", "At {store_name.__class__}"),
        ("At {store_name}", "{0}{store_name}", "At {0}{store_name}"),
        ("{store_name.__class__.__mro__}", "K", "{store_name.__class__.__mro__}"),
        ("{0} {store_name!r}", "K", "{0} {store_name!r}"),
    ],
)
def test_render_replaces_and_never_evaluates(body: str, name: str, rendered: str) -> None:
    assert render(body, name) == rendered


@given(st.lists(st.text().filter(lambda s: "{" not in s and "}" not in s), min_size=1), st.text())
def test_render_is_plain_replacement(chunks: list[str], name: str) -> None:
    assert render("{store_name}".join(chunks), name) == name.join(chunks)
