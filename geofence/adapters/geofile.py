"""Read a store catalogue from any file GDAL can read (GeoJSON, GeoPackage, Shapefile, KML
where the driver exists) as an RFC 7946 FeatureCollection in WGS 84.

The result has no ``crs`` member and goes straight to ``parse_feature_collection``. A
GeoJSON file that is already RFC 7946 (no ``crs`` member) is read as JSON, untouched, so
the CLI reports exactly what the API would: GDAL would close an unclosed ring or refuse
the file before the validator could name the problem. Formats without list columns store
``tags`` as text; a JSON array or a comma list there becomes a list again.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import msgspec
import numpy as np
import shapely.geometry

WGS84 = "EPSG:4326"


@dataclass(frozen=True, slots=True)
class GeoFile:
    """The FeatureCollection read, and notes worth showing to whoever imports it."""

    collection: dict[str, Any]
    notes: list[str] = field(default_factory=list)


class GeoFileError(ValueError):
    """A file that cannot be read as a store catalogue; the message says why."""


def read_geofile(path: str | Path, *, layer: str | int | None = None) -> GeoFile:
    """Read ``path`` (its first layer unless ``layer``) reprojected to WGS 84 lng/lat."""
    plain = _plain_geojson(Path(path))
    if plain is not None:
        return GeoFile(plain)
    try:
        frame = gpd.read_file(path, layer=layer, engine="pyogrio")
    except Exception as e:  # GDAL, GEOS and I/O each raise their own kinds
        raise GeoFileError(f"{Path(path).name} cannot be read: {e}") from e
    notes = []
    if frame.crs is None:
        notes.append(f"{Path(path).name} declares no CRS; its coordinates are taken as {WGS84}")
        frame = frame.set_crs(WGS84)
    elif not frame.crs.equals(WGS84):
        notes.append(f"reprojected from {frame.crs.to_string()} to {WGS84}")
        frame = frame.to_crs(WGS84)
    features = [_feature(row, frame.geometry.name) for row in frame.to_dict("records")]
    return GeoFile({"type": "FeatureCollection", "features": features}, notes)


def read_geobytes(data: bytes, *, suffix: str) -> GeoFile:
    """:func:`read_geofile` of an uploaded file's bytes: ``.gpkg``, or ``.zip`` holding a
    Shapefile (GDAL opens the archive), kept in a temporary file while it is read."""
    with tempfile.TemporaryDirectory(prefix="geofence-upload-") as folder:
        path = Path(folder) / f"upload{suffix}"
        path.write_bytes(data)
        read = read_geofile(path)
    notes = [note.replace(path.name, f"the {suffix[1:]} upload") for note in read.notes]
    return GeoFile(read.collection, notes)


def _plain_geojson(path: Path) -> Any | None:
    """The document of an RFC 7946 GeoJSON file as it is; None for anything else."""
    if path.suffix.lower() not in (".geojson", ".json"):
        return None
    try:
        doc = msgspec.json.decode(path.read_bytes())
    except (OSError, msgspec.DecodeError) as e:
        raise GeoFileError(f"{path.name} is not readable JSON: {e}") from e
    return None if isinstance(doc, dict) and "crs" in doc else doc


def _feature(row: dict[str, Any], geometry_column: str) -> dict[str, Any]:
    geom = row.pop(geometry_column)
    properties = {key: _plain(value) for key, value in row.items()}
    if isinstance(properties.get("tags"), str):
        properties["tags"] = _text_list(properties["tags"])
    return {
        "type": "Feature",
        "properties": properties,
        "geometry": None if geom is None else _plain(shapely.geometry.mapping(geom)),
    }


def _plain(value: Any) -> Any:
    """JSON-ready: numpy arrays and scalars, tuples, NaN and timestamps made plain."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    unequal_to_itself = value != value  # noqa: PLR0124 - NaN and NaT, whatever their type
    if unequal_to_itself or (isinstance(value, float) and not math.isfinite(value)):
        return None  # NaN, NaT and infinities have no JSON form
    return value.isoformat() if hasattr(value, "isoformat") else value


def _text_list(text: str) -> Any:
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError:
        return [part.strip() for part in text.split(",") if part.strip()]


def read_feature_collection(path: str | Path, *, layer: str | int | None = None) -> dict[str, Any]:
    """Just the FeatureCollection of :func:`read_geofile`."""
    return read_geofile(path, layer=layer).collection
