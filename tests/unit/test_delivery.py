"""Delivery rules: signatures, Retry-After, backoff and the verdict table (contract §6)."""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
import standardwebhooks
from hypothesis import given
from hypothesis import strategies as st

from geofence.domain.delivery import (
    Attempt,
    BadSignature,
    DeadLetter,
    Delivered,
    RetryAt,
    RetryPolicy,
    Verdict,
    backoff_s,
    expired,
    idle_after,
    judge,
    outage_backoff_s,
    parse_retry_after,
    sign,
    sign_webhook,
    verify,
    verify_webhook,
    webhook_key,
)
from geofence.domain.errors import Unauthorized

SECRET = "gateway-secret"
BODY = b'{"notification_id":"n-1","title":"10% off"}'
T = 1_700_000_000
POLICY = RetryPolicy()
NOW = 1_800_000_000.0
LATER = NOW + 3_600.0


def refusal(header: str | None, *, body: bytes = BODY, now: float = T, secret: str = SECRET) -> str:
    with pytest.raises(Unauthorized) as caught:
        verify(secret, header, body, now)
    assert isinstance(caught.value, BadSignature)
    assert caught.value.detail
    return caught.value.code


def mac(header: str) -> str:
    return header.split("v1=")[1]


# --- signatures ------------------------------------------------------------------------


def test_sign_matches_a_known_value() -> None:
    # printf '%s' '1700000000.{"a":1}' | openssl dgst -sha256 -hmac whsec_test
    digest = "38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
    assert sign("whsec_test", b'{"a":1}', 1_700_000_000) == f"t=1700000000,v1={digest}"


def test_round_trip() -> None:
    verify(SECRET, sign(SECRET, BODY, T), BODY, T)
    verify(SECRET, sign(SECRET, b"", T), b"", T + 299.5)


