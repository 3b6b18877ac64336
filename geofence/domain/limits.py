"""Token buckets, one per caller: how many requests a caller may make, and when again.

Pure: time is an argument (any clock that never goes back, ``time.monotonic`` in the
service). A bucket holds up to ``burst`` tokens and gains ``per_s`` tokens a second; a
request takes one, and a request that finds less than one is refused with the time until
there is one. A refused request takes nothing, so a caller that keeps knocking is served
again as soon as the rate allows.

Memory stays bounded. A bucket left alone for ``burst / per_s`` seconds is full again,
which is exactly what a new bucket is, so it is dropped; the table is kept in the order of
last use, so the idle ones are found at its front without a scan. Past ``max_keys``
callers, the least recently used is dropped even if it is not full yet (it then starts
again from a full bucket: a caller gains at most one burst that way).
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass

DEFAULT_MAX_KEYS = 100_000
# float sums of refills fall a hair short of a whole token now and then; a caller told
# to wait ``wait_s`` must be served when it comes back exactly then
TOLERANCE = 1e-9


@dataclass(frozen=True)
class Rate:
    """``per_s`` requests a second on average, ``burst`` at once."""

    per_s: float
    burst: float

    def __post_init__(self) -> None:
        if not (self.per_s > 0 and math.isfinite(self.per_s)):
            raise ValueError(f"a rate must be a positive number of requests a second: {self.per_s}")
        if not (self.burst >= 1 and math.isfinite(self.burst)):
            raise ValueError(f"a burst must allow at least one request: {self.burst}")

    @property
    def refill_s(self) -> float:
        """How long an untouched bucket takes to fill up from empty."""
        return self.burst / self.per_s


class Buckets:
    """One token bucket per key, all at the same rate."""

    def __init__(self, rate: Rate, *, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.rate = rate
        self.max_keys = max_keys
        # key -> (tokens, at): the tokens the bucket held at time ``at``, its last use;
        # insertion order is the order of last use
        self._table: dict[Hashable, tuple[float, float]] = {}

    def __len__(self) -> int:
        return len(self._table)

    def take(self, key: Hashable, now: float) -> float:
        """Take a token for ``key`` at ``now``: 0.0 when served, else seconds to wait."""
        self._drop_idle(now)
        tokens = self._tokens(key, now)
        wait_s = 0.0
        if tokens >= 1.0 - TOLERANCE:
            tokens = max(0.0, tokens - 1.0)
        else:
            wait_s = (1.0 - tokens) / self.rate.per_s
        self._table[key] = (tokens, now)  # (re)inserted last: the most recently used
        if len(self._table) > self.max_keys:
            del self._table[next(iter(self._table))]
        return wait_s

    def tokens(self, key: Hashable, now: float) -> float:
        """The tokens ``key`` could spend at ``now`` (a new key has a full bucket)."""
        entry = self._table.get(key)
        if entry is None:
            return self.rate.burst
        held, at = entry
        elapsed_s = max(0.0, now - at)
        if elapsed_s >= self.rate.refill_s:  # full again, exactly as a dropped bucket would be
            return self.rate.burst
        return min(self.rate.burst, held + elapsed_s * self.rate.per_s)

    def _tokens(self, key: Hashable, now: float) -> float:
        tokens = self.tokens(key, now)
        self._table.pop(key, None)
        return tokens

    def _drop_idle(self, now: float) -> None:
        """Drop the buckets that have filled up again: they are the same as new ones."""
        refill_s = self.rate.refill_s
        table = self._table
        while table:
            key = next(iter(table))
            if now - table[key][1] < refill_s:
                return
            del table[key]


def retry_after_s(wait_s: float) -> int:
    """``Retry-After`` in whole seconds: never earlier than the wait, at least 1."""
    return max(1, math.ceil(wait_s))
