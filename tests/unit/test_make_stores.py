"""scripts/make_stores.py writes stores.geojson whole, wherever it is run from."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "make_stores.py"
SOURCE = ROOT / "tests" / "data" / "helsinki_store_polygons.geojson"


def make(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_documented_command_makes_the_shipped_stores(tmp_path: Path) -> None:
    out = tmp_path / "stores.geojson"
    done = make(str(SOURCE), str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == (ROOT / "stores.geojson").read_bytes()
    assert out.stat().st_mode & 0o044 == 0o044  # readable by the service's user too
    assert [p.name for p in tmp_path.iterdir()] == ["stores.geojson"]  # no temporary left


def test_a_failed_run_leaves_the_old_file_whole(tmp_path: Path) -> None:
    out = tmp_path / "stores.geojson"
    out.write_text("the old catalogue\n")
    done = make(str(tmp_path / "missing.geojson"), str(out), cwd=tmp_path)
    assert done.returncode != 0
    assert out.read_text() == "the old catalogue\n"
    assert [p.name for p in tmp_path.iterdir()] == ["stores.geojson"]
