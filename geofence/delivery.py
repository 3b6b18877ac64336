"""The outbox drained to the push gateway (contract §6, delivery).

A dispatcher claims due notifications from the outbox with a lease, sends each at most
``concurrency`` at a time, and settles it by the verdict of ``domain.delivery.judge``:
delivered (gone from the outbox), retry at a later time (kept, with its history), or
dead letter. A process killed mid-send loses nothing: its leases run out and another
dispatcher (or the restarted one) claims the items again, with the same notification id
as the ``Idempotency-Key``. Consent and the push tokens are read again just before each
round of sends (one read for the round), so a withdrawal or an erasure stops what is
still queued.

While claims find nothing the dispatcher looks less often: its idle poll starts at
``idle_s`` (0.5 s) and doubles up to ``idle_max_s`` (5 s), and goes back to ``idle_s`` as
soon as a claim finds items or it is woken. The service wakes its own dispatcher when it
writes notifications (``wake``), so a worker's own notifications go at once; another
worker's (or a retry come due) wait at most ``idle_max_s`` for an idle dispatcher to
look. On a Redis Cluster a look is a read of every shard (256): with this and the outbox
depth (a gauge, 256 more) read at most every ``depth_every_s``, an idle worker sends
about 100 Redis commands a second instead of about 970 (``benchmarks.cluster``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import msgspec

from geofence.domain.delivery import (
    Attempt,
    Delivered,
    RetryAt,
    RetryPolicy,
    expired,
    idle_after,
    judge,
    outage_backoff_s,
)
from geofence.domain.devices import DeviceProfile
from geofence.domain.errors import Unavailable
from geofence.domain.times import with_times
from geofence.ports import DeliveryMetrics, DeviceStore, Outbox, OutboxItem, PushGateway, Receipt

logger = logging.getLogger(__name__)

Clock = Callable[[], float]


class DeliveryRoles(Outbox, DeviceStore, Protocol):
    """The roles of the state store the dispatcher uses: the outbox, and the profiles of
    the devices (their push tokens and consent)."""


class Dispatcher:
    def __init__(  # noqa: PLR0913 - the roles, then its tunings, each by name
        self,
        store: DeliveryRoles,
        push: PushGateway,
        metrics: DeliveryMetrics,
        *,
        policy: RetryPolicy | None = None,
        concurrency: int = 16,
        idle_s: float = 0.5,
        idle_max_s: float = 5.0,
        depth_every_s: float = 5.0,
        clock: Clock = time.time,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.push = push
        self.metrics = metrics
        self.policy = policy or RetryPolicy()
        self.concurrency = concurrency
        self.idle_s = idle_s
        self.idle_max_s = max(idle_s, idle_max_s)
        self.depth_every_s = depth_every_s
        self._depth_at: float | None = None  # when the outbox depth was last read
        self.clock = clock
        self.rand = rand
        # longer than a send can take, so a live claimer never loses its items
        self.lease_s = 2 * self.policy.timeout_s + 5
        self._wake = asyncio.Event()
        self._retry_at: float | None = None  # the earliest retry this dispatcher set

    def wake(self) -> None:
        """New notifications are in the outbox: look now rather than at the next poll."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Drain until ``stop`` is set; a store that is down is waited out, not fatal:
        tried again after ``outage_backoff_s`` (at most ``policy.backend_cap_s``), or at
        once when new notifications were written (the store is back). Idle, the polls
        space out (``idle_after``)."""
        failures = 0
        idle_wait_s = self.idle_s
        while not stop.is_set():
            # a wake from here on (during the claim, too) ends the next wait at once
            self._wake.clear()
            try:
                sent = await self.drain_once()
                failures = 0
            except Unavailable:
                failures += 1
                wait_s = outage_backoff_s(failures, self.policy)
                logger.warning("delivery paused: state store unavailable; again in %.1f s", wait_s)
                await self._sleep(stop, wait_s)
                continue
            if sent:
                idle_wait_s = self.idle_s
                continue
            woken = await self._sleep(stop, self._until_retry(idle_wait_s))
            idle_wait_s = idle_after(
                idle_wait_s, woken=woken, floor_s=self.idle_s, cap_s=self.idle_max_s
            )

    def _until_retry(self, idle_wait_s: float) -> float:
        """The idle wait, cut short to the earliest retry this dispatcher set (its own
        retries go at their time, not at the next idle poll); forgotten once due."""
        if self._retry_at is None:
            return idle_wait_s
        left_s = self._retry_at - self.clock()
        if left_s <= idle_wait_s:
            self._retry_at = None
        return max(0.0, min(idle_wait_s, left_s))

    async def drain_once(self) -> int:
        """Claim one round of due items and settle each; how many were claimed. The
        outbox depth is read after it when ``depth_every_s`` has passed since the last
        read."""
        items = await self.store.claim_outbox(self.clock(), self.lease_s, self.concurrency)
        if items:
            await _safely(self.deliver(*items))
        now = self.clock()
        if self._depth_at is None or not 0 <= now - self._depth_at < self.depth_every_s:
            self.metrics.outbox_depth.set(await self.store.outbox_depth())
            self._depth_at = now
        return len(items)

    async def _sleep(self, stop: asyncio.Event, wait_s: float) -> bool:
        """Wait ``wait_s``, less if stopped or woken (since the round began); whether
        woken."""
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
        try:
            await asyncio.wait(waits, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*waits, return_exceptions=True)
        return self._wake.is_set()

    async def deliver(self, *items: OutboxItem) -> None:
        """Send the items that can still go and act on each verdict. Their devices'
        profiles are read in one call and their receipts expected in one, just before the
        sends; each item is then sent and settled on its own."""
        profiles = await self.store.get_devices([item.device_ref for item in items])
        sending: list[tuple[OutboxItem, DeviceProfile]] = []
        for item, profile in zip(items, profiles, strict=True):
            to = await self._recipient(item, profile)
            if to is not None:
                sending.append((item, to))
        if sending:
            await self.store.expect_receipts(*(_receipt(item) for item, _ in sending))
            await asyncio.gather(*(_safely(self._send(item, p)) for item, p in sending))

    async def _recipient(
        self, item: OutboxItem, profile: DeviceProfile | None
    ) -> DeviceProfile | None:
        """The device to send the item to, or None when it can no longer go: then the
        item is settled or dead-lettered here."""
        if expired(self.clock(), item.notification.expires_at):
            await self._dead(item, "expired")
            return None
        if profile is None or not profile.allows("offers"):
            # erased, or its consent to offers withdrawn (which erased its queue, but for
            # what was claimed before): nothing of it may be kept, not even a dead letter
            await self.store.settle(item)
            self.metrics.dead_letters.labels(_gone(profile)).inc()
            return None
        refusal = _refusal(profile, needs_token=self.push.needs_token)
        if refusal is not None:
            await self._dead(item, refusal)
            return None
        return profile

    async def _send(self, item: OutboxItem, profile: DeviceProfile) -> None:
        attempt = await self.push.send(payload(item, profile), item.notification.notification_id)
        await self._act(item, attempt, profile)

    async def _act(self, item: OutboxItem, attempt: Attempt, profile: DeviceProfile) -> None:
        now = self.clock()
        verdict = judge(
            attempt,
            attempt_no=item.attempts,
            now=now,
            expires_at=item.notification.expires_at,
            policy=self.policy,
            rand=self.rand,
        )
        if isinstance(verdict, Delivered):
            await self.store.settle(item)
            self.metrics.deliveries.inc()
            self.metrics.delivery_latency.observe(max(0.0, now - item.notification.created_at))
        elif isinstance(verdict, RetryAt):
            await self._retry(item, attempt, verdict.at)
        else:
            await self._dead(item, verdict.reason)
            if verdict.drop_token:
                await self._drop_token(profile)

    async def _retry(self, item: OutboxItem, attempt: Attempt, at: float) -> None:
        cause = _cause(attempt)
        later = msgspec.structs.replace(item, attempts=item.attempts + 1, last_error=cause)
        await self.store.retry_later(later, at)
        self._retry_at = at if self._retry_at is None else min(self._retry_at, at)
        self.metrics.delivery_retries.labels(cause).inc()
        logger.info(
            "delivery retry",
            extra={"notification": item.id, "cause": cause, "in_s": round(at - self.clock())},
        )

    async def _dead(self, item: OutboxItem, reason: str) -> None:
        await self.store.dead_letter(item, reason, self.clock())
        self.metrics.dead_letters.labels(reason).inc()
        logger.info("delivery dead-lettered", extra={"notification": item.id, "reason": reason})

    async def _drop_token(self, profile: DeviceProfile) -> None:
        """410 Gone: the gateway says the token is dead; forget it."""
        if profile.push_token is not None:
            await self.store.put_device(msgspec.structs.replace(profile, push_token=None))
            logger.info("push token dropped", extra={"device": profile.ref})


async def _safely(step: Awaitable[None]) -> None:
    """A delivery step whose failure leaves its items to come back when their leases end."""
    try:
        await step
    except Unavailable:
        logger.warning("delivery deferred: state store unavailable")
    except Exception:
        logger.exception("delivery failed unexpectedly")


def _receipt(item: OutboxItem) -> Receipt:
    """What the receipts of the item's notification will count against."""
    n = item.notification
    return Receipt(notification_id=n.notification_id, store_id=n.store_id, offer_id=n.offer_id)


def _gone(profile: DeviceProfile | None) -> str:
    """Why a device's notification is dropped, not kept as a dead letter."""
    return "device-erased" if profile is None else "consent-withdrawn"


def _refusal(profile: DeviceProfile, *, needs_token: bool) -> str | None:
    if needs_token and profile.push_token is None:
        return "no-push-token"
    return None


def _cause(attempt: Attempt) -> str:
    return attempt.error or f"http-{attempt.status}"


def payload(item: OutboxItem, profile: DeviceProfile) -> bytes:
    """The body contract §6 names, with the push token as it is now: the notification's
    own fields, in their order, its times in RFC 3339 like every answer of the API (the
    ``webhooks`` entry of the OpenAPI document)."""
    addressed = msgspec.structs.replace(item.notification, push_token=profile.push_token)
    return msgspec.json.encode(with_times(addressed))
