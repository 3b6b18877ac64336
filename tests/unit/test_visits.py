"""Visit rules of contract §5: examples per rule, then a state machine against a reference."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from geofence.domain.model import (
    DeviceState,
    Ping,
    ScreeningRules,
    Visit,
    VisitEvent,
    VisitRules,
)
from geofence.domain.screening import Screening
from geofence.domain.visits import (
    StoreView,
    advance_device,
    advance_visit,
    step,
    zone,
)
from tests.unit.reference_model import ReferenceDevice, RefPing, RefStore

T0 = 1_700_000_000.0
HOME = (60.1699, 24.9384)
IN, BAND, OUT = 0.0, 20.0, 1_000.0
RULES = VisitRules()
SCREENING = ScreeningRules()


class Device:
    """Feeds pings of one device through ``step``; times are seconds after T0."""

    def __init__(self, stores: dict[str, StoreView], rules: VisitRules = RULES) -> None:
        self.stores = stores
        self.rules = rules
        self.state = DeviceState()
        self.last: Screening | None = None

    def at(
        self, t: float, accuracy_m: float = 10.0, mocked: bool = False, **distances: float
    ) -> list[dict[str, Any]]:
        return self.at_distances(t, distances, accuracy_m, mocked)

    def at_distances(
        self, t: float, distances: dict[str, float], accuracy_m: float = 10.0, mocked: bool = False
    ) -> list[dict[str, Any]]:
        ping = Ping(lat=HOME[0], lng=HOME[1], accuracy_m=accuracy_m, ts=T0 + t, mocked=mocked)
        far = dict.fromkeys(self.stores, OUT)
        self.state, self.last, events = step(
            self.state,
            ping,
            T0 + t,
            self.stores,
            far | distances,
            SCREENING,
            self.rules,
        )
        return [relative(event) for event in events]


def relative(event: VisitEvent) -> dict[str, Any]:
    """The event as the API shows it, with times relative to T0."""
    shown: dict[str, Any] = msgspec.to_builtins(event)
    for key in ("at", "arrived_at", "left_at"):
        if key in shown:
            shown[key] -= T0
    return shown


def entry(store_id: str, at: float, arrived_at: float) -> dict[str, Any]:
    return {"type": "entry", "store_id": store_id, "at": at, "arrived_at": arrived_at}


def exit_(
    store_id: str, at: float, left_at: float, arrived_at: float, reason: str = "left"
) -> dict[str, Any]:
    return {
        "type": "exit",
        "store_id": store_id,
        "at": at,
        "left_at": left_at,
        "dwell_s": left_at - arrived_at,
        "reason": reason,
    }


def store(store_id: str, rev: str = "r1", dwell_s: float | None = None) -> StoreView:
    return StoreView(store_id=store_id, fence_rev=rev, dwell_s=dwell_s)


@pytest.fixture
def device() -> Callable[..., Device]:
    def make(*store_ids: str, rules: VisitRules = RULES, **dwell_s: float) -> Device:
        ids = store_ids or ("a",)
        return Device({s: store(s, dwell_s=dwell_s.get(s)) for s in ids}, rules)

    return make


def confirmed(d: Device, store_id: str = "a") -> None:
    """Bring ``d`` into a confirmed visit of ``store_id`` at t=0..120."""
    assert d.at_distances(0, {store_id: IN}) == []
    assert d.at_distances(120, {store_id: IN}) == [entry(store_id, 120, 0)]


# -- zones


@pytest.mark.parametrize(
    ("distance_m", "accuracy_m", "expected"),
    [
        (0.0, 10.0, "inside"),
        (0.0, 100.0, "inside"),
        (0.01, 10.0, "band"),
        (30.0, 10.0, "band"),
        (30.01, 10.0, "outside"),
        (80.0, 80.0, "band"),
        (80.01, 80.0, "outside"),
        (29.0, 5.0, "band"),
    ],
)
def test_zone(distance_m: float, accuracy_m: float, expected: str) -> None:
    assert zone(distance_m, accuracy_m, RULES) == expected


# -- dwell


def test_entry_after_dwell(device: Callable[..., Device]) -> None:
    d = device()
    assert d.at(0, a=IN) == []
    assert d.at(60, a=IN) == []
    assert d.at(119.9, a=IN) == []
    assert d.at(120, a=IN) == [entry("a", 120, 0)]
    assert d.at(180, a=IN) == []
    assert d.state.last_entry_at == {"a": T0 + 120}


def test_entry_needs_an_inside_ping_after_dwell(device: Callable[..., Device]) -> None:
    d = device()
    d.at(0, a=IN)
    assert d.at(200, a=BAND) == []
    assert d.at(300, a=IN) == [entry("a", 300, 0)]


def test_store_dwell_overrides_default(device: Callable[..., Device]) -> None:
    d = device("a", "b", b=30.0)
    assert d.at(0, a=IN, b=IN) == []
    assert d.at(30, a=IN, b=IN) == [entry("b", 30, 0)]
    assert d.at(120, a=IN, b=IN) == [entry("a", 120, 0)]


def test_zero_dwell_confirms_on_first_ping(device: Callable[..., Device]) -> None:
    d = device(a=0.0)
    assert d.at(0, a=IN) == [entry("a", 0, 0)]


# -- max gap and the band


def test_gap_of_max_gap_drops_pending_visit(device: Callable[..., Device]) -> None:
    d = device()
    d.at(0, a=IN)
    assert d.at(900, a=IN) == []  # a new visit starts here
    assert d.at(1019, a=IN) == []
    assert d.at(1020, a=IN) == [entry("a", 1020, 900)]


def test_gap_just_under_max_gap_keeps_pending_visit(device: Callable[..., Device]) -> None:
    d = device()
    d.at(0, a=IN)
    assert d.at(899, a=IN) == [entry("a", 899, 0)]


def test_band_pings_do_not_bridge_the_gap(device: Callable[..., Device]) -> None:
    d = device()
    d.at(0, a=IN)
    for t in range(100, 1000, 100):
        assert d.at(t, a=BAND) == []
    assert d.at(1000, a=IN) == []
    assert d.at(1120, a=IN) == [entry("a", 1120, 1000)]


def test_band_changes_nothing(device: Callable[..., Device]) -> None:
    d = device()
    d.at(0, a=IN)
    before = d.state.visits
    d.at(60, a=30.0)  # exactly the exit margin: still the band
    assert d.state.visits == before
    assert d.at(120, a=IN) == [entry("a", 120, 0)]


def test_outside_ping_ends_pending_visit_silently(device: Callable[..., Device]) -> None:
    d = device()
    d.at(0, a=IN)
    assert d.at(60, a=30.5) == []
    assert d.state.visits == {}
    assert d.at(120, a=IN) == []
    assert d.at(240, a=IN) == [entry("a", 240, 120)]


# -- exit


def test_exit_after_debounce(device: Callable[..., Device]) -> None:
    d = device()
    confirmed(d)
    assert d.at(200, a=OUT) == []
    assert d.at(259, a=OUT) == []
    assert d.at(260, a=OUT) == [exit_("a", 260, 200, 0)]
    assert d.state.visits == {}
    assert d.at(300, a=OUT) == []


def test_inside_ping_cancels_departure(device: Callable[..., Device]) -> None:
    d = device()
    confirmed(d)
    d.at(200, a=OUT)
    assert d.at(230, a=IN) == []
    assert d.at(270, a=OUT) == []
    assert d.at(329, a=OUT) == []
    assert d.at(330, a=OUT) == [exit_("a", 330, 270, 0)]


def test_band_ping_keeps_departure(device: Callable[..., Device]) -> None:
    d = device()
    confirmed(d)
    d.at(200, a=OUT)
    assert d.at(230, a=BAND) == []
    assert d.at(260, a=OUT) == [exit_("a", 260, 200, 0)]


def test_exit_is_accuracy_aware(device: Callable[..., Device]) -> None:
    d = device()
    confirmed(d)
    assert d.at(200, accuracy_m=100, a=90.0) == []  # within the accuracy: band
    assert d.at(300, accuracy_m=100, a=90.0) == []
    assert d.state.visits["a"].departing_since is None
    assert d.at(400, accuracy_m=50, a=90.0) == []  # now outside
    assert d.at(460, accuracy_m=50, a=90.0) == [exit_("a", 460, 400, 0)]


def test_zero_exit_debounce_confirms_on_first_outside_ping(
    device: Callable[..., Device],
) -> None:
    d = device(rules=VisitRules(exit_s=0))
    confirmed(d)
    assert d.at(200, a=OUT) == [exit_("a", 200, 200, 0)]


# -- timeout


def test_visit_timeout(device: Callable[..., Device]) -> None:
    d = device()
    confirmed(d)
    d.at(300, a=BAND)
    assert d.at(300 + 14_399, a=BAND) == []
    assert d.at(300 + 14_399 + 14_400, a=OUT) == [exit_("a", 29_099, 120, 0, "timeout")]
    assert d.state.visits == {}


def test_timeout_then_the_ping_starts_a_new_visit(device: Callable[..., Device]) -> None:
    d = device(a=0.0)
    assert d.at(0, a=IN) == [entry("a", 0, 0)]
    t = 30_000.0  # beyond both timeout and cooldown
    assert d.at(t, a=IN) == [exit_("a", t, 0, 0, "timeout"), entry("a", t, t)]


def test_timeout_drops_pending_visits(device: Callable[..., Device]) -> None:
    d = device(rules=VisitRules(max_gap_s=20_000))
    d.at(0, a=IN)
    assert d.at(14_400, a=BAND) == []
    assert d.state.visits == {}


def test_flagged_pings_do_not_hold_a_visit_open(device: Callable[..., Device]) -> None:
    d = device()
    confirmed(d)
    for hour in range(1, 4):
        assert d.at(120 + hour * 3600, mocked=True, a=IN) == []
        assert d.last == Screening("flagged", "mocked")
    assert d.at(120 + 14_400, a=IN) == [exit_("a", 14_520, 120, 0, "timeout")]


# -- store removed or changed


def test_store_removed_closes_visit(device: Callable[..., Device]) -> None:
    d = device("a", "b")
    confirmed(d)
    d.at(180, a=BAND)
    del d.stores["a"]
    assert d.at(200, b=OUT) == [exit_("a", 200, 120, 0, "store_removed")]
    assert d.state.visits == {}


def test_store_changed_closes_visit_and_may_start_another(
    device: Callable[..., Device],
) -> None:
    d = device()
    confirmed(d)
    d.stores["a"] = store("a", rev="r2")
    assert d.at(200, a=IN) == [exit_("a", 200, 120, 0, "store_removed")]
    assert d.state.visits["a"].fence_rev == "r2"
    assert d.state.visits["a"].arrived_at == T0 + 200


def test_store_dwell_change_keeps_visit(device: Callable[..., Device]) -> None:
    d = device()
    d.at(0, a=IN)
    d.stores["a"] = store("a", dwell_s=30)
    assert d.at(30, a=IN) == [entry("a", 30, 0)]


def test_pending_visit_of_removed_store_is_dropped_silently(
    device: Callable[..., Device],
) -> None:
    d = device()
    d.at(0, a=IN)
    d.stores.clear()
    assert d.at(60) == []
    assert d.state.visits == {}


# -- cooldown


def leave(d: Device, t: float, store_id: str = "a") -> list[dict[str, Any]]:
    d.at_distances(t, {store_id: OUT})
    return d.at_distances(t + 60, {store_id: OUT})


def test_cooldown_suppresses_entry_and_its_exit(device: Callable[..., Device]) -> None:
    d = device()
    confirmed(d)
    assert leave(d, 200) == [exit_("a", 260, 200, 0)]
    assert d.at(1000, a=IN) == []
    assert d.at(1120, a=IN) == []  # confirmed but suppressed
    assert d.state.visits["a"].suppressed
    assert d.state.suppressed_entries == 1
    assert leave(d, 2000) == []
    assert d.state.visits == {}
    assert d.state.last_entry_at == {"a": T0 + 120}


def test_cooldown_counts_from_last_emitted_entry(device: Callable[..., Device]) -> None:
    d = device()
    confirmed(d)  # emitted entry at 120
    leave(d, 200)
    d.at(1000, a=IN)
    d.at(1120, a=IN)  # suppressed
    leave(d, 2000)
    d.at(21_500, a=IN)
    assert d.at(21_620, a=IN) == []  # suppressed again
    assert leave(d, 21_650) == []
    assert d.state.suppressed_entries == 2
    d.at(21_720, a=IN)
    # Counted from the suppressed confirmation at 1120, this would still be suppressed.
    assert d.at(21_840, a=IN) == [entry("a", 21_840, 21_720)]


def test_entry_at_exactly_cooldown_is_emitted(device: Callable[..., Device]) -> None:
    d = device(rules=VisitRules(dwell_s=0, exit_s=0))
    assert d.at(0, a=IN) == [entry("a", 0, 0)]
    assert d.at(100, a=OUT) == [exit_("a", 100, 100, 0)]
    assert d.at(21_599, a=OUT) == []
    assert d.at(21_599.5, a=IN) == []
    assert d.state.visits["a"].suppressed
    assert d.at(21_599.7, a=OUT) == []
    assert d.at(21_600, a=IN) == [entry("a", 21_600, 21_600)]


def test_old_entries_are_pruned(device: Callable[..., Device]) -> None:
    d = device("a", "b")
    confirmed(d, "a")
    leave(d, 200)
    assert d.state.last_entry_at == {"a": T0 + 120}
    d.at(120 + 21_600, b=OUT)
    assert d.state.last_entry_at == {}


# -- independence and order


def test_overlapping_stores_are_independent(device: Callable[..., Device]) -> None:
    d = device("a", "b", "c", b=60.0)
    assert d.at(0, a=IN, b=IN) == []
    assert d.at(60, a=IN, b=IN, c=IN) == [entry("b", 60, 0)]
    assert d.at(120, a=IN, b=OUT, c=IN) == [entry("a", 120, 0)]
    assert d.at(180, a=IN, b=OUT, c=IN) == [exit_("b", 180, 120, 0), entry("c", 180, 60)]
    assert d.at(240, a=OUT, c=IN) == []
    assert d.at(300, a=OUT, c=IN) == [exit_("a", 300, 240, 0)]


def test_events_come_exits_first_then_by_store(device: Callable[..., Device]) -> None:
    d = device("a", "b", "c", a=60.0)
    d.at(0, b=IN, c=IN)
    assert d.at(120, b=IN, c=IN) == [entry("b", 120, 0), entry("c", 120, 0)]
    assert d.at(200, a=IN) == []  # b and c departing, a pending
    events = d.at(260, a=IN)
    assert [(e["type"], e["store_id"]) for e in events] == [
        ("exit", "b"),
        ("exit", "c"),
        ("entry", "a"),
    ]


def test_flagged_and_ignored_pings_change_no_visit(device: Callable[..., Device]) -> None:
    d = device()
    assert d.at(0, mocked=True, a=IN) == []
    assert d.at(10, accuracy_m=150, a=IN) == []
    assert d.state.visits == {}
    assert d.state.flags == {"mocked": 1, "inaccurate": 1}
    assert d.at(10, a=IN) == []
    assert d.last == Screening("ignored", "stale")


def test_advance_visit_alone() -> None:
    ping = Ping(lat=0, lng=0, accuracy_m=10, ts=T0)
    visit, events = advance_visit(None, ping, store("a", dwell_s=0), 0.0, None, RULES)
    assert visit == Visit(
        store_id="a", fence_rev="r1", arrived_at=T0, last_inside_at=T0, confirmed=True
    )
    assert [e.type for e in events] == ["entry"]
    assert advance_visit(None, ping, store("a"), 0.5, None, RULES) == (None, [])


def test_advance_device_leaves_screening_fields() -> None:
    state = DeviceState(last_ts=T0 - 10, last_accepted_ts=T0 - 10)
    ping = Ping(lat=0, lng=0, accuracy_m=10, ts=T0)
    after, _ = advance_device(state, ping, {"a": store("a")}, {"a": 0.0}, RULES)
    assert (after.last_ts, after.last_accepted_ts, after.last_fix) == (T0 - 10, T0 - 10, None)
    assert set(after.visits) == {"a"}


# -- the engine against the reference model

SM_RULES = VisitRules(
    dwell_s=120,
    max_gap_s=300,
    exit_margin_m=30,
    exit_s=60,
    visit_timeout_s=1200,
    entry_cooldown_s=2400,
)
STORE_IDS = ("a", "b", "c")
# Steady pings on a 30 s grid make the rules' boundaries (all multiples of 60 s) coincide.
STEPS_S = (0, -1, -60, 1, 59, 60, 61, 119, 120, 121, 299, 300, 301, 1199, 1200, 1201, 2400)
DISTANCES_M = (0.0, 0.0, 0.0, 5.0, 29.9, 30.0, 30.1, 50.0, 80.0, 80.1, 500.0, 5000.0)
STEADY_STEPS_S = (30, 30, 60, 60, 90, 120, 180, 240, 300)
STEADY_ACCURACIES_M = (5.0, 20.0, 50.0, 80.0)
WALK_DISTANCES_M = (0.0, 0.0, 0.0, 5.0, 30.0, 30.1, 80.0, 5000.0)
ACCURACIES_M = (5.0, 5.0, 20.0, 20.0, 30.0, 50.0, 80.0, 100.0, 100.1, 0.0)
LAGS_S = (0, 0, 0, 0, 0, 7, 86_400, 86_401, -300, -301)  # now = ts + lag
PLACES = ((0.0, 0.0),) * 3 + ((0.0005, 0.0), (0.02, 0.0), (3.0, 0.0))  # 55 m, 2.2 km, 333 km
DWELLS_S = (None, 0.0, 60.0, 180.0)
NEAR_M = 1_000.0  # farther stores are passed to the engine only for an open visit


class EngineVsReference(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.state = DeviceState()
        self.ref = ReferenceDevice(SCREENING, SM_RULES)
        self.catalogue = {
            "a": RefStore("a1"),
            "b": RefStore("b1", 60.0),
            "c": RefStore("c1", 180.0),
        }
        self.removed: dict[str, RefStore] = {}
        self.revisions = 1
        self.clock = T0
        self.previous: tuple[Ping, float, dict[str, float]] | None = None
        self.emitted: dict[str, float] = {}  # last emitted entry per store
        self.open: set[str] = set()  # stores entered and not yet exited
        self.distances = dict.fromkeys(STORE_IDS, 5000.0)

    def views(self, distances: dict[str, float]) -> dict[str, StoreView]:
        return {
            store_id: StoreView(store_id=store_id, fence_rev=s.rev, dwell_s=s.dwell_s)
            for store_id, s in self.catalogue.items()
            if distances[store_id] < NEAR_M or store_id in self.state.visits
        }

    def send(self, ping: Ping, now: float, distances: dict[str, float]) -> list[VisitEvent]:
        self.previous = (ping, now, distances)
        distances = {s: d for s, d in distances.items() if s in self.catalogue}
        stores = self.views(distances)
        self.state, screening, events = step(
            self.state, ping, now, stores, distances, SCREENING, SM_RULES
        )
        ref_ping = RefPing(ping.lat, ping.lng, ping.accuracy_m, ping.ts, ping.mocked)
        status, reason, expected = self.ref.feed(ref_ping, now, self.catalogue, distances)
        assert (screening.status, screening.reason) == (status, reason)
        assert [msgspec.to_builtins(e) for e in events] == expected
        for event in events:
            self.check(event)
        return events

    def check(self, event: VisitEvent) -> None:
        if event.type == "exit":
            assert event.store_id in self.open, "exit without an entry"
            assert event.left_at is not None
            assert event.left_at <= event.at
            assert event.dwell_s is not None
            assert event.dwell_s >= 0
            self.open.remove(event.store_id)
            return
        assert event.store_id not in self.open, "two entries without an exit"
        assert event.arrived_at is not None
        dwell_s = self.catalogue[event.store_id].dwell_s
        assert event.at >= event.arrived_at + (SM_RULES.dwell_s if dwell_s is None else dwell_s)
        previous = self.emitted.get(event.store_id)
        assert previous is None or event.at >= previous + SM_RULES.entry_cooldown_s
        self.emitted[event.store_id] = event.at
        self.open.add(event.store_id)

    @rule(
        store_id=st.sampled_from(STORE_IDS),
        distance_m=st.sampled_from(WALK_DISTANCES_M),
    )
    def walk(self, store_id: str, distance_m: float) -> None:
        self.distances[store_id] = distance_m

    @rule(
        steps_s=st.lists(st.sampled_from(STEADY_STEPS_S), min_size=1, max_size=4),
        accuracy_m=st.sampled_from(STEADY_ACCURACIES_M),
    )
    def steady_pings(self, steps_s: list[float], accuracy_m: float) -> None:
        for step_s in steps_s:
            self.clock += step_s
            ping = Ping(lat=HOME[0], lng=HOME[1], accuracy_m=accuracy_m, ts=self.clock)
            self.send(ping, self.clock, dict(self.distances))

    @rule(
        store_id=st.sampled_from(STORE_IDS),
        stay_s=st.sampled_from((60, 120, 180, 300, 600)),
        away_m=st.sampled_from((30.1, 80.0, 5_000.0)),
        every_s=st.sampled_from((30, 60)),
    )
    def visit(self, store_id: str, stay_s: int, away_m: float, every_s: int) -> None:
        """Go in, stay a while, go out: a whole visit of pings every ``every_s``."""
        for distance_m, duration_s in ((0.0, stay_s), (away_m, 120)):
            self.distances[store_id] = distance_m
            for _ in range(0, duration_s + 1, every_s):
                self.clock += every_s
                ping = Ping(lat=HOME[0], lng=HOME[1], accuracy_m=20.0, ts=self.clock)
                self.send(ping, self.clock, dict(self.distances))

    @rule(
        step_s=st.sampled_from(STEPS_S),
        place=st.sampled_from(PLACES),
        accuracy_m=st.sampled_from(ACCURACIES_M),
        mocked=st.sampled_from((False,) * 9 + (True,)),
        lag_s=st.sampled_from(LAGS_S),
        jitter=st.lists(
            st.tuples(st.sampled_from(STORE_IDS), st.sampled_from(DISTANCES_M)), max_size=2
        ),
    )
    def ping(
        self,
        step_s: float,
        place: tuple[float, float],
        accuracy_m: float,
        mocked: bool,
        lag_s: float,
        jitter: list[tuple[str, float]],
    ) -> None:
        ts = self.clock + step_s
        self.clock = max(self.clock, ts)
        lat, lng = HOME[0] + place[0], HOME[1] + place[1]
        ping = Ping(lat=lat, lng=lng, accuracy_m=accuracy_m, ts=ts, mocked=mocked)
        self.send(ping, ts + lag_s, self.distances | dict(jitter))

    @rule()
    def duplicate(self) -> None:
        if self.previous is None:
            return
        before = self.state
        assert self.send(*self.previous) == []
        assert self.state == before

    @rule(
        store_id=st.sampled_from(STORE_IDS),
        change=st.sampled_from(("remove", "reshape", "dwell", "restore")),
        dwell_s=st.sampled_from(DWELLS_S),
    )
    def edit_catalogue(self, store_id: str, change: str, dwell_s: float | None) -> None:
        current = self.catalogue.get(store_id)
        if change == "remove" and current is not None:
            self.removed[store_id] = self.catalogue.pop(store_id)
        elif change == "restore" and store_id in self.removed:
            self.catalogue[store_id] = self.removed.pop(store_id)  # same shape, same rev
        elif change == "reshape" and current is not None:
            self.revisions += 1
            self.catalogue[store_id] = RefStore(f"{store_id}{self.revisions}", current.dwell_s)
        elif change == "dwell" and current is not None:
            self.catalogue[store_id] = RefStore(current.rev, dwell_s)

    @invariant()
    def same_bookkeeping(self) -> None:
        state, ref = self.state, self.ref
        assert state.flags == ref.flagged
        assert state.suppressed_entries == ref.suppressed
        assert {s for s, v in state.visits.items() if v.confirmed} == {
            s for s, phase in ref.phase.items() if phase == "confirmed"
        }
        assert {s for s, v in state.visits.items() if v.suppressed} == ref.muted
        assert state.last_entry_at.items() <= ref.emitted_entry.items()
        assert state.last_ts == ref.last_not_ignored
        assert state.last_accepted_ts == ref.last_accepted


TestEngineVsReference = EngineVsReference.TestCase
TestEngineVsReference.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)
