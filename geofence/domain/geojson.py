"""Parse and validate a store catalogue (GeoJSON, RFC 7946) into Fences.

Every problem in the upload is collected, not just the first: each carries the feature's
index, its id when known, one of the stable codes below, and a human detail.

=========================  ==================================================================
code                       meaning
=========================  ==================================================================
not-a-feature-collection   the document is not a FeatureCollection with a ``features`` list
not-a-feature              an entry is not a Feature, or its ``properties`` is not an object
missing-properties         the Feature has no ``properties`` member (RFC 7946 §3.2; null is fine)
invalid-bbox               a ``bbox`` member that is not 4 or 6 finite numbers in range with
                           each minimum at most its maximum (RFC 7946 §5)
missing-geometry           the Feature has no geometry (absent or null)
unknown-geometry-type      the geometry is not a Polygon, MultiPolygon or Point
missing-coordinates        the geometry has no ``coordinates`` member (absent or null)
bad-coordinates            ``coordinates`` is not nested as the geometry type requires
bad-position               a position is not 2 or 3 finite numbers
out-of-range               a longitude outside [-180, 180] or a latitude outside [-90, 90]
unclosed-ring              a ring's last position differs from its first (never closed for you)
too-few-positions          a ring of fewer than 4 positions, or a polygon with no ring
invalid-geometry           self-intersection and the like (shapely's reason in the detail),
                           also when ``repair`` leaves nothing polygonal
crs-not-allowed            a ``crs`` member: RFC 7946 coordinates are WGS 84 only
crosses-antimeridian       a ring (or the whole fence) spans more than 180° of longitude
area-too-large             the polygon's area exceeds ``max_area_m2``
too-many-vertices          more than ``max_vertices`` vertices
duplicate-id               the id was already used by an earlier feature
outside-region             the fence leaves the configured region (often swapped lat/lon)
bad-radius                 a Point without ``radius_m`` in 10..5000, or ``radius_m`` on a polygon
bad-property               name, tags, timezone, margin_m or dwell_s of the wrong type or range
missing-id                 no ``id`` and no ``properties.id``
bad-id                     the id is not a string (numbers are not accepted)
invalid-id                 the id (or the URL's) is not 1-128 ASCII letters, digits and ``._:-``
id-mismatch                two ids disagree (Feature ``id`` vs ``properties.id``, or the URL)
=========================  ==================================================================

A ring is checked whole: an unclosed ring whose positions are also out of range reports
both problems.

Warnings (the upload is still accepted): ``overlap`` (two fences share area) and
``repaired`` (``repair=True`` fixed a geometry; area before and after in m²).

Wrong ring orientation is accepted and normalised: exteriors counter-clockwise, holes
clockwise.
"""

from __future__ import annotations

import itertools
import math
import re
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Final

from geofence.domain import geometry
from geofence.domain.errors import InvalidInput, Problem
from geofence.domain.model import Fence

Warning_ = dict[str, Any]

RADIUS_M: Final = (10.0, 5000.0)
MARGIN_M: Final = (0.0, 500.0)
_RING_DEPTH: Final = {"Polygon": 1, "MultiPolygon": 2}
# a store id: safe in a URL path, a log line and a Redis key as it is
STORE_ID_PATTERN: Final = "^[A-Za-z0-9._:-]{1,128}$"
_STORE_ID: Final = re.compile(STORE_ID_PATTERN.strip("^$"), re.ASCII)


@dataclass(frozen=True, slots=True)
class Options:
    default_timezone: str
    max_area_m2: float = 5_000_000.0
    max_vertices: int = 5000
    region: tuple[float, float, float, float] | None = None  # min_lng, min_lat, max_lng, max_lat
    repair: bool = False


@dataclass(slots=True)
class StoreReport:
    """A valid catalogue: the fences, and what is worth telling the uploader."""

    fences: list[Fence]
    warnings: list[Warning_] = field(default_factory=list)
    repairs: list[Warning_] = field(default_factory=list)


