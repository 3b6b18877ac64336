"""Offline checks of a recorded history: the reference model, notifications, privacy.

The visit events are checked by replaying each device's pings, in the order the service
acknowledged them, through ``tests.unit.reference_model``: same status, same reason and
the same events for every acknowledged ping. Distances come from the service's own fence
index (``walkers.catalogue``), whose geometry is checked against shapely elsewhere: what
is checked here is the rules, end to end, through HTTP, Redis, restarts and two workers.

A ping sent more than once (no answer, or a 503) was applied by an earlier try exactly
when its resend is answered ``stale`` although the model, fed the ping for the first
time, would not call it stale (the walkers' ts only go up). The model then takes the ping
with its events unobserved: they happened, but no client saw them.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from geofence.config import Settings
from geofence.domain.model import ScreeningRules
from geofence.domain.times import with_times
from geofence.engine.index import FenceIndex
from tests.json_logs import log_record
from tests.system.cluster import Cluster
from tests.system.history import Attempt, History
from tests.unit.reference_model import ReferenceDevice, RefPing, RefStore

STALE = ("ignored", "stale")


@dataclass
class ModelReport:
    pings: int = 0  # acknowledged pings compared with the model
    unobserved: int = 0  # pings applied whose answer no client got
    events: Counter[str] = field(default_factory=Counter)  # observed, by type/reason
    lost_events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    entries: dict[tuple[str, str], int] = field(default_factory=Counter)  # (device, store)
    mismatches: list[str] = field(default_factory=list)
    undecided: list[str] = field(default_factory=list)  # devices whose last ping never settled

    def observed_entries(self) -> int:
        return self.events["entry"]


class DeviceReplay:
    """One device's pings through the reference model."""

    def __init__(self, device_id: str, index: FenceIndex, settings: Settings) -> None:
        self.device_id = device_id
        self.index = index
        self.ref = ReferenceDevice(
            ScreeningRules(max_accuracy_m=settings.max_accuracy_m), settings.visit_rules
        )

    def feed(self, a: Attempt, stores: dict[str, RefStore]) -> tuple[str, str | None, list[Any]]:
        """The model's answer to the ping, its events as the API writes them (times in
        RFC 3339, made from the same floats: equal to the microsecond, or not at all)."""
        p = a.ping
        ping = RefPing(p["lat"], p["lon"], p["accuracy_m"], p["ts"], p.get("mocked", False))
        distances = {s: self.index.distance_m(s, ping.lat, ping.lng) for s in stores}
        status, reason, events = self.ref.feed(ping, a.sent_wall, stores, distances)
        return status, reason, with_times(events)

    def would_be_stale(self, a: Attempt) -> bool:
        last = self.ref.last_not_ignored
        return last is not None and a.ping["ts"] <= last


def stores_near(index: FenceIndex, attempts: Iterable[Attempt]) -> dict[str, RefStore]:
    """Every store whose cover any of the pings touched: the only ones that can have events."""
    ids = {s for a in attempts for s in index.near(a.ping["lat"], a.ping["lon"])}
    return {s: RefStore(index.revision(s), index.fence(s).dwell_s) for s in sorted(ids)}


def check_events(
    history: History,
    index: FenceIndex,
    settings: Settings,
    *,
    skip: Iterable[str] = (),
) -> ModelReport:
    report = ModelReport()
    skipped = set(skip)
    for device_id, attempts in history.by_device().items():
        if device_id not in skipped:
            _check_device(report, DeviceReplay(device_id, index, settings), attempts)
    return report


def _check_device(report: ModelReport, replay: DeviceReplay, attempts: list[Attempt]) -> None:
    stores = stores_near(replay.index, attempts)
    by_seq: dict[int, list[Attempt]] = {}
    for a in attempts:
        by_seq.setdefault(a.seq, []).append(a)
    for seq in sorted(by_seq):
        tries = by_seq[seq]
        ack = next((a for a in tries if a.acked), None)
        maybe = [a for a in tries if a.maybe_applied]
        if ack is None:
            if maybe:  # it may or may not have been applied: nothing after it can be known
                report.undecided.append(f"{replay.device_id}#{seq}")
                return
            continue  # refused (429, 401, 404): never applied
        got = (ack.body["status"], ack.body["reason"])
        if maybe and got == STALE and not replay.would_be_stale(ack):
            _unobserved(report, replay, maybe[0], stores)
        _compare(report, replay, ack, stores)


def _unobserved(
    report: ModelReport, replay: DeviceReplay, a: Attempt, stores: dict[str, RefStore]
) -> None:
    _, _, events = replay.feed(a, stores)
    report.unobserved += 1
    report.lost_events += [(replay.device_id, e) for e in events]
    for e in events:
        if e["type"] == "entry":
            report.entries[(replay.device_id, e["store_id"])] += 1


def _compare(
    report: ModelReport, replay: DeviceReplay, ack: Attempt, stores: dict[str, RefStore]
) -> None:
    status, reason, events = replay.feed(ack, stores)
    report.pings += 1
    got = (ack.body["status"], ack.body["reason"], ack.body["events"])
    if got != (status, reason, events):
        report.mismatches.append(
            f"{replay.device_id}#{ack.seq} ts={ack.ping['ts']}: service said {got}, "
            f"the model {(status, reason, events)}"
        )
    for e in ack.body["events"]:
        report.events[e["type"] if e["type"] == "entry" else f"exit/{e['reason']}"] += 1
        if e["type"] == "entry":
            report.entries[(replay.device_id, e["store_id"])] += 1


# --- notifications --------------------------------------------------------------------


