"""The one rule of who may act on a device (contract §1): ``domain.callers.may_act``."""

from __future__ import annotations

from typing import get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from geofence.domain.callers import (
    Caller,
    CallerKind,
    Refusal,
    may_act,
    new_device_token,
    profile_to_read,
    reaches,
)
from geofence.domain.devices import DeviceProfile, token_hash
from geofence.domain.errors import Forbidden, NotFound, Unauthorized

KEY = b"k" * 32
MINE, OTHER = "a" * 32, "b" * 32
MY_TOKEN = new_device_token(MINE, KEY)
ME = Caller("device", MY_TOKEN)
ADMIN = Caller("admin", "admin-key")
EVERYONE: tuple[CallerKind, ...] = get_args(CallerKind)


def profile(ref: str, token: str = "") -> DeviceProfile:
    return DeviceProfile(ref=ref, token_hash=token_hash(token) if token else "-", consent={})


MY_PROFILE = profile(MINE, MY_TOKEN)


@pytest.mark.parametrize(
    ("caller", "ref", "allowed", "stored", "expected"),
    [
        # the sdk key never, whatever the route allows; a kind not allowed here neither
        (Caller("sdk", "sdk-key"), MINE, EVERYONE, MY_PROFILE, Refusal("kind", "sdk")),
        (ADMIN, MINE, ("device",), MY_PROFILE, Refusal("kind", "admin")),
        # an admin or ingest key needs only the device to exist
        (ADMIN, OTHER, ("admin",), profile(OTHER), profile(OTHER)),
        (Caller("ingest", "i"), OTHER, ("ingest",), None, Refusal("no-device", "ingest")),
        (ADMIN, None, ("admin",), None, Refusal("no-device", "admin")),
        # a device token reaches its own device, once its stored hash matches
        (ME, MINE, ("device",), MY_PROFILE, MY_PROFILE),
        (ME, MINE, ("device",), profile(MINE, "rotated"), Refusal("invalid", "device")),
        (ME, MINE, ("device",), None, Refusal("no-device", "device")),  # erased
        # and no other: another device is "no such device"; a forged token is 401 anywhere
        (ME, OTHER, ("device",), MY_PROFILE, Refusal("other-device", "device")),
        (ME, None, ("device",), MY_PROFILE, Refusal("other-device", "device")),
        (ME, OTHER, ("device",), None, Refusal("invalid", "device")),
        (ME, OTHER, ("device",), profile(MINE, "rotated"), Refusal("invalid", "device")),
    ],
)
def test_the_rule(
    caller: Caller,
    ref: str | None,
    allowed: tuple[CallerKind, ...],
    stored: DeviceProfile | None,
    expected: DeviceProfile | Refusal,
) -> None:
    assert may_act(caller, ref, allowed, stored) == expected


@pytest.mark.parametrize(
    ("caller", "ref", "allowed", "read"),
    [
        (ME, OTHER, ("device",), MINE),  # a device token is checked against its own device
        (ME, None, ("device",), MINE),
        (ADMIN, OTHER, ("admin",), OTHER),
        (ADMIN, None, ("admin",), None),
        (ADMIN, OTHER, ("device",), None),  # refused outright: nothing to read
        (Caller("sdk", "s"), MINE, EVERYONE, None),
    ],
)
def test_the_profile_the_rule_reads(
    caller: Caller, ref: str | None, allowed: tuple[CallerKind, ...], read: str | None
) -> None:
    assert profile_to_read(caller, ref, allowed) == read


def test_each_refusal_answers_as_the_contract_says() -> None:
    assert isinstance(Refusal("kind", "sdk").error(), Forbidden)
    assert isinstance(Refusal("invalid", "device").error(), Unauthorized)
    other, missing = Refusal("other-device", "device").error(), Refusal("no-device", "admin")
    assert isinstance(other, NotFound)
    assert (other.code, other.detail) == (missing.error().code, missing.error().detail)


refs = st.text(alphabet="0123456789abcdef", min_size=32, max_size=32)


@given(mine=refs, target=st.one_of(st.none(), refs))
def test_a_device_token_never_gets_a_profile_but_its_own(mine: str, target: str | None) -> None:
    token = new_device_token(mine, KEY)
    caller = Caller("device", token)
    stored = profile(mine, token)
    answer = may_act(caller, target, EVERYONE, stored)
    assert (answer == stored) is (target == mine)
    assert reaches(caller, target) is (target == mine)
    assert not reaches(ADMIN, target)
