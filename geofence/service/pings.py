"""Pings in, events and notifications out (contract §5-6).

screen -> candidate fences -> visit rules -> offers on the entries -> state and outbox.

A device's state changes by compare-and-set: load it (visit state and offer ledger) with
its version, compute the new state with the pure rules, decide the offers, and write it
all - state, ledger and the notifications for the outbox - only if nobody wrote in
between; otherwise give back the budget held and start over from the fresh state. So two
workers handling pings of one device at once never emit an event twice, never lose one,
and never spend a device's cap twice: only the write that wins has its results returned.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import ParamSpec, Protocol, TypeVar, cast

import msgspec
import numpy as np
from msgspec import UNSET

from geofence.domain.devices import DeviceProfile
from geofence.domain.errors import NotFound, Unavailable
from geofence.domain.model import DeviceState, Ping, Rules, VisitEvent
from geofence.domain.offers import Entry, EntryDecision, Notification
from geofence.engine.device import (
    Nears,
    Outcome,
    StoreViews,
    Verdicts,
    nears_of,
    outcome_of,
)
from geofence.engine.device import (
    PingResult as PingResult,  # noqa: PLC0414 - mypy's explicit re-export: for the edge
)
from geofence.engine.screening import Columns, FloatArray, screen_in_turn, screen_runs
from geofence.ports import Counter as MetricCounter
from geofence.ports import Labelled, PingMetrics, Saved, StateWrite, StoredState, VisitStore
from geofence.service.catalogue import CatalogueService
from geofence.service.offers import Asked, OfferService, Reserved, entries_of, public

logger = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")

MAX_ATTEMPTS = 8
# pings of a call from which they are screened in array steps rather than one after the
# other: the arrays' fixed cost is about 200 µs, and the two ways break even at about 100
# to 130 pings of one device each, their jump checks included (``python -m
# benchmarks.flush``)
SCREEN_AS_ARRAYS_FROM = 128

Stages = Callable[[str, float], None]
"""Told, after each call of a stage, its name and the CPU seconds the call took."""

# the stages a ``stages`` callback is told of, by the method that runs each (the
# single-device way's own rules are told as rules too)
STAGES = {
    "_nears": "lookups",
    "_outcome": "rules",
    "_decide": "entries",
    "_apply": "single-device way",
    "_count": "counts",
}


class _Move(msgspec.Struct, kw_only=True):
    """One device's part in :meth:`PingService.handle_many`, filled in step by step:
    its groups advanced, its entries' offers decided, its write's verdict."""

    ref: str
    stored: StoredState
    chain: list[Outcome]
    entries: list[Entry]
    reserved: Reserved | None = None
    verdict: Saved = "written"  # until a write says otherwise

    @property
    def changed(self) -> bool:
        return self.chain[-1].state != self.stored.state or bool(self.entries)

    @property
    def write(self) -> StateWrite:
        return _write_of(self.ref, self.chain[-1].state, self.stored.version, self.reserved)


class ReadAhead(Protocol):
    """The read of the next flush, sent with this one's write (``save_then_load``)."""

    def refs(self) -> Sequence[str]:
        """The devices to read, asked as the write goes out."""

    def read(self, devices: list[tuple[DeviceProfile | None, StoredState]]) -> None:
        """Their profiles and stored states, read after the write."""


