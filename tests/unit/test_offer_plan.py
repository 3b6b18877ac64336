"""The decisions on a run of entries (contract §6): what one entry spends counts for the next.

Eligibility of each rule on its own lives in test_offers; here ``plan`` carries the device
cap, the per-device limits and the budget from one entry to the next, records every
decision in the ledger, and the ledger keeps only what the caps need.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geofence.domain.offers import (
    MAX_DECISIONS,
    MAX_PER_DEVICE_LIMIT,
    DeviceView,
    Entry,
    EntryDecision,
    Ledger,
    Offer,
    Plan,
    Rules,
    audience,
    plan,
    rank,
)
from tests.unit.test_offers import DAY, HOUR, NOW, offer  # the same offer and moment

RULES = Rules(quiet_hours="off", device_cap=10)
DEVICE = DeviceView(offers_consent=True, tier="gold", segments=("students",))


def entry(store_id: str = "s1", at: float = NOW - 60, **changes: Any) -> Entry:
    base: dict[str, Any] = {
        "store_id": store_id,
        "at": at,
        "store_name": f"Store {store_id}",
        "store_tags": ("mall",),
        "store_timezone": "Europe/Helsinki",
    }
    return Entry(**(base | changes))


def decision(store_id: str = "s1", entry_at: float = NOW - 60) -> EntryDecision:
    return EntryDecision(
        store_id=store_id,
        entry_at=entry_at,
        decided_at=entry_at,
        device_refused=None,
        considered=[],
    )


def ids_by_entry(e: Entry) -> str:
    return f"n:{e.store_id}:{e.at:.0f}"


def run(
    entries: list[Entry],
    offers: list[Offer],
    ledger: Ledger | None = None,
    *,
    rules: Rules = RULES,
    budget_left: dict[str, int | None] | None = None,
    notification_id: Callable[[Entry], str] = ids_by_entry,
    device: DeviceView = DEVICE,
) -> Plan:
    return plan(
        entries,
        offers,
        Ledger() if ledger is None else ledger,
        device=device,
        now=NOW,
        rules=rules,
        budget_left={} if budget_left is None else budget_left,
        notification_id=notification_id,
    )


def verdicts(d: EntryDecision) -> list[tuple[str, str | None]]:
    return [(c.offer_id, c.refused) for c in d.considered]


def chosen(p: Plan) -> list[str | None]:
    return [d.offer_id for d in p.decisions]


# --- what an entry spends counts against the next ---------------------------------------------


def test_the_device_cap_counts_notifications_made_earlier_in_the_run() -> None:
    offers = [offer(id="a"), offer(id="b")]
    p = run(
        [entry("s1"), entry("s1", at=NOW - 30)],
        offers,
        rules=Rules(quiet_hours="off", device_cap=1),
    )
    assert chosen(p) == ["a", None]
    assert len(p.notifications) == 1
    second = p.decisions[1]
    assert second.device_refused == "device-cap"
    assert verdicts(second) == [("a", "device-cap"), ("b", "device-cap")]
    assert second.notification_id is None


def test_the_device_cap_counts_the_ledgers_sends_and_this_runs_together() -> None:
    ledger = Ledger(device_sent=(NOW - HOUR,))
    offers = [offer(id="a", per_device_limit=5, per_device_cooldown_s=0.0)]
    entries = [entry(at=NOW - 3), entry(at=NOW - 2), entry(at=NOW - 1)]
    p = run(entries, offers, ledger, rules=Rules(quiet_hours="off", device_cap=3))
    assert chosen(p) == ["a", "a", None]
    assert p.decisions[2].device_refused == "device-cap"
    assert p.ledger.device_sent == (NOW - HOUR, NOW, NOW)


def test_a_limit_spent_earlier_in_the_run_refuses_the_offer_and_the_next_is_chosen() -> None:
    offers = [offer(id="a", priority=5, store_ids=("s1", "s2")), offer(id="b", store_ids=("s2",))]
    p = run([entry("s1", at=NOW - 2), entry("s2", at=NOW - 1)], offers)
    assert chosen(p) == ["a", "b"]
    assert verdicts(p.decisions[0]) == [("a", None), ("b", "store-not-targeted")]
    assert verdicts(p.decisions[1]) == [("a", "per-device-limit"), ("b", None)]
    assert p.ledger.per_offer_sent == {"a": (NOW,), "b": (NOW,)}


def test_a_cooldown_started_earlier_in_the_run_refuses_the_offer() -> None:
    offers = [offer(id="a", priority=5, per_device_limit=3), offer(id="b")]
    p = run([entry(at=NOW - 2), entry(at=NOW - 1)], offers)
    assert chosen(p) == ["a", "b"]
    assert verdicts(p.decisions[1]) == [("a", "per-device-cooldown"), ("b", None)]


def test_the_budget_is_spent_within_the_run() -> None:
    offers = [
        offer(id="a", priority=5, budget=1, per_device_limit=5, per_device_cooldown_s=0.0),
        offer(id="b"),
    ]
    budget_left: dict[str, int | None] = {}
    p = run([entry(at=NOW - 2), entry(at=NOW - 1)], offers, budget_left=budget_left)
    assert chosen(p) == ["a", "b"]
    assert verdicts(p.decisions[1]) == [("a", "budget-spent"), ("b", None)]
    assert budget_left == {}, "the caller's budgets are not changed"


def test_the_budget_left_given_overrides_the_offers_own() -> None:
    offers = [offer(id="a", budget=100, per_device_limit=5, per_device_cooldown_s=0.0)]
    entries = [entry(at=NOW - 3), entry(at=NOW - 2), entry(at=NOW - 1)]
    p = run(entries, offers, budget_left={"a": 2})
    assert chosen(p) == ["a", "a", None]
    assert verdicts(p.decisions[2]) == [("a", "budget-spent")]


def test_an_unbudgeted_offer_is_never_budget_spent() -> None:
    offers = [offer(id="a", per_device_limit=5, per_device_cooldown_s=0.0)]
    entries = [entry(at=NOW - 3), entry(at=NOW - 2), entry(at=NOW - 1)]
    p = run(entries, offers, budget_left={"a": None})
    assert chosen(p) == ["a", "a", "a"]


def test_an_entry_with_nothing_eligible_spends_nothing() -> None:
    offers = [offer(id="a", store_ids=("s2",))]
    p = run([entry("s1", at=NOW - 2), entry("s2", at=NOW - 1)], offers)
    assert chosen(p) == [None, "a"]
    assert p.ledger.device_sent == (NOW,)


def test_a_device_without_consent_gets_nothing_in_the_whole_run() -> None:
    p = run(
        [entry(at=NOW - 2), entry(at=NOW - 1)],
        [offer()],
        device=DeviceView(offers_consent=False),
    )
    assert p.notifications == []
    assert [d.device_refused for d in p.decisions] == ["no-offers-consent"] * 2
    assert p.ledger.device_sent == ()
    assert p.ledger.per_offer_sent == {}


# --- the notifications and the decisions recorded ---------------------------------------------


def test_notification_ids_come_from_the_callback_once_per_notification() -> None:
    asked: list[Entry] = []

    def notification_id(e: Entry) -> str:
        asked.append(e)
        return f"id-{len(asked)}"

    offers = [offer(id="a", store_ids=("s1",)), offer(id="b", store_ids=("s3",))]
    entries = [entry("s1", at=NOW - 3), entry("s2", at=NOW - 2), entry("s3", at=NOW - 1)]
    p = run(entries, offers, notification_id=notification_id)
    assert asked == [entries[0], entries[2]]
    assert [n.notification_id for n in p.notifications] == ["id-1", "id-2"]
    assert [d.notification_id for d in p.decisions] == ["id-1", None, "id-2"]


def test_a_notification_is_made_at_now_for_the_entrys_store() -> None:
    p = run(
        [entry("s2", at=NOW - 120, store_name="Kamppi")], [offer(store_ids=("s2",), ttl_s=600.0)]
    )
    [note] = p.notifications
    assert (note.store_id, note.offer_id, note.body) == ("s2", "o1", "Free coffee at Kamppi")
    assert (note.created_at, note.expires_at) == (NOW, NOW + 600)
    assert note.notification_id == f"n:s2:{NOW - 120:.0f}"


def test_each_entry_makes_one_decision_recorded_in_the_ledger() -> None:
    offers = [offer(id="a", store_ids=("s1", "s2"), per_device_limit=1)]
    entries = [entry("s1", at=NOW - 2), entry("s2", at=NOW - 1)]
    p = run(entries, offers)
    assert len(p.decisions) == 2
    first, second = p.decisions
    assert first == EntryDecision(
        store_id="s1",
        entry_at=NOW - 2,
        decided_at=NOW,
        device_refused=None,
        considered=first.considered,
        notification_id=f"n:s1:{NOW - 2:.0f}",
        offer_id="a",
        group="treated",
    )
    assert (second.store_id, second.entry_at, second.offer_id) == ("s2", NOW - 1, None)
    assert verdicts(second) == [("a", "per-device-limit")]
    assert p.ledger.decisions == (first, second)


def test_no_entries_no_decisions() -> None:
    ledger = Ledger(device_sent=(NOW - 1,), decisions=(decision(),))
    p = run([], [offer()], ledger)
    assert p.decisions == []
    assert p.notifications == []
    assert p.ledger == ledger


def test_the_ledger_keeps_the_latest_decisions_only() -> None:
    old = tuple(decision("old", entry_at=NOW - 1_000 + i) for i in range(MAX_DECISIONS - 2))
    entries = [entry(f"s{i}", at=NOW - 10 + i) for i in range(5)]
    p = run(entries, [], Ledger(decisions=old))
    assert len(p.decisions) == 5
    assert len(p.ledger.decisions) == MAX_DECISIONS
    assert p.ledger.decisions == (*old[3:], *p.decisions)


def test_a_long_run_keeps_its_own_latest_decisions() -> None:
    entries = [entry(at=NOW - 100 + i) for i in range(MAX_DECISIONS + 3)]
    p = run(entries, [offer()])
    assert len(p.decisions) == MAX_DECISIONS + 3
    assert p.ledger.decisions == tuple(p.decisions[-MAX_DECISIONS:])


# --- the ledger -------------------------------------------------------------------------------


def test_spend_adds_a_send_for_the_device_and_the_offer() -> None:
    kept = (decision(),)
    before = Ledger(device_sent=(NOW - 10,), per_offer_sent={"a": (NOW - 10,)}, decisions=kept)
    after = before.spend("a", NOW).spend("b", NOW + 1)
    assert after.device_sent == (NOW - 10, NOW, NOW + 1)
    assert after.per_offer_sent == {"a": (NOW - 10, NOW), "b": (NOW + 1,)}
    assert after.decisions == kept
    assert before.device_sent == (NOW - 10,)
    assert before.per_offer_sent == {"a": (NOW - 10,)}


def test_spend_keeps_at_most_the_largest_per_device_limit_of_an_offers_sends() -> None:
    full = Ledger(per_offer_sent={"a": tuple(float(i) for i in range(MAX_PER_DEVICE_LIMIT))})
    after = full.spend("a", NOW)
    sent = after.per_offer_sent["a"]
    assert len(sent) == MAX_PER_DEVICE_LIMIT
    assert sent[0] == 1.0
    assert sent[-1] == NOW


def test_remember_keeps_the_last_decisions_and_nothing_else_changes() -> None:
    ledger = Ledger(device_sent=(NOW,), per_offer_sent={"a": (NOW,)})
    made = [decision(f"s{i}") for i in range(MAX_DECISIONS + 2)]
    for d in made:
        ledger = ledger.remember(d)
    assert ledger.decisions == tuple(made[2:])
    assert ledger.device_sent == (NOW,)
    assert ledger.per_offer_sent == {"a": (NOW,)}


def test_pruned_drops_device_sends_outside_the_cap_window() -> None:
    window = RULES.device_cap_window_s
    ledger = Ledger(device_sent=(NOW - window - 1, NOW - window, NOW - window + 1, NOW))
    assert ledger.pruned(NOW, RULES, []).device_sent == (NOW - window + 1, NOW)
    short = Rules(device_cap_window_s=HOUR)
    assert ledger.pruned(NOW, short, []).device_sent == (NOW,)


def test_pruned_drops_the_history_of_offers_no_longer_live() -> None:
    kept = (decision(),)
    ledger = Ledger(
        device_sent=(NOW - 1,),
        per_offer_sent={"live": (NOW - 30 * DAY,), "gone": (NOW - 1,)},
        decisions=kept,
    )
    pruned = ledger.pruned(NOW, RULES, iter(["live", "never-sent"]))
    assert pruned.per_offer_sent == {"live": (NOW - 30 * DAY,)}, "a limit is for life"
    assert pruned.device_sent == (NOW - 1,)
    assert pruned.decisions == kept
    assert ledger.per_offer_sent.keys() == {"live", "gone"}


def test_a_pruned_ledger_decides_as_the_full_one() -> None:
    window = RULES.device_cap_window_s
    rules = Rules(quiet_hours="off", device_cap=2)
    ledger = Ledger(
        device_sent=(NOW - 2 * window, NOW - window, NOW - HOUR),
        per_offer_sent={"a": (NOW - window,), "gone": (NOW - HOUR,)},
    )
    offers = [offer(id="a", priority=1), offer(id="b")]
    full = run([entry(at=NOW - 2), entry(at=NOW - 1)], offers, ledger, rules=rules)
    pruned = ledger.pruned(NOW, rules, ["a", "b"])
    assert verdicts(full.decisions[0]) == [("a", "per-device-limit"), ("b", None)]
    assert full.decisions[1].device_refused == "device-cap"
    again = run([entry(at=NOW - 2), entry(at=NOW - 1)], offers, pruned, rules=rules)
    assert again.decisions == full.decisions


# --- the audience of an entry -----------------------------------------------------------------


def test_audience_is_the_offers_running_and_targeting_the_store() -> None:
    offers = [
        offer(id="by-id"),
        offer(id="by-tag", store_ids=(), store_tags=("outlet", "mall")),
        offer(id="inactive", active=False),
        offer(id="not-started", starts_at=NOW + 1),
        offer(id="starts-now", starts_at=NOW),
        offer(id="ended", ends_at=NOW),
        offer(id="ends-next-second", ends_at=NOW + 1),
        offer(id="other-store", store_ids=("s2",)),
        offer(id="other-tag", store_ids=(), store_tags=("outlet",)),
    ]
    assert audience(offers, "s1", ("mall",), NOW) == [
        "by-id",
        "by-tag",
        "starts-now",
        "ends-next-second",
    ]


def test_audience_ignores_what_depends_on_the_device_or_the_hour() -> None:
    offers = [
        offer(id="tier", tiers=("platinum",)),
        offer(id="segment", segments=("retired",)),
        offer(id="hours", hours={"sun": ("01:00-02:00",)}),
        offer(id="budget", budget=0),
    ]
    assert audience(offers, "s1", (), NOW) == ["tier", "segment", "hours", "budget"]


def test_audience_without_tags_or_offers() -> None:
    assert audience([offer(store_ids=(), store_tags=("mall",))], "s1", (), NOW) == []
    assert audience([], "s1", ("mall",), NOW) == []


# --- properties -------------------------------------------------------------------------------

OFFER_IDS = ("a", "b", "c", "d")
STORES = ("s1", "s2", "s3")


@st.composite
def offers_(draw: st.DrawFn) -> list[Offer]:
    ids = draw(st.lists(st.sampled_from(OFFER_IDS), unique=True, max_size=4))
    return [
        offer(
            id=offer_id,
            priority=draw(st.integers(-2, 2)),
            active=draw(st.booleans()),
            ends_at=NOW + draw(st.sampled_from([0, DAY])),
            store_ids=tuple(draw(st.lists(st.sampled_from(STORES), max_size=2))),
            store_tags=tuple(draw(st.lists(st.sampled_from(["mall", "outlet"]), max_size=1))),
            tiers=draw(st.none() | st.just(("silver",))),
            per_device_limit=draw(st.integers(1, 3)),
            per_device_cooldown_s=draw(st.sampled_from([0.0, 60.0, DAY])),
            budget=draw(st.none() | st.integers(0, 3)),
        )
        for offer_id in ids
    ]


entries_ = st.lists(
    st.builds(
        entry,
        st.sampled_from(STORES),
        st.sampled_from([NOW, NOW - 60, NOW - 901]),
        store_tags=st.lists(st.sampled_from(["mall", "outlet"]), max_size=2).map(tuple),
    ),
    max_size=8,
)
times = st.sampled_from([NOW, NOW - 60, NOW - HOUR, NOW - 2 * DAY, NOW - 3 * DAY])
ledgers = st.builds(
    Ledger,
    device_sent=st.lists(times, max_size=4).map(tuple),
    per_offer_sent=st.dictionaries(
        st.sampled_from(OFFER_IDS), st.lists(times, max_size=3).map(tuple)
    ),
)
budgets = st.dictionaries(st.sampled_from(OFFER_IDS), st.none() | st.integers(-1, 3))
rules_ = st.builds(Rules, quiet_hours=st.just("off"), device_cap=st.integers(0, 4))


@settings(max_examples=300, deadline=None)
@given(entries_, offers_(), ledgers, budgets, rules_)
def test_a_plan_never_spends_more_than_is_left(
    entries: list[Entry],
    offers: list[Offer],
    ledger: Ledger,
    budget_left: dict[str, int | None],
    rules: Rules,
) -> None:
    p = run(entries, offers, ledger, rules=rules, budget_left=budget_left)
    in_window = sum(1 for t in ledger.device_sent if t > NOW - rules.device_cap_window_s)
    assert len(p.notifications) <= max(0, rules.device_cap - in_window)
    made = Counter(n.offer_id for n in p.notifications)
    for o in offers:
        prior = len(ledger.per_offer_sent.get(o.id, ()))
        assert made[o.id] <= max(0, o.per_device_limit - prior)
        left = budget_left.get(o.id, o.budget)
        if o.budget is not None and left is not None:
            assert made[o.id] <= max(0, left)
    assert len(p.decisions) == len(entries)
    assert [d.notification_id for d in p.decisions if d.notification_id is not None] == [
        n.notification_id for n in p.notifications
    ]
    assert p.ledger.decisions == (*ledger.decisions, *p.decisions)[-MAX_DECISIONS:]
    assert len(p.ledger.device_sent) == len(ledger.device_sent) + len(p.notifications)


@settings(max_examples=300, deadline=None)
@given(entries_, offers_(), ledgers, budgets, rules_)
def test_the_chosen_offer_is_never_refused_and_ranks_best_of_the_eligible(
    entries: list[Entry],
    offers: list[Offer],
    ledger: Ledger,
    budget_left: dict[str, int | None],
    rules: Rules,
) -> None:
    p = run(entries, offers, ledger, rules=rules, budget_left=budget_left)
    by_id = {o.id: o for o in offers}
    ranked = [o.id for o in sorted(offers, key=rank)]
    for d in p.decisions:
        assert [c.offer_id for c in d.considered] == ranked
        eligible = [c.offer_id for c in d.considered if c.refused is None]
        if d.device_refused is not None:
            assert {c.refused for c in d.considered} <= {d.device_refused}
        if not eligible:
            assert d.offer_id is None
            continue
        assert d.offer_id is not None
        assert d.offer_id in eligible
        best = min((by_id[i] for i in eligible), key=rank)
        assert d.offer_id == best.id


@pytest.mark.parametrize("cap", [0, 1, 2])
def test_a_run_of_many_entries_stops_at_the_cap(cap: int) -> None:
    offers = [offer(id=i, per_device_limit=9, per_device_cooldown_s=0.0) for i in OFFER_IDS]
    entries = [entry(at=NOW - 10 + i) for i in range(6)]
    p = run(entries, offers, rules=Rules(quiet_hours="off", device_cap=cap))
    assert len(p.notifications) == cap
    assert [d.device_refused for d in p.decisions] == [None] * cap + ["device-cap"] * (6 - cap)
