"""Delivery rules (contract §6): signatures, Retry-After, backoff and the verdict on a try.

Pure: no network and no clock; ``now`` and ``rand`` are arguments.

A push is signed ``X-Geofence-Signature: t=<unix>,v1=<hex>``, the hex being
HMAC-SHA256(secret, ``"<t>." + raw body``). Receipts from the gateway are signed the same
way; ``verify`` refuses them with ``Unauthorized`` and one of these codes:

====================  ===============================================================
signature-missing     no header, or an empty one
signature-malformed   not exactly one ``t=<digits>``, or no ``v1=<64 hex digits>``
signature-mismatch    no ``v1`` is the HMAC of this body at this ``t`` with the secret
signature-stale       |now - t| > ``tolerance_s`` (300 s): too old, or from the future
====================  ===============================================================

Several ``v1`` entries may be given, so a secret can be rotated: one match is enough.
Every comparison is constant-time. Entries of other schemes (``v0=``) are ignored.

A push also carries the Standard Webhooks headers (standardwebhooks.com), so a gateway
can check it with any of that scheme's libraries: ``webhook-id`` (the notification id),
``webhook-timestamp`` (unix seconds) and ``webhook-signature: v1,<base64 HMAC-SHA256(key,
"<id>.<timestamp>.<body>")>``. The scheme's secrets are ``whsec_<base64>``: a secret of
that form is keyed by its decoded bytes, any other by its UTF-8 bytes (``webhook_key``).
``verify_webhook`` checks those headers with the codes above (several space-separated
signatures may be given, one match is enough).

After each try, ``judge`` decides (``attempt_no`` counts the tries before, from 0):

========================  ===============================================================
answer                    verdict
========================  ===============================================================
2xx                       ``Delivered``
timeout, connection       ``RetryAt(now + max(backoff, Retry-After))``, where backoff is
error, 429, 5xx           full jitter: ``rand() * min(cap_s, base_s * 2**attempt_no)``;
                          ``DeadLetter("expired")`` when that is not before ``expires_at``
410                       ``DeadLetter("rejected", drop_token=True)``: the token is gone
any other status          ``DeadLetter("rejected")``: 1xx, 3xx and the other 4xx
========================  ===============================================================

When the state store fails (the outbox cannot be claimed), the dispatcher waits
``outage_backoff_s`` before it tries again: doubling from ``base_s`` but capped by
``backend_cap_s`` (5 s), not by the gateway's ``cap_s`` (300 s), so a backlog starts to go
within seconds of the store coming back, however long it was away.

A retry is never sooner than Retry-After (delta-seconds or an HTTP-date) and never at or
after ``expires_at``: a late offer is worse than none, so ``expired`` is also checked
before each send.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import hashlib
import hmac
import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC
from typing import Final

import msgspec

from geofence.domain.errors import Unauthorized

DEFAULT_TOLERANCE_S: Final = 300.0
MAX_BACKOFF_EXPONENT: Final = 62  # 2**62 s outgrows any cap; keeps the float finite
MAX_RETRY_AFTER_S: Final = 10 * 366 * 86_400.0  # beyond any expiry; keeps the sum finite
WHSEC: Final = "whsec_"  # the prefix of a Standard Webhooks secret
WEBHOOK_ID: Final = "webhook-id"
WEBHOOK_TIMESTAMP: Final = "webhook-timestamp"
WEBHOOK_SIGNATURE: Final = "webhook-signature"
WEBHOOK_HEADERS: Final = (WEBHOOK_ID, WEBHOOK_TIMESTAMP, WEBHOOK_SIGNATURE)

_T = re.compile(r"[0-9]{1,15}")  # 15 digits: ~31 million years; keeps now - t a float
_V1 = re.compile(r"[0-9a-fA-F]{64}")
_DELTA_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")


class BadSignature(Unauthorized):
    """A receipt whose signature is refused; ``code`` says why."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


