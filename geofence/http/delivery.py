"""Receipts from the push gateway and the dead letters (contract §6, delivery)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web

from geofence.domain.delivery import WEBHOOK_SIGNATURE, verify, verify_webhook
from geofence.domain.errors import Unauthorized
from geofence.domain.times import parse_time_param
from geofence.http.auth import allow
from geofence.http.errors import HTTPProblem
from geofence.http.keys import METRICS, OFFERS, SETTINGS, STORE
from geofence.http.schemas import decode, json_response, read_body, unprocessable
from geofence.ports import DeadLetter

SIGNATURE = "X-Geofence-Signature"
MAX_LISTED = 1000

NotificationId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class ReceiptIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    notification_id: NotificationId
    event: Literal["delivered", "opened", "redeemed"]
    at: float | str


async def post_receipt(request: web.Request) -> web.Response:
    """``POST /v1/receipts``: signed by the gateway (``X-Geofence-Signature`` or Standard
    Webhooks, with GEOFENCE_GATEWAY_SECRET); each (notification, event) counts once."""
    settings = request.app[SETTINGS]
    if not settings.gateway_secret:
        raise HTTPProblem(403, "receipts-disabled", "GEOFENCE_GATEWAY_SECRET is not set.")
    body = await read_body(request, limit=settings.max_body_bytes)
    _verify(settings.gateway_secret, request.headers, body)
    receipt = decode(body, ReceiptIn)
    at = _receipt_time(receipt.at)
    if not await request.app[OFFERS].receipt(receipt.notification_id, receipt.event, at):
        return json_response({"status": "duplicate"})
    request.app[METRICS].receipts.labels(receipt.event).inc()
    return json_response({"status": "recorded"})


async def list_dead_letters(request: web.Request) -> web.Response:
    """``GET /v1/deadletters?limit=``: the newest first (admin)."""
    allow(request, "admin")
    limit = _limit(request)
    letters = await request.app[STORE].dead_letters(limit)
    return json_response({"dead_letters": [dead_letter_doc(d) for d in letters]})


async def retry_dead_letter(request: web.Request) -> web.Response:
    """``POST /v1/deadletters/{notification_id}/retry``: back in the outbox, unless expired."""
    allow(request, "admin")
    notification_id = request.match_info["notification_id"]
    now = time.time()
    letter = await request.app[STORE].requeue(notification_id, now)
    if letter is None:
        raise HTTPProblem(404, "not-found", f"No dead letter {notification_id!r}.")
    if letter.item.notification.expires_at <= now:
        raise HTTPProblem(409, "expired", "The notification has expired; it is never sent late.")
    return json_response({"notification_id": notification_id, "due_at": now}, status=202)


def _verify(secret: str, headers: Mapping[str, str], body: bytes) -> None:
    """The gateway's signature: ``X-Geofence-Signature``, or else the Standard Webhooks
    headers; 401 naming the scheme it should have used."""
    try:
        if SIGNATURE not in headers and WEBHOOK_SIGNATURE in headers:
            verify_webhook(secret, headers, body, time.time())
        else:
            verify(secret, headers.get(SIGNATURE), body, time.time())
    except Unauthorized as e:
        challenge = {"WWW-Authenticate": f'Signature header="{SIGNATURE}"'}
        raise HTTPProblem(401, e.code, e.detail, headers=challenge) from None


def dead_letter_doc(letter: DeadLetter) -> dict[str, Any]:
    n = letter.item.notification
    return {
        "notification_id": n.notification_id,
        "reason": letter.reason,
        "at": letter.at,
        "attempts": letter.item.attempts,
        "last_error": letter.item.last_error,
        "device_ref": n.device_ref,
        "offer_id": n.offer_id,
        "store_id": n.store_id,
        "created_at": n.created_at,
        "expires_at": n.expires_at,
    }


def _receipt_time(at: float | str) -> float:
    try:
        return parse_time_param(at)
    except ValueError as e:
        raise unprocessable("$.at", "bad-time", str(e)) from None


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LISTED:
        raise unprocessable("?limit", "bad-query", f"takes 1..{MAX_LISTED}")
    return int(raw)
