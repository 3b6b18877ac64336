"""The history checker itself, on made-up histories (no processes): it must tell a ping
applied without an answer from one never applied, and catch an entry told twice."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from geofence.config import Settings
from geofence.domain.times import format_time
from tests.json_logs import log_records
from tests.system.checker import (
    DeviceReplay,
    check_events,
    leaks,
    repeated_entries,
    stores_near,
)
from tests.system.cluster import RULES
from tests.system.history import Attempt, History
from tests.system.walkers import Town
from tools.processes import service_env

T0 = 1_700_000_000.0
SETTINGS = Settings.from_env(service_env(8080, **RULES))


@pytest.fixture(scope="module")
def walk() -> list[Attempt]:
    """Outside a store, then inside it every 4 s: the entry comes with the 4th ping in."""
    town = Town(SETTINGS)
    store = town.ids[0]
    places = [town.outside(store, random.Random(1))] + [town.inside[store]] * 6
    pings = [
        {"device_id": "d", "lat": lat, "lon": lng, "accuracy_m": 5.0, "ts": T0 + 4 * i}
        for i, (lat, lng) in enumerate(places)
    ]
    return [Attempt("d", i, p, "service", p["ts"], float(i), float(i)) for i, p in enumerate(pings)]


def answered(attempts: list[Attempt]) -> list[Attempt]:
    """Each attempt answered 200 with what the rules say (a faithful service)."""
    town = Town(SETTINGS)
    replay = DeviceReplay("d", town.index, SETTINGS)
    stores = stores_near(town.index, attempts)
    for a in attempts:
        status, reason, events = replay.feed(a, stores)
        a.status, a.body = 200, body(status, reason, events)
    return attempts


def body(status: str, reason: str | None, events: list[Any]) -> dict[str, Any]:
    return {"status": status, "reason": reason, "events": events, "notifications": []}


def retried(a: Attempt, *, first_applied: bool) -> list[Attempt]:
    """``a`` sent twice: the first try got no answer, the resend ``a``'s answer, or
    ``stale`` when the first try had been applied."""
    lost = Attempt(a.device_id, a.seq, a.ping, a.target, a.sent_wall, a.sent, a.done)
    resend = Attempt(a.device_id, a.seq, a.ping, a.target, a.sent_wall, a.sent, a.done)
    resend.status, resend.body = 200, a.body
    if first_applied:
        resend.body = body("ignored", "stale", [])
    return [lost, resend]


def test_a_faithful_history_passes(walk: list[Attempt]) -> None:
    history = History(answered(walk))
    report = check_events(history, Town(SETTINGS).index, SETTINGS)
    assert report.mismatches == []
    assert report.unobserved == 0
    assert report.events == {"entry": 1}


@pytest.mark.parametrize("applied", [True, False])
def test_a_lost_answer_is_read_from_its_resend(walk: list[Attempt], applied: bool) -> None:
    attempts = answered(walk)
    entry = next(a for a in attempts if a.body["events"])
    history = History(
        [b for a in attempts for b in (retried(a, first_applied=applied) if a is entry else [a])]
    )
    report = check_events(history, Town(SETTINGS).index, SETTINGS)
    assert report.mismatches == []
    assert report.unobserved == (1 if applied else 0)
    assert len(report.lost_events) == (1 if applied else 0)
    assert sum(report.entries.values()) == 1  # the entry happened once either way


def test_an_entry_told_twice_is_caught(walk: list[Attempt]) -> None:
    attempts = answered(walk)
    entry = next(a for a in attempts if a.body["events"])
    after = attempts[entry.seq + 1]
    after.body = {**after.body, "events": entry.body["events"]}
    report = check_events(History(attempts), Town(SETTINGS).index, SETTINGS)
    assert len(report.mismatches) == 1
    assert repeated_entries(History(attempts)) == [
        ("d", entry.body["events"][0]["store_id"], format_time(entry.ping["ts"]))
    ]


def test_the_log_check_wants_json_lines_free_of_ids_and_fine_coordinates() -> None:
    clean = '{"level": "INFO", "logger": "geofence.x", "message": "at 60.169", "ms": 1.5}'
    lines = [
        clean,
        "level=INFO logger=geofence.x device registered",  # not JSON
        '["a list, not an object"]',
        '{"message": "device phone\\u00a07"}',  # the id once unescaped
        '{"message": "at", "fix": [60.1698561]}',
        '{"message": "at 60.1698\\n"}',
    ]
    found = leaks("\n".join(lines), ["phone\u00a07"])
    assert found == [f"not a JSON object: {lines[1]}", f"not a JSON object: {lines[2]}", *lines[3:]]
    assert log_records(clean) == [json.loads(clean)]
    with pytest.raises(AssertionError, match="not one JSON object"):
        log_records(lines[1])
