"""`geofence replay` on the real GPS track, kept as a regression fixture.

The track is a bus ride (Limerick route 304, 2019-02-18) with fixes about every second.
The fences in tests/data/limerick_fences.geojson are circles on its route: the terminus
where the bus waits 258 s, stops where it waits 133 s, 214 s and 170 s (the last with a
60 s dwell), and a point it passes without stopping. The expected events were checked by
hand against the track once: an entry 120 s (60 s for stop-c) after arriving, an exit
60 s after the first fix more than 30 m outside, nothing for the drive-by.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest

from geofence.adapters.traces import TraceError, read_trace
from geofence.bootstrap import replay_service
from geofence.config import Settings
from geofence.domain import geojson
from geofence.metrics import Metrics
from geofence.service.replay import replay

TRACK = Path(__file__).parents[1] / "data" / "limerick_bus304_2019-02-18.gpx"
FENCES = Path("tests/data/limerick_fences.geojson")
EXPECTED = Path("tests/data/limerick_events.json")


def read_json(path: Path) -> Any:
    """A fixture file's JSON."""
    return json.loads(path.read_text(encoding="utf-8"))


async def replay_events() -> list[dict[str, object]]:
    doc = await asyncio.to_thread(read_json, FENCES)
    fences = geojson.parse_feature_collection(doc, default_timezone="Europe/Dublin").fences
    trace = read_trace(TRACK, device_id="bus-304", default_accuracy_m=10.0)
    service, devices = await replay_service(Settings(stores=""), fences)
    pairs = ((point.device_id, point.ping) for point in trace)
    return [event async for event in replay(service, devices, pairs)]


async def test_replay_of_the_bus_track_matches_the_fixture() -> None:
    assert TRACK.exists(), f"the shared GPS track is missing: {TRACK}"
    events = await replay_events()
    assert events == await asyncio.to_thread(read_json, EXPECTED)


async def test_replay_drives_the_service_it_is_given() -> None:
    """Every ping goes through the given service (its metrics count each one), in the
    store it was built with, not one replay makes for itself."""
    doc = await asyncio.to_thread(read_json, FENCES)
    fences = geojson.parse_feature_collection(doc, default_timezone="Europe/Dublin").fences
    trace = list(read_trace(TRACK, device_id="bus-304", default_accuracy_m=10.0))
    service, devices = await replay_service(Settings(stores=""), fences)
    pairs = ((point.device_id, point.ping) for point in trace)
    events = [event async for event in replay(service, devices, pairs)]
    counted = sum(
        sample.value
        for metric in cast("Metrics", service.metrics).pings.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    )
    assert counted == len(trace) > 0
    assert len(events) == len(await asyncio.to_thread(read_json, EXPECTED))


def replay_command(trace: Path, *extra: str) -> list[dict[str, object]]:
    """The events `geofence replay` prints for ``trace`` over the bus-stop fences."""
    args = ["replay", str(trace), "--stores", str(FENCES), "--default-timezone", "Europe/Dublin"]
    out = subprocess.run(
        [sys.executable, "-m", "geofence", *args, *extra],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return [json.loads(line) for line in out.splitlines()]


def test_replay_command_prints_the_same_events_as_json_lines() -> None:
    events = replay_command(TRACK, "--device-id", "bus-304")
    assert events == read_json(EXPECTED)


def test_replay_of_the_same_track_as_csv(tmp_path: Path) -> None:
    """CSV with RFC 3339 times gives the same events as the GPX it was written from."""
    rows = ["device_id,ts,lat,lon,accuracy_m"]
    for point in read_trace(TRACK, device_id="bus-304", default_accuracy_m=10.0):
        when = datetime.fromtimestamp(point.ping.ts, UTC).isoformat()
        rows.append(f"bus-304,{when},{point.ping.lat},{point.ping.lng},10")
    trace = tmp_path / "bus.csv"
    trace.write_text("\n".join(rows) + "\n", encoding="utf-8")
    assert replay_command(trace) == read_json(EXPECTED)


def test_a_csv_without_its_columns_is_refused(tmp_path: Path) -> None:
    trace = tmp_path / "bad.csv"
    trace.write_text("device,ts,lat\nx,1,60\n", encoding="utf-8")
    with pytest.raises(TraceError, match="missing column"):
        list(read_trace(trace))


def as_gpx_1_0(trace: Path, destination: Path) -> Path:
    """The track written as GPX 1.0: its own namespace, and the fixes' time as there."""
    fixes = [
        f'<trkpt lat="{p.ping.lat}" lon="{p.ping.lng}"><time>'
        f"{datetime.fromtimestamp(p.ping.ts, UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}</time></trkpt>"
        for p in read_trace(trace, device_id="bus-304")
    ]
    destination.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<gpx version="1.0" creator="test" xmlns="http://www.topografix.com/GPX/1/0">'
        f"<trk><name>304</name><trkseg>{''.join(fixes)}</trkseg></trk></gpx>\n",
        encoding="utf-8",
    )
    return destination


def test_replay_of_the_same_track_as_gpx_1_0(tmp_path: Path) -> None:
    trace = as_gpx_1_0(TRACK, tmp_path / "bus-1.0.gpx")
    assert "GPX/1/0" in trace.read_text(encoding="utf-8")
    events = replay_command(trace, "--device-id", "bus-304")
    assert events == read_json(EXPECTED)


def test_a_gpx_without_times_is_refused(tmp_path: Path) -> None:
    trace = tmp_path / "untimed.gpx"
    trace.write_text(
        '<gpx version="1.1" xmlns="http://www.topografix.com/GPX/1/1">'
        '<trk><trkseg><trkpt lat="52.6" lon="-8.6"/></trkseg></trk></gpx>',
        encoding="utf-8",
    )
    with pytest.raises(TraceError, match="without <time>"):
        list(read_trace(trace))
    (tmp_path / "broken.gpx").write_text("<gpx><trk>", encoding="utf-8")
    with pytest.raises(TraceError, match="not a readable GPX"):
        list(read_trace(tmp_path / "broken.gpx"))


def test_replay_into_a_closed_pipe_ends_quietly() -> None:
    """`geofence replay ... | head -1`: the reader is gone before the events are written."""
    args = ["replay", str(TRACK), "--stores", str(FENCES), "--default-timezone", "Europe/Dublin"]
    command = subprocess.Popen(
        [sys.executable, "-m", "geofence", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert command.stdout is not None
    command.stdout.close()
    _, err = command.communicate(timeout=120)
    assert command.returncode == 141
    assert err == ""