class PingService:
    def __init__(
        self,
        rules: Rules,
        store: VisitStore,
        catalogue: CatalogueService,
        metrics: PingMetrics,
        *,
        offers: OfferService,
        clock: Callable[[], float] = time.time,
        stages: Stages | None = None,
    ) -> None:
        """``stages``: told the CPU time of each stage (:data:`STAGES`) as it ends, for
        the benchmarks (``python -m benchmarks.flush``); without it (the default) nothing
        is timed and nothing costs more."""
        self.rules = rules
        self.store = store
        self.catalogue = catalogue
        self.metrics = metrics
        self.clock = clock
        self.offers = offers
        self.on_notified: Callable[[], None] = lambda: None  # wakes the delivery side
        self._store_views: StoreViews | None = None
        self._verdicts_counted = _ByLabels(metrics.pings)
        if stages is not None:
            for name, stage in STAGES.items():  # on this instance only
                setattr(self, name, staged(getattr(self, name), stage, stages))

    async def handle(
        self,
        ref: str,
        pings: Sequence[Ping],
        *,
        now: float | None = None,
        explain: bool = False,
    ) -> list[PingResult]:
        """Apply one device's pings in ts order; results come back in the order given."""
        order, ordered = _in_ts_order(pings)
        when = self.clock() if now is None else now
        outcome = await self._apply(ref, ordered, when, explain=explain)
        results = _in_order(order, outcome)
        self._count([(ref, results)])
        return results

    async def handle_many(
        self,
        groups: Sequence[tuple[str, Sequence[Ping]]],
        *,
        now: float | None = None,
        explain: bool = False,
        loaded: Mapping[str, StoredState] | None = None,
        ahead: ReadAhead | None = None,
    ) -> list[list[PingResult] | NotFound]:
        """:meth:`handle` for many devices, in a few round trips whatever their number:
        one loads every state, the fence lookups and the screening of all pings run in a
        few vectorised calls, the entries of all devices are decided together (one read
        of profiles, offers and budgets), one writes every state, ledger and outbox, one
        feeds the funnel. A device passing by (no open visit, no accepted ping inside a
        fence) skips the visit rules ping by ping: its state moves in one step.

        A device named in more than one group has its groups applied one after the
        other, as :meth:`handle` called group by group would. A device whose write lost
        to another worker goes the single-device way, group by group. A device erased
        meanwhile gets NotFound in place of its results; a store outage fails the lot.
        ``loaded``: stored states already read (with the profiles), not read again.
        ``ahead``: the devices it names are read in the round trip of the write.
        """
        when = self.clock() if now is None else now
        batch = [_in_ts_order(pings) for _, pings in groups]
        devices = _groups_by_ref([ref for ref, _ in groups])
        stored = await self._stored(list(devices), loaded or {})
        rows = _Rows.of([ordered for _, ordered in batch])
        states = [stored[ref].state for ref, _ in groups]
        nears = self._nears(rows, states)
        verdicts = self._verdicts(rows, states, when, [len(devices[ref]) == 1 for ref, _ in groups])
        moves = [
            self._move(
                ref, stored[ref], [(batch[g][1], nears[g], verdicts[g]) for g in positions], when
            )
            for ref, positions in devices.items()
        ]
        await self._decide(moves, when)
        await self._write(moves, ahead)
        answers: dict[int, list[PingResult] | NotFound] = {}
        for move, positions in zip(moves, devices.values(), strict=True):
            for g, outcome in zip(positions, move.chain, strict=True):
                answers[g] = (
                    await self._answer_again(move, batch[g], nears[g], when, explain=explain)
                    if move.verdict == "conflict"
                    else _answer(move, batch[g], outcome, explain=explain)
                )
        results = [answers[g] for g in range(len(groups))]
        self._count(
            [(ref, r) for (ref, _), r in zip(groups, results, strict=True) if isinstance(r, list)]
        )
        return results

    async def _stored(
        self, refs: Sequence[str], loaded: Mapping[str, StoredState]
    ) -> dict[str, StoredState]:
        """The stored state of each device: as given in ``loaded``, or read in one call."""
        missing = [ref for ref in refs if ref not in loaded]
        read = (
            dict(zip(missing, await self.store.load_states(missing), strict=True))
            if missing
            else {}
        )
        return {ref: read[ref] if ref in read else loaded[ref] for ref in refs}

    def _move(
        self,
        ref: str,
        stored: StoredState,
        steps: Sequence[tuple[Sequence[Ping], Nears, Verdicts | None]],
        when: float,
    ) -> _Move:
        """A device's groups advanced one after the other from its stored state."""
        chain: list[Outcome] = []
        state = stored.state
        for pings, nears, verdicts in steps:
            chain.append(self._outcome(state, pings, when, nears, verdicts))
            state = chain[-1].state
        entries = entries_of(self.catalogue.index, [e for o in chain for e in _events(o)])
        return _Move(ref=ref, stored=stored, chain=chain, entries=entries)

    async def _decide(self, moves: Sequence[_Move], when: float) -> None:
        """The offers of every device's entries, decided together."""
        entering = [m for m in moves if m.entries]
        if not entering:
            return
        asks = [Asked(m.ref, m.entries, m.stored.ledger) for m in entering]
        for move, decided in zip(entering, await self.offers.decide_many(asks, when), strict=True):
            if isinstance(decided, NotFound):
                move.verdict = "gone"
            else:
                move.reserved = decided

    async def _write(self, moves: Sequence[_Move], ahead: ReadAhead | None) -> None:
        """Every changed state with its ledger and outbox in one compare-and-set call
        (and the read ``ahead`` asks for, in the same round trip); then the budgets of
        lost writes back, the funnel fed with the written ones."""
        changed = [m for m in moves if m.verdict == "written" and m.changed]
        writes = [m.write for m in changed]
        if ahead is None:
            verdicts = await self.store.save_states(writes)
        else:
            verdicts, read = await self.store.save_then_load(writes, ahead.refs())
            ahead.read(read)
        for move, verdict in zip(changed, verdicts, strict=True):
            move.verdict = verdict
        for move in moves:
            if move.verdict == "conflict":
                self.metrics.state_conflicts.inc()
            if move.verdict != "written" and move.reserved is not None:
                await _quietly(self.offers.release(move.reserved))
        written = [m for m in moves if m.verdict == "written" and m.entries]
        for move in written:
            self._notified(move.write.outbox)
        if written:
            await _quietly(self.offers.count([(m.reserved, m.entries) for m in written]))

    async def _answer_again(
        self,
        move: _Move,
        group: tuple[list[int], list[Ping]],
        nears: Nears,
        when: float,
        *,
        explain: bool,
    ) -> list[PingResult] | NotFound:
        """The results of a group whose device's write lost to another worker's: from
        the single-device way (NotFound if the device is gone meanwhile)."""
        order, ordered = group
        try:
            outcome = await self._apply(move.ref, ordered, when, explain=explain, nears=nears)
        except NotFound as e:
            return e
        return _in_order(order, outcome)

    def _nears(self, rows: _Rows, states: Sequence[DeviceState]) -> list[list[dict[str, float]]]:
        """The lookups of every group's pings (``geofence.engine.device.nears_of``)."""
        return nears_of(self.catalogue.index, rows.lat, rows.lng, rows.spans, states)

    def _verdicts(
        self, rows: _Rows, states: Sequence[DeviceState], now: float, alone: Sequence[bool]
    ) -> list[Verdicts | None]:
        """The screening of every group's pings from its device's stored state, in one
        vectorised call (or ping after ping, for a few); None for a group whose device has
        more groups (its later groups start from a state not yet known) and for all when
        the vectorised call declines."""
        starts = [start for start, _ in rows.spans]
        rules = self.rules.screening
        flat = (
            screen_in_turn(rows.pings, starts, states, now, rules)
            if len(rows.pings) < SCREEN_AS_ARRAYS_FROM
            else screen_runs(rows.pings, rows.columns, starts, states, now, rules)
        )
        if flat is None:
            return [None] * len(rows.spans)
        return [
            flat[start:end] if once else None
            for (start, end), once in zip(rows.spans, alone, strict=True)
        ]

    async def _apply(
        self,
        ref: str,
        pings: Sequence[Ping],
        now: float,
        *,
        explain: bool,
        nears: Nears | None = None,
    ) -> Outcome:
        """The compare-and-set loop of one device; ``nears``: the pings' lookups if done
        (they hold for any state: ``relevant_stores`` adds the open visits' stores)."""
        for _ in range(MAX_ATTEMPTS):
            stored = await self.store.load_state(ref)
            outcome = self._outcome(stored.state, pings, now, nears)
            entries = entries_of(self.catalogue.index, _events(outcome))
            if outcome.state == stored.state and not entries:
                return _with_offers(outcome, None, explain=explain)  # ignored pings only
            reserved = (
                await self.offers.decide(ref, entries, stored.ledger, now) if entries else None
            )
            if await self._save(ref, outcome.state, stored.version, reserved):
                if entries:
                    await _quietly(self.offers.count([(reserved, entries)]))
                return _with_offers(outcome, reserved, explain=explain)
            self.metrics.state_conflicts.inc()
        raise Unavailable("the device's state is changing too fast; retry")

    async def _save(
        self, ref: str, state: DeviceState, version: int, reserved: Reserved | None
    ) -> bool:
        """The compare-and-set; a plan whose write did not land gives its budget back."""
        write = _write_of(ref, state, version, reserved)
        try:
            saved = await self.store.save_state(
                ref, state, version, ledger=write.ledger, outbox=write.outbox
            )
        except NotFound:  # erased meanwhile: surely not written
            if reserved is not None:
                await _quietly(self.offers.release(reserved))
            raise
        # on any other failure the write may have landed: the budget stays spent, so at
        # worst one unit goes unsent, never one too many
        if not saved and reserved is not None:
            await self.offers.release(reserved)
        if saved:
            self._notified(write.outbox)
        return saved

    def _notified(self, outbox: Sequence[Notification]) -> None:
        """Notifications now in the outbox: counted, and the delivery side woken."""
        for n in outbox:
            self.metrics.notifications.labels(n.offer_id).inc()
        if outbox:
            self.on_notified()

    def _outcome(
        self,
        state: DeviceState,
        pings: Sequence[Ping],
        now: float,
        nears: Nears | None = None,
        verdicts: Verdicts | None = None,
    ) -> Outcome:
        """The pure part, :func:`geofence.engine.device.outcome_of` with the catalogue's
        index in use and the service's rules."""
        return outcome_of(
            state, pings, self._views(), now, self.rules, nears=nears, verdicts=verdicts
        )

    def _views(self) -> StoreViews:
        """The store views of the catalogue's index now in use."""
        index = self.catalogue.index
        if self._store_views is None or self._store_views.index is not index:
            self._store_views = StoreViews(index)
        return self._store_views

    def _count(self, answered: Sequence[tuple[str, Sequence[PingResult]]]) -> None:
        """Every result counted by verdict, every event by type, in one pass; each event
        logged (with the device's ref, never its id)."""
        verdicts: dict[tuple[str, str], int] = {}
        for _, results in answered:
            for r in results:
                verdict = (r.status, r.reason or "")
                verdicts[verdict] = verdicts.get(verdict, 0) + 1
        for verdict, n in verdicts.items():
            self._verdicts_counted.of(verdict).inc(n)
        for ref, results in answered:
            for event in (e for result in results for e in result.events):
                self.metrics.events.labels(event.type, event.reason or "").inc()
                logger.info(
                    "visit event",
                    extra={"type": event.type, "store": event.store_id, "device": ref},
                )


