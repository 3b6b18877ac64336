"""Logging: one JSON object per line on stderr, for the service and for aiohttp alike.

Every record is written as ``{"time", "level", "logger", "message", ...fields}``: the
message is a short event name, and what the event is about travels as fields
(``logger.info("offer saved", extra={"offer": offer_id})``). JSON escapes every value,
control characters included, so no value can start a line or a field of its own. A
device appears only as its ref, put there by the code that authenticated it; nothing is
scrubbed afterwards, so what one request sends never changes how another line is written.

Two last lines of defence, both blind to the values they see:

- every number with at most 3 integer digits and more than 3 decimals (a precise
  coordinate: 3 decimals is about 100 m) is cut to 3 decimals, in every string and float
  of a record, the traceback included;
- aiohttp's own loggers keep a record's level, logger and the class of its exception,
  not its text: that text quotes request bytes (the path with a percent-encoded device
  id, the bearer of an oversized header).
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from datetime import UTC, datetime
from typing import Any

from aiohttp import log as aiohttp_log
from pythonjsonlogger.json import JsonFormatter

_PRECISE = re.compile(r"(?<![\w.])(-?\d{1,3}\.\d{3})\d+")
FIELDS = {"asctime": "time", "levelname": "level", "name": "logger"}
AIOHTTP_LOGGERS = (
    aiohttp_log.access_logger,
    aiohttp_log.internal_logger,
    aiohttp_log.server_logger,
    aiohttp_log.web_logger,
    aiohttp_log.ws_logger,
)
WITHHELD = "aiohttp log; its text is withheld: it can quote request bytes"
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def rfc3339(ts: float) -> str:
    """A POSIX time as RFC 3339 in UTC, to the millisecond: 2026-12-06T18:30:00.123Z."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def coarse(value: Any) -> Any:
    """``value`` as JSON can write it, with every precise coordinate in it cut to 3
    decimals: strings and floats, inside dicts and lists too; anything else is first
    turned into its text (a struct's repr), so that no float escapes the cut."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return float(_PRECISE.sub(r"\1", repr(value)))
    if isinstance(value, dict):
        return {str(k): coarse(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [coarse(v) for v in value]
    return _PRECISE.sub(r"\1", str(value))


class JsonLines(JsonFormatter):
    """One JSON object per record, its fields in a fixed order, then the record's extras."""

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields=FIELDS,
            json_ensure_ascii=True,  # bidi overrides and the like stay inert escapes too
        )

    def formatTime(  # noqa: N802 - logging.Formatter's hook
        self, record: logging.LogRecord, datefmt: str | None = None
    ) -> str:
        return rfc3339(record.created)

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        return {key: coarse(value) for key, value in log_data.items()}


class WithholdRequestBytes(logging.Filter):
    """For aiohttp's loggers: a record keeps its level, logger and exception class (with
    the traceback's frames, which are code), but loses its text, arguments and extras."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = WITHHELD, ()
        for extra in set(vars(record)) - _RECORD_ATTRIBUTES:
            delattr(record, extra)
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = frames_and_class(record.exc_info[1])
            record.error = type(record.exc_info[1]).__name__
        record.exc_info, record.stack_info = None, None
        return True


def frames_and_class(error: BaseException) -> str:
    """A traceback without the exception's text: where it was raised, and what."""
    frames = "".join(traceback.format_tb(error.__traceback__))
    kind = type(error)
    return f"Traceback (most recent call last):\n{frames}{kind.__module__}.{kind.__qualname__}"


def setup_logging(level: str = "INFO") -> None:
    """Every record, aiohttp's and Python's warnings included, as JSON lines on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(capture=True)
    for aiohttp_logger in AIOHTTP_LOGGERS:
        if not any(isinstance(f, WithholdRequestBytes) for f in aiohttp_logger.filters):
            aiohttp_logger.addFilter(WithholdRequestBytes())
