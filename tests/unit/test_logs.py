"""The log redaction: no precise coordinate and no known raw device id survives formatting."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator

import pytest

from geofence import logs
from geofence.logs import DeviceIdRedactor, RedactingFormatter, redact, remember_device_id

PRECISE = re.compile(r"\d\.\d{4,}")


@pytest.fixture(autouse=True)
def _fresh_ids() -> Iterator[None]:
    logs.DEVICE_IDS.clear()
    yield
    logs.DEVICE_IDS.clear()


def record(msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = sys.exc_info() if exc else None
    return logging.LogRecord("geofence.test", logging.INFO, __file__, 1, msg, args, exc_info)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("lat=60.169856 lng=24.938379", "lat=60.169 lng=24.938"),
        ("at (-33.8688197, 151.2092955)", "at (-33.868, 151.209)"),
        ("[24.9383790,60.1698560]", "[24.938,60.169]"),
        ("lat=60.169", "lat=60.169"),
        ("dwell_s=120.5 ts=1712345678.123456", "dwell_s=120.5 ts=1712345678.123456"),
        ("version 1.2.3", "version 1.2.3"),
    ],
)
def test_decimals_are_cut_to_three(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("device=dev-1 done", "device=REF done"),
        ("/v1/devices/dev-1/export", "/v1/devices/REF/export"),
        ("{'device_id': 'dev-1'}", "{'device_id': 'REF'}"),
        ("dev-1", "REF"),
        ("dev-12 and xdev-1 stay", "dev-12 and xdev-1 stay"),
        ("dev-1dev-1", "dev-1dev-1"),
    ],
)
def test_short_device_ids_are_replaced_as_whole_words(text: str, expected: str) -> None:
    redactor = DeviceIdRedactor()
    redactor.remember("dev-1", "REF")
    assert redactor.redact(text) == expected


def test_long_device_ids_are_replaced_anywhere() -> None:
    redactor = DeviceIdRedactor()
    redactor.remember("9f1c2d3e-aaaa-bbbb", "REF")
    text = "x9f1c2d3e-aaaa-bbbbx 9f1c2d3e-aaaa-bbb 9f1c2d3e-aaaa-bbbb9f1c2d3e-aaaa-bbbb"
    assert redactor.redact(text) == "xREFx 9f1c2d3e-aaaa-bbb REFREF"


def test_longer_ids_win_and_odd_characters_are_fine() -> None:
    redactor = DeviceIdRedactor()
    redactor.remember("abc", "R1")
    redactor.remember("abc defgh", "R2")
    redactor.remember("abc defgh ijk", "R5")
    redactor.remember("-x-", "R3")
    redactor.remember("ü 42", "R4")
    text = "abc defgh abc defgh ijk abc a-x-b ü 42."
    assert redactor.redact(text) == "R2 R5 R1 aR3b R4."


def test_least_recently_seen_ids_are_forgotten_first() -> None:
    redactor = DeviceIdRedactor(capacity=2)
    redactor.remember("one", "R1")
    redactor.remember("two", "R2")
    redactor.remember("one", "R1")  # seen again: now the most recent
    redactor.remember("three-3", "R3")
    assert len(redactor) == 2
    assert redactor.redact("one two three-3") == "R1 two R3"


def test_memory_stays_bounded() -> None:
    redactor = DeviceIdRedactor(capacity=100)
    for i in range(10_000):
        redactor.remember(f"device-{i:0{i % 7 + 1}d}", f"R{i}")
    assert len(redactor) == 100
    assert redactor.redact("device-9999") == "R9999"


def test_an_empty_redactor_changes_nothing() -> None:
    assert DeviceIdRedactor().redact("device=dev-1 lat=60.1") == "device=dev-1 lat=60.1"


def test_the_formatter_redacts_message_arguments_and_tracebacks() -> None:
    remember_device_id("phone-7", "f00d")
    formatter = RedactingFormatter("%(levelname)s %(message)s")
    try:
        raise ValueError("device phone-7 at 60.1698561,24.9383792")
    except ValueError:
        line = formatter.format(record("ping device=%s lat=%s", "phone-7", 60.1698561, exc=True))
    assert "phone-7" not in line
    assert not PRECISE.search(line)
    assert "ping device=f00d lat=60.169" in line
    assert "ValueError: device f00d at 60.169,24.938" in line


def test_setup_logging_installs_the_redacting_formatter() -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        logs.setup_logging("debug")
        assert isinstance(root.handlers[0].formatter, RedactingFormatter)
        assert root.level == logging.DEBUG
        assert logging.getLogger("aiohttp.access").level == logging.WARNING
    finally:
        root.handlers[:], _ = saved[0], root.setLevel(saved[1])
