"""Single pings that arrive together are handled together (``POST /v1/pings``).

Each request waits on a future; one flush at a time takes every ping waiting and runs
them as a batch: the profiles and stored states of all their devices in one round trip,
then :meth:`PingService.handle_many` (every state written in one script call, the fence
lookups vectorised, the entries' offers decided together). Pings that
arrive while a flush is at work wait for the next one, so the batches grow with the load
and a lone ping goes out at once, at the next turn of the event loop.

Each request gets exactly what it would have got alone: its own refusal (401, 404, no
consent), its device's results, or, when the store fails, the same 503 as every other
ping of that flush. Two pings of one device in a flush are one group, applied in ts
order, as two requests one after the other would be.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from geofence.domain.callers import Caller, CallerKind
from geofence.domain.errors import GeofenceError
from geofence.domain.model import Ping
from geofence.service.devices import DeviceService, located
from geofence.service.pings import PingResult, PingService

logger = logging.getLogger(__name__)

MAX_FLUSH = 1000  # pings per flush, as in one batch request
DEVICE_ONLY: tuple[CallerKind, ...] = ("device",)  # a single ping comes from its device


@dataclass
class _Waiting:
    caller: Caller
    device_id: str
    ping: Ping
    answer: asyncio.Future[PingResult] = field(repr=False)


class PingCoalescer:
    def __init__(self, devices: DeviceService, pings: PingService) -> None:
        self.devices = devices
        self.pings = pings
        self._waiting: list[_Waiting] = []
        self._flusher: asyncio.Task[None] | None = None

    async def handle(self, caller: Caller, device_id: str, ping: Ping) -> PingResult:
        """The result of one device's ping, once the flush that takes it has run."""
        answer: asyncio.Future[PingResult] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(caller, device_id, ping, answer))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_all(), name="ping-coalescer")
        return await answer

    async def _flush_all(self) -> None:
        while self._waiting:
            taken, self._waiting = self._waiting[:MAX_FLUSH], self._waiting[MAX_FLUSH:]
            try:
                await self._flush(taken)
            except BaseException as e:
                _fail(taken, e)
                if not isinstance(e, Exception):
                    _fail(self._waiting, e)
                    self._waiting = []
                    raise

    async def _flush(self, taken: Sequence[_Waiting]) -> None:
        asks = [(w.caller, w.device_id) for w in taken]
        allowed, loaded = await self.devices.authorize_loading(asks, DEVICE_ONLY)
        groups: dict[str, list[_Waiting]] = {}
        for waiting, authorized in zip(taken, allowed, strict=True):
            profile = located(authorized)
            if isinstance(profile, GeofenceError):
                _settle(waiting, profile)
            else:
                groups.setdefault(profile.ref, []).append(waiting)
        if not groups:
            return
        answers = await self.pings.handle_many(
            [(ref, [w.ping for w in group]) for ref, group in groups.items()], loaded=loaded
        )
        for group, answer in zip(groups.values(), answers, strict=True):
            if isinstance(answer, GeofenceError):
                for waiting in group:
                    _settle(waiting, answer)
            else:
                for waiting, result in zip(group, answer, strict=True):
                    _settle(waiting, result)


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
