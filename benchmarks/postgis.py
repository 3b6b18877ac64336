"""PostGIS answering "which fences cover this point", against FenceIndex and a shapely STRtree.

    python -m benchmarks.postgis [--fences 10000] [--points 200000]

A throwaway PostgreSQL cluster is made for the run (initdb into a temporary directory,
a free loopback port, its unix socket beside the data, fsync off) and removed afterwards.
The fences go into a table with a GiST index; points are asked with ``ST_Covers`` one
prepared query per point, and in batches: one query joins ``unnest`` of two float8 arrays
against the table. Without psycopg, the PostgreSQL server binaries or the PostGIS
extension the benchmark is skipped with one line.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from benchmarks import machine
from benchmarks.index import points, strtree_lookup, strtree_query, tiles, timed
from geofence.domain.model import Fence
from geofence.engine.index import FenceIndex

if TYPE_CHECKING:
    from psycopg import Connection

FloatArray = npt.NDArray[np.float64]

PG_ROOTS = Path("/usr/lib/postgresql")
SERVER_TOOLS = ("initdb", "pg_ctl", "postgres")
OWNER = "postgres"  # initdb refuses to run as root
# a unix socket path must fit in 107 bytes, and /tmp is one the postgres user can traverse
SHORT_TMP = "/tmp"  # noqa: S108 - a socket path must be short; the directory in it is private
SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    # one backend answers each query, as one Python process runs FenceIndex
    "max_parallel_workers_per_gather": "0",
    # ST_Covers' cost estimate takes a batch past jit_above_cost, and compiling it then
    # takes ~0.2 s, longer than answering its 10,000 points
    "jit": "off",
}
MAX_DIFFERING = 1e-4  # share of points allowed to differ from FenceIndex

SINGLE = "SELECT id FROM fence WHERE ST_Covers(geom, ST_SetSRID(ST_MakePoint(%s, %s), 4326))"
BATCH = """
SELECT p.i, f.id
FROM unnest(%b::float8[], %b::float8[]) WITH ORDINALITY AS p(lng, lat, i)
JOIN fence AS f ON ST_Covers(f.geom, ST_SetSRID(ST_MakePoint(p.lng, p.lat), 4326))
"""


class Unavailable(Exception):
    """PostGIS cannot be run here; the message says why in one line."""


@dataclass(frozen=True)
class Server:
    bin_dir: Path
    as_owner: tuple[str, ...]  # the command prefix that runs a tool as the cluster's owner


def measure(
    fences: list[Fence],
    lats: FloatArray,
    lngs: FloatArray,
    *,
    single: int = 5000,
    batch: int = 10_000,
) -> dict[str, Any] | None:
    """PostGIS's points/s, one query per point and batched, and its answer for every point
    (sorted fence ids, from the batched run); None, after one line on stderr, when it
    cannot run here. Only the queries are timed; ``load_s`` is the table and index load."""
    try:
        server = find_server()
        with cluster(server) as conninfo, connect(conninfo) as conn:
            load_s = load(conn, fences)
            single_per_s = single_rate(conn, lats[:single], lngs[:single])
            answers, batch_s = timed(batched_answers, conn, lats, lngs, batch)
            version = short_version(conn)
    except Unavailable as e:
        print(f"postgis: skipped: {e}", file=sys.stderr)
        return None
    return {
        "version": version,
        "single_per_s": single_per_s,
        "batch_per_s": len(lats) / batch_s,
        "answers": answers,
        "load_s": load_s,
    }


def find_server() -> Server:
    if importlib.util.find_spec("psycopg") is None:
        raise Unavailable("psycopg is not installed (pip install -e '.[bench]')")
    bin_dir = server_bin_dir()
    if bin_dir is None:
        raise Unavailable(f"no PostgreSQL server binaries ({', '.join(SERVER_TOOLS)})")
    extension = share_dir(bin_dir) / "extension" / "postgis.control"
    if not extension.is_file():
        raise Unavailable(f"the PostGIS extension is not installed ({extension} is missing)")
    return Server(bin_dir, owner_prefix())


def server_bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/N/bin holding the server tools, else those on PATH."""
    versions = PG_ROOTS.glob("*/bin") if PG_ROOTS.is_dir() else iter(())
    ordered = sorted(versions, key=lambda p: [int(n) for n in re.findall(r"\d+", p.parent.name)])
    on_path = shutil.which("initdb")
    candidates = [*reversed(ordered), *([Path(on_path).parent] if on_path else [])]
    return next((d for d in candidates if all((d / t).is_file() for t in SERVER_TOOLS)), None)