@pytest.mark.parametrize("index", [0, 1, len(BODY) // 2, len(BODY) - 1])
def test_one_byte_changed_in_the_body_is_refused(index: int) -> None:
    tampered = bytearray(BODY)
    tampered[index] ^= 0x01
    assert refusal(sign(SECRET, BODY, T), body=bytes(tampered)) == "signature-mismatch"


def test_another_secret_is_refused() -> None:
    assert refusal(sign("other", BODY, T)) == "signature-mismatch"


def test_a_signature_moved_to_another_time_is_refused() -> None:
    moved = sign(SECRET, BODY, T).replace(f"t={T}", f"t={T + 1}")
    assert refusal(moved, now=T + 1) == "signature-mismatch"


@pytest.mark.parametrize("offset", [300.001, 301, 86_400])
def test_too_old_or_from_the_future_is_refused(offset: float) -> None:
    header = sign(SECRET, BODY, T)
    assert refusal(header, now=T + offset) == "signature-stale"
    assert refusal(header, now=T - offset) == "signature-stale"


@pytest.mark.parametrize("offset", [0, 300, -300])
def test_within_the_tolerance_is_accepted(offset: float) -> None:
    verify(SECRET, sign(SECRET, BODY, T), BODY, T + offset)


def test_tolerance_can_be_narrowed() -> None:
    with pytest.raises(BadSignature):
        verify(SECRET, sign(SECRET, BODY, T), BODY, T + 10, tolerance_s=5)


@pytest.mark.parametrize("header", [None, "", "   "])
def test_missing(header: str | None) -> None:
    assert refusal(header) == "signature-missing"


GOOD = sign(SECRET, BODY, T)


@pytest.mark.parametrize(
    "header",
    [
        "garbage",
        f"v1={mac(GOOD)}",
        f"t={T}",
        f"t={T},v1=",
        f"t=,v1={mac(GOOD)}",
        f"t=-{T},v1={mac(GOOD)}",
        f"t={T}.5,v1={mac(GOOD)}",
        f"t=１２３,v1={mac(GOOD)}",  # full-width digits
        f"t=²,v1={mac(GOOD)}",
        f"t={'9' * 400},v1={mac(GOOD)}",
        f"t={T},t={T},v1={mac(GOOD)}",
        f"t={T},v1={mac(GOOD)[:-1]}",
        f"t={T},v1={mac(GOOD)}0",
        f"t={T},v1={'é' * 64}",
        f"t={T},v1={mac(GOOD)},v1=xyz",
        f"t={T};v1={mac(GOOD)}",
    ],
)
def test_malformed(header: str) -> None:
    assert refusal(header) == "signature-malformed"


def test_rotation_any_v1_may_match() -> None:
    new, old = mac(sign("new", BODY, T)), mac(sign("old", BODY, T))
    header = f"t={T},v1={new},v1={old}"
    verify("new", header, BODY, T)
    verify("old", header, BODY, T)
    assert refusal(header, secret="third") == "signature-mismatch"


def test_order_spaces_case_and_other_schemes_do_not_matter() -> None:
    digest = mac(GOOD)
    verify(SECRET, f" v0=abc , v1={digest.upper()} , t={T} ", BODY, T)


@given(secret=st.text(min_size=1), body=st.binary(), t=st.integers(0, 10**12))
def test_round_trip_property(secret: str, body: bytes, t: int) -> None:
    verify(secret, sign(secret, body, t), body, float(t))


@given(header=st.text(max_size=200), now=st.floats(0, 1e12))
def test_any_header_is_refused_with_unauthorized_only(header: str, now: float) -> None:
    with pytest.raises(Unauthorized):
        verify(SECRET, header, BODY, now)


# --- Standard Webhooks ------------------------------------------------------------------

WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the scheme's published test vector
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_T = 1_614_265_330


def webhook_refusal(headers: dict[str, str], *, body: bytes = BODY, now: float = T) -> str:
    with pytest.raises(BadSignature) as caught:
        verify_webhook(SECRET, headers, body, now)
    return caught.value.code


def test_webhook_signature_matches_the_schemes_test_vector() -> None:
    headers = sign_webhook(WHSEC, VECTOR_ID, VECTOR_BODY, VECTOR_T)
    assert headers == {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_T),
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    assert verify_webhook(WHSEC, headers, VECTOR_BODY, VECTOR_T) == VECTOR_ID


@pytest.mark.parametrize(
    ("secret", "library_key"),
    [(WHSEC, WHSEC), ("plain-secret", b"plain-secret")],
    ids=["whsec", "raw"],
)
def test_the_standard_webhooks_library_verifies_our_headers(
    secret: str, library_key: str | bytes
) -> None:
    """A gateway using the scheme's own library: a whsec_ secret as it is, any other as
    its UTF-8 bytes (as the README says)."""
    now = int(time.time())
    headers = sign_webhook(secret, "n-1", BODY, now)
    assert standardwebhooks.Webhook(library_key).verify(BODY, headers) == json.loads(BODY)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(library_key).verify(BODY + b" ", headers)


def test_we_verify_what_the_library_signs() -> None:
    moment = datetime.fromtimestamp(T, UTC)
    signature = standardwebhooks.Webhook(WHSEC).sign("n-1", moment, BODY)
    headers = {"webhook-id": "n-1", "webhook-timestamp": str(T), "webhook-signature": signature}
    assert verify_webhook(WHSEC, headers, BODY, T + 300) == "n-1"


def test_webhook_key_decodes_whsec_only() -> None:
    assert webhook_key("whsec_c2VjcmV0") == b"secret"
    assert webhook_key("c2VjcmV0") == b"c2VjcmV0"
    with pytest.raises(ValueError, match="base64"):
        webhook_key("whsec_not base64!")


WEBHOOK = sign_webhook(SECRET, "n-1", BODY, T)


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"webhook-id": "n-2"}, "signature-mismatch"),
        ({"webhook-timestamp": str(T + 1)}, "signature-mismatch"),
        (
            {"webhook-signature": "v1," + WEBHOOK["webhook-signature"][4:].lower()},
            "signature-mismatch",
        ),
        (
            {"webhook-signature": WEBHOOK["webhook-signature"].replace("v1,", "v2,")},
            "signature-malformed",
        ),
        ({"webhook-timestamp": f"{T}.0"}, "signature-malformed"),
        ({"webhook-timestamp": "-1"}, "signature-malformed"),
        ({"webhook-signature": ""}, "signature-missing"),
        ({"webhook-id": " "}, "signature-missing"),
    ],
)
def test_webhook_headers_changed_are_refused(change: dict[str, str], code: str) -> None:
    assert webhook_refusal({**WEBHOOK, **change}) == code


