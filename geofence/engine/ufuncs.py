"""shapely's ufuncs called directly, past the public wrappers: the one place that does.

``shapely.lib`` is not public API. Its ufuncs are what ``shapely.distance``,
``shapely.intersects_xy``, ``shapely.dwithin`` and ``shapely.points`` call after
checking and converting their arguments, which costs as much again as a one-point test.
The index asks these for one point at a time; its array steps use the public functions.
``tests/twins/test_ufuncs.py`` checks them against the public API and fails when the
installed shapely is outside ``SHAPELY`` (the range pinned in pyproject.toml).
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import shapely
from shapely.creation import HandleNaN

SHAPELY: Final = ">=2.0,<2.3"  # the range these calls are proven on; pyproject pins it

_NAN_ALLOWED: Final = np.intc(HandleNaN.allow)  # what shapely.points passes by default


def point(x: float, y: float) -> Any:
    """``shapely.Point(x, y)`` in a third of the time."""
    return shapely.lib.points(np.array((x, y)), _NAN_ALLOWED)


def distance(shape: Any, other: Any) -> float:
    """``shapely.distance(shape, other)`` of two geometries."""
    return float(shapely.lib.distance(shape, other))


def intersects_xy(shape: Any, x: float, y: float) -> bool:
    """``shapely.intersects_xy(shape, x, y)`` (a third of the public call's cost)."""
    return bool(shapely.lib.intersects_xy(shape, x, y))


def dwithin(shape: Any, other: Any, metres: float) -> bool:
    """``shapely.dwithin(shape, other, metres)``."""
    return bool(shapely.lib.dwithin(shape, other, metres))