class Attempt(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of one POST: a status, or an error when no answer came."""

    status: int | None = None  # None: no HTTP answer
    error: str | None = None  # "timeout" | "connection"
    retry_after_s: float | None = None  # Retry-After, already in seconds from the answer


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    base_s: float = 1.0
    cap_s: float = 300.0  # the gateway's backoff, per notification
    timeout_s: float = 5.0
    backend_cap_s: float = 5.0  # the dispatcher's, after the state store failed


class Delivered(msgspec.Struct, frozen=True):
    pass


class RetryAt(msgspec.Struct, frozen=True):
    at: float


class DeadLetter(msgspec.Struct, frozen=True):
    reason: str  # "expired" | "rejected"
    drop_token: bool = False


Verdict = Delivered | RetryAt | DeadLetter


# --- signatures ------------------------------------------------------------------------


def _hmac(key: bytes, signed: bytes) -> bytes:
    """The one MAC of both schemes: HMAC-SHA256."""
    return hmac.new(key, signed, hashlib.sha256).digest()


def _mac(secret: str, body: bytes, t: int) -> str:
    return _hmac(secret.encode(), f"{t}.".encode() + body).hex()


def sign(secret: str, body: bytes, t: int) -> str:
    """The ``X-Geofence-Signature`` value for ``body`` sent at unix time ``t``."""
    return f"t={t},v1={_mac(secret, body, t)}"


def webhook_key(secret: str) -> bytes:
    """The Standard Webhooks key: ``whsec_<base64>`` decoded, else the secret's UTF-8
    bytes; ValueError for a ``whsec_`` secret that is not base64."""
    if not secret.startswith(WHSEC):
        return secret.encode()
    try:
        return base64.b64decode(secret.removeprefix(WHSEC), validate=True)
    except binascii.Error as e:
        raise ValueError(f"a {WHSEC} secret must be base64: {e}") from None


def _webhook_mac(key: bytes, msg_id: str, t: int, body: bytes) -> str:
    return base64.b64encode(_hmac(key, f"{msg_id}.{t}.".encode() + body)).decode()


def sign_webhook(secret: str, msg_id: str, body: bytes, t: int) -> dict[str, str]:
    """The Standard Webhooks headers for ``body``, message ``msg_id``, sent at ``t``."""
    signature = _webhook_mac(webhook_key(secret), msg_id, t, body)
    return {WEBHOOK_ID: msg_id, WEBHOOK_TIMESTAMP: str(t), WEBHOOK_SIGNATURE: f"v1,{signature}"}


def verify_webhook(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    now: float,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> str:
    """The ``webhook-id`` if the Standard Webhooks headers (lower-case names) sign
    ``body`` with ``secret`` recently enough; else refuse, as ``verify`` does."""
    msg_id, timestamp, signature = (headers.get(h, "").strip() for h in WEBHOOK_HEADERS)
    if not (msg_id and timestamp and signature):
        raise BadSignature("signature-missing", "A webhook-* header is missing.")
    candidates = [c for scheme, _, c in _webhook_signatures(signature) if scheme == "v1"]
    if not _T.fullmatch(timestamp) or not candidates:
        detail = "The signature is malformed: expected webhook-signature: v1,<base64>."
        raise BadSignature("signature-malformed", detail)
    t = int(timestamp)
    expected = _webhook_mac(webhook_key(secret), msg_id, t, body)
    _check(expected, candidates, t, now, tolerance_s)
    return msg_id


def _webhook_signatures(header: str) -> list[tuple[str, str, str]]:
    return [entry.partition(",") for entry in header.split()]


def verify(
    secret: str,
    header: str | None,
    body: bytes,
    now: float,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> None:
    """Return if ``header`` signs ``body`` with ``secret`` recently enough; else refuse."""
    if not header or not header.strip():
        raise BadSignature("signature-missing", "The X-Geofence-Signature header is missing.")
    t, candidates = parse_signature(header)
    _check(_mac(secret, body, t), [c.lower() for c in candidates], t, now, tolerance_s)


def _check(expected: str, candidates: list[str], t: int, now: float, tolerance_s: float) -> None:
    """One of ``candidates`` is ``expected``, and ``t`` is within ``tolerance_s`` of now."""
    # every candidate is compared, so the time taken does not tell which one matched
    matches = [hmac.compare_digest(expected.encode(), c.encode()) for c in candidates]
    if not any(matches):
        raise BadSignature("signature-mismatch", "The signature does not match the body.")
    if abs(now - t) > tolerance_s:
        detail = f"The signature's time is more than {tolerance_s:g} s from now."
        raise BadSignature("signature-stale", detail)


def parse_signature(header: str) -> tuple[int, list[str]]:
    """``t`` and every ``v1`` of a signature header, or ``signature-malformed``."""
    times: list[str] = []
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            times.append(value)
        elif key == "v1":
            candidates.append(value)
    valid = all(_V1.fullmatch(c) for c in candidates)
    if len(times) != 1 or not _T.fullmatch(times[0]) or not candidates or not valid:
        detail = "The signature is malformed: expected t=<unix>,v1=<64 hex digits>."
        raise BadSignature("signature-malformed", detail)
    return int(times[0]), candidates


# --- retries ---------------------------------------------------------------------------


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Retry-After as seconds from ``now``: delta-seconds or an HTTP-date; None if unusable.

    Never negative (a date in the past is 0); a date without a zone is taken as GMT.
    """
    if value is None:
        return None
    text = value.strip()
    if _DELTA_SECONDS.fullmatch(text):
        return min(float(text), MAX_RETRY_AFTER_S)
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return min(max(0.0, moment.timestamp() - now), MAX_RETRY_AFTER_S)


def backoff_s(attempt: int, policy: RetryPolicy, rand: Callable[[], float]) -> float:
    """Full jitter: ``rand() * min(cap_s, base_s * 2**attempt)``, ``rand()`` in [0, 1)."""
    exponent = min(max(attempt, 0), MAX_BACKOFF_EXPONENT)
    return rand() * min(policy.cap_s, policy.base_s * math.ldexp(1.0, exponent))


def outage_backoff_s(failures: int, policy: RetryPolicy) -> float:
    """The wait after ``failures`` tries of the state store in a row failed (from 1):
    ``min(backend_cap_s, base_s * 2**(failures - 1))``."""
    exponent = min(max(failures - 1, 0), MAX_BACKOFF_EXPONENT)
    return min(policy.backend_cap_s, policy.base_s * math.ldexp(1.0, exponent))


def idle_after(wait_s: float, *, woken: bool, floor_s: float, cap_s: float) -> float:
    """The next idle wait after one of ``wait_s`` in which no claim found anything: back
    to ``floor_s`` when woken (notifications were written), else twice as long, at most
    ``cap_s``."""
    return floor_s if woken else min(cap_s, max(floor_s, 2 * wait_s))


def expired(now: float, expires_at: float) -> bool:
    """Whether a notification may no longer be sent: at ``expires_at`` it is too late."""
    return now >= expires_at


def retryable(attempt: Attempt) -> bool:
    """No answer (timeout, connection error), 429 or 5xx."""
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
    """What to do after one try (the table above)."""
    status = attempt.status
    if status is not None and 200 <= status <= 299:
        return Delivered()
    if not retryable(attempt):
        return DeadLetter("rejected", drop_token=status == 410)
    wait = max(backoff_s(attempt_no, policy, rand), attempt.retry_after_s or 0.0)
    if expired(now + wait, expires_at):
        return DeadLetter("expired")
    return RetryAt(now + wait)
