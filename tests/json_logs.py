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
        """Every line written so far (from character ``since`` on), as the object it must be."""
        records = [json.loads(line) for line in self.text[since:].splitlines()]
        assert all(isinstance(r, dict) for r in records), self.text
        return records

    def of(self, logger: str) -> list[dict[str, Any]]:
        return [r for r in self.records() if r["logger"] == logger]


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
        logging.captureWarnings(False)
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for aiohttp_logger, filters in zip(AIOHTTP_LOGGERS, saved[2], strict=True):
            aiohttp_logger.filters[:] = filters
