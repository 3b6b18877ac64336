"""Uploaded store files other than GeoJSON (a GeoPackage, a zipped Shapefile), read with
the CLI's import code (``geofile``, reprojected to WGS 84).

The catalogue's upload worker is handed :func:`read_upload` by the bootstrap and calls it
in its own process; geopandas is imported there, by the first such upload, never by
``geofence serve`` itself.
"""

from __future__ import annotations

from typing import Any

from geofence.domain.errors import MalformedInput


def read_upload(data: bytes, kind: str) -> tuple[Any, list[str]]:
    """The file (``kind`` "gpkg" or "zip") as a GeoJSON document, and the notes of its
    conversion; MalformedInput (400) when GDAL cannot read it."""
    from geofence.adapters import geofile  # noqa: PLC0415 - geopandas, only when needed

    try:
        read = geofile.read_geobytes(data, suffix=f".{kind}")
    except geofile.GeoFileError as e:
        raise MalformedInput(str(e)) from None
    return read.collection, read.notes
