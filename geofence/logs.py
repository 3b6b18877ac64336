"""Logging: one key=value line per event, and a filter that keeps personal data out.

Log lines name devices only by their pseudonymous ref. As a last line of defence the
filter rounds any coordinate-looking number with more than 3 decimals (about 100 m) and
masks anything registered as a raw device id, whatever the caller passed by accident.
"""

from __future__ import annotations

import logging
import re
import sys

_PRECISE = re.compile(r"(?<![\w.])(-?\d{1,3}\.\d{3})\d+")


def redact(text: str) -> str:
    """Cut every decimal number to 3 decimals: no precise coordinate survives."""
    return _PRECISE.sub(r"\1", text)


class RedactingFormatter(logging.Formatter):
    """Redacts the whole formatted line, tracebacks included."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        RedactingFormatter("%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
