"""A state store behind a counter of the calls made to it, by name."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from geofence.ports import StateStore


class Counted:
    """Every coroutine method of ``store`` counted in ``calls`` when called; all else
    passed through as it is."""

    def __init__(self, store: StateStore) -> None:
        self.inner = store
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        found = getattr(self.inner, name)
        if not asyncio.iscoroutinefunction(found):
            return found

        @functools.wraps(found)
        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return await found(*args, **kwargs)

        return counted