@dataclass
class DeliveryReport:
    calls: int
    delivered: set[str]  # notification ids the gateway answered 200
    per_id: Counter[str]  # calls per notification id
    by_device_store: Counter[tuple[str, str]]  # distinct ids per (device ref, store)


def deliveries(calls: Sequence[dict[str, Any]]) -> DeliveryReport:
    """The gateway's calls, checked one by one: signed, keyed by the notification id, and
    as the OpenAPI document's webhooks entry shows them."""
    per_id: Counter[str] = Counter()
    firsts: dict[str, dict[str, Any]] = {}
    for call in calls:
        headers = {k.lower(): v for k, v in call["headers"].items()}
        note = call["json"]
        assert call["signature_valid"] is True, call
        assert call["push_problems"] == [], call
        assert headers["idempotency-key"] == note["notification_id"], call
        per_id[note["notification_id"]] += 1
        firsts.setdefault(note["notification_id"], note)
    delivered = {c["json"]["notification_id"] for c in calls if c["status"] == 200}
    by_device_store = Counter((n["device_ref"], n["store_id"]) for n in firsts.values())
    return DeliveryReport(len(calls), delivered, per_id, by_device_store)


# --- privacy ----------------------------------------------------------------------------

# a number with more than 3 decimals, not part of a longer token (ids, hex refs)
PRECISE_NUMBER = re.compile(r"(?<![\w.])-?\d{1,3}\.\d{4,}(?![\w.])")
# the shared keys of the service; every other key belongs to a device or a notification
# the shards' outbox and dead letters are not among them: they expire too
SHARED_KEY = re.compile(
    r"^[^:]+:(\{cat\}:(fences|version|offers|history|digests|shards)|\{o:[^}]+\}:spent)$"
)


def leaks(logs: str, device_ids: Iterable[str]) -> list[str]:
    """Log lines that are not one JSON object, or that carry a raw device id or a
    coordinate finer than 3 decimals, as written or in any value once unescaped."""
    ids = set(device_ids)
    found = []
    for line in logs.splitlines():
        record = log_record(line)
        if record is None:
            found.append(f"not a JSON object: {line}")
            continue
        texts = [line, *leaves(record)]
        if any(PRECISE_NUMBER.search(t) or any(d in t for d in ids) for t in texts):
            found.append(line)
    return found


def leaves(value: Any) -> Iterator[str]:
    """Every key, string and number inside a decoded JSON value, as text."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from leaves(item)
    elif value is not None:
        yield str(value)


def keys_without_ttl(client: redis.Redis, prefix: str) -> list[str]:
    """Keys under ``prefix`` that are not shared and carry no TTL."""
    missing = []
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        name = _text(key)
        if not SHARED_KEY.match(name) and client.ttl(key) < 0:
            missing.append(name)
    return missing


def traces_of(client: redis.Redis, prefix: str, ref: str) -> list[str]:
    """Keys of a device, and shared hashes (outbox, dead letters) holding anything of it."""
    found = [_text(k) for k in client.scan_iter(match=f"{prefix}:*{ref}*", count=1000)]
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        if client.type(key) == b"hash":
            # redis-py types the sync and the async client's answers as one union
            hash_: dict[bytes, bytes] = client.hgetall(key)  # type: ignore[assignment]
            found += [f"{_text(key)}[{_text(f)}]" for f, v in hash_.items() if ref.encode() in v]
    return found


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


# --- what the answers say by themselves ---------------------------------------------------


def entries_without_notification(history: History) -> list[str]:
    """Entries whose answer carried no notification for their store."""
    missing = []
    for a in history:
        if not a.acked:
            continue
        noted = Counter(n["store_id"] for n in a.body["notifications"])
        for e in a.body["events"]:
            if e["type"] == "entry":
                if noted[e["store_id"]] == 0:
                    missing.append(f"{a.device_id}#{a.seq} {e}")
                noted[e["store_id"]] -= 1
    return missing


def repeated_entries(history: History) -> list[tuple[str, str, str]]:
    """The same entry (device, store, at) in more than one answer."""
    seen = Counter(
        (a.device_id, e["store_id"], e["at"])
        for a in history
        if a.acked
        for e in a.body["events"]
        if e["type"] == "entry"
    )
    return [entry for entry, n in seen.items() if n > 1]


def notes_per_entry(
    model: ModelReport, report: DeliveryReport, ref: Callable[[str], str], *, per_device: bool
) -> list[str]:
    """Where the distinct notifications delivered differ from what the model's entries
    call for: one per entry (``per_device``: one per device that had any entry, for an
    offer whose cooldown outlasts the run)."""
    wanted: Counter[tuple[str, str]] = Counter()
    for (device_id, store_id), n in model.entries.items():
        wanted[(ref(device_id), "*" if per_device else store_id)] += n
    if per_device:
        wanted = Counter(dict.fromkeys(wanted, 1))
    got: Counter[tuple[str, str]] = Counter()
    for (device_ref, store_id), n in report.by_device_store.items():
        got[(device_ref, "*" if per_device else store_id)] += n
    differ = [k for k in wanted | got if got[k] != wanted[k]]
    return [f"{k}: {got[k]} delivered, {wanted[k]} wanted" for k in differ]


def privacy_problems(cluster: Cluster, device_ids: Collection[str]) -> list[str]:
    """Contract §4 read from the outside: the services' log lines with a raw device id or
    a precise coordinate, and the keys in Redis (but the shared ones) without a TTL."""
    assert device_ids, "no device was seen"
    with cluster.redis.client() as client:
        return leaks(cluster.service_logs(), device_ids) + keys_without_ttl(client, cluster.prefix)
