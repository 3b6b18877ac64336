"""An example push gateway: it receives geofence's notification pushes and sends receipts.

Run it beside ``geofence serve`` (the same two secrets, from the environment)::

    export GEOFENCE_PUSH_SECRET=whsec_c2VjcmV0LW9mLXRoZS1wdXNo GEOFENCE_GATEWAY_SECRET=receipts
    python examples/gateway_receiver.py --port 9000 --geofence-url http://127.0.0.1:8080
    GEOFENCE_PUSH_URL=http://127.0.0.1:9000/push geofence serve

For each push it

1. checks every signature the push carries (at least one): the Standard Webhooks headers
   with that scheme's own library (``pip install standardwebhooks``) and
   ``X-Geofence-Signature`` with geofence's; either refuses a time more than 300 s from
   this clock. A push that fails answers 401, and geofence dead-letters it ``rejected``;
2. deduplicates by ``Idempotency-Key``: geofence delivers at least once, so a push it
   sends again (after a timeout, or a crash) answers 200 and is not delivered twice;
3. "delivers" it: prints the notification as one JSON line. It names the device by its
   pseudonym (``device_ref``) and leaves out the push token; a real gateway hands the
   notification to APNs or FCM here, and answers 410 when they say the token is gone;
4. answers 200 and posts a ``delivered`` receipt to geofence's ``POST /v1/receipts``,
   signed with GEOFENCE_GATEWAY_SECRET. The funnel's ``delivered`` counts these receipts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

import aiohttp
import standardwebhooks
from aiohttp import web

from geofence.domain.delivery import BadSignature, sign, verify
from geofence.domain.times import format_time

logger = logging.getLogger("gateway_receiver")

SIGNATURE: Final = "X-Geofence-Signature"
SEEN_MAX: Final = 100_000  # Idempotency-Keys remembered; a retry comes within the offer's ttl
RECEIPT_TRIES: Final = 3
SHOWN: Final = (
    *("notification_id", "device_ref", "offer_id", "store_id"),
    *("title", "body", "created_at", "expires_at"),
)


class Receiver:
    """What the gateway keeps: its secrets, the keys it has delivered, receipts in flight."""

    def __init__(self, push_secret: str, receipt_secret: str, geofence_url: str) -> None:
        self.push_secret = push_secret
        # the scheme's libraries take a whsec_ secret as it is, any other as its UTF-8 bytes
        key = push_secret if push_secret.startswith("whsec_") else push_secret.encode()
        self._webhook = standardwebhooks.Webhook(key)
        self._checks = {"webhook-signature": self._standard, SIGNATURE: self._geofence}
        self.receipt_secret = receipt_secret
        self.receipts_url = geofence_url.rstrip("/") + "/v1/receipts"
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.session: aiohttp.ClientSession | None = None
        self.sending: set[asyncio.Task[None]] = set()

    def refusal(self, headers: Mapping[str, str], body: bytes) -> str | None:
        """Why the push is not to be trusted, or None."""
        checks = [check for name, check in self._checks.items() if name in headers]
        if not checks:
            return "no signature"
        for check in checks:
            try:
                check(headers, body)
            except (standardwebhooks.WebhookVerificationError, BadSignature) as e:
                return f"{type(e).__name__}: {e}"
        return None

    def _standard(self, headers: Mapping[str, str], body: bytes) -> None:
        self._webhook.verify(body, dict(headers), json_parse=False)

    def _geofence(self, headers: Mapping[str, str], body: bytes) -> None:
        verify(self.push_secret, headers.get(SIGNATURE), body, time.time())

    def first_time(self, key: str) -> bool:
        """Whether ``key`` is new; it is remembered from now on (the oldest forgotten)."""
        if key in self.seen:
            return False
        self.seen[key] = None
        if len(self.seen) > SEEN_MAX:
            self.seen.popitem(last=False)
        return True

    def send_receipt(self, notification_id: str) -> None:
        task = asyncio.create_task(self._receipt(notification_id))
        self.sending.add(task)
        task.add_done_callback(self.sending.discard)

    async def _receipt(self, notification_id: str) -> None:
        at = format_time(time.time())
        body = json.dumps({"notification_id": notification_id, "event": "delivered", "at": at})
        for attempt in range(RECEIPT_TRIES):
            status = await self._post_receipt(body.encode())
            if status is not None and status < 500:
                logger.info("receipt notification=%s status=%s", notification_id, status)
                return
            await asyncio.sleep(2**attempt)
        logger.warning("receipt not sent notification=%s", notification_id)

    async def _post_receipt(self, body: bytes) -> int | None:
        headers = {
            "Content-Type": "application/json",
            SIGNATURE: sign(self.receipt_secret, body, int(time.time())),
        }
        if self.session is None:  # not started, or shut down: not sent
            return None
        try:
            async with self.session.post(self.receipts_url, data=body, headers=headers) as resp:
                return resp.status
        except (aiohttp.ClientError, TimeoutError):
            return None


RECEIVER: Final = web.AppKey("receiver", Receiver)


async def push(request: web.Request) -> web.Response:
    """``POST /push``: one notification from geofence."""
    receiver = request.app[RECEIVER]
    body = await request.read()
    refused = receiver.refusal(request.headers, body)
    if refused is not None:
        logger.warning("push refused: %s", refused)
        return web.json_response({"error": refused}, status=401)
    try:
        note = json.loads(body)
        key, notification_id = request.headers["Idempotency-Key"], note["notification_id"]
    except (ValueError, KeyError, TypeError):
        return web.json_response({"error": "not a notification"}, status=400)
    if not receiver.first_time(key):
        return web.json_response({"status": "duplicate"})
    deliver(note)
    receiver.send_receipt(notification_id)
    return web.json_response({"status": "delivered"})


def deliver(note: Mapping[str, Any]) -> None:
    """Where a real gateway calls APNs or FCM with ``note["push_token"]``."""
    shown = {name: note.get(name) for name in SHOWN}
    print(json.dumps({"delivered": shown}), flush=True)


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def make_app(receiver: Receiver) -> web.Application:
    app = web.Application()
    app[RECEIVER] = receiver
    app.router.add_post("/push", push)
    app.router.add_get("/healthz", healthz)
    app.cleanup_ctx.append(_session)
    return app


async def _session(app: web.Application) -> AsyncIterator[None]:
    receiver = app[RECEIVER]
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        receiver.session = session
        yield
        await asyncio.gather(*receiver.sending, return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--geofence-url", default="http://127.0.0.1:8080")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    receiver = Receiver(
        os.environ["GEOFENCE_PUSH_SECRET"],
        os.environ["GEOFENCE_GATEWAY_SECRET"],
        args.geofence_url,
    )
    logger.info("receiving pushes on port %d, receipts to %s", args.port, receiver.receipts_url)
    web.run_app(make_app(receiver), host=args.host, port=args.port, access_log=None)


if __name__ == "__main__":
    main()
