"""What the clients saw: every attempt to send a ping, with its answer and its timing.

A ping is sent until the service acknowledges it (200) or the run gives up; each try is
one ``Attempt``. An attempt without an answer (the connection broke, the process was
killed) or with a 503 may or may not have been applied; the checker works that out from
the resend's answer (contract §5: a resent ping with the same ts is ``stale``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Attempt:
    device_id: str
    seq: int  # the ping's place in its device's sequence
    ping: dict[str, Any]
    target: str  # the service URL it went to
    sent_wall: float  # time.time() when sent: the service's "now" for this ping
    sent: float  # time.monotonic()
    done: float = math.nan
    status: int | None = None  # None: no answer
    retry_after: str | None = None
    body: Any = None  # the decoded answer (200: the ping result; else the problem)
    error: str | None = None

    @property
    def latency_s(self) -> float:
        return self.done - self.sent

    @property
    def acked(self) -> bool:
        return self.status == 200

    @property
    def maybe_applied(self) -> bool:
        """No answer, or a 503 that may have come after the state was written."""
        return self.status is None or self.status == 503


@dataclass
class History:
    attempts: list[Attempt] = field(default_factory=list)

    def __iter__(self) -> Iterator[Attempt]:
        return iter(self.attempts)

    def __len__(self) -> int:
        return len(self.attempts)

    def statuses(self) -> Counter[int | None]:
        return Counter(a.status for a in self.attempts)

    def between(self, start: float, end: float) -> list[Attempt]:
        """Attempts sent in [start, end) (monotonic clock)."""
        return [a for a in self.attempts if start <= a.sent < end]

    def answers(self) -> Counter[str]:
        """Attempts by status and, for a refusal, the problem's type."""
        return Counter(
            f"{a.status} {a.body['type']}"
            if isinstance(a.body, dict) and "type" in a.body
            else f"{a.status} {a.error or ''}".strip()
            for a in self.attempts
        )

    def by_device(self) -> dict[str, list[Attempt]]:
        out: dict[str, list[Attempt]] = {}
        for a in self.attempts:
            out.setdefault(a.device_id, []).append(a)
        return out

    def pings(self) -> int:
        """Distinct pings sent (a resend is the same ping)."""
        return len({(a.device_id, a.seq) for a in self.attempts})

    def notifications(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """Every notification an acknowledged ping returned, by id: (device id, it)."""
        return {
            n["notification_id"]: (a.device_id, n)
            for a in self.attempts
            if a.acked
            for n in a.body["notifications"]
        }

    def summary(self, start: float = -math.inf, end: float = math.inf) -> str:
        chosen = self.between(start, end)
        latencies = [a.latency_s for a in chosen if a.status is not None]
        statuses = Counter(a.status for a in chosen)
        return (
            f"attempts={len(chosen)} statuses={dict(sorted(statuses.items(), key=str))} "
            f"p50={percentile(latencies, 50):.3f}s p99={percentile(latencies, 99):.3f}s "
            f"max={max(latencies, default=math.nan):.3f}s"
        )


def percentile(values: Iterable[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(0, math.ceil(p / 100 * len(ordered)) - 1)
    return ordered[rank]
