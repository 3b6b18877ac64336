"""The benchmarks' reports: wrk's output read back, the walk script filled in, and the
rounds summed up as medians and ranges of per-round ratios."""

from __future__ import annotations

import re
from string import Template

import pytest

from benchmarks import batch, http, machine

WRK_OUT = """Running 10s test @ http://127.0.0.1:1234/v1/pings
  1 threads and 50 connections
  Latency Distribution
     50%    8.43ms
     75%   10.01ms
     90%   12.00ms
     99%   13.87ms
  57694 requests in 10.00s, 20.00MB read
  Non-2xx or 3xx responses: 3
Requests/sec:   5769.40
Transfer/sec:      2.00MB
accepted: 57000
sent: 60050
exhausted: 0
entries: 120
exits: 80
notifications: 101
"""


def test_wrk_output_is_read_with_what_the_walk_script_counted() -> None:
    got = http.parse_wrk(WRK_OUT)
    assert got["requests"] == 57694
    assert got["rps"] == pytest.approx(5769.40)
    assert got["p50_ms"] == pytest.approx(8.43)
    assert got["p99_ms"] == pytest.approx(13.87)
    assert got["non_2xx"] == 3
    assert (got["accepted"], got["sent"], got["exhausted"]) == (57000, 60050, 0)
    assert (got["entries"], got["exits"], got["notifications"]) == (120, 80, 101)


def test_without_the_walk_script_its_counts_are_missing() -> None:
    plain = WRK_OUT.split("accepted:", maxsplit=1)[0]
    got = http.parse_wrk(plain)
    assert got["accepted"] == got["entries"] == -1


def test_the_walk_script_is_filled_in_whole() -> None:
    text = Template(http.WALK_TEMPLATE.read_text()).substitute(data="/x/walks.tsv", start=42)
    assert 'io.lines("/x/walks.tsv")' in text
    assert "= 42, 0, 0, 0, 0, 0" in text
    assert re.search(r"\$\w", text) is None  # no placeholder left
    assert '(.*)$")' in text  # the pattern's own anchor, once escaped


def load(**kw: float) -> dict[str, float]:
    base = {"loader_cpu_s": 1.0, "harness_cpu_s": 0.1, "others_cpu_s": 0.5}
    return {**base, "machine_busy": 0.5, "loadavg": 1.0, **kw}


def ping_run(rps: float, p99: float) -> dict[str, float]:
    return {
        "rps": rps,
        "p50_ms": p99 / 2,
        "p99_ms": p99,
        "service_us": 1e6 / rps,
        "redis_us": 10.0,
        "events_per_s": 5.0,
        "notifications_per_s": 2.0,
        **load(),
    }


def test_single_pings_are_summed_up_by_their_ratio_to_each_rounds_ceiling() -> None:
    rounds = [
        {"pings": ping_run(3_000, 9.0), "ceiling": ping_run(10_000, 5.0)},
        {"pings": ping_run(2_000, 12.0), "ceiling": ping_run(4_000, 6.0)},
        {"pings": ping_run(6_000, 8.0), "ceiling": ping_run(7_500, 4.0)},
    ]
    got = http.summarize(rounds)
    # each round's own ratio: 0.3, 0.5, 0.8 (not the ratio of the medians, 3000 / 7500)
    assert got["of_ceiling"] == pytest.approx({"median": 0.5, "min": 0.3, "max": 0.8})
    assert got["rps"]["median"] == 3_000
    assert got["p99_ms"] == {"median": 9.0, "min": 8.0, "max": 12.0}
    assert "of the rounds" in http.summary_line(got)


def test_without_a_ceiling_there_is_no_ratio() -> None:
    got = http.summarize([{"pings": ping_run(3_000, 9.0), "ceiling": None}])
    assert "of_ceiling" not in got
    assert "ceiling" not in http.summary_line(got)


def test_batch_rounds_compare_wall_clock_rates_round_by_round() -> None:
    def service(per_s: float) -> dict[str, float]:
        return {"pings_per_s": per_s, "service_us": 20.0, "redis_us": 3.0, "loader_us": 9.0}

    def pg(per_s: float) -> dict[str, float]:
        return {"points_per_s": per_s, "backend_us": 14.0, "client_us": 1.0}

    rounds = [
        {"service": {**service(20_000), **load()}, "postgis": {**pg(40_000), **load()}},
        {"postgis": {**pg(30_000), **load()}, "service": {**service(30_000), **load()}},
    ]
    got = batch.summarize(rounds)
    assert got["ratio"] == pytest.approx({"median": 0.75, "min": 0.5, "max": 1.0})
    assert got["backend_us"]["median"] == 14.0
    report = {"rounds": rounds, "summary": got, "version": "PostGIS 3"}
    assert batch.table(report).count("\n") == 1 + 2 * len(rounds)
    assert "0.75 (0.50 to 1.00)×" in batch.summary(report)


def test_the_machine_load_is_what_the_measured_processes_leave() -> None:
    before = machine.snapshot()
    sum(i * i for i in range(200_000))  # some CPU of this process
    got = machine.since(before, measured_s=0.0)
    assert got.wall_s > 0
    assert got.harness_s > 0
    assert got.others_s >= 0
    assert got.busy_s >= got.harness_s - 0.02  # the cores' busy time holds ours
    assert "load average" in machine.describe(got.as_dict())
