"""Single pings that arrive together are handled together (``POST /v1/pings``).

Each request waits on a future; one flush at a time takes every ping waiting and runs
them as a batch: the profiles and stored states of all their devices in one round trip,
then :meth:`PingService.handle_many` (every state written in one script call, the fence
lookups vectorised, the entries' offers decided together). Pings that
arrive while a flush is at work wait for the next one, so the batches grow with the load
and a lone ping goes out at once, at the next turn of the event loop. The pings waiting
when a flush writes are the next flush: their devices are read in the round trip of that
write (``save_then_load``), after it, so under load a flush costs one round trip, not two.

Each request gets exactly what it would have got alone: its own refusal (401, 404, no
consent), its device's results, or, when the store fails, the same 503 as every other
ping of that flush. Two pings of one device in a flush are one group, applied in ts
order, as two requests one after the other would be.

Each request has a deadline, ``deadline_s`` (the Redis timeout) after it arrives: one
still waiting then (queued behind a flush stuck on a hung store, or in its own) answers
``BackendUnavailable`` (503) at once, whatever the flush does after. A request that gave
up before its flush took it is dropped from the queue: it is never applied; one already
taken may still be (a 503 says "maybe", and a resend with the same ts is answered stale).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from geofence.domain.callers import Caller, CallerKind
from geofence.domain.devices import DeviceProfile
from geofence.domain.errors import BackendUnavailable, GeofenceError
from geofence.domain.model import Ping
from geofence.engine.device import PingResult
from geofence.ports import StoredState
from geofence.service.devices import DeviceService, Planned, located
from geofence.service.pings import PingService

logger = logging.getLogger(__name__)

MAX_FLUSH = 1000  # pings per flush, as in one batch request
DEVICE_ONLY: tuple[CallerKind, ...] = ("device",)  # a single ping comes from its device


@dataclass
class _Waiting:
    caller: Caller
    device_id: str
    ping: Ping
    answer: asyncio.Future[PingResult] = field(repr=False)


@dataclass
class _Flush:
    """The pings of one flush, the authorization of their devices, and (once read) their
    devices' profiles and states."""

    taken: list[_Waiting]
    planned: Planned
    read: list[tuple[DeviceProfile | None, StoredState]] | None = None


class PingCoalescer:
    def __init__(
        self, devices: DeviceService, pings: PingService, *, deadline_s: float | None = None
    ) -> None:
        """``deadline_s``: how long a request may wait for its answer (None: no bound)."""
        self.devices = devices
        self.pings = pings
        self.deadline_s = deadline_s
        self._waiting: list[_Waiting] = []
        self._ahead: _Flush | None = None  # the next flush, taken while this one writes
        self._flusher: asyncio.Task[None] | None = None
        # each request's deadline and answer, in the order they came (so by deadline)
        self._deadlines: collections.deque[tuple[float, asyncio.Future[PingResult]]] = (
            collections.deque()
        )
        self._sweep: asyncio.TimerHandle | None = None  # at the first deadline still open

    async def handle(self, caller: Caller, device_id: str, ping: Ping) -> PingResult:
        """The result of one device's ping, once the flush that takes it has run."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[PingResult] = loop.create_future()
        self._waiting.append(_Waiting(caller, device_id, ping, answer))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_all(), name="ping-coalescer")
        if self.deadline_s is not None:
            # at the deadline the answer is given up (a flush skips it, or drops its
            # result); one timer for all the requests, not one each: every ping passes here
            at = loop.time() + self.deadline_s
            self._deadlines.append((at, answer))
            if self._sweep is None:
                self._sweep = loop.call_at(at, self._give_up_due)
        return await answer

    def _give_up_due(self) -> None:
        """The requests whose deadline has come and that have no answer yet answer 503;
        the timer is set again at the next deadline still open."""
        self._sweep = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._deadlines:
            at, answer = self._deadlines[0]
            if not answer.done() and at > now:
                self._sweep = loop.call_at(at, self._give_up_due)
                return
            self._deadlines.popleft()
            _give_up(answer)

    async def _flush_all(self) -> None:
        while self._waiting or self._ahead is not None:
            flush, self._ahead = self._ahead or self._take(), None
            if not flush.taken:  # every one waiting had given up
                continue
            try:
                await self._flush(flush)
            except BaseException as e:
                _fail(flush.taken, e)
                if not isinstance(e, Exception):
                    _fail([*self._waiting, *(self._ahead.taken if self._ahead else [])], e)
                    self._waiting, self._ahead = [], None
                    raise

    def _take(self) -> _Flush:
        waiting = [w for w in self._waiting if not w.answer.done()]  # not given up
        taken, self._waiting = waiting[:MAX_FLUSH], waiting[MAX_FLUSH:]
        asks = [(w.caller, w.device_id) for w in taken]
        return _Flush(taken, self.devices.plan_each(asks, DEVICE_ONLY))

    def _take_ahead(self) -> Sequence[str]:
        """The next flush, taken now if pings wait and none is taken yet: the devices it
        reads (none if it was not taken now)."""
        if not self._waiting or self._ahead is not None:
            return []
        self._ahead = self._take()
        return self._ahead.planned.reads

    def _keep_ahead(self, devices: list[tuple[DeviceProfile | None, StoredState]]) -> None:
        """The next flush's devices, read in the round trip of this one's write."""
        if self._ahead is not None:
            self._ahead.read = devices

    async def _flush(self, flush: _Flush) -> None:
        read = flush.read if flush.read is not None else await self.devices.load(flush.planned)
        allowed, loaded = flush.planned.decide(read)
        groups: dict[str, list[_Waiting]] = {}
        for waiting, authorized in zip(flush.taken, allowed, strict=True):
            profile = located(authorized)
            if isinstance(profile, GeofenceError):
                _settle(waiting, profile)
            else:
                groups.setdefault(profile.ref, []).append(waiting)
        if not groups:
            return
        answers = await self.pings.handle_many(
            [(ref, [w.ping for w in group]) for ref, group in groups.items()],
            loaded=loaded,
            ahead=_ReadAhead(self._take_ahead, self._keep_ahead),
        )
        for group, answer in zip(groups.values(), answers, strict=True):
            if isinstance(answer, GeofenceError):
                for waiting in group:
                    _settle(waiting, answer)
            else:
                for waiting, result in zip(group, answer, strict=True):
                    _settle(waiting, result)


@dataclass(frozen=True)
class _ReadAhead:
    """What a flush's write reads for the next one: the pings waiting by then."""

    take: Callable[[], Sequence[str]]
    keep: Callable[[list[tuple[DeviceProfile | None, StoredState]]], None]

    def refs(self) -> Sequence[str]:
        return self.take()

    def read(self, devices: list[tuple[DeviceProfile | None, StoredState]]) -> None:
        self.keep(devices)


def _settle(waiting: _Waiting, outcome: PingResult | BaseException) -> None:
    if waiting.answer.done():  # its request went away
        return
    if isinstance(outcome, BaseException):
        waiting.answer.set_exception(outcome)
    else:
        waiting.answer.set_result(outcome)


def _fail(taken: Sequence[_Waiting], error: BaseException) -> None:
    if not isinstance(error, Exception):  # cancelled: the requests are cancelled too
        for waiting in taken:
            waiting.answer.cancel()
        return
    for waiting in taken:
        _settle(waiting, error)


def _give_up(answer: asyncio.Future[PingResult]) -> None:
    """The deadline of a ping still waiting: its request answers 503."""
    if not answer.done():
        answer.set_exception(BackendUnavailable("state store unavailable: no answer in time"))