@dataclass(slots=True)
class _Feature:
    """One feature while it is being checked; problems pile up in ``problems``."""

    index: int | None
    problems: list[Problem]
    id: str | None = None
    repairs: list[Warning_] = field(default_factory=list)
    start: int = 0

    def __post_init__(self) -> None:
        self.start = len(self.problems)

    @property
    def failed(self) -> bool:
        return len(self.problems) > self.start

    def fail(self, code: str, detail: str, path: str | None = None) -> None:
        self.problems.append(
            Problem(code=code, detail=detail, feature=self.index, id=self.id, path=path)
        )


# --- entry points ------------------------------------------------------------------------


def parse_feature_collection(
    doc: Any,
    *,
    default_timezone: str,
    max_area_m2: float = 5_000_000.0,
    max_vertices: int = 5000,
    region: tuple[float, float, float, float] | None = None,
    repair: bool = False,
) -> StoreReport:
    """The whole catalogue, or InvalidInput listing every problem in it."""
    opts = Options(default_timezone, max_area_m2, max_vertices, region, repair)
    problems: list[Problem] = []
    features = _features(doc, problems)
    report = StoreReport(fences=[])
    seen: dict[str, int] = {}
    for i, raw in enumerate(features):
        ctx = _Feature(i, problems)
        fence = _parse(raw, ctx, opts)
        _check_unique(ctx, seen)
        if fence is not None:
            report.fences.append(fence)
            report.repairs += ctx.repairs
    if problems:
        raise InvalidInput(problems)
    report.warnings = report.repairs + _overlap_warnings(report.fences)
    return report


def parse_feature(
    doc: Any,
    *,
    store_id: str | None,
    default_timezone: str,
    max_area_m2: float = 5_000_000.0,
    max_vertices: int = 5000,
    region: tuple[float, float, float, float] | None = None,
    repair: bool = False,
) -> tuple[Fence, list[Warning_]]:
    """One Feature for an upsert at ``store_id`` (the feature's own id, if any, must match)."""
    opts = Options(default_timezone, max_area_m2, max_vertices, region, repair)
    problems: list[Problem] = []
    ctx = _Feature(None, problems)
    fence = _parse(doc, ctx, opts, url_id=store_id)
    if problems or fence is None:
        raise InvalidInput(problems)
    return fence, ctx.repairs


def _features(doc: Any, problems: list[Problem]) -> list[Any]:
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        detail = "expected a GeoJSON object with type FeatureCollection"
        problems.append(Problem(code="not-a-feature-collection", detail=detail, path="$"))
        raise InvalidInput(problems)
    if "crs" in doc:
        problems.append(Problem(code="crs-not-allowed", detail=_CRS_DETAIL, path="crs"))
    bbox = _bbox_problem(doc)
    if bbox is not None:
        problems.append(Problem(code="invalid-bbox", detail=bbox, path="bbox"))
    features = doc.get("features")
    if not isinstance(features, list):
        detail = "`features` must be a list of Features"
        problems.append(Problem(code="not-a-feature-collection", detail=detail, path="features"))
        raise InvalidInput(problems)
    return features


_CRS_DETAIL: Final = "a `crs` member is not allowed: RFC 7946 coordinates are WGS 84 lng/lat"


def is_store_id(value: str) -> bool:
    return _STORE_ID.fullmatch(value) is not None


def _id_detail(value: str) -> str:
    return (
        "an id is 1 to 128 ASCII letters, digits and . _ : - "
        f"(pattern {STORE_ID_PATTERN}), not {_shown(value)}"
    )


def _shown(value: Any) -> str:
    """A bounded, escaped rendering of an input value for a problem's detail."""
    text = ascii(value)
    return text if len(text) <= 60 else f"{text[:50]}... ({len(text)} characters)"


