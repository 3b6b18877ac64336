"""Read location traces for replay: CSV (device_id, ts, lat, lon, accuracy_m[, mocked]) or GPX.

``ts`` in a CSV may be epoch seconds or RFC 3339 with an offset, read as the API reads
times (``domain.times.parse_time_param``). GPX (1.0 or 1.1, read by gpxpy) has no accuracy,
so every fix gets ``default_accuracy_m``; all the points of its tracks belong to one device.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import gpxpy
import gpxpy.gpx
import msgspec

from geofence.domain.model import Ping
from geofence.domain.times import parse_time_param

REQUIRED_COLUMNS = ("device_id", "ts", "lat", "lon", "accuracy_m")


class TraceError(ValueError):
    """A trace file that cannot be read; the message names the line."""


class TracePoint(msgspec.Struct, frozen=True):
    device_id: str
    ping: Ping


def read_trace(
    path: Path, *, device_id: str = "trace", default_accuracy_m: float = 10.0
) -> Iterator[TracePoint]:
    if path.suffix.lower() == ".gpx":
        return read_gpx(path, device_id=device_id, accuracy_m=default_accuracy_m)
    return read_csv(path)


def read_csv(path: Path) -> Iterator[TracePoint]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise TraceError(f"{path.name}: missing column(s) {', '.join(missing)}")
        for line, row in enumerate(reader, start=2):
            yield _csv_point(row, f"{path.name}:{line}")


def _csv_point(row: dict[str, str], where: str) -> TracePoint:
    try:
        ping = Ping(
            lat=float(row["lat"]),
            lng=float(row["lon"]),
            accuracy_m=float(row["accuracy_m"]),
            ts=parse_time_param(row["ts"].strip()),
            mocked=row.get("mocked", "").strip().lower() in ("1", "true", "yes"),
        )
    except ValueError as e:
        raise TraceError(f"{where}: {e}") from None
    return TracePoint(row["device_id"], ping)


def read_gpx(path: Path, *, device_id: str, accuracy_m: float) -> Iterator[TracePoint]:
    try:
        with path.open(encoding="utf-8") as f:
            gpx = gpxpy.parse(f)
    except (OSError, UnicodeDecodeError, gpxpy.gpx.GPXException) as e:
        raise TraceError(f"{path.name}: not a readable GPX file: {e}") from None
    for point in gpx.walk(only_points=True):  # every track's points, in file order
        if point.time is None:
            raise TraceError(f"{path.name}: a track point without <time>")
        if point.time.tzinfo is None:
            raise TraceError(f"{path.name}: a <time> without an offset: {point.time}")
        ping = Ping(
            lat=point.latitude,
            lng=point.longitude,
            accuracy_m=accuracy_m,
            ts=point.time.timestamp(),
        )
        yield TracePoint(device_id, ping)