class _ByLabels:
    """The counters of one labelled metric, each asked of it once: every ping counts its
    verdict, and ``labels`` (a lock and its checks) costs more than the count."""

    __slots__ = ("_counters", "_labelled")

    def __init__(self, labelled: Labelled) -> None:
        self._labelled = labelled
        self._counters: dict[tuple[str, ...], MetricCounter] = {}

    def of(self, values: tuple[str, ...]) -> MetricCounter:
        counter = self._counters.get(values)
        if counter is None:
            counter = self._counters[values] = self._labelled.labels(*values)
        return counter


def staged(call: Callable[P, R], stage: str, told: Stages) -> Callable[P, R]:
    """``call``, telling ``told`` the CPU time of each call under ``stage`` (the time an
    awaitable's await takes, for a coroutine function)."""
    if inspect.iscoroutinefunction(call):
        run = cast("Callable[P, Awaitable[object]]", call)

        async def timed_async(*args: P.args, **kwargs: P.kwargs) -> object:
            started = time.process_time()
            try:
                return await run(*args, **kwargs)
            finally:
                told(stage, time.process_time() - started)

        return cast("Callable[P, R]", timed_async)

    def timed(*args: P.args, **kwargs: P.kwargs) -> R:
        started = time.process_time()
        try:
            return call(*args, **kwargs)
        finally:
            told(stage, time.process_time() - started)

    return timed