def test_webhook_body_changed_or_late_is_refused() -> None:
    assert webhook_refusal(WEBHOOK, body=BODY + b" ") == "signature-mismatch"
    assert webhook_refusal(WEBHOOK, now=T + 301) == "signature-stale"
    assert webhook_refusal(WEBHOOK, now=T - 301) == "signature-stale"
    assert webhook_refusal({}) == "signature-missing"


def test_webhook_rotation_any_listed_signature_may_match() -> None:
    other = sign_webhook("old-secret", "n-1", BODY, T)["webhook-signature"]
    both = f"{other} v1a,xyz {WEBHOOK['webhook-signature']}"
    assert verify_webhook(SECRET, {**WEBHOOK, "webhook-signature": both}, BODY, T) == "n-1"


@given(secret=st.text(min_size=1), body=st.binary(), t=st.integers(0, 10**12))
def test_webhook_round_trip_property(secret: str, body: bytes, t: int) -> None:
    headers = sign_webhook(secret, "n-1", body, t)
    assert verify_webhook(secret, headers, body, float(t)) == "n-1"


@given(
    headers=st.dictionaries(
        st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature"]),
        st.text(max_size=80),
    ),
    now=st.floats(0, 1e12),
)
def test_any_webhook_headers_are_refused_with_bad_signature_only(
    headers: dict[str, str], now: float
) -> None:
    with pytest.raises(BadSignature):
        verify_webhook(SECRET, headers, BODY, now)


# --- Retry-After -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("7", 7.0), (" 120 ", 120.0), ("0", 0.0), ("1.5", 1.5), ("007", 7.0)],
)
def test_retry_after_delta_seconds(value: str, seconds: float) -> None:
    assert parse_retry_after(value, NOW) == seconds


def http_date(ts: float) -> str:
    return format_datetime(datetime.fromtimestamp(ts, UTC), usegmt=True)


def test_retry_after_http_date() -> None:
    assert parse_retry_after(http_date(NOW + 30), NOW) == 30.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1_445_412_480.0 - 60) == 60.0


def test_retry_after_date_in_the_past_is_zero() -> None:
    assert parse_retry_after(http_date(NOW - 30), NOW) == 0.0


def test_retry_after_date_without_a_zone_is_gmt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")  # not the host's zone either
    time.tzset()
    try:
        assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 -0000", 1_445_412_480.0 - 5) == 5.0
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize(
    "value",
    [None, "", "soon", "-5", "1e3", "NaN", "inf", "²", "Mon, 32 Oct 2015 07:28:00 GMT", "0 0 0"],
)
def test_retry_after_unusable(value: str | None) -> None:
    assert parse_retry_after(value, NOW) is None


def test_retry_after_huge_stays_finite() -> None:
    seconds = parse_retry_after("9" * 400, NOW)
    assert seconds is not None
    assert math.isfinite(seconds)
    assert seconds > 365 * 86_400


@given(value=st.text(max_size=60), now=st.floats(0, 1e10))
def test_retry_after_never_raises_and_is_never_negative(value: str, now: float) -> None:
    seconds = parse_retry_after(value, now)
    assert seconds is None or 0 <= seconds < math.inf


# --- backoff ---------------------------------------------------------------------------


def almost_one() -> float:
    return math.nextafter(1.0, 0.0)


def test_backoff_with_rand_zero_is_zero() -> None:
    assert backoff_s(0, POLICY, lambda: 0.0) == 0.0
    assert backoff_s(30, POLICY, lambda: 0.0) == 0.0


