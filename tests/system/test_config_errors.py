"""A configuration `geofence serve` cannot run with stops it at start: exit code 2 and one
line on stderr naming the setting, no traceback, no retry loop."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
import redis

from tools.processes import ROOT, SERVE, free_port

GOOD = {
    "GEOFENCE_ADMIN_KEYS": "admin-key-0000001",
    "GEOFENCE_SDK_KEYS": "sdk-key-00000001",
    "GEOFENCE_ID_SECRET": "id-secret",
}
UNCLOSED = json.loads((ROOT / "tests/data/bad_uploads/unclosed_ring.json").read_text())["upload"]


def serve(tmp_path: Path, *argv: str, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEOFENCE_")}
    env |= {**GOOD, "GEOFENCE_PORT": str(free_port()), **settings}
    return subprocess.run(
        [*SERVE, *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,  # a service that started anyway would run until this
        check=False,
    )


def stores_file(tmp_path: Path, content: str | dict[str, object]) -> str:
    path = tmp_path / "stores.geojson"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def assert_refused(done: subprocess.CompletedProcess[str], *named: str) -> None:
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert all(n in done.stderr for n in named), done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ("", "the file is empty"),
        ("\n", "the file is empty"),
        ("{not json", "not GeoJSON"),
        ({"type": "FeatureCollection", "features": []}, "no stores"),
        (UNCLOSED, "unclosed-ring"),
    ],
)
def test_an_unusable_stores_file(tmp_path: Path, content: str, named: str) -> None:
    path = stores_file(tmp_path, content)
    assert_refused(serve(tmp_path, GEOFENCE_STORES=path), "GEOFENCE_STORES", named)


def test_a_missing_stores_file_wherever_it_is_looked_for(tmp_path: Path) -> None:
    assert_refused(serve(tmp_path), "GEOFENCE_STORES=stores.geojson", "cannot be read")
    config = tmp_path / "etc" / "geofence.env"
    config.parent.mkdir()
    config.write_text("GEOFENCE_STORES=shops.geojson\n")
    done = serve(tmp_path, "--config", str(config))
    assert_refused(done, f"GEOFENCE_STORES={tmp_path / 'etc' / 'shops.geojson'}")


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"GEOFENCE_REDIS_URL": "http://127.0.0.1:6379"}, "GEOFENCE_REDIS_URL"),
        ({"GEOFENCE_REDIS_URL": "redis://127.0.0.1:sixty/0"}, "GEOFENCE_REDIS_URL"),
        ({"GEOFENCE_REDIS_URL": "redis+cluster://127.0.0.1:1,h"}, "host:port"),
        ({"GEOFENCE_REDIS_URL": "redis+cluster://:pw@127.0.0.1:1/3"}, "database"),
        ({"GEOFENCE_REDIS_URL": "redis+cluster://"}, "GEOFENCE_REDIS_URL"),
        ({"GEOFENCE_REDIS_SHARDS": "0"}, "GEOFENCE_REDIS_SHARDS"),
        ({"GEOFENCE_REDIS_SHARDS": "16385"}, "GEOFENCE_REDIS_SHARDS"),
        ({"GEOFENCE_ADMIN_KEYS": "admin-key-0000001,"}, "GEOFENCE_ADMIN_KEYS"),
        ({"GEOFENCE_SDK_KEYS": "sdk-key-00000001, sdk-key-00000002"}, "GEOFENCE_SDK_KEYS"),
        ({"GEOFENCE_INGEST_KEYS": "admin-key-0000001"}, "GEOFENCE_INGEST_KEYS"),
        ({"GEOFENCE_ADMIN_KEYS": "admin"}, "GEOFENCE_ADMIN_KEYS"),
    ],
)
def test_a_bad_redis_url_or_key_list(tmp_path: Path, settings: dict[str, str], named: str) -> None:
    done = serve(tmp_path, GEOFENCE_STORES=str(ROOT / "stores.geojson"), **settings)
    assert_refused(done, named)
    assert "admin-key-0000001" not in done.stderr  # a key is never printed


@pytest.mark.redis
def test_another_shard_count_on_existing_data(tmp_path: Path) -> None:
    """The first start records the shards in Redis; a start with another count on the
    same data is refused (its devices would be looked for under other keys)."""
    url = os.environ.get("GEOFENCE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    prefix = f"gftest-{uuid.uuid4().hex[:12]}"
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.set(f"{prefix}:{{cat}}:shards", 16)  # as a first start with the default did
        done = serve(
            tmp_path,
            GEOFENCE_STORES=str(ROOT / "stores.geojson"),
            GEOFENCE_REDIS_URL=url,
            GEOFENCE_REDIS_PREFIX=prefix,
            GEOFENCE_REDIS_SHARDS="64",
        )
        assert_refused(done, "GEOFENCE_REDIS_SHARDS=64", "16 shards")
        assert client.get(f"{prefix}:{{cat}}:shards") == b"16"  # left as it was
    finally:
        client.delete(f"{prefix}:{{cat}}:shards")
        client.close()


def test_a_config_file_with_an_unknown_setting(tmp_path: Path) -> None:
    config = tmp_path / "geofence.env"
    config.write_text("GEOFENCE_DWEL_S=60\n")
    assert_refused(serve(tmp_path, "--config", str(config)), "GEOFENCE_DWEL_S")
