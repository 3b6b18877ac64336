"""The embedded default's push gateway: one JSON line per notification on stdout.

Nothing is waiting on the other end, so every write counts as delivered.
"""

from __future__ import annotations

import sys
from typing import TextIO

from geofence.domain.delivery import Attempt


class StdoutPush:
    needs_token = False

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    async def send(self, body: bytes, notification_id: str) -> Attempt:
        stream = self._stream or sys.stdout
        stream.write(body.decode() + "\n")
        stream.flush()
        return Attempt(status=200)

    async def close(self) -> None:
        return None
