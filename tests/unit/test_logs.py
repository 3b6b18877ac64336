"""The log lines: one JSON object each, RFC 3339 UTC time, control characters escaped, no
precise coordinate, and aiohttp's records without the request bytes they quote."""

from __future__ import annotations

import json
import logging
import re
import sys
import warnings
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp.http_exceptions import LineTooLong

from geofence.domain.model import Fix
from geofence.logs import (
    AIOHTTP_LOGGERS,
    WITHHELD,
    JsonLines,
    WithholdRequestBytes,
    coarse,
    rfc3339,
    setup_logging,
)
from tests.json_logs import json_logs

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
PRECISE = re.compile(r"\d\.\d{4,}")


def record(
    msg: str, *args: object, exc: bool = False, name: str = "geofence.test", **extra: Any
) -> logging.LogRecord:
    exc_info = sys.exc_info() if exc else None
    made = logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, exc_info)
    made.__dict__.update(extra)
    return made


def written(made: logging.LogRecord) -> dict[str, Any]:
    line = JsonLines().format(made)
    assert "\n" not in line
    assert "\r" not in line
    parsed = json.loads(line)
    assert isinstance(parsed, dict)
    return parsed


def test_a_record_is_one_json_object_with_its_fields_first() -> None:
    made = record("offer saved", offer="o-1", new=True)
    assert list(written(made)) == ["time", "level", "logger", "message", "offer", "new"]
    assert written(made) | {"time": "-"} == {
        "time": "-",
        "level": "ERROR",
        "logger": "geofence.test",
        "message": "offer saved",
        "offer": "o-1",
        "new": True,
    }


def test_time_is_rfc3339_utc_to_the_millisecond() -> None:
    assert rfc3339(0.0) == "1970-01-01T00:00:00.000Z"
    assert rfc3339(1_796_581_800.1239) == "2026-12-06T18:30:00.123Z"
    made = record("x")
    time = written(made)["time"]
    assert RFC3339_UTC.match(time)
    parsed = datetime.fromisoformat(time)
    assert parsed.tzinfo == UTC
    assert abs(parsed.timestamp() - made.created) < 0.001


@pytest.mark.parametrize(
    "text", ["two\nlines", "cr\rhere", "esc\x1b[31mred", "nul\x00", "bidi \u202e txt", "tab\t"]
)
def test_control_characters_are_escaped_wherever_they_are(text: str) -> None:
    try:
        raise ValueError(text)  # noqa: TRY301 - a record with a real traceback
    except ValueError:
        made = record("event %s", text, exc=True, field=text, nested={"k": [text]})
    line = JsonLines().format(made)
    assert line.isascii()
    assert line.isprintable()
    parsed = json.loads(line)
    assert parsed["message"] == f"event {text}"
    assert parsed["field"] == text
    assert parsed["nested"] == {"k": [text]}
    assert parsed["exc_info"].endswith(f"ValueError: {text}")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("lat=60.169856 lng=24.938379", "lat=60.169 lng=24.938"),
        ("at (-33.8688197, 151.2092955)", "at (-33.868, 151.209)"),
        ("[24.9383790,60.1698560]", "[24.938,60.169]"),
        ("lat=60.169", "lat=60.169"),
        ("dwell_s=120.5 ts=1712345678.123456", "dwell_s=120.5 ts=1712345678.123456"),
        ("version 1.2.3", "version 1.2.3"),
        (60.1698561, 60.169),
        (-33.8688197, -33.868),
        (1712345678.123456, 1712345678.123456),
        (0.5, 0.5),
        (7, 7),
        ({"at": [60.1698561, "24.9383792"]}, {"at": [60.169, "24.938"]}),
        (Fix(lat=60.1698561, lng=24.9383792, ts=100.0), "Fix(lat=60.169, lng=24.938, ts=100.0)"),
        (None, None),
        (True, True),
    ],
)
def test_precise_coordinates_are_cut_to_three_decimals(value: Any, expected: Any) -> None:
    assert coarse(value) == expected


def test_the_formatter_cuts_coordinates_in_every_part_of_a_record() -> None:
    try:
        raise ValueError("at 60.1698561,24.9383792")  # noqa: TRY301 - a real traceback
    except ValueError:
        made = record("ping lat=%s", 60.1698561, exc=True, lng=24.9383792, fix=(60.1698561,))
    line = JsonLines().format(made)
    assert not PRECISE.search(line), line
    parsed = json.loads(line)
    assert parsed["message"] == "ping lat=60.169"
    assert (parsed["lng"], parsed["fix"]) == (24.938, [60.169])
    assert parsed["exc_info"].endswith("ValueError: at 60.169,24.938")


def test_what_one_record_holds_never_changes_another() -> None:
    later = record("catalogue loaded level INFO logger message time", stores=3)
    alone = JsonLines().format(later)
    formatter = JsonLines()
    for word in ("level", "INFO", "logger", "catalogue", "message", "time", "60.1"):
        formatter.format(record("device registered", device=word, body={"device_id": word}))
    assert formatter.format(later) == alone
    assert json.loads(alone)["message"] == "catalogue loaded level INFO logger message time"


def line_too_long() -> LineTooLong:
    """Raised as aiohttp raises it; the traceback's frames quote the raising code, and
    the bytes it read appear in the exception's text only."""
    error = LineTooLong(b"Bearer SECRET-BEARER-123 /v1/devices/9F1C%2Draw", "8190")
    try:
        raise error
    except LineTooLong as e:
        return e


def test_aiohttp_records_keep_level_logger_and_error_class_only() -> None:
    error = line_too_long()
    made = logging.LogRecord(
        "aiohttp.server",
        logging.ERROR,
        __file__,
        1,
        "Error handling request from %s at %s",
        ("203.0.113.9", "/v1/devices/9F1C%2Draw"),
        (type(error), error, error.__traceback__),
    )
    made.__dict__["peer"] = "203.0.113.9"
    assert WithholdRequestBytes().filter(made)
    line = JsonLines().format(made)
    for secret in ("SECRET-BEARER", "9F1C", "203.0.113.9", "Error handling"):
        assert secret not in line
    parsed = json.loads(line)
    assert parsed["level"] == "ERROR"
    assert parsed["logger"] == "aiohttp.server"
    assert parsed["message"] == WITHHELD
    assert parsed["error"] == "LineTooLong"
    assert parsed["exc_info"].startswith("Traceback (most recent call last):\n  File ")
    assert parsed["exc_info"].endswith("\naiohttp.http_exceptions.LineTooLong")
    assert "peer" not in parsed


def test_setup_logging_sends_every_record_through_the_json_lines() -> None:
    with json_logs("info") as log:
        setup_logging("info")  # twice: still one filter per aiohttp logger
        logging.getLogger().handlers[0].setStream(log.stream)  # type: ignore[attr-defined]
        root = logging.getLogger()
        assert [type(h.formatter) for h in root.handlers] == [JsonLines]
        assert root.level == logging.INFO
        assert [len(lg.filters) for lg in AIOHTTP_LOGGERS] == [1] * len(AIOHTTP_LOGGERS)
        logging.getLogger("aiohttp.web").warning("x %s", "/v1/devices/secret-id")
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("deprecated thing", DeprecationWarning, stacklevel=1)
    aiohttp_record, warning = log.records()
    assert (aiohttp_record["logger"], aiohttp_record["message"]) == ("aiohttp.web", WITHHELD)
    assert warning["logger"] == "py.warnings"
    assert "deprecated thing" in warning["message"]
    assert "secret-id" not in log.text