def _write_of(ref: str, state: DeviceState, version: int, reserved: Reserved | None) -> StateWrite:
    """A device's compare-and-set, with its plan's ledger and notifications if it has one."""
    if reserved is None:
        return StateWrite(ref=ref, state=state, version=version)
    plan = reserved.plan
    return StateWrite(
        ref=ref, state=state, version=version, ledger=plan.ledger, outbox=plan.notifications
    )


class _Rows:
    """The pings of all groups one after the other, and each group's [start, end) rows;
    their positions as arrays (for the lookups), and all their fields as columns, made
    only when asked for (the array screening of many pings: a few pings are screened one
    after the other, and building the columns would cost more than their screening)."""

    __slots__ = ("_columns", "lat", "lng", "pings", "spans")

    def __init__(self, pings: list[Ping], spans: list[tuple[int, int]]) -> None:
        self.pings = pings
        self.spans = spans
        self.lat: FloatArray = np.array([p.lat for p in pings], dtype=np.float64)
        self.lng: FloatArray = np.array([p.lng for p in pings], dtype=np.float64)
        self._columns: Columns | None = None

    @property
    def columns(self) -> Columns:
        if self._columns is None:
            self._columns = Columns.of(self.pings)
        return self._columns

    @classmethod
    def of(cls, groups: Sequence[Sequence[Ping]]) -> _Rows:
        pings = [p for group in groups for p in group]
        bounds = itertools.accumulate((len(g) for g in groups), initial=0)
        return cls(pings, list(itertools.pairwise(bounds)))


