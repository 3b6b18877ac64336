"""Real processes on loopback: the service, redis-server, their ports, logs and sockets."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import redis

ROOT = Path(__file__).resolve().parents[1]
SERVE = [sys.executable, "-m", "geofence", "serve"]


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

    @property
    def started(self) -> subprocess.Popen[bytes]:
        """The running child; RuntimeError if it was never started."""
        if self.proc is None:
            raise RuntimeError(f"{self.name} was not started")
        return self.proc

    @property
    def pid(self) -> int:
        return self.started.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        self.started.send_signal(signal.SIGKILL)
        self.started.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill9()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def children(pid: int) -> list[int]:
    """The processes ``pid`` started (Linux /proc), such as the workers it forked."""
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def socket_owners(pids: list[int]) -> dict[int, int]:
    """The process holding each socket inode, among ``pids``."""
    owners = {}
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = fd.readlink().name
            except OSError:  # closed meanwhile
                continue
            if target.startswith("socket:["):
                owners[int(target[8:-1])] = pid
    return owners


def tcp_sockets(local_port: int) -> list[tuple[int, int, int]]:
    """(remote port, state, inode) of each IPv4 TCP socket on ``local_port``."""
    found = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state, inode = fields[1], fields[2], fields[3], int(fields[9])
        if int(local.split(":")[1], 16) == local_port:
            found.append((int(remote.split(":")[1], 16), int(state, 16), inode))
    return found


LISTEN, ESTABLISHED = 0x0A, 0x01  # TCP states in /proc/net/tcp


async def all_listening(
    service: Process, port: int, workers: int, timeout_s: float = 60.0
) -> list[int]:
    """The service's workers, once ``workers`` of them each hold a listening socket on
    ``port``: a worker binds only when its catalogue is in, and the kernel spreads new
    connections only over the sockets bound by then."""
    deadline = time.monotonic() + timeout_s
    while True:
        pids = children(service.pid)
        listening = [inode for _, state, inode in tcp_sockets(port) if state == LISTEN]
        owners = socket_owners(pids)
        if len(pids) == workers and {owners.get(inode) for inode in listening} >= set(pids):
            return pids
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(pids)} workers, not all listening: {service.log()[-2000:]}")
        await asyncio.sleep(0.1)


def rss_kib(pid: int) -> int:
    """The resident set size of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


class RedisServer(Process):
    """A redis-server of the test's own on a loopback port, so the test may kill it.

    ``durable``: as the README's Redis runs, an append-only file fsynced once a second
    (``appendfsync everysec``), in the server's own directory; a restart on the same port
    then comes back with every write but, in theory, those of the last second before a
    kill. Otherwise nothing is persisted (``--appendonly no --save ""``), for the
    comparison in the README's "Durability".
    """

    def __init__(
        self,
        logs: Path,
        *,
        durable: bool = True,
        name: str = "redis",
        port: int | None = None,
        replica_of: int | None = None,
    ) -> None:
        """``port``: a free one unless given; ``replica_of``: the port of a primary on
        loopback this server replicates."""
        self.port = free_port() if port is None else port
        self.dir = logs / f"{name}-data"
        self.dir.mkdir(parents=True, exist_ok=True)
        binary = shutil.which("redis-server") or "redis-server"
        aof = ["--appendonly", "no"]
        if durable:
            aof = ["--appendonly", "yes", "--appendfsync", "everysec"]
        argv = [
            binary,
            *("--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)),
            *("--save", "", *aof),
        ]
        if replica_of is not None:
            argv += ["--replicaof", "127.0.0.1", str(replica_of)]
        super().__init__(name, argv, {}, logs)

    def pause(self) -> None:
        """SIGSTOP: the server hangs, its connections open and unanswered."""
        self.started.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.started.send_signal(signal.SIGCONT)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=5)

    def wait_ready(self, timeout_s: float = 20.0) -> None:
        """Until the server answers PING (after loading its append-only file)."""
        deadline = time.monotonic() + timeout_s
        with self.client() as client:
            while True:
                with contextlib.suppress(redis.exceptions.RedisError, OSError):
                    if client.ping():
                        return
                if time.monotonic() > deadline:
                    raise AssertionError(f"redis-server did not answer within {timeout_s} s")
                time.sleep(0.05)


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
        "GEOFENCE_ADMIN_KEYS": "sys-admin-key-0001",
        "GEOFENCE_SDK_KEYS": "sys-sdk-key-000001",
        "GEOFENCE_INGEST_KEYS": "sys-ingest-key-0001",
        "GEOFENCE_ID_SECRET": "sys-id-secret",
        "GEOFENCE_STORES": "stores.geojson",
        "GEOFENCE_QUIET_HOURS": "off",
        "GEOFENCE_LOG_LEVEL": "INFO",
        # these register hundreds of devices from one address with the sdk key; the
        # per-address limit on strangers is tested in tests/security
        "GEOFENCE_STRANGER_RATE_PER_S": "0",
    }
    return {**base, **{f"GEOFENCE_{k.upper()}": str(v) for k, v in extra.items()}}
