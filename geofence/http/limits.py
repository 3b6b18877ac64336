"""Admission on the ping routes: a cap on requests in flight, and a rate per caller.

Both are decided before the handler runs, in memory, in constant time: no Redis call and
no lock (one event loop per process), since every ping passes through here. Both are per
process: N workers admit N times as much.

- In flight: past ``max_inflight`` ping requests being handled, another one is answered
  at once with 503 ``overloaded`` and ``Retry-After`` rather than queued behind the
  others (the server is short of capacity; the caller did nothing wrong, hence not 429).
- Rate: a device token gets ``device_rate_per_s`` requests a second with bursts of
  ``device_burst``; an ingest key (a trusted backend sending batches for many devices)
  gets ``ingest_rate_per_s`` / ``ingest_burst`` of its own. A request over its rate is
  answered 429 ``rate-limited`` with ``Retry-After``: the whole seconds until it would be
  served. Buckets are keyed by a digest of the credential itself, not by the device ref a
  token names, so a forged token that names someone else's device cannot spend that
  device's requests. Admin and sdk keys are not limited here (they may not ping: 403).
  Requests are counted, not pings: a batch costs one, and its size is capped by the body
  limit and the 1000-ping maximum.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Final

from aiohttp import hdrs, web
from prometheus_client import Counter

from geofence.config import Settings, SettingsError
from geofence.domain.limits import Buckets, Rate, retry_after_s
from geofence.http.auth import Credentials
from geofence.http.errors import Handler, problem_response

PING_ROUTES: Final = frozenset({"/v1/pings", "/v1/pings/batch"})
RETRY_AFTER_OVERLOADED_S: Final = 1


class PingGate:
    """What the ping routes admit; ``inflight`` is how many of them are being handled."""

    def __init__(
        self,
        credentials: Credentials,
        *,
        max_inflight: int = 0,
        device: Buckets | None = None,
        ingest: Buckets | None = None,
        refused: Counter | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.credentials = credentials
        self.max_inflight = max_inflight
        self.device = device
        self.ingest = ingest
        self.refused = refused
        self.clock = clock
        self.inflight = 0

    @classmethod
    def from_settings(
        cls, settings: Settings, credentials: Credentials, *, refused: Counter | None = None
    ) -> PingGate:
        if settings.max_inflight < 0:
            raise SettingsError("GEOFENCE_MAX_INFLIGHT must be >= 0 (0: no cap)")
        return cls(
            credentials,
            max_inflight=settings.max_inflight,
            device=_buckets("device", settings.device_rate_per_s, settings.device_burst),
            ingest=_buckets("ingest", settings.ingest_rate_per_s, settings.ingest_burst),
            refused=refused,
        )

    def refusal(self, authorization: str) -> web.Response | None:
        """The answer to a ping request that may not go on now, or None to handle it."""
        if self.max_inflight and self.inflight >= self.max_inflight:
            return self._refuse(
                503, "overloaded", RETRY_AFTER_OVERLOADED_S, "Too many pings in flight."
            )
        buckets, key = self._buckets_of(authorization)
        if buckets is None:
            return None
        wait_s = buckets.take(key, self.clock())
        if wait_s <= 0.0:
            return None
        return self._refuse(
            429, "rate-limited", retry_after_s(wait_s), "Too many ping requests from this caller."
        )

    def _buckets_of(self, authorization: str) -> tuple[Buckets | None, bytes]:
        if self.device is None and self.ingest is None:
            return None, b""
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None, b""  # the handler answers 401
        kind = self.credentials.kind_of(token)
        if kind is None:  # a device token, or a forged one (401): a bucket of its own
            buckets = self.device
        elif kind == "ingest":
            buckets = self.ingest
        else:
            return None, b""
        if buckets is None:
            return None, b""
        # a fixed-size key, whatever the header holds, and no credential kept in the table
        return buckets, hashlib.blake2b(token.encode(), digest_size=16).digest()

    def _refuse(self, status: int, code: str, retry_after: int, detail: str) -> web.Response:
        if self.refused is not None:
            self.refused.labels(code).inc()
        detail = f"{detail} Retry in {retry_after} s."
        return problem_response(status, code, detail, headers={hdrs.RETRY_AFTER: str(retry_after)})


def _buckets(caller: str, per_s: float, burst: int) -> Buckets | None:
    if per_s == 0:
        return None
    try:
        return Buckets(Rate(per_s=per_s, burst=burst))
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
    refused = gate.refusal(request.headers.get(hdrs.AUTHORIZATION, ""))
    if refused is not None:
        return refused
    gate.inflight += 1
    try:
        return await handler(request)
    finally:
        gate.inflight -= 1