def test_backoff_grows_twofold_up_to_the_cap() -> None:
    ceilings = [backoff_s(n, POLICY, lambda: 1.0) for n in range(12)]
    assert ceilings[:9] == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert ceilings[9:] == [300, 300, 300]


def test_backoff_stays_below_the_ceiling() -> None:
    assert backoff_s(3, POLICY, almost_one) < 8.0
    assert backoff_s(3, POLICY, lambda: 0.5) == 4.0


def test_backoff_follows_the_policy() -> None:
    policy = RetryPolicy(base_s=0.1, cap_s=2.0)
    assert backoff_s(0, policy, lambda: 1.0) == pytest.approx(0.1)
    assert backoff_s(10, policy, lambda: 1.0) == 2.0


@pytest.mark.parametrize("attempt", [1_024, 10**6, 10**100])
def test_backoff_of_a_huge_attempt_is_the_cap(attempt: int) -> None:
    assert backoff_s(attempt, POLICY, lambda: 1.0) == 300.0


def test_backoff_of_a_negative_attempt_is_the_first() -> None:
    assert backoff_s(-3, POLICY, lambda: 1.0) == 1.0


@given(attempt=st.integers(0, 10_000), r=st.floats(0, 1, exclude_max=True))
def test_backoff_bounds(attempt: int, r: float) -> None:
    wait = backoff_s(attempt, POLICY, lambda: r)
    assert 0 <= wait < min(POLICY.cap_s, 2.0 ** min(attempt, 64))


# --- the verdict -----------------------------------------------------------------------


def verdict(
    attempt: Attempt,
    *,
    attempt_no: int = 0,
    now: float = NOW,
    expires_at: float = LATER,
    r: float = 0.5,
) -> Verdict:
    return judge(
        attempt,
        attempt_no=attempt_no,
        now=now,
        expires_at=expires_at,
        policy=POLICY,
        rand=lambda: r,
    )


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_is_delivered(status: int) -> None:
    assert verdict(Attempt(status=status)) == Delivered()


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 413, 422, 499, 100, 301, 304])
def test_other_statuses_are_rejected(status: int) -> None:
    assert verdict(Attempt(status=status)) == DeadLetter("rejected", drop_token=False)


def test_410_is_rejected_and_drops_the_token() -> None:
    assert verdict(Attempt(status=410)) == DeadLetter("rejected", drop_token=True)


@pytest.mark.parametrize(
    "attempt",
    [
        Attempt(status=500),
        Attempt(status=502),
        Attempt(status=503),
        Attempt(status=599),
        Attempt(status=429),
        Attempt(error="timeout"),
        Attempt(error="connection"),
    ],
)
def test_retryable_answers_are_retried_with_backoff(attempt: Attempt) -> None:
    # rand 0.5 on the fourth try: half of 2**3
    assert verdict(attempt, attempt_no=3) == RetryAt(NOW + 4.0)


def test_429_waits_for_retry_after() -> None:
    result = verdict(Attempt(status=429, retry_after_s=7.0))
    assert isinstance(result, RetryAt)
    assert result.at >= NOW + 7.0
    assert result.at == NOW + 7.0  # backoff (0.5 s) is shorter


def test_503_retry_after_shorter_than_backoff_gives_the_backoff() -> None:
    assert verdict(Attempt(status=503, retry_after_s=1.0), attempt_no=5) == RetryAt(NOW + 16.0)


def test_retry_after_on_a_4xx_does_not_save_it() -> None:
    assert verdict(Attempt(status=400, retry_after_s=1.0)) == DeadLetter("rejected")


def test_a_retry_at_the_expiry_is_expired() -> None:
    # backoff of the first try with rand 0.5 is 0.5 s
    assert verdict(Attempt(status=500), expires_at=NOW + 0.5) == DeadLetter("expired")
    assert verdict(Attempt(status=500), expires_at=NOW + 0.6) == RetryAt(NOW + 0.5)


def test_retry_after_beyond_the_expiry_is_expired() -> None:
    attempt = Attempt(status=429, retry_after_s=3_600.0)
    assert verdict(attempt, expires_at=NOW + 3_599) == DeadLetter("expired")
    assert verdict(attempt, expires_at=NOW + 3_601) == RetryAt(NOW + 3_600)


