"""The signed HTTP push client (contract §6, delivery).

One POST per try: the body as given, ``Idempotency-Key`` (the notification id, the same on
every retry), ``X-Geofence-Signature`` and the Standard Webhooks ``webhook-id``,
``webhook-timestamp`` and ``webhook-signature`` (both signed at the same second). A
failure of the network or of the far side comes back as an ``Attempt``
(``error="timeout"`` or ``"connection"``), never as an exception, so the dispatcher
judges every outcome the same way. The answer's body is drained (up to
``MAX_DRAIN_BYTES``) so the connection goes back to the pool.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

import aiohttp

from geofence.domain.delivery import (
    Attempt,
    parse_retry_after,
    sign,
    sign_webhook,
    webhook_key,
)

logger = logging.getLogger(__name__)

MAX_CONNECTIONS: Final = 100
MAX_DRAIN_BYTES: Final = 64 * 1024  # a longer answer closes its connection instead
CHUNK_BYTES: Final = 16 * 1024


class HttpPush:
    """The push gateway of GEOFENCE_PUSH_URL; one pooled session, made on first use."""

    needs_token = True

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        webhook_key(secret)  # a malformed whsec_ secret fails at start, not on each push
        self.url = url
        self._secret = secret
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

    def headers(self, body: bytes, notification_id: str) -> dict[str, str]:
        t = int(self._clock())
        return {
            "Content-Type": "application/json",
            "Idempotency-Key": notification_id,
            "X-Geofence-Signature": sign(self._secret, body, t),
            **sign_webhook(self._secret, notification_id, body, t),
        }

    async def send(self, body: bytes, notification_id: str) -> Attempt:
        """One POST; the status and Retry-After, or the kind of failure."""
        try:
            return await self._post(body, self.headers(body, notification_id))
        except TimeoutError:  # asyncio's too, and aiohttp's ServerTimeoutError
            return _failed(notification_id, "timeout")
        except (aiohttp.ClientError, OSError):
            return _failed(notification_id, "connection")

    async def _post(self, body: bytes, headers: dict[str, str]) -> Attempt:
        # a redirect is an answer like any other (rejected), not a second place to send to
        post = self._client().post(self.url, data=body, headers=headers, allow_redirects=False)
        async with post as resp:
            await _drain(resp)
            retry_after = parse_retry_after(resp.headers.get("Retry-After"), self._clock())
            return Attempt(status=resp.status, retry_after_s=retry_after)

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


async def _drain(resp: aiohttp.ClientResponse) -> None:
    read = 0
    async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
        read += len(chunk)
        if read > MAX_DRAIN_BYTES:
            return


def _failed(notification_id: str, error: str) -> Attempt:
    logger.debug("push failed", extra={"notification": notification_id, "error": error})
    return Attempt(error=error)
