"""The lift of an offer over its control group (issue 27): pure arithmetic, no I/O.

Each group's conversion rate is conversions over eligible entries: entries notified
(treated) or held out (control). The lift is the absolute difference of the two rates,
treated minus control (0.04: four conversions more per hundred entries); ``relative`` is
that over the control rate. Its 95 % interval is Newcombe's hybrid score interval
(method 10 of Newcombe 1998, "Interval estimation for the difference between
independent proportions"), built from each group's Wilson score interval: unlike the
textbook Wald interval it stays inside [-1, 1] and keeps its coverage at small counts and
rates near 0.

The result says plainly when it cannot tell: fewer than ``MIN_ENTRIES`` entries or
``MIN_CONVERSIONS`` conversions in either group is too small a sample, and an interval
that holds 0 shows no difference yet. Either way ``enough_data`` is false.
"""

from __future__ import annotations

import math
from typing import Any, Final

Z95: Final = 1.959963984540054  # the normal quantile of 0.975
MIN_ENTRIES: Final = 30
MIN_CONVERSIONS: Final = 5
METHOD: Final = "newcombe"
TOO_SMALL: Final = (
    f"too small a sample to tell yet: each group needs {MIN_ENTRIES} entries "
    f"and {MIN_CONVERSIONS} conversions"
)
NO_DIFFERENCE: Final = "no detectable difference yet: the 95 % interval includes 0"


def wilson(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion; (0, 1) when there are no trials."""
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    z2n = z * z / trials
    centre = (p + z2n / 2) / (1 + z2n)
    half = z / (1 + z2n) * math.sqrt(p * (1 - p) / trials + z2n / (4 * trials))
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe(x1: int, n1: int, x2: int, n2: int, z: float = Z95) -> tuple[float, float]:
    """Newcombe's hybrid score interval of p1 - p2 (his method 10)."""
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson(x1, n1, z)
    l2, u2 = wilson(x2, n2, z)
    diff = p1 - p2
    low = diff - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = diff + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return max(-1.0, low), min(1.0, high)  # within [-1, 1] but for the last bit of rounding


def group(entries: int, conversions: int) -> dict[str, Any]:
    rate = None if entries == 0 else conversions / entries
    return {"entries": entries, "conversions": conversions, "rate": rate}


def lift(offer_id: str, treated: tuple[int, int], control: tuple[int, int]) -> dict[str, Any]:
    """The lift of one offer from its groups' (entries, conversions)."""
    (n1, x1), (n2, x2) = treated, control
    row: dict[str, Any] = {
        "offer_id": offer_id,
        "treated": group(n1, x1),
        "control": group(n2, x2),
        "lift": None,
        "relative_lift": None,
        "interval": {"low": None, "high": None, "method": METHOD},
    }
    if n1 == 0 or n2 == 0:
        return row | {"enough_data": False, "note": TOO_SMALL}
    low, high = newcombe(min(x1, n1), n1, min(x2, n2), n2)
    diff = min(x1, n1) / n1 - min(x2, n2) / n2
    base = min(x2, n2) / n2
    row |= {
        "lift": diff,
        "relative_lift": None if base == 0 else diff / base,
        "interval": {"low": low, "high": high, "method": METHOD},
    }
    enough, note = verdict(treated, control, (low, high), diff)
    return row | {"enough_data": enough, "note": note}


def verdict(
    treated: tuple[int, int],
    control: tuple[int, int],
    interval: tuple[float, float],
    diff: float,
) -> tuple[bool, str]:
    """Whether the numbers tell anything, and what, in a sentence."""
    if min(treated[0], control[0]) < MIN_ENTRIES or min(treated[1], control[1]) < MIN_CONVERSIONS:
        return False, TOO_SMALL
    low, high = interval
    if low <= 0 <= high:
        return False, NO_DIFFERENCE
    more = "more" if diff > 0 else "fewer"
    return True, (
        f"treated entries convert {abs(diff) * 100:.1f} points {more} per hundred "
        f"than the control group's (95 % interval {low * 100:.1f} to {high * 100:.1f})"
    )
