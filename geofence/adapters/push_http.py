"""The signed HTTP push client (contract §6, delivery).

One POST per try: the body as given, ``Idempotency-Key`` (the notification id, the same on
every retry) and ``X-Geofence-Signature``. Network failures come back as an ``Attempt``
with an error rather than an exception, so the dispatcher judges every outcome the same
way. The response body is read and dropped, so the connection goes back to the pool.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import aiohttp

from geofence.domain.delivery import Attempt, parse_retry_after, sign

MAX_CONNECTIONS = 100


class HttpPush:
    needs_token = True

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.secret = secret
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.clock = clock
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self.timeout)
        return self._session

    async def send(self, body: bytes, notification_id: str) -> Attempt:
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": notification_id,
            "X-Geofence-Signature": sign(self.secret, body, int(self.clock())),
        }
        try:
            async with self._client().post(self.url, data=body, headers=headers) as resp:
                await resp.read()
                retry_after = parse_retry_after(resp.headers.get("Retry-After"), self.clock())
                return Attempt(status=resp.status, retry_after_s=retry_after)
        except TimeoutError:
            return Attempt(error="timeout")
        except (aiohttp.ClientError, OSError):
            return Attempt(error="connection")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
