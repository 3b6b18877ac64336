"""Real processes on loopback: the service, the fake push gateway, their ports and logs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
SERVE = [sys.executable, "-c", "from geofence.cli import main; main()", "serve"]
GATEWAY = [sys.executable, "-m", "tests.fakes.gateway"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Process:
    """A child process whose output goes to a log file the test can read afterwards."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logs: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = logs / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv, cwd=ROOT, env={**os.environ, **self.env}, stdout=log, stderr=log
        )
        log.close()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill9()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


async def wait_http(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while True:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} did not answer 200 within {timeout_s} s")
            await asyncio.sleep(0.1)


@contextlib.contextmanager
def running(*processes: Process) -> Iterator[None]:
    try:
        yield
    finally:
        for p in processes:
            p.stop()


def service_env(port: int, **extra: Any) -> dict[str, str]:
    base = {
        "GEOFENCE_HOST": "127.0.0.1",
        "GEOFENCE_PORT": str(port),
        "GEOFENCE_ADMIN_KEYS": "sys-admin",
        "GEOFENCE_SDK_KEYS": "sys-sdk",
        "GEOFENCE_INGEST_KEYS": "sys-ingest",
        "GEOFENCE_ID_SECRET": "sys-id-secret",
        "GEOFENCE_STORES": "stores.geojson",
        "GEOFENCE_QUIET_HOURS": "off",
        "GEOFENCE_LOG_LEVEL": "INFO",
    }
    return {**base, **{f"GEOFENCE_{k.upper()}": str(v) for k, v in extra.items()}}
