"""``explain`` (contract §6): per store the visit, its cooldown and decisions; the cap; offers."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from geofence.domain.explain import explain, visit_phase
from geofence.domain.model import DeviceState, Visit, VisitRules
from geofence.domain.offers import Considered, EntryDecision, Ledger, Offer, Rules

NOW = 1_781_514_000.0
HOUR, DAY = 3_600.0, 86_400.0
VISIT_RULES = VisitRules(entry_cooldown_s=6 * HOUR)
RULES = Rules(device_cap=2, device_cap_window_s=2 * DAY)
WINDOW = RULES.device_cap_window_s


def visit(store_id: str = "s1", **changes: Any) -> Visit:
    base: dict[str, Any] = {
        "store_id": store_id,
        "fence_rev": "rev",
        "arrived_at": NOW - 600,
        "last_inside_at": NOW - 30,
    }
    return Visit(**(base | changes))


def offer(offer_id: str = "o1", **changes: Any) -> Offer:
    base: dict[str, Any] = {
        "id": offer_id,
        "title": "Coffee",
        "body": "Free coffee",
        "store_ids": ("s1",),
        "starts_at": NOW - DAY,
        "ends_at": NOW + DAY,
    }
    return Offer(**(base | changes))


def decision(store_id: str, entry_at: float, offer_id: str | None = None) -> EntryDecision:
    return EntryDecision(
        store_id=store_id,
        entry_at=entry_at,
        decided_at=entry_at,
        device_refused=None,
        considered=[Considered(offer_id="o1", refused=None if offer_id else "ended")],
        notification_id=None if offer_id is None else f"n-{store_id}-{entry_at}",
        offer_id=offer_id,
    )


def report(
    state: DeviceState | None = None,
    ledger: Ledger | None = None,
    offers: list[Offer] | None = None,
    spent: dict[str, int] | None = None,
    now: float = NOW,
    rules: Rules = RULES,
) -> dict[str, Any]:
    return explain(
        DeviceState() if state is None else state,
        Ledger() if ledger is None else ledger,
        [] if offers is None else offers,
        {} if spent is None else spent,
        now=now,
        visit_rules=VISIT_RULES,
        rules=rules,
    )


def stores(out: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["store_id"]: s for s in out["stores"]}


# --- visits -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "phase"),
    [
        ({}, "pending"),
        ({"suppressed": True}, "pending"),
        ({"departing_since": NOW - 10}, "pending"),
        ({"confirmed": True}, "confirmed"),
        ({"confirmed": True, "departing_since": NOW - 10}, "departing"),
        ({"confirmed": True, "suppressed": True}, "suppressed"),
        ({"confirmed": True, "suppressed": True, "departing_since": NOW - 10}, "suppressed"),
    ],
)
def test_visit_phase(changes: dict[str, Any], phase: str) -> None:
    assert visit_phase(visit(**changes)) == phase


def test_a_store_shows_its_visit_and_entry_cooldown() -> None:
    state = DeviceState(
        visits={"s1": visit(confirmed=True, departing_since=NOW - 20)},
        last_entry_at={"s1": NOW - 480},
    )
    [store] = report(state)["stores"]
    assert store == {
        "store_id": "s1",
        "visit": {
            "state": "departing",
            "arrived_at": NOW - 600,
            "last_inside_at": NOW - 30,
            "departing_since": NOW - 20,
        },
        "cooldown_ends_at": NOW - 480 + 6 * HOUR,
        "decisions": [],
    }


def test_a_store_without_a_visit_or_an_entry() -> None:
    pending = DeviceState(visits={"s1": visit()})
    left = DeviceState(last_entry_at={"s2": NOW - 7 * HOUR})
    [s1] = report(pending)["stores"]
    assert (s1["visit"]["state"], s1["cooldown_ends_at"]) == ("pending", None)
    [s2] = report(left)["stores"]
    assert s2["visit"] is None
    assert s2["cooldown_ends_at"] == NOW - 7 * HOUR + 6 * HOUR, "shown even once passed"


def test_stores_are_the_union_of_visits_entries_and_decisions_sorted() -> None:
    state = DeviceState(
        visits={"s3": visit("s3"), "s1": visit("s1")},
        last_entry_at={"s2": NOW - 60, "s1": NOW - 60},
    )
    ledger = Ledger(decisions=(decision("s5", NOW - 9), decision("s0", NOW - 8)))
    out = report(state, ledger)
    assert [s["store_id"] for s in out["stores"]] == ["s0", "s1", "s2", "s3", "s5"]
    assert report()["stores"] == []


def test_decisions_are_grouped_by_store_in_their_order() -> None:
    decisions = (
        decision("s1", NOW - 50, "o1"),
        decision("s2", NOW - 40),
        decision("s1", NOW - 30),
        decision("s2", NOW - 20, "o1"),
    )
    by_store = stores(report(ledger=Ledger(decisions=decisions)))
    assert by_store["s1"]["decisions"] == [decisions[0], decisions[2]]
    assert by_store["s2"]["decisions"] == [decisions[1], decisions[3]]
    assert by_store["s1"]["visit"] is None


# --- the device cap -----------------------------------------------------------------------


def test_device_cap_not_full() -> None:
    ledger = Ledger(device_sent=(NOW - WINDOW, NOW - HOUR))
    assert report(ledger=ledger)["device_cap"] == {
        "used": 1,
        "cap": 2,
        "window_s": WINDOW,
        "frees_at": None,
    }
    assert report()["device_cap"]["used"] == 0
    assert report()["device_cap"]["frees_at"] is None


def test_a_full_device_cap_frees_when_its_oldest_send_leaves_the_window() -> None:
    ledger = Ledger(device_sent=(NOW - WINDOW - 1, NOW - 5 * HOUR, NOW - HOUR))
    cap = report(ledger=ledger)["device_cap"]
    assert (cap["used"], cap["frees_at"]) == (2, NOW - 5 * HOUR + WINDOW)
    at_frees = report(ledger=ledger, now=cap["frees_at"])["device_cap"]
    assert (at_frees["used"], at_frees["frees_at"]) == (1, None)


def test_the_device_cap_follows_the_rules() -> None:
    rules = Rules(device_cap=1, device_cap_window_s=HOUR)
    ledger = Ledger(device_sent=(NOW - 2 * HOUR, NOW - 60))
    assert report(ledger=ledger, rules=rules)["device_cap"] == {
        "used": 1,
        "cap": 1,
        "window_s": HOUR,
        "frees_at": NOW - 60 + HOUR,
    }


def test_a_device_over_its_cap_frees_when_it_drops_below_the_cap() -> None:
    ledger = Ledger(device_sent=(NOW - 3 * HOUR, NOW - 2 * HOUR, NOW - HOUR))
    cap = report(ledger=ledger)["device_cap"]
    assert cap["used"] == 3
    later = report(ledger=ledger, now=cap["frees_at"])["device_cap"]
    assert later["used"] < later["cap"], "a slot is free at frees_at"
    assert cap["frees_at"] == NOW - 2 * HOUR + WINDOW


# --- offers -------------------------------------------------------------------------------


def test_offers_show_their_limit_cooldown_and_budget() -> None:
    offers = [
        offer("cooling", per_device_limit=3, per_device_cooldown_s=DAY),
        offer("cooled", per_device_cooldown_s=HOUR),
        offer("never", budget=100),
    ]
    ledger = Ledger(
        per_offer_sent={"cooling": (NOW - 5 * DAY, NOW - 2 * HOUR), "cooled": (NOW - HOUR,)}
    )
    out = report(ledger=ledger, offers=offers, spent={"never": 7, "unknown": 1})
    assert out["offers"] == [
        {
            "offer_id": "cooling",
            "used": 2,
            "per_device_limit": 3,
            "cooldown_ends_at": NOW - 2 * HOUR + DAY,
            "budget": None,
            "budget_spent": 0,
        },
        {
            "offer_id": "cooled",
            "used": 1,
            "per_device_limit": 1,
            "cooldown_ends_at": None,
            "budget": None,
            "budget_spent": 0,
        },
        {
            "offer_id": "never",
            "used": 0,
            "per_device_limit": 1,
            "cooldown_ends_at": None,
            "budget": 100,
            "budget_spent": 7,
        },
    ]


def test_an_offer_cooldown_is_shown_until_it_ends() -> None:
    ledger = Ledger(per_offer_sent={"o1": (NOW - 100,)})
    offers = [offer(per_device_cooldown_s=300.0)]
    ends = [report(ledger=ledger, offers=offers, now=t)["offers"][0] for t in (NOW, NOW + 199)]
    assert [o["cooldown_ends_at"] for o in ends] == [NOW + 200, NOW + 200]
    gone = [report(ledger=ledger, offers=offers, now=t)["offers"][0] for t in (NOW + 200, NOW + 1)]
    assert [o["cooldown_ends_at"] for o in gone] == [None, NOW + 200]


def test_an_offer_cooldown_counts_from_the_latest_send() -> None:
    ledger = Ledger(per_offer_sent={"o1": (NOW - 10, NOW - 50)})
    [shown] = report(ledger=ledger, offers=[offer(per_device_limit=5)])["offers"]
    assert shown["cooldown_ends_at"] == NOW - 10 + DAY


def test_the_whole_report_is_json_and_holds_no_coordinates() -> None:
    state = DeviceState(visits={"s1": visit(confirmed=True)}, last_entry_at={"s1": NOW - 60})
    ledger = Ledger(
        device_sent=(NOW - 60,),
        per_offer_sent={"o1": (NOW - 60,)},
        decisions=(decision("s1", NOW - 60, "o1"),),
    )
    out = report(state, ledger, [offer()], {"o1": 1})
    assert out["now"] == NOW
    assert set(out) == {"now", "device_cap", "stores", "offers"}
    text = msgspec.json.encode(out).decode()
    assert '"lat"' not in text
    assert '"lng"' not in text
    decoded = msgspec.json.decode(text)
    assert decoded["stores"][0]["decisions"][0]["offer_id"] == "o1"
