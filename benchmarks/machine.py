"""What else the machine did during a measurement: its load average and the CPU time of
the processes that were not part of it (Linux /proc).

Every core's busy time over a run, less the CPU time of the processes the benchmark
accounts for (the service, Redis or PostGIS, the load generator, the harness itself),
is what other work took from the same cores meanwhile.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Snapshot:
    at: float  # time.perf_counter()
    busy_s: float  # every core's busy time since boot
    harness_s: float  # this process's CPU time
    waited_s: float  # CPU time of the children this process has waited for (the loaders)


def busy_s() -> float:
    """Busy time of all cores together since boot (the first line of /proc/stat)."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) * TICK_S  # all but idle and iowait


def snapshot() -> Snapshot:
    own = resource.getrusage(resource.RUSAGE_SELF)
    waited = resource.getrusage(resource.RUSAGE_CHILDREN)
    return Snapshot(
        at=time.perf_counter(),
        busy_s=busy_s(),
        harness_s=own.ru_utime + own.ru_stime,
        waited_s=waited.ru_utime + waited.ru_stime,
    )


def loadavg() -> float:
    """The 1-minute load average."""
    return float(Path("/proc/loadavg").read_text().split()[0])


@dataclass(frozen=True)
class Load:
    """The machine over one run: how busy its cores were, with what."""

    wall_s: float
    busy_s: float  # every core
    loader_s: float  # the load generators this process ran and waited for
    harness_s: float
    others_s: float  # what is left once the measured processes are taken out
    loadavg: float  # 1-minute, at the end of the run

    def as_dict(self) -> dict[str, float]:
        return {
            "loader_cpu_s": self.loader_s,
            "harness_cpu_s": self.harness_s,
            "others_cpu_s": self.others_s,
            "machine_busy": self.busy_s / self.wall_s / (os.cpu_count() or 1),
            "loadavg": self.loadavg,
        }


def since(before: Snapshot, measured_s: float) -> Load:
    """The machine's load since ``before``; ``measured_s``: the CPU time of the measured
    servers (read from /proc or INFO by the caller) over the same span."""
    after = snapshot()
    busy = after.busy_s - before.busy_s
    loader = after.waited_s - before.waited_s
    harness = after.harness_s - before.harness_s
    return Load(
        wall_s=after.at - before.at,
        busy_s=busy,
        loader_s=loader,
        harness_s=harness,
        others_s=max(0.0, busy - measured_s - loader - harness),
        loadavg=loadavg(),
    )


def describe(load: dict[str, float]) -> str:
    """One phrase for a report: load average, and the CPU seconds others took."""
    return (
        f"machine busy {load['machine_busy']:.0%}, load average {load['loadavg']:.1f}, "
        f"other processes {load['others_cpu_s']:.1f} CPU s"
    )


def process_cpu_s(pid: int) -> float:
    """utime + stime of one process so far (/proc/<pid>/stat, Linux)."""
    after_name = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(after_name[11]) + int(after_name[12])) * TICK_S  # fields 14 and 15


def pin(pid: int, cores: str) -> None:
    """Runs ``pid`` (0: this process) on ``cores``, a comma list of core numbers."""
    os.sched_setaffinity(pid, {int(c) for c in cores.split(",")})


def cores_of(pid: int) -> str:
    return ",".join(str(c) for c in sorted(os.sched_getaffinity(pid)))
