"""The fence: ``geofence.engine.ufuncs`` calls shapely's private ufuncs, proven on the
shapely range pinned in pyproject.toml. An upgrade outside it, or one that changes what
the ufuncs answer, fails here before it can change a lookup."""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pytest
import shapely
from packaging.specifiers import SpecifierSet

from geofence.engine import ufuncs
from tests.pins import pinned


def test_the_pin_in_pyproject_is_the_proven_range() -> None:
    assert pinned("shapely") == SpecifierSet(ufuncs.SHAPELY)


def test_the_installed_shapely_is_in_the_proven_range() -> None:
    installed = importlib.metadata.version("shapely")
    assert installed in SpecifierSet(ufuncs.SHAPELY), (
        f"shapely {installed} is outside {ufuncs.SHAPELY}, the range geofence/engine/ufuncs.py"
        " is proven on: run tests/twins/, then widen SHAPELY and the pin in pyproject.toml"
    )


def test_the_private_ufuncs_are_there() -> None:
    for name in ("points", "distance", "intersects_xy", "dwithin"):
        assert callable(getattr(shapely.lib, name, None)), f"shapely.lib.{name} is gone"


SHAPES = [
    shapely.Polygon([(0, 0), (10, 0), (10, 5), (0, 5)]),
    shapely.Polygon([(0, 0), (20, 0), (20, 20), (0, 20)], [[(5, 5), (15, 5), (15, 15), (5, 15)]]),
    shapely.MultiPolygon([shapely.box(0, 0, 1, 1), shapely.box(3, 0, 4, 1)]),
    shapely.Point(0.0, 0.0),
]
POINTS = [
    (x, y) for x in (-3.0, 0.0, 0.5, 2.0, 10.0, 10.000001, 12.5) for y in (-1.0, 0.0, 3.0, 10.0)
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.geom_type)
def test_each_ufunc_answers_as_the_public_api(shape: shapely.Geometry) -> None:
    shapely.prepare(shape)
    for x, y in POINTS:
        point = ufuncs.point(x, y)
        assert shapely.equals_exact(point, shapely.Point(x, y), tolerance=0.0)
        assert ufuncs.distance(shape, point) == shapely.distance(shape, shapely.Point(x, y))
        assert ufuncs.intersects_xy(shape, x, y) == shapely.intersects_xy(shape, x, y)
        for metres in (0.0, 0.5, 2.0):
            expected = bool(shapely.dwithin(shape, shapely.Point(x, y), metres))
            assert ufuncs.dwithin(shape, point, metres) == expected


def test_a_nan_point_is_made_as_the_public_api_makes_it() -> None:
    assert ufuncs.point(np.nan, 1.0).wkt == shapely.points([np.nan, 1.0]).wkt