def _bbox_problem(obj: dict[str, Any]) -> str | None:
    """Why the object's ``bbox`` member is unusable, or None (also when it has none)."""
    if "bbox" not in obj:
        return None
    box = obj["bbox"]
    if not isinstance(box, list) or len(box) not in (4, 6) or not all(map(_is_number, box)):
        return f"a bbox is 4 or 6 finite numbers, not {_shown(box)}"
    half = len(box) // 2
    if any(low > high for low, high in zip(box[:half], box[half:], strict=True)):
        return f"each minimum of the bbox must not exceed its maximum: {_shown(box)}"
    if not all(_in_range(box[i], box[i + 1]) for i in (0, half)):
        return f"the bbox {_shown(box)} is outside lon -180..180 / lat -90..90"
    return None


def _in_range(lng: float, lat: float) -> bool:
    return -180.0 <= lng <= 180.0 and -90.0 <= lat <= 90.0


def _check_unique(ctx: _Feature, seen: dict[str, int]) -> None:
    if ctx.id is None:
        return
    if ctx.id in seen:
        ctx.fail("duplicate-id", f"id {ctx.id!r} is already used by feature {seen[ctx.id]}")
    else:
        seen[ctx.id] = ctx.index if ctx.index is not None else -1


def _overlap_warnings(fences: list[Fence]) -> list[Warning_]:
    return [
        {"code": "overlap", "ids": [a, b], "area_m2": round(area, 2)}
        for a, b, area in geometry.overlaps(fences)
    ]


# --- one feature -------------------------------------------------------------------------


def _parse(raw: Any, ctx: _Feature, opts: Options, url_id: str | None = None) -> Fence | None:
    if not isinstance(raw, dict) or raw.get("type") != "Feature":
        ctx.fail("not-a-feature", "expected a GeoJSON object with type Feature")
        return None
    props = _feature_properties(raw, ctx)
    ctx.id = _feature_id(raw, props, ctx, url_id)
    if "properties" not in raw:  # RFC 7946 §3.2 requires the member, though it may be null
        detail = "a Feature needs a `properties` member: an object, or null (RFC 7946 §3.2)"
        ctx.fail("missing-properties", detail, "properties")
    if "crs" in raw:
        ctx.fail("crs-not-allowed", _CRS_DETAIL, "crs")
    _check_bbox(raw, ctx, "bbox")
    fields = _properties(props, ctx, opts)
    geom = _geometry(raw.get("geometry"), fields.get("radius_m"), ctx, opts)
    if geom is None or ctx.id is None or ctx.failed:
        return None
    return Fence(id=ctx.id, geometry=geom, properties=props, **fields)


def _feature_properties(raw: dict[str, Any], ctx: _Feature) -> dict[str, Any]:
    """The Feature's properties, ``{}`` for null or when they are unusable."""
    props = raw.get("properties")
    if props is None:
        return {}
    if not isinstance(props, dict):
        ctx.fail("not-a-feature", "`properties` must be an object or null", "properties")
        return {}
    return props


def _check_bbox(obj: dict[str, Any], ctx: _Feature, path: str) -> None:
    problem = _bbox_problem(obj)
    if problem is not None:
        ctx.fail("invalid-bbox", problem, path)


def _feature_id(raw: dict[str, Any], props: dict[str, Any], ctx: _Feature, url: str | None) -> Any:
    """The store's id (None if unusable): the Feature's own, else the URL's."""
    url_ok = url is None or is_store_id(url)
    if not url_ok:
        ctx.fail("invalid-id", _id_detail(url or ""), "store_id")
    ok, chosen = _own_id(raw.get("id"), props.get("id"), ctx)
    if not (ok and url_ok):
        return url if url_ok else None
    if url is not None and chosen is not None and chosen != url:
        ctx.fail("id-mismatch", f"the feature's id {chosen!r} differs from the URL's {url!r}")
    if chosen is None and url is None:
        ctx.fail("missing-id", "give the Feature an `id` (or `properties.id`), a string")
    return chosen if chosen is not None else url