def _answer(
    move: _Move, group: tuple[list[int], list[Ping]], outcome: Outcome, *, explain: bool
) -> list[PingResult] | NotFound:
    """One group's results, as advanced, its device's write landed; NotFound if the
    device is gone. (A write lost to another worker's is answered again, by
    :meth:`PingService._answer_again`.)"""
    if move.verdict == "gone":
        return NotFound("the device was erased")
    if explain or move.reserved is not None:
        outcome = _with_offers(outcome, move.reserved, explain=explain)
    return _in_order(group[0], outcome)


def _in_order(order: Sequence[int], outcome: Outcome) -> list[PingResult]:
    """An outcome's results (in ts order) back in the order their pings came."""
    if len(order) == 1:  # a single ping: most groups
        return list(outcome.results)
    results: list[PingResult | None] = [None] * len(order)
    for position, result in zip(order, outcome.results, strict=True):
        results[position] = result
    return [r for r in results if r is not None]


def _groups_by_ref(refs: Sequence[str]) -> dict[str, list[int]]:
    """The positions of each ref in ``refs``, the refs in the order first named."""
    positions: dict[str, list[int]] = {}
    for i, ref in enumerate(refs):
        positions.setdefault(ref, []).append(i)
    return positions


def _in_ts_order(pings: Sequence[Ping]) -> tuple[list[int], list[Ping]]:
    """The positions of ``pings`` in ts order, and the pings in that order."""
    if len(pings) == 1:  # a single ping: most groups
        return [0], list(pings)
    order = sorted(range(len(pings)), key=lambda i: pings[i].ts)
    return order, [pings[i] for i in order]


def _events(outcome: Outcome) -> list[VisitEvent]:
    return [event for result in outcome.results for event in result.events]


def _with_offers(outcome: Outcome, reserved: Reserved | None, *, explain: bool) -> Outcome:
    """Hang each decision and notification on the result of the ping whose entry made it."""
    the_plan = None if reserved is None else reserved.plan
    decided = {} if the_plan is None else {(d.store_id, d.entry_at): d for d in the_plan.decisions}
    made = {} if the_plan is None else {n.notification_id: n for n in the_plan.notifications}
    results = [_annotated(r, decided, made, explain=explain) for r in outcome.results]
    return Outcome(outcome.state, results)


def _annotated(
    result: PingResult,
    decided: dict[tuple[str, float], EntryDecision],
    made: dict[str, Notification],
    *,
    explain: bool,
) -> PingResult:
    mine = [
        decided[(e.store_id, e.at)]
        for e in result.events
        if e.type == "entry" and (e.store_id, e.at) in decided
    ]
    notes = [public(made[d.notification_id]) for d in mine if d.notification_id in made]
    return msgspec.structs.replace(
        result, notifications=notes, decisions=mine if explain else UNSET
    )


async def _quietly(step: Awaitable[None]) -> None:
    """A step after the decisive write: its failure must not turn a success into a 503.

    A budget unit not given back stays spent (never overspent); a funnel count missed
    is one entry fewer in the stats.
    """
    try:
        await step
    except Unavailable:
        logger.warning("step after the write skipped: state store unavailable")
