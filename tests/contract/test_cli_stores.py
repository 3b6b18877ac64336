"""`geofence stores validate` and `geofence stores import`, as a marketer runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import geopandas as gpd
import pytest

from tests.conftest import REDIS_URL, drop_prefix, redis_client_or_skip


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "geofence", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def test_validate_the_sample_stores() -> None:
    done = cli("stores", "validate", "stores.geojson")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["valid"] is True and report["stores"] == 162


def test_validate_reports_every_problem(tmp_path: Path) -> None:
    case = json.loads(Path("tests/data/bad_uploads/unclosed_ring.json").read_text())
    path = tmp_path / "bad.geojson"
    path.write_text(json.dumps(case["upload"]))
    done = cli("stores", "validate", str(path))
    assert done.returncode == 1
    assert "unclosed-ring" in {e["code"] for e in json.loads(done.stdout)["errors"]}


def test_validate_a_projected_geopackage(tmp_path: Path) -> None:
    """A file in the Finnish national grid is reprojected to WGS 84 before validation."""
    frame = gpd.read_file("stores.geojson").head(5).to_crs("EPSG:3067")
    path = tmp_path / "stores.gpkg"
    frame.to_file(path, driver="GPKG")
    done = cli("stores", "validate", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["stores"] == 5


@pytest.mark.redis
async def test_import_writes_the_catalogue_to_redis() -> None:
    client = await redis_client_or_skip()
    prefix = f"gftest-{uuid.uuid4().hex[:12]}"
    env: dict[str, Any] = {
        **os.environ,
        "GEOFENCE_REDIS_URL": REDIS_URL,
        "GEOFENCE_REDIS_PREFIX": prefix,
    }
    try:
        done = cli("stores", "import", "stores.geojson", env=env)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["stores"] == 162
        assert await client.hlen(f"{prefix}:{{cat}}:fences") == 162
    finally:
        await drop_prefix(client, prefix)
        await client.aclose()


@pytest.mark.redis
async def test_import_reports_the_guards_warnings(tmp_path: Path) -> None:
    """The API's upload guards warn on the CLI too (an operator's import still goes ahead)."""
    client = await redis_client_or_skip()
    prefix = f"gftest-{uuid.uuid4().hex[:12]}"
    env = {**os.environ, "GEOFENCE_REDIS_URL": REDIS_URL, "GEOFENCE_REDIS_PREFIX": prefix}
    doc = json.loads(Path("stores.geojson").read_text())
    for feature in doc["features"]:
        rings = feature["geometry"]["coordinates"]
        feature["geometry"]["coordinates"] = [[[p[1], p[0]] for p in ring] for ring in rings]
    swapped = tmp_path / "swapped.geojson"
    swapped.write_text(json.dumps(doc))
    try:
        assert cli("stores", "import", "stores.geojson", env=env).returncode == 0
        done = cli("stores", "import", str(swapped), env=env)
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout)
        codes = {w["code"] for w in out["warnings"]}
        assert out["imported"] is True and {"catalogue-moved", "swapped-coordinates"} <= codes
    finally:
        await drop_prefix(client, prefix)
        await client.aclose()