def share_dir(bin_dir: Path) -> Path:
    try:
        out = subprocess.run(
            [bin_dir / "pg_config", "--sharedir"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError) as e:
        raise Unavailable(f"cannot ask {bin_dir / 'pg_config'} where extensions live: {e}") from e
    return Path(out.stdout.strip())


def owner_prefix() -> tuple[str, ...]:
    if os.geteuid() != 0:
        return ()
    try:
        pwd.getpwnam(OWNER)
    except KeyError:
        raise Unavailable(
            f"running as root and there is no {OWNER!r} user to own a cluster"
        ) from None
    runuser = shutil.which("runuser")
    if runuser is None:
        raise Unavailable("running as root and runuser is missing")
    return (runuser, "-u", OWNER, "--")


@contextmanager
def cluster(server: Server) -> Iterator[str]:
    """A fresh cluster for the duration of the block; yields its conninfo. Stopped and
    removed afterwards, also when the block fails."""
    root = Path(tempfile.mkdtemp(prefix="geofence-pg-", dir=SHORT_TMP))
    data = root / "data"
    try:
        if server.as_owner:
            owner = pwd.getpwnam(OWNER)
            os.chown(root, owner.pw_uid, owner.pw_gid)
        port = free_port()
        start(server, root, port)
        yield f"host={root} port={port} user=postgres dbname=postgres"
    finally:
        if (data / "postmaster.pid").exists():
            pg_tool(server, root, "pg_ctl", "stop", "-D", data, "-m", "immediate", "-w")
        shutil.rmtree(root, ignore_errors=True)


def start(server: Server, root: Path, port: int) -> None:
    data, log = root / "data", root / "server.log"
    init = ("initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")
    if pg_tool(server, root, *init, "--locale=C") != 0:
        raise RuntimeError(f"initdb failed in {data}")
    settings = {**SETTINGS, "port": str(port), "unix_socket_directories": f"'{root}'"}
    with (data / "postgresql.conf").open("a") as conf:
        conf.writelines(f"{k} = {v}\n" for k, v in settings.items())
    if pg_tool(server, root, "pg_ctl", "start", "-D", data, "-l", log, "-w", "-t", "60") != 0:
        tail = log.read_text().splitlines()[-5:] if log.exists() else []
        raise RuntimeError("PostgreSQL did not start: " + " | ".join(tail))


def pg_tool(server: Server, root: Path, tool: str, *args: str | Path) -> int:
    """Runs one server tool as the cluster's owner, in a directory that owner can enter."""
    command = [*server.as_owner, str(server.bin_dir / tool), *map(str, args)]
    done = subprocess.run(
        command, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False
    )
    if done.returncode != 0:
        print(done.stderr.decode(errors="replace").strip(), file=sys.stderr)
    return done.returncode


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def connect(conninfo: str) -> Iterator[Connection[Any]]:
    import psycopg  # noqa: PLC0415 - the bench extra; checked by find_server

    with psycopg.connect(conninfo, autocommit=True) as conn:
        try:
            conn.execute("CREATE EXTENSION postgis")
        except psycopg.Error as e:
            raise Unavailable(f"CREATE EXTENSION postgis failed: {e}".splitlines()[0]) from e
        yield conn


def load(conn: Connection[Any], fences: list[Fence]) -> float:
    """The fences in a GiST-indexed table, from their GeoJSON; returns the seconds taken."""
    start = time.perf_counter()
    conn.execute("CREATE TEMP TABLE raw (id text, geojson text)")
    with conn.cursor().copy("COPY raw (id, geojson) FROM STDIN") as copy:
        for fence in fences:
            copy.write_row((fence.id, json.dumps(fence.geometry)))
    conn.execute("CREATE TABLE fence (id text PRIMARY KEY, geom geometry(Geometry, 4326))")
    conn.execute(
        "INSERT INTO fence SELECT id, ST_SetSRID(ST_GeomFromGeoJSON(geojson), 4326) FROM raw"
    )
    conn.execute("CREATE INDEX fence_geom ON fence USING gist (geom)")
    conn.execute("ANALYZE fence")
    return time.perf_counter() - start


def single_rate(conn: Connection[Any], lats: FloatArray, lngs: FloatArray) -> float:
    """Points/s asking one point per query, the statement prepared before the clock starts."""
    pairs = list(zip(lngs.tolist(), lats.tolist(), strict=True))
    with conn.cursor() as cur:
        for pair in pairs[:1]:
            cur.execute(SINGLE, pair, prepare=True).fetchall()
        start = time.perf_counter()
        for pair in pairs:
            cur.execute(SINGLE, pair, prepare=True).fetchall()
        return len(pairs) / (time.perf_counter() - start)


def batched_answers(
    conn: Connection[Any], lats: FloatArray, lngs: FloatArray, batch: int
) -> list[list[str]]:
    found: list[list[str]] = [[] for _ in range(len(lats))]
    with conn.cursor() as cur:
        for first in range(0, len(lats), batch):
            part = slice(first, first + batch)
            cur.execute(BATCH, (lngs[part].tolist(), lats[part].tolist()))
            for i, fence_id in cur.fetchall():
                found[first + i - 1].append(fence_id)  # ordinality counts from 1
    return [sorted(ids) for ids in found]


@dataclass(frozen=True)
class PoolRun:
    """Batched lookups over a pool of connections, one thread each, for a set time."""

    points: int
    wall_s: float
    backend_cpu_s: float  # every backend of the pool, from /proc
    client_cpu_s: float  # this process (the client threads) meanwhile
    load: machine.Load

    def as_dict(self) -> dict[str, Any]:
        return {
            "points": self.points,
            "wall_s": self.wall_s,
            "points_per_s": self.points / self.wall_s,
            "backend_us": self.backend_cpu_s / self.points * 1e6,
            "client_us": self.client_cpu_s / self.points * 1e6,
            **self.load.as_dict(),
        }


def pool_run(
    conninfo: str,
    lats: FloatArray,
    lngs: FloatArray,
    *,
    connections: int,
    batch: int,
    duration_s: float,
    backend_cores: str | None = None,
) -> PoolRun:
    """``batch`` points a query (the points in turn, from the first again when all were
    asked) on ``connections`` connections at once, each from a thread of its own, until
    ``duration_s`` has passed; each backend pinned to ``backend_cores`` if given. Only the
    queries are timed: the connections are made and their backends known before."""
    import psycopg  # noqa: PLC0415 - the bench extra; checked by find_server

    parts = [slice(a, a + batch) for a in range(0, max(len(lats) - batch, 0) + 1, batch)]
    args = [(lngs[p].tolist(), lats[p].tolist()) for p in parts]
    conns = [psycopg.connect(conninfo, autocommit=True) for _ in range(connections)]
    try:
        pids = []
        for conn in conns:
            row = conn.execute("SELECT pg_backend_pid()").fetchone()
            pids.append(int(row[0]) if row else 0)
            conn.execute(BATCH, args[0]).fetchall()  # planned and cached before the clock
        if backend_cores is not None:
            for pid in pids:
                machine.pin(pid, backend_cores)
        return _timed_pool(conns, pids, args, duration_s)
    finally:
        for conn in conns:
            conn.close()


def _timed_pool(
    conns: list[Connection[Any]],
    pids: list[int],
    args: list[tuple[list[float], list[float]]],
    duration_s: float,
) -> PoolRun:
    turn = itertools.count()
    done = [0] * len(conns)

    def ask(n: int, conn: Connection[Any], deadline: float) -> None:
        with conn.cursor() as cur:
            while time.perf_counter() < deadline:
                lng, lat = args[next(turn) % len(args)]
                cur.execute(BATCH, (lng, lat)).fetchall()
                done[n] += len(lng)

    backends = sum(machine.process_cpu_s(pid) for pid in pids)
    snapshot = machine.snapshot()
    deadline = snapshot.at + duration_s
    threads = [
        threading.Thread(target=ask, args=(n, conn, deadline)) for n, conn in enumerate(conns)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    backend_s = sum(machine.process_cpu_s(pid) for pid in pids) - backends
    load = machine.since(snapshot, backend_s)
    return PoolRun(sum(done), load.wall_s, backend_s, load.harness_s, load)


def short_version(conn: Connection[Any]) -> str:
    """E.g. "PostGIS 3.3.2, GEOS 3.11.1, PostgreSQL 15.8"."""
    row = conn.execute("SELECT postgis_full_version(), current_setting('server_version')")
    full, server = row.fetchone() or ("", "")
    parts = dict(re.findall(r'(\w+)="([^"]*)"', full))
    postgis = parts.get("POSTGIS", "?").split()[0]
    geos = parts.get("GEOS", "?").split("-")[0]
    return f"PostGIS {postgis}, GEOS {geos}, PostgreSQL {server.split()[0]}"


def compare(n_fences: int, n_points: int, seed: int = 1) -> dict[str, Any] | None:
    """PostGIS, FenceIndex.inside_many and STRtree on the same fences and points."""
    fences = tiles(n_fences, seed)
    lats, lngs = points(fences, n_points, seed + 1)
    pg = measure(fences, lats, lngs)
    if pg is None:
        return None
    index, build_s = timed(FenceIndex.build, fences)
    ours, ours_s = timed(index.inside_many, lats, lngs)
    _, tree_s = timed(strtree_query(fences, lats, lngs))
    tree = strtree_lookup(fences)(lats, lngs)  # the answers, outside the timing
    return {
        **pg,
        "fences": n_fences,
        "points": n_points,
        "build_s": build_s,
        "inside_many_per_s": n_points / ours_s,
        "strtree_per_s": n_points / tree_s,
        "differ_index": sum(a != b for a, b in zip(pg["answers"], ours, strict=True)),
        "differ_strtree": sum(a != b for a, b in zip(pg["answers"], tree, strict=True)),
    }


def table(r: dict[str, Any]) -> str:
    rows = [
        ("PostGIS ST_Covers, one prepared query per point", r["single_per_s"]),
        ("PostGIS ST_Covers, unnest batches", r["batch_per_s"]),
        ("FenceIndex.inside_many, batch", r["inside_many_per_s"]),
        ("STRtree.query(points, predicate='intersects'), index pairs", r["strtree_per_s"]),
    ]
    lines = ["| lookup | points/s | vs inside_many |", "|---|---:|---:|"]
    for name, pps in rows:
        lines.append(f"| {name} | {pps:,.0f} | {pps / r['inside_many_per_s']:.3f}× |")
    return "\n".join(lines)


def summary(r: dict[str, Any]) -> str:
    return (
        f"{r['version']}; {r['fences']:,} fences, {r['points']:,} points.\n"
        f"Load into PostGIS (COPY, ST_GeomFromGeoJSON, GiST, ANALYZE): {r['load_s']:.2f} s; "
        f"FenceIndex.build: {r['build_s']:.2f} s.\n"
        f"Points whose answers differ: {r['differ_index']} from FenceIndex, "
        f"{r['differ_strtree']} from STRtree."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fences", type=int, default=10_000)
    parser.add_argument("--points", type=int, default=200_000)
    args = parser.parse_args()
    result = compare(args.fences, args.points)
    if result is None:
        return
    print(table(result))
    print(summary(result))
    if result["differ_index"] >= MAX_DIFFERING * result["points"]:
        raise SystemExit(f"too many points differ from FenceIndex (limit {MAX_DIFFERING:.2%})")


if __name__ == "__main__":
    main()