def _own_id(own: Any, inner: Any, ctx: _Feature) -> tuple[bool, str | None]:
    """Whether the Feature's ``id`` and ``properties.id`` are usable, and the one given."""
    given = [v for v in (own, inner) if v is not None]
    for value in given:
        if not isinstance(value, str):
            kind = "a number" if isinstance(value, int | float) else type(value).__name__
            ctx.fail("bad-id", f"the id must be a string, not {kind}", "id")
            return False, None
        if not is_store_id(value):
            ctx.fail("invalid-id", _id_detail(value), "id")
            return False, None
    if len(set(given)) > 1:
        ctx.fail("id-mismatch", f"Feature id {own!r} differs from properties.id {inner!r}", "id")
    return True, given[0] if given else None


# --- properties ----------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@cache
def _timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _properties(props: dict[str, Any], ctx: _Feature, opts: Options) -> dict[str, Any]:
    """The Fence fields taken from ``properties``; a bad one is reported and left out."""
    out: dict[str, Any] = {"timezone": opts.default_timezone}
    for key, check in _PROPERTY_CHECKS.items():
        if props.get(key) is None:
            continue
        value, error = check(props[key])
        if error:
            code = "bad-radius" if key == "radius_m" else "bad-property"
            ctx.fail(code, f"properties.{key} {error}", f"properties.{key}")
        else:
            out[key] = value
    return out


Check = Callable[[Any], tuple[Any, str | None]]


def _ranged(low: float, high: float) -> Check:
    def check(value: Any) -> tuple[Any, str | None]:
        if not _is_number(value) or not low <= value <= high:
            return None, f"must be a number from {low:g} to {high:g}, not {value!r}"
        return float(value), None

    return check


def _check_dwell(value: Any) -> tuple[Any, str | None]:
    if not _is_number(value) or value < 0:
        return None, f"must be a non-negative number of seconds, not {value!r}"
    return float(value), None


def _check_name(value: Any) -> tuple[Any, str | None]:
    return (value, None) if isinstance(value, str) else (None, "must be a string or null")


def _check_tags(value: Any) -> tuple[Any, str | None]:
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        return None, "must be a list of strings"
    return tuple(value), None


def _check_timezone(value: Any) -> tuple[Any, str | None]:
    if not isinstance(value, str) or value not in _timezones():
        return None, f"must be an IANA time zone name such as 'Europe/Helsinki', not {value!r}"
    return value, None


_PROPERTY_CHECKS: Final[dict[str, Check]] = {
    "name": _check_name,
    "tags": _check_tags,
    "timezone": _check_timezone,
    "margin_m": _ranged(*MARGIN_M),
    "dwell_s": _check_dwell,
    "radius_m": _ranged(*RADIUS_M),
}


# --- geometry ----------------------------------------------------------------------------


def _geometry(
    geom: Any, radius_m: float | None, ctx: _Feature, opts: Options
) -> dict[str, Any] | None:
    """The normalised geometry, or None after reporting why it cannot be used."""
    if geom is None:
        ctx.fail("missing-geometry", "the Feature has no geometry", "geometry")
        return None
    kind = geom.get("type") if isinstance(geom, dict) else None
    if not isinstance(kind, str) or kind not in ("Point", *_RING_DEPTH):
        detail = f"geometry type {_shown(kind)} is not one of Polygon, MultiPolygon, Point"
        ctx.fail("unknown-geometry-type", detail, "geometry.type")
        return None
    _check_bbox(geom, ctx, "geometry.bbox")
    if kind == "Point":
        return _point(geom, radius_m, ctx, opts)
    if radius_m is not None:
        ctx.fail("bad-radius", "properties.radius_m only applies to a Point", "properties")
    if _missing_coordinates(geom, kind, ctx):
        return None
    polygons = _polygons(geom["coordinates"], kind, ctx)
    if polygons is None:
        return None
    normal = {"type": kind, "coordinates": polygons[0] if kind == "Polygon" else polygons}
    return _checked_shape(normal, ctx, opts)


