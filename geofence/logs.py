"""Logging: one key=value line per event, and a formatter that keeps personal data out.

Log lines name devices only by their pseudonymous ref. As a last line of defence the
formatter rounds any coordinate-looking number with more than 3 decimals (about 100 m)
and replaces every raw device id the service has recently seen with its ref, whatever
the caller passed by accident (a request body, a path, an exception message).

The ids come from ``remember_device_id``, which the device service calls each time it
turns an id into a ref. Memory is bounded: the least recently seen ids are forgotten
first, so an id still in use stays covered.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections import Counter, OrderedDict

_PRECISE = re.compile(r"(?<![\w.])(-?\d{1,3}\.\d{3})\d+")
_EDGES = re.compile(r"(?<![^\W_])|(?![^\W_])")  # not between two letters or digits
DEFAULT_CAPACITY = 10_000
WHOLE_WORD_BELOW = 8


class DeviceIdRedactor:
    """Recently seen raw device ids and the ref each one is written as instead.

    An id of ``WHOLE_WORD_BELOW`` characters or more is replaced wherever it appears. A
    shorter one only where it stands as a whole word (no letter or digit right before or
    after it), or ``dev-1`` would be cut out of ``dev-12`` and id ``7`` out of every
    number. Lookup costs one dictionary probe per character of the line, however many
    ids are known: long ids are indexed by their first characters.
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._refs: OrderedDict[str, str] = OrderedDict()
        self._long: dict[str, list[str]] = {}  # first WHOLE_WORD_BELOW chars -> ids
        self._short: Counter[int] = Counter()  # lengths of the shorter ids
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._refs)

    def remember(self, device_id: str, ref: str) -> None:
        with self._lock:
            if device_id in self._refs:
                self._refs.move_to_end(device_id)
                return
            self._refs[device_id] = ref
            self._index(device_id)
            if len(self._refs) > self.capacity:
                self._unindex(self._refs.popitem(last=False)[0])

    def clear(self) -> None:
        with self._lock:
            self._refs.clear()
            self._long.clear()
            self._short.clear()

    def redact(self, text: str) -> str:
        with self._lock:
            if not self._refs:
                return text
            return self._replace(text, sorted(self._short, reverse=True))

    def _index(self, device_id: str) -> None:
        if len(device_id) < WHOLE_WORD_BELOW:
            self._short[len(device_id)] += 1
            return
        bucket = self._long.setdefault(device_id[:WHOLE_WORD_BELOW], [])
        bucket.append(device_id)
        bucket.sort(key=len, reverse=True)

    def _unindex(self, device_id: str) -> None:
        if len(device_id) < WHOLE_WORD_BELOW:
            self._short[len(device_id)] -= 1
            if not self._short[len(device_id)]:
                del self._short[len(device_id)]
            return
        bucket = self._long[device_id[:WHOLE_WORD_BELOW]]
        bucket.remove(device_id)
        if not bucket:
            del self._long[device_id[:WHOLE_WORD_BELOW]]

    def _replace(self, text: str, short_lengths: list[int]) -> str:
        edges = {m.start() for m in _EDGES.finditer(text)} if short_lengths else set()
        out: list[str] = []
        start = 0
        for i in sorted(self._long_starts(text) | edges):
            found = self._match(text, i, short_lengths, edges) if i >= start else None
            if found is not None:
                out += [text[start:i], self._refs[found]]
                start = i + len(found)
        out.append(text[start:])
        return "".join(out)

    def _long_starts(self, text: str) -> set[int]:
        prefixes = self._long
        return {i for i in range(len(text)) if text[i : i + WHOLE_WORD_BELOW] in prefixes}

    def _match(self, text: str, i: int, short_lengths: list[int], edges: set[int]) -> str | None:
        for device_id in self._long.get(text[i : i + WHOLE_WORD_BELOW], ()):
            if text.startswith(device_id, i):
                return device_id
        if i not in edges:
            return None
        for length in short_lengths:
            if i + length in edges and text[i : i + length] in self._refs:
                return text[i : i + length]
        return None


DEVICE_IDS = DeviceIdRedactor()


def remember_device_id(device_id: str, ref: str) -> None:
    """From now on, ``device_id`` is written as ``ref`` in every formatted log line."""
    DEVICE_IDS.remember(device_id, ref)


def redact(text: str) -> str:
    """Known raw device ids become their refs; every decimal number keeps 3 decimals."""
    return _PRECISE.sub(r"\1", DEVICE_IDS.redact(text))


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
    # paths carry device ids: serve runs without an access log, and this keeps it quiet
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
