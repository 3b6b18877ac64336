"""Delivery rules (contract §6): signatures, and what to do after each try. Pure.

A delivery is signed ``X-Geofence-Signature: t=<unix>,v1=<hex>``, the hex being
HMAC-SHA256(secret, "<t>.<raw body>"). Receipts from the gateway are signed the same way
and refused when the signature is missing, malformed, wrong, or its time is more than
``tolerance_s`` away from now (either side). Several ``v1`` values may be given, so a
secret can be rotated; one match is enough. Comparison is constant-time.

After each try, ``judge`` decides:

=============================  =========================================================
answer                         verdict
=============================  =========================================================
2xx                            delivered
timeout, connection error,     retry at now + max(backoff, Retry-After): full jitter,
429, 5xx                       ``rand() * min(cap_s, base_s * 2**attempt)``; dead letter
                               ``expired`` when that is not before ``expires_at``
410                            dead letter ``rejected``; the push token is dropped
any other status               dead letter ``rejected``
=============================  =========================================================

Nothing is sent at or after ``expires_at`` (``expired``): a late offer is worse than none.
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import math
from collections.abc import Callable

import msgspec

from geofence.domain.errors import Unauthorized

MAX_BACKOFF_EXPONENT = 60


class Attempt(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of one POST: a status, or an error when no answer came."""

    status: int | None = None
    error: str | None = None  # "timeout" | "connection"
    retry_after_s: float | None = None


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    base_s: float = 1.0
    cap_s: float = 300.0
    timeout_s: float = 5.0


class Delivered(msgspec.Struct, frozen=True):
    pass


class RetryAt(msgspec.Struct, frozen=True):
    at: float


class DeadLetter(msgspec.Struct, frozen=True):
    reason: str
    drop_token: bool = False


Verdict = Delivered | RetryAt | DeadLetter


class BadSignature(Unauthorized):
    code = "bad-signature"


# --- signatures ------------------------------------------------------------------------


def _mac(secret: str, body: bytes, t: int) -> str:
    return hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, t: int) -> str:
    return f"t={t},v1={_mac(secret, body, t)}"


def verify(
    secret: str, header: str | None, body: bytes, now: float, tolerance_s: float = 300.0
) -> None:
    """Return if ``header`` signs ``body`` with ``secret`` recently enough; else refuse."""
    if not header:
        raise BadSignature("The X-Geofence-Signature header is missing.")
    t, candidates = _parse_signature(header)
    if abs(now - t) > tolerance_s:
        raise BadSignature("The signature's time is too far from now.")
    expected = _mac(secret, body, t)
    if not any(hmac.compare_digest(expected, c) for c in candidates):
        raise BadSignature("The signature does not match the body.")


def _parse_signature(header: str) -> tuple[int, list[str]]:
    t: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            t = int(value)
        elif key == "v1" and value:
            candidates.append(value)
    if t is None or not candidates:
        raise BadSignature("The signature is malformed: expected t=<unix>,v1=<hex>.")
    return t, candidates


# --- retries ---------------------------------------------------------------------------


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP-date; None if unusable."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, moment.timestamp() - now)


def backoff_s(attempt: int, policy: RetryPolicy, rand: Callable[[], float]) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**attempt))."""
    ceiling = min(policy.cap_s, policy.base_s * math.ldexp(1.0, min(attempt, MAX_BACKOFF_EXPONENT)))
    return rand() * ceiling


def expired(now: float, expires_at: float) -> bool:
    return now >= expires_at


def retryable(attempt: Attempt) -> bool:
    status = attempt.status
    return status is None or status == 429 or 500 <= status <= 599


def judge(
    attempt: Attempt,
    *,
    attempt_no: int,
    now: float,
    expires_at: float,
    policy: RetryPolicy,
    rand: Callable[[], float],
) -> Verdict:
    status = attempt.status
    if status is not None and 200 <= status <= 299:
        return Delivered()
    if not retryable(attempt):
        return DeadLetter("rejected", drop_token=status == 410)
    wait = max(backoff_s(attempt_no, policy, rand), attempt.retry_after_s or 0.0)
    if expired(now + wait, expires_at):
        return DeadLetter("expired")
    return RetryAt(now + wait)
