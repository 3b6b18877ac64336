"""A Redis Cluster of the caller's own on loopback: primaries, their replicas, AOF on.

Nodes take consecutive ports from ``base_port`` (primaries first, then the replicas, the
i-th replica following primary ``i % primaries``), so a test that kills nodes can run
beside another cluster on ports of its own. The slots are split evenly over the
primaries with ``CLUSTER ADDSLOTSRANGE`` and the replicas attached with ``CLUSTER
REPLICATE`` (so one primary alone is a cluster too, which ``redis-cli --cluster create``
refuses). ``node_timeout_ms`` is ``cluster-node-timeout``: a primary unreachable this
long is failed over to its replica (Redis's default is 15 s; 2 s here, for tests).
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import redis

from tools.processes import Process

SLOTS = 16_384
BUS_OFFSET = 10_000  # a node's cluster bus listens this far above its port
T = TypeVar("T")


def free_base(count: int, start: int = 40_000, stop: int = 40_990) -> int:
    """The first port from ``start`` where ``count`` consecutive ports, and their cluster
    bus ports (10000 above), are free on loopback."""
    for base in range(start, stop - count):
        ports = [p for n in range(base, base + count) for p in (n, n + BUS_OFFSET)]
        if all(map(_free, ports)):
            return base
    raise AssertionError(f"no {count} free consecutive ports in {start}-{stop}")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class ClusterNode(Process):
    def __init__(self, logs: Path, port: int, *, durable: bool, node_timeout_ms: int) -> None:
        self.port = port
        self.dir = logs / f"node-{port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        persistence = ["--appendonly", "yes", "--appendfsync", "everysec"]
        if not durable:
            persistence = ["--appendonly", "no"]
        argv = [
            shutil.which("redis-server") or "redis-server",
            *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(self.dir)),
            *("--save", "", *persistence),
            *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
            *("--cluster-node-timeout", str(node_timeout_ms)),
        ]
        super().__init__(f"redis-{port}", argv, {}, logs)

    def pause(self) -> None:
        """SIGSTOP: the node hangs, its connections open and unanswered."""
        self.started.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.started.send_signal(signal.SIGCONT)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5, socket_connect_timeout=5)

    def info(self, section: str) -> dict[str, object]:
        with self.client() as client:
            return dict(client.info(section))

    def node_id(self) -> str:
        with self.client() as client:
            return str(client.execute_command("CLUSTER", "MYID").decode())

    def role(self) -> str:
        return str(self.info("replication")["role"])

    def cluster_ok(self) -> bool:
        with contextlib.suppress(redis.RedisError, OSError), self.client() as client:
            info = client.execute_command("CLUSTER", "INFO")
            text = info.decode() if isinstance(info, bytes) else str(info)
            return "cluster_state:ok" in text
        return False


class RedisCluster:
    def __init__(
        self,
        logs: Path,
        *,
        base_port: int,
        primaries: int = 3,
        replicas: int = 1,
        durable: bool = True,
        node_timeout_ms: int = 2000,
    ) -> None:
        """``replicas``: per primary."""
        count = primaries * (1 + replicas)
        self.primaries = primaries
        self.nodes = [
            ClusterNode(logs, base_port + i, durable=durable, node_timeout_ms=node_timeout_ms)
            for i in range(count)
        ]

    @property
    def url(self) -> str:
        """The service's ``GEOFENCE_REDIS_URL``: one node to start from, the rest found."""
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    @property
    def ports(self) -> list[int]:
        return [n.port for n in self.nodes]

    def start(self, timeout_s: float = 60.0) -> None:
        for node in self.nodes:
            node.start()
        deadline = time.monotonic() + timeout_s
        for node in self.nodes:
            _until(functools.partial(_pings, node), deadline, f"{node.name} did not start")
        ids = [n.node_id() for n in self.nodes]
        with self.nodes[0].client() as first:
            for node in self.nodes[1:]:
                first.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port)
        for i, node in enumerate(self.nodes[: self.primaries]):
            low, high = _slot_range(i, self.primaries)
            with node.client() as client:
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", low, high)
        for node in self.nodes:
            meets = functools.partial(_knows, node, ids)
            _until(meets, deadline, f"{node.name}: no MEET")
        for i, node in enumerate(self.nodes[self.primaries :]):
            with node.client() as client:
                client.execute_command("CLUSTER", "REPLICATE", ids[i % self.primaries])
        for node in self.nodes:
            _until(node.cluster_ok, deadline, f"{node.name}: cluster_state not ok")
        for node in self.nodes[self.primaries :]:
            _until(functools.partial(_synced, node), deadline, f"{node.name}: not in sync")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def primary_nodes(self) -> list[ClusterNode]:
        """The nodes that are primaries now (after a failover, a former replica)."""
        return [n for n in self.nodes if n.alive() and _quiet(n.role) == "master"]

    def replica_of(self, primary: ClusterNode) -> ClusterNode:
        primary_id = primary.node_id()
        with primary.client() as client:
            lines = client.execute_command("CLUSTER", "NODES").decode().splitlines()
        ports = [int(f.split()[1].split(":")[1].split("@")[0]) for f in lines if primary_id in f]
        return next(n for n in self.nodes if n.port in ports and n is not primary)

    def wait_promoted(self, replica: ClusterNode, timeout_s: float = 60.0) -> float:
        """Seconds until ``replica`` is a primary and the cluster (seen from it) is ok."""
        started = time.monotonic()
        _until(
            lambda: _quiet(replica.role) == "master" and replica.cluster_ok(),
            started + timeout_s,
            f"{replica.name} was not promoted",
        )
        return time.monotonic() - started

    def wait_synced(self, node: ClusterNode, timeout_s: float = 60.0) -> None:
        """Until ``node`` (started again after a kill) is a replica in sync."""
        deadline = time.monotonic() + timeout_s
        _until(functools.partial(_pings, node), deadline, f"{node.name} did not start")
        synced = functools.partial(_quiet, functools.partial(_synced, node))
        _until(lambda: synced() is True, deadline, f"{node.name}: not in sync")


@contextlib.contextmanager
def running_redis_cluster(logs: Path, **options: int | bool) -> Iterator[RedisCluster]:
    cluster = RedisCluster(logs, **options)  # type: ignore[arg-type]
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def _slot_range(i: int, primaries: int) -> tuple[int, int]:
    return i * SLOTS // primaries, (i + 1) * SLOTS // primaries - 1


def _until(check: Callable[[], bool], deadline: float, failure: str) -> None:
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(failure)
        time.sleep(0.05)


def _quiet(read: Callable[[], T]) -> T | None:
    """``read()``, or None when the node does not answer."""
    with contextlib.suppress(redis.RedisError, OSError):
        return read()
    return None


def _pings(node: ClusterNode) -> bool:
    with contextlib.suppress(redis.RedisError, OSError), node.client() as client:
        return bool(client.ping())
    return False


def _knows(node: ClusterNode, ids: list[str]) -> bool:
    """Whether ``node`` knows every one of ``ids`` (past the handshake)."""
    with node.client() as client:
        lines = client.execute_command("CLUSTER", "NODES").decode().splitlines()
    known = {line.split()[0] for line in lines if "handshake" not in line.split()[2]}
    return known >= set(ids)


def _synced(node: ClusterNode) -> bool:
    return node.info("replication").get("master_link_status") == "up"
