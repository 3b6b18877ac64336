"""The README's quick start, run exactly as printed, in a fresh copy of the repository.

scripts/readme_blocks.py extracts the blocks marked ``<!-- quickstart -->``; they run as
one ``bash -euo pipefail`` script, so any step that fails (a curl answered 4xx or 5xx, a
service that never gets ready) fails the test. ``scripts/serve.sh`` uses this test's venv,
already installed (its stamp says so), so it starts without installing anything.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from tools.processes import ROOT, free_port

QUICKSTART_TIMEOUT_S = 240  # serve.sh's own wait on /readyz is bounded too


def fresh_copy(destination: Path) -> Path:
    """The working tree's files (tracked, and new ones not ignored), without venv or caches."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


def installed_venv(folder: Path, repo: Path) -> Path:
    """A venv folder for serve.sh: this test's interpreter and scripts, stamped as installed
    from ``repo``'s pyproject.toml, so that serve.sh sees nothing to install."""
    folder.mkdir()
    (folder / "bin").symlink_to(Path(sys.executable).parent)
    pyproject = (repo / "pyproject.toml").read_bytes()
    stamp = subprocess.run(["cksum"], input=pyproject, capture_output=True, check=True).stdout
    (folder / ".geofence-installed").write_bytes(stamp)
    return folder


@pytest.fixture
def walk(tmp_path: Path) -> Iterator[tuple[subprocess.CompletedProcess[str], Path]]:
    repo = fresh_copy(tmp_path / "repo")
    script = subprocess.run(
        [sys.executable, "scripts/readme_blocks.py", "README.md"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEOFENCE_")}
    env |= {
        "GEOFENCE_VENV": str(installed_venv(tmp_path / "venv", repo)),
        "GEOFENCE_PORT": str(free_port()),
    }
    out, err = (tmp_path / "stdout").open("w+"), (tmp_path / "stderr").open("w+")
    shell = subprocess.Popen(  # files, not pipes: the service in the background keeps them
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=repo,
        env=env,
        stdout=out,
        stderr=err,
        text=True,
        start_new_session=True,  # the service it starts in the background is in its group
    )
    try:
        shell.wait(timeout=QUICKSTART_TIMEOUT_S)
        done = subprocess.CompletedProcess(shell.args, shell.returncode, *map(_read, (out, err)))
        yield done, repo
    finally:
        with contextlib.suppress(ProcessLookupError):  # the group outlives its leader, bash
            os.killpg(shell.pid, signal.SIGTERM)
        shell.wait()
        out.close()
        err.close()


def _read(f: IO[str]) -> str:
    f.seek(0)
    return f.read()


def test_the_quick_start_works_as_printed(
    walk: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    done, repo = walk
    assert done.returncode == 0, f"the quick start failed:\n{done.stdout}\n{done.stderr}"
    assert "installing" not in done.stderr  # serve.sh found the venv set up
    answers = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    events = [e["type"] for answer in answers for e in answer.get("events", [])]
    assert events == ["entry", "exit"]
    [entry] = [a for a in answers if any(e["type"] == "entry" for e in a.get("events", []))]
    assert [n["offer_id"] for n in entry["notifications"]] == ["welcome"]
    pushed = (repo / "notifications.jsonl").read_text().splitlines()
    assert [json.loads(line)["offer_id"] for line in pushed] == ["welcome"]
