"""The CPU of a lone single ping of a walking device, in process, against another checkout.

    python -m benchmarks.walking [--against DIR] [--reps 5] [--devices 100] [--pings 200]

What the coalescer (``geofence/service/coalescer.py``) does for a ping that arrives alone:
``handle_many`` of that one ping, its device's state given (read in the round trip of the
write before), its write sent with the read of the next ping's device
(``save_then_load``), with Redis state. The pings are those of devices walking real
tracks among the stores (``benchmarks.walks``), one ping of each device in turn, as the
HTTP benchmark's single pings: mostly accepted, devices entering, staying in and leaving
stores. No HTTP, no authorization: the service's own part of a single ping.

Each rep is a process of its own, pinned to one core; the CPU per ping is the median
over chunks of 500 pings (a chunk disturbed by another process on the machine moves it
little). ``--against DIR``: the same reps with the ``geofence`` package of the checkout
DIR (``git worktree add DIR <commit>``, or ``git archive <commit> geofence | tar -x -C
DIR``), rep after rep in turns with this one: each round's ratio, then their median.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks import ingest, workload
from benchmarks import walks as wk
from geofence.domain.devices import DeviceProfile
from geofence.domain.model import Ping
from geofence.ports import StoredState
from geofence.service.pings import PingService

CHUNK = 500  # pings timed together
WARM = 0.25  # the share of the pings run before the timing starts
ROOT = Path(__file__).resolve().parent.parent


class _Ahead:
    """The next ping's device, read in the round trip of this ping's write."""

    def __init__(self, refs: list[str]) -> None:
        self._refs = refs
        self.loaded: list[tuple[DeviceProfile | None, StoredState]] | None = None

    def refs(self) -> Sequence[str]:
        return self._refs

    def read(self, devices: list[tuple[DeviceProfile | None, StoredState]]) -> None:
        self.loaded = devices


async def _lone_pings(service: PingService, pings: list[tuple[str, Ping]], now: float) -> None:
    """Each ping alone, as the coalescer sends a lone one."""
    [(_, first)] = await service.store.load_devices([pings[0][0]])
    stored = first
    for n, (ref, ping) in enumerate(pings):
        ahead = _Ahead([pings[n + 1][0]] if n + 1 < len(pings) else [])
        await service.handle_many([(ref, [ping])], now=now, loaded={ref: stored}, ahead=ahead)
        if ahead.loaded:
            [(_, stored)] = ahead.loaded


async def measure_once(devices: int, pings: int) -> dict[str, float]:
    """µs of CPU per ping: the median, first and third quartiles over chunks."""
    w = workload.make(fences=10_000, devices=devices, duration_s=60.0)
    async with ingest.pipeline(w) as (service, refs):
        now = time.time()
        walks = wk.make(w.fences, devices, pings, now)
        order = [
            (
                refs[d],
                Ping(
                    lat=float(walks.lat[d, k]),
                    lng=float(walks.lng[d, k]),
                    accuracy_m=float(walks.accuracy_m[d, k]),
                    ts=float(walks.ts[d, k]),
                ),
            )
            for k in range(pings)
            for d in range(devices)
        ]
        warm = int(len(order) * WARM)
        await _lone_pings(service, order[:warm], now)
        spent = []
        for start in range(warm, len(order), CHUNK):
            chunk = order[start : start + CHUNK]
            cpu = time.process_time()
            await _lone_pings(service, chunk, now)
            spent.append(1e6 * (time.process_time() - cpu) / len(chunk))
    q1, median, q3 = statistics.quantiles(spent, n=4)
    return {"median": median, "q1": q1, "q3": q3}


def _rep(against: Path | None, args: argparse.Namespace) -> dict[str, float]:
    """One rep in a process of its own, with this checkout's package or ``against``'s."""
    path = [str(against)] if against is not None else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*path, str(ROOT)])}
    command = [sys.executable, "-m", "benchmarks.walking", "--once"]
    command += ["--devices", str(args.devices), "--pings", str(args.pings)]
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True, cwd=ROOT)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", type=Path, help="a checkout whose geofence to compare")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--pings", type=int, default=200, help="per device")
    parser.add_argument("--once", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.once:
        ingest.pin_to_one_core()
        print(json.dumps(asyncio.run(measure_once(args.devices, args.pings))))
        return
    print("| rep | this µs/ping (q1-q3) | against µs/ping (q1-q3) | ratio |")
    print("|---|---|---|---|")
    ratios, these = [], []
    for rep in range(args.reps):
        this = _rep(None, args)
        other = _rep(args.against, args) if args.against is not None else None
        these.append(this["median"])
        cells = f"{this['median']:.1f} ({this['q1']:.0f}-{this['q3']:.0f})"
        if other is None:
            print(f"| {rep + 1} | {cells} | - | - |")
            continue
        ratios.append(this["median"] / other["median"])
        theirs = f"{other['median']:.1f} ({other['q1']:.0f}-{other['q3']:.0f})"
        print(f"| {rep + 1} | {cells} | {theirs} | {ratios[-1]:.3f} |")
    print(f"\nthis: median {statistics.median(these):.1f} µs/ping over {args.reps} reps")
    if ratios:
        print(
            f"this / against: median {statistics.median(ratios):.3f}"
            f" (min {min(ratios):.3f}, max {max(ratios):.3f})"
        )


if __name__ == "__main__":
    main()