def _missing_coordinates(geom: dict[str, Any], kind: str, ctx: _Feature) -> bool:
    if geom.get("coordinates") is not None:
        return False
    detail = f"a {kind} needs a `coordinates` member"
    ctx.fail("missing-coordinates", detail, "geometry.coordinates")
    return True


def _point(
    geom: dict[str, Any], radius_m: float | None, ctx: _Feature, opts: Options
) -> dict[str, Any] | None:
    if radius_m is None:
        low, high = RADIUS_M
        ctx.fail("bad-radius", f"a Point needs properties.radius_m ({low:g}..{high:g} m)")
    if _missing_coordinates(geom, "Point", ctx):
        return None
    position = geom["coordinates"]
    if not _position(position, ctx, "geometry.coordinates") or not isinstance(position, list):
        return None
    if not _in_region(opts.region, [position]):
        ctx.fail("outside-region", _region_detail(opts.region), "geometry.coordinates")
    return {"type": "Point", "coordinates": list(position)}


def _position(value: Any, ctx: _Feature, path: str) -> bool:
    if not isinstance(value, list) or len(value) not in (2, 3):
        ctx.fail("bad-position", f"a position is 2 or 3 numbers, not {value!r}", path)
        return False
    if not all(_is_number(v) for v in value):
        ctx.fail("bad-position", f"a position holds finite numbers only, not {value!r}", path)
        return False
    if not (-180.0 <= value[0] <= 180.0 and -90.0 <= value[1] <= 90.0):
        detail = f"[{value[0]}, {value[1]}] is outside lon -180..180 / lat -90..90"
        ctx.fail("out-of-range", detail, path)
        return False
    return True


def _polygons(coords: Any, kind: str, ctx: _Feature) -> list[list[list[Any]]] | None:
    """Each polygon's rings, checked and oriented; None if any is unusable."""
    polygons = [coords] if kind == "Polygon" else coords
    if not isinstance(polygons, list) or not polygons:
        ctx.fail("bad-coordinates", f"a {kind} needs a list of coordinates", "geometry")
        return None
    out = [_rings(rings, ctx, f"geometry.coordinates[{i}]") for i, rings in enumerate(polygons)]
    if any(rings is None for rings in out):
        return None
    return [rings for rings in out if rings is not None]


def _rings(rings: Any, ctx: _Feature, path: str) -> list[list[Any]] | None:
    if not isinstance(rings, list) or not rings:
        ctx.fail("too-few-positions", "a polygon needs at least an exterior ring", path)
        return None
    checked = [_ring(ring, ctx, f"{path}[{i}]") for i, ring in enumerate(rings)]
    if any(ring is None for ring in checked):
        return None
    return [_oriented(ring, exterior=i == 0) for i, ring in enumerate(checked) if ring is not None]


def _ring(ring: Any, ctx: _Feature, path: str) -> list[Any] | None:
    if not isinstance(ring, list) or any(not isinstance(p, list) for p in ring):
        ctx.fail("bad-coordinates", "a ring must be a list of positions", path)
        return None
    positions_ok = all(_position(p, ctx, f"{path}[{i}]") for i, p in enumerate(ring))
    if not _ring_closed(ring, ctx, path) or not positions_ok:
        return None
    if _lng_span(ring) > 180.0:
        ctx.fail("crosses-antimeridian", "the ring spans more than 180° of longitude", path)
        return None
    return ring


def _ring_closed(ring: list[Any], ctx: _Feature, path: str) -> bool:
    """At least 4 positions, the last repeating the first; either problem is reported."""
    long_enough = len(ring) >= 4
    if not long_enough:
        ctx.fail("too-few-positions", f"a ring needs at least 4 positions, has {len(ring)}", path)
    closed = len(ring) < 2 or ring[0][:2] == ring[-1][:2]
    if not closed:
        ctx.fail("unclosed-ring", "the ring's last position must repeat its first", path)
    return long_enough and closed


