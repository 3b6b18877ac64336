"""Control groups (issue 27): the plan holds out a fixed share of devices per offer;
nothing is sent to them and nothing of their caps, limits or the budget is spent."""

from __future__ import annotations

from geofence.domain.offers import CONTROL_GROUP, Ledger, in_control, plan
from tests.unit.test_offer_plan import DEVICE, RULES, entry, ids_by_entry
from tests.unit.test_offers import NOW, offer

DEVICES = 10_000


def test_a_fifth_of_10000_devices_is_held_out_and_none_is_notified_or_charged() -> None:
    budgeted = offer(id="a", control_pct=20, budget=DEVICES, per_device_limit=1)
    held, notified = 0, 0
    for n in range(DEVICES):
        p = plan(
            [entry("s1")],
            [budgeted],
            Ledger(),
            device=DEVICE,
            now=NOW,
            rules=RULES,
            budget_left={"a": 1},  # one unit: a notification would spend it
            notification_id=ids_by_entry,
            device_ref=f"device-{n}",
        )
        [decision] = p.decisions
        if decision.group == "control":
            held += 1
            assert p.notifications == []
            assert decision.notification_id is None
            assert p.ledger.device_sent == ()
            assert p.ledger.per_offer_sent == {}
            assert [(c.offer_id, c.refused) for c in decision.considered] == [("a", CONTROL_GROUP)]
            assert decision.offer_id == "a"
        else:
            notified += len(p.notifications)
    assert abs(held / DEVICES - 0.20) <= 0.015
    assert held + notified == DEVICES


def test_the_same_device_is_always_in_or_out_and_offers_split_independently() -> None:
    a, b = offer(id="a", control_pct=50), offer(id="b", control_pct=50)
    refs = [f"device-{n}" for n in range(2_000)]
    assert [in_control(r, a) for r in refs] == [in_control(r, a) for r in refs]
    both = sum(in_control(r, a) and in_control(r, b) for r in refs)
    assert 0.2 < both / len(refs) < 0.3  # about a half of a half


def test_no_control_group_by_default() -> None:
    assert not any(in_control(f"device-{n}", offer(id="a")) for n in range(1_000))


def test_a_held_out_entry_leaves_the_device_for_no_other_offer() -> None:
    held_ref = next(
        r for r in (f"d{n}" for n in range(100)) if in_control(r, offer(id="a", control_pct=50))
    )
    offers = [offer(id="a", control_pct=50, priority=5), offer(id="b")]
    p = plan(
        [entry("s1")],
        offers,
        Ledger(),
        device=DEVICE,
        now=NOW,
        rules=RULES,
        budget_left={},
        notification_id=ids_by_entry,
        device_ref=held_ref,
    )
    assert p.notifications == []
    assert (p.decisions[0].offer_id, p.decisions[0].group) == ("a", "control")
