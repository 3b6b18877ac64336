"""`geofence stores validate` and `geofence stores import`, as a marketer runs them."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib.metadata
import json
import os
import pty
import socket
import struct
import subprocess
import sys
import termios
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
    assert report["valid"] is True
    assert report["stores"] == 162


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
    doc = json.loads(await asyncio.to_thread(Path("stores.geojson").read_text))
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
        assert out["imported"] is True
        assert {"catalogue-moved", "swapped-coordinates"} <= codes
    finally:
        await drop_prefix(client, prefix)
        await client.aclose()


def test_version_and_help_as_users_expect() -> None:
    version = cli("--version")
    assert version.returncode == 0
    assert version.stdout.strip() == f"geofence {importlib.metadata.version('geofence')}"
    top = cli("--help").stdout
    assert "Geofencing and proximity offers" in top
    assert "The only place" not in top
    assert {"serve", "stores", "replay"} <= set(top.split())


def flags(*command: str) -> set[str]:
    shown = cli(*command, "--help").stdout
    return {word.rstrip(",") for word in shown.split() if word.startswith("--")}


def test_each_command_lists_its_own_settings_and_no_secret() -> None:
    secrets = {"--admin-keys", "--sdk-keys", "--ingest-keys", "--id-secret", "--push-secret"}
    serve, validate = flags("serve"), flags("stores", "validate")
    importing, replay = flags("stores", "import"), flags("replay")
    assert {"--dwell-s", "--redis-url", "--port", "--admin-keys-file"} <= serve
    assert not secrets & (serve | validate | importing | replay)
    assert {"--max-vertices", "--region"} <= validate
    assert "--redis-url" not in validate
    assert {"--max-vertices", "--redis-url"} <= importing
    assert "--port" not in importing
    assert {"--dwell-s", "--quiet-hours", "--stores"} <= replay
    assert "--redis-url" not in replay
    assert len(validate) < 10
    assert len(importing) < 15
    assert len(serve) > 40


def test_import_asks_redis_before_it_validates(tmp_path: Path) -> None:
    """An invalid file and a Redis that does not answer: Redis is what is reported."""
    case = json.loads(Path("tests/data/bad_uploads/unclosed_ring.json").read_text())
    path = tmp_path / "bad.geojson"
    path.write_text(json.dumps(case["upload"]))
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        url = f"redis://127.0.0.1:{s.getsockname()[1]}/0"
        done = cli("stores", "import", str(path), env={**os.environ, "GEOFENCE_REDIS_URL": url})
    assert done.returncode == 1, done.stderr
    assert [e["code"] for e in json.loads(done.stdout)["errors"]] == ["redis-unavailable"]


def test_progress_goes_to_a_terminal_on_stderr_only() -> None:
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns
    try:
        done = subprocess.run(
            [sys.executable, "-m", "geofence", "stores", "validate", "stores.geojson"],
            stdout=subprocess.PIPE,
            stderr=follower,
            timeout=120,
            check=True,
        )
        shown = _everything_written(leader)
    finally:
        os.close(leader)
        os.close(follower)
    assert "validating" in shown
    assert "162/162" in shown
    assert json.loads(done.stdout)["stores"] == 162  # stdout: the JSON report alone
    assert "validating" not in cli("stores", "validate", "stores.geojson").stderr


def _everything_written(leader: int) -> str:
    os.set_blocking(leader, False)
    chunks = []
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(leader, 65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()