def _lng_span(positions: list[Any]) -> float:
    lngs = [p[0] for p in positions]
    return float(max(lngs) - min(lngs))


def _oriented(ring: list[Any], *, exterior: bool) -> list[Any]:
    """Exterior counter-clockwise, holes clockwise (RFC 7946 §3.1.6)."""
    x0, y0 = ring[0][0], ring[0][1]
    pts = [(p[0] - x0, p[1] - y0) for p in ring]  # relative, for precision
    twice_area = sum(a[0] * b[1] - b[0] * a[1] for a, b in itertools.pairwise(pts))
    counter_clockwise = twice_area > 0
    return list(ring) if counter_clockwise == exterior else list(reversed(ring))


def _checked_shape(geom: dict[str, Any], ctx: _Feature, opts: Options) -> dict[str, Any] | None:
    """Validity (or repair), antimeridian, area, vertex count and region."""
    positions = _all_positions(geom)
    if _lng_span(positions) > 180.0:
        ctx.fail("crosses-antimeridian", "the fence spans more than 180° of longitude")
        return None
    vertices = len(positions) - _ring_count(geom)
    if vertices > opts.max_vertices:
        detail = f"{vertices} vertices, more than the {opts.max_vertices} allowed"
        ctx.fail("too-many-vertices", detail, "geometry")
    if not _in_region(opts.region, positions):
        ctx.fail("outside-region", _region_detail(opts.region), "geometry")
    valid = _valid(geom, ctx, opts)
    if valid is not None:
        _check_area(valid, ctx, opts)
    return valid


def _valid(geom: dict[str, Any], ctx: _Feature, opts: Options) -> dict[str, Any] | None:
    reason = geometry.invalid_reason(geom)
    if reason is None:
        return geom
    if not opts.repair:
        ctx.fail("invalid-geometry", f"invalid geometry: {reason}", "geometry")
        return None
    fixed = geometry.repair(geom)
    if fixed.geometry is None:
        detail = f"invalid geometry ({reason}); repairing left a {fixed.result_type}"
        ctx.fail("invalid-geometry", detail, "geometry")
        return None
    ctx.repairs.append(
        {
            "code": "repaired",
            "id": ctx.id,
            "feature": ctx.index,
            "reason": reason,
            "area_before_m2": round(fixed.area_before_m2, 1),
            "area_after_m2": round(fixed.area_after_m2, 1),
        }
    )
    return fixed.geometry


def _check_area(geom: dict[str, Any], ctx: _Feature, opts: Options) -> None:
    area = geometry.area_m2(geom)
    if area > opts.max_area_m2:
        detail = f"{area:,.0f} m² is more than the {opts.max_area_m2:,.0f} m² allowed"
        ctx.fail("area-too-large", detail, "geometry")


def _all_positions(geom: dict[str, Any]) -> list[Any]:
    polygons = [geom["coordinates"]] if geom["type"] == "Polygon" else geom["coordinates"]
    return [p for rings in polygons for ring in rings for p in ring]


def _ring_count(geom: dict[str, Any]) -> int:
    polygons = [geom["coordinates"]] if geom["type"] == "Polygon" else geom["coordinates"]
    return sum(len(rings) for rings in polygons)


def _in_region(region: tuple[float, float, float, float] | None, positions: list[Any]) -> bool:
    if region is None:
        return True
    min_lng, min_lat, max_lng, max_lat = region
    return all(min_lng <= p[0] <= max_lng and min_lat <= p[1] <= max_lat for p in positions)


def _region_detail(region: tuple[float, float, float, float] | None) -> str:
    return (
        f"the fence leaves the region {list(region or ())} (min_lng, min_lat, max_lng, "
        "max_lat); are latitude and longitude swapped?"
    )
