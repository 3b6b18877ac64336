"""The service's own logging (geofence.logs.setup_logging) written into a buffer, and read
back as JSON lines, each of which must be one JSON object."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

from aiohttp import log as aiohttp_log

from geofence.logs import setup_logging

AIOHTTP_LOGGERS = tuple(
    getattr(aiohttp_log, name) for name in dir(aiohttp_log) if name.endswith("_logger")
)


class JsonLog:
    def __init__(self) -> None:
        self.stream = io.StringIO()

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def records(self, since: int = 0) -> list[dict[str, Any]]:
        """Every line written so far (from character ``since`` on)."""
        return log_records(self.text[since:])

    def of(self, logger: str) -> list[dict[str, Any]]:
        return [r for r in self.records() if r["logger"] == logger]


def log_record(line: str) -> dict[str, Any] | None:
    """The JSON object a log line must be, or None."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def log_records(logs: str) -> list[dict[str, Any]]:
    """Every line of ``logs`` as the JSON object it must be."""
    records = [log_record(line) for line in logs.splitlines()]
    bad = [line for line, r in zip(logs.splitlines(), records, strict=True) if r is None]
    assert not bad, f"log lines that are not one JSON object: {bad[:5]}"
    return [r for r in records if r is not None]


@contextlib.contextmanager
def json_logs(level: str = "DEBUG") -> Iterator[JsonLog]:
    """``setup_logging``, its handlers writing into a buffer; the logging set up before is
    put back afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, [lg.filters[:] for lg in AIOHTTP_LOGGERS])
    log = JsonLog()
    try:
        setup_logging(level)
        for handler in root.handlers:
            assert isinstance(handler, logging.StreamHandler)
            handler.setStream(log.stream)
        yield log
    finally:
        logging.captureWarnings(capture=False)
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for aiohttp_logger, filters in zip(AIOHTTP_LOGGERS, saved[2], strict=True):
            aiohttp_logger.filters[:] = filters
