"""The embedded default's push gateway: one JSON line per notification on stdout."""

from __future__ import annotations

import sys
from typing import Any, TextIO

import msgspec


class StdoutPush:
    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    async def send(self, payload: dict[str, Any]) -> None:
        stream = self._stream or sys.stdout
        stream.write(msgspec.json.encode(payload).decode() + "\n")
        stream.flush()

    async def close(self) -> None:
        return None