def test_a_late_success_is_still_delivered() -> None:
    assert verdict(Attempt(status=200), now=LATER + 10) == Delivered()


def test_expired() -> None:
    assert not expired(NOW, NOW + 1)
    assert expired(NOW, NOW)
    assert expired(NOW + 1, NOW)


RETRYABLE = st.one_of(
    st.builds(Attempt, error=st.sampled_from(["timeout", "connection"])),
    st.builds(Attempt, status=st.sampled_from([429, 500, 502, 503, 504])),
)


@given(
    attempt=RETRYABLE,
    retry_after=st.none() | st.floats(0, 1e6),
    attempt_no=st.integers(0, 200),
    now=st.floats(0, 1e10),
    ttl=st.floats(0, 1e6),
    r=st.floats(0, 1, exclude_max=True),
)
def test_a_retry_is_never_before_retry_after_nor_at_or_after_the_expiry(
    attempt: Attempt,
    retry_after: float | None,
    attempt_no: int,
    now: float,
    ttl: float,
    r: float,
) -> None:
    attempt = Attempt(status=attempt.status, error=attempt.error, retry_after_s=retry_after)
    expires_at = now + ttl
    result = judge(
        attempt,
        attempt_no=attempt_no,
        now=now,
        expires_at=expires_at,
        policy=POLICY,
        rand=lambda: r,
    )
    assert isinstance(result, RetryAt | DeadLetter)
    if isinstance(result, RetryAt):
        assert result.at >= now + (retry_after or 0.0)
        assert result.at >= now
        assert result.at < expires_at
        assert result.at <= now + max(POLICY.cap_s, retry_after or 0.0)
    else:
        assert result == DeadLetter("expired")


@given(status=st.integers(100, 599), r=st.floats(0, 1, exclude_max=True))
def test_every_status_has_exactly_the_verdict_of_its_class(status: int, r: float) -> None:
    result = judge(
        Attempt(status=status),
        attempt_no=0,
        now=NOW,
        expires_at=LATER,
        policy=POLICY,
        rand=lambda: r,
    )
    if 200 <= status <= 299:
        assert result == Delivered()
    elif status == 429 or status >= 500:
        assert isinstance(result, RetryAt)
    else:
        assert result == DeadLetter("rejected", drop_token=status == 410)


def test_outage_backoff_doubles_up_to_its_own_cap_not_the_gateways() -> None:
    waits = [outage_backoff_s(n, POLICY) for n in range(1, 12)]
    assert waits[:3] == [1.0, 2.0, 4.0]
    assert waits[3:] == [5.0] * 8  # the backend's cap, not the gateway's 300 s
    assert POLICY.cap_s == 300.0


@given(st.integers(min_value=-5, max_value=10**6), st.floats(0.01, 60.0))
def test_outage_backoff_never_exceeds_the_backend_cap(failures: int, cap: float) -> None:
    policy = RetryPolicy(backend_cap_s=cap)
    assert 0.0 < outage_backoff_s(failures, policy) <= cap


@given(
    wait_s=st.floats(0.0, 100.0),
    floor_s=st.floats(0.01, 10.0),
    cap_s=st.floats(0.01, 100.0),
)
def test_an_idle_wait_doubles_within_its_floor_and_cap(
    wait_s: float, floor_s: float, cap_s: float
) -> None:
    cap_s = max(cap_s, floor_s)
    after = idle_after(wait_s, woken=False, floor_s=floor_s, cap_s=cap_s)
    assert floor_s <= after <= cap_s
    assert after == min(cap_s, max(floor_s, 2 * wait_s))
    assert idle_after(wait_s, woken=True, floor_s=floor_s, cap_s=cap_s) == floor_s


def test_idle_waits_from_half_a_second_reach_five_in_four_steps() -> None:
    waits = [0.5]
    for _ in range(5):
        waits.append(idle_after(waits[-1], woken=False, floor_s=0.5, cap_s=5.0))
    assert waits == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
