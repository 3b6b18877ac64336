"""Device tokens (geofence.domain.callers): what the edge checks with no store read."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from geofence.domain.callers import new_device_token, token_key, verified_ref
from geofence.domain.devices import device_ref

KEY = token_key(b"test-id-secret")
REF = device_ref("dev-1", b"test-id-secret")


def test_a_token_names_its_device_and_each_is_new() -> None:
    first, second = new_device_token(REF, KEY), new_device_token(REF, KEY)
    assert first != second
    assert verified_ref(first, KEY) == REF
    assert verified_ref(second, KEY) == REF


def test_the_key_is_the_secrets_own() -> None:
    assert token_key(b"other") != KEY
    assert verified_ref(new_device_token(REF, KEY), token_key(b"other")) is None


@pytest.mark.parametrize("part", [0, 1, 2])
def test_a_token_with_any_part_changed_is_refused(part: int) -> None:
    parts = new_device_token(REF, KEY).split(".")
    parts[part] = ("0" if parts[part][0] != "0" else "1") + parts[part][1:]
    assert verified_ref(".".join(parts), KEY) is None


def test_a_token_moved_to_another_device_is_refused() -> None:
    _, nonce, tag = new_device_token(REF, KEY).split(".")
    other = device_ref("dev-2", b"test-id-secret")
    assert verified_ref(f"{other}.{nonce}.{tag}", KEY) is None


@pytest.mark.parametrize(
    "token",
    [
        "",
        "a.b",
        REF + ".secret",  # the old two-part format
        "a.b.c",
        new_device_token(REF, KEY) + "x",
        new_device_token(REF, KEY).replace(".", ". ", 1),
        new_device_token(REF, KEY)[:-1] + "é",
        new_device_token(REF, KEY)[:-1] + "\udcff",  # a byte aiohttp could not decode
    ],
)
def test_anything_else_is_refused_without_an_error(token: str) -> None:
    assert verified_ref(token, KEY) is None


@given(st.text(max_size=200))
def test_no_string_raises(token: str) -> None:
    assert verified_ref(token, KEY) is None
