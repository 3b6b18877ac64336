"""Admission on the ping routes: a cap on requests in flight, and a rate per caller.

Both are decided before the handler runs, in memory, in constant time: no Redis call and
no lock (one event loop per process), since every ping passes through here. Both are per
process: N workers admit N times as much.

- In flight: past ``max_inflight`` ping requests being handled, another one is answered
  at once with 503 ``overloaded`` and ``Retry-After`` rather than queued behind the
  others (the server is short of capacity; the caller did nothing wrong, hence not 429).
- Rate: a device gets ``device_rate_per_s`` requests a second with bursts of
  ``device_burst``; an ingest key (a trusted backend sending batches for many devices)
  gets ``ingest_rate_per_s`` / ``ingest_burst`` of its own. A request over its rate is
  answered 429 ``rate-limited`` with ``Retry-After``: the whole seconds until it would be
  served. Buckets are keyed by the device ref a token names, which the edge has verified
  (its tag), so a made-up token never gets one. Admin and sdk keys are not limited here
  (they may not ping: 403). Requests are counted, not pings: a batch costs one, and its
  size is capped by the body limit and the 1000-ping maximum.
- Strangers: a request that fails authentication, on any route, and a registration
  with the public sdk key take from one bucket per client address
  (``stranger_rate_per_s`` / ``stranger_burst``), in a table of at most
  ``stranger_addresses`` addresses (the least recently seen is dropped first), so that
  memory stays bounded whoever knocks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from aiohttp import hdrs, web
from prometheus_client import Counter

from geofence.config import Settings, SettingsError
from geofence.domain.callers import Caller
from geofence.domain.limits import DEFAULT_MAX_KEYS, Buckets, Rate, retry_after_s
from geofence.http.auth import CALLER
from geofence.http.errors import Handler, HTTPProblem

PING_ROUTES: Final = frozenset({"/v1/pings", "/v1/pings/batch"})
RETRY_AFTER_OVERLOADED_S: Final = 1


class PingGate:
    """What the ping routes admit; ``inflight`` is how many of them are being handled."""

    def __init__(
        self,
        *,
        max_inflight: int = 0,
        device: Buckets | None = None,
        ingest: Buckets | None = None,
        strangers: Buckets | None = None,
        refused: Counter | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_inflight = max_inflight
        self.device = device
        self.ingest = ingest
        self.strangers = strangers
        self.refused = refused
        self.clock = clock
        self.inflight = 0

    @classmethod
    def from_settings(cls, settings: Settings, *, refused: Counter | None = None) -> PingGate:
        if settings.max_inflight < 0:
            raise SettingsError("GEOFENCE_MAX_INFLIGHT must be >= 0 (0: no cap)")
        if settings.stranger_addresses < 1:
            raise SettingsError("GEOFENCE_STRANGER_ADDRESSES must be at least 1")
        strangers = _buckets(
            "stranger",
            settings.stranger_rate_per_s,
            settings.stranger_burst,
            max_keys=settings.stranger_addresses,
        )
        return cls(
            max_inflight=settings.max_inflight,
            device=_buckets("device", settings.device_rate_per_s, settings.device_burst),
            ingest=_buckets("ingest", settings.ingest_rate_per_s, settings.ingest_burst),
            strangers=strangers,
            refused=refused,
        )

    def refusal(self, caller: Caller) -> HTTPProblem | None:
        """The answer to a ping request that may not go on now, or None to handle it."""
        if self.max_inflight and self.inflight >= self.max_inflight:
            return self._refuse(
                503, "overloaded", RETRY_AFTER_OVERLOADED_S, "Too many pings in flight."
            )
        wait_s = self._wait_s(caller)
        if wait_s <= 0.0:
            return None
        detail = "Too many ping requests from this caller."
        return self._refuse(429, "rate-limited", retry_after_s(wait_s), detail)

    def admit_stranger(self, address: str | None) -> None:
        """Take from the bucket of a client address; 429 when it is empty."""
        if self.strangers is None:
            return
        wait_s = self.strangers.take(address or "-", self.clock())
        if wait_s > 0.0:
            detail = "Too many unauthenticated requests from this address."
            raise self._refuse(429, "rate-limited", retry_after_s(wait_s), detail)

    def _wait_s(self, caller: Caller) -> float:
        if caller.kind == "device" and self.device is not None:
            return self.device.take(caller.device_ref, self.clock())
        if caller.kind == "ingest" and self.ingest is not None:
            return self.ingest.take(caller.token, self.clock())
        return 0.0

    def _refuse(self, status: int, code: str, retry_after: int, detail: str) -> HTTPProblem:
        if self.refused is not None:
            self.refused.labels(code).inc()
        detail = f"{detail} Retry in {retry_after} s."
        return HTTPProblem(status, code, detail, headers={hdrs.RETRY_AFTER: str(retry_after)})


def _buckets(
    caller: str, per_s: float, burst: int, *, max_keys: int = DEFAULT_MAX_KEYS
) -> Buckets | None:
    if per_s == 0:
        return None
    try:
        return Buckets(Rate(per_s=per_s, burst=burst), max_keys=max_keys)
    except ValueError as e:
        name = f"GEOFENCE_{caller.upper()}"
        raise SettingsError(f"{name}_RATE_PER_S / {name}_BURST: {e} (rate 0: no limit)") from None


PING_GATE = web.AppKey("ping_gate", PingGate)


@web.middleware
async def ping_gate_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    resource = request.match_info.route.resource
    if resource is None or resource.canonical not in PING_ROUTES:
        return await handler(request)
    gate = request.app[PING_GATE]
    refused = gate.refusal(request[CALLER])
    if refused is not None:
        raise refused
    gate.inflight += 1
    try:
        return await handler(request)
    finally:
        gate.inflight -= 1
