"""The credentials the edge verified lately, kept (geofence.http.auth.Identities): a
device's next ping costs no HMAC, and nothing else changes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from geofence.domain.callers import new_device_token, token_key, verified_ref
from geofence.domain.devices import device_ref
from geofence.domain.errors import Unauthorized
from geofence.http.auth import Credentials, Identities, identify

SECRET = b"test-id-secret"
KEY = token_key(SECRET)
CREDS = Credentials(admin=("admin-key",), sdk=("sdk-key",), ingest=("ingest-key",))


class CountingRefs:
    """``DeviceService.verified_ref``, counting the tags it checks."""

    def __init__(self) -> None:
        self.checked = 0

    def __call__(self, token: str) -> str | None:
        self.checked += 1
        return verified_ref(token, KEY)


def token(n: int) -> str:
    return new_device_token(device_ref(f"dev-{n}", SECRET), KEY)


def bearer(credential: str) -> str:
    return f"Bearer {credential}"


def test_a_device_token_verified_once_is_not_checked_again() -> None:
    refs = CountingRefs()
    identities = Identities(CREDS, refs)
    header = bearer(token(1))
    first = identities.caller(header)
    assert refs.checked == 1
    assert identities.caller(header) == first
    assert identities.caller(header).device_ref == first.device_ref
    assert refs.checked == 1


def test_a_refused_credential_is_checked_each_time_and_never_kept() -> None:
    refs = CountingRefs()
    identities = Identities(CREDS, refs)
    _, nonce, tag = token(1).split(".")
    forged = bearer(f"{device_ref('dev-2', SECRET)}.{nonce}.{tag}")
    for n in range(3):
        with pytest.raises(Unauthorized):
            identities.caller(forged)
        assert refs.checked == n + 1
    assert len(identities) == 0


def test_at_its_bound_the_oldest_goes_first() -> None:
    refs = CountingRefs()
    identities = Identities(CREDS, refs, kept=3)
    headers = [bearer(token(n)) for n in range(4)]
    for header in headers:
        identities.caller(header)
    assert len(identities) == 3
    assert refs.checked == 4
    identities.caller(headers[3])
    identities.caller(headers[1])
    assert refs.checked == 4  # still kept
    identities.caller(headers[0])
    assert refs.checked == 5  # the oldest had gone: checked again
    assert len(identities) == 3


def header_of(kind: int, n: int) -> str:
    if kind == 0:
        return bearer(token(n))
    if kind == 1:
        return bearer(("admin-key", "sdk-key", "ingest-key")[n % 3])
    if kind == 2:
        _, nonce, tag = token(n).split(".")
        return bearer(f"{device_ref('other', SECRET)}.{nonce}.{tag}")
    return ("Basic x", "Bearer", "", f"bearer  {token(n)} ")[n % 4]


def answer(ask: Callable[[str], object], header: str) -> object:
    try:
        return ask(header)
    except Unauthorized as e:
        return ("401", e.detail)


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 5)), max_size=40))
def test_kept_or_not_the_answer_is_identifys(asks: list[tuple[int, int]]) -> None:
    identities = Identities(CREDS, CountingRefs(), kept=4)
    for kind, n in asks:
        header = header_of(kind, n)
        assert answer(identities.caller, header) == answer(
            lambda h: identify(h, CREDS, lambda t: verified_ref(t, KEY)), header
        )
