"""The benchmarks' harnesses, briefly: the HTTP one on a small town, the catalogue load
on a few hundred fences. Every part runs and its report has the shape the benchmark's
pages are made from. No rate is asserted."""

from __future__ import annotations

import shutil
from typing import Any

import pytest

from benchmarks import catalogue_load, http, run, workload
from tests.conftest import REDIS_URL


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    town = workload.make(fences=300, devices=30, duration_s=300.0)
    return http.measure(town, duration_s=1.0, reps=1, workers=0)


def test_the_batch_run_answers_every_ping_and_says_what_it_cost(report: dict[str, Any]) -> None:
    b = report["batch"]
    assert b["pings"] > 0
    assert sum(b["results"].values()) == b["pings"]
    assert b["service_us"] > 0
    assert b["pings_per_s"] > 0
    assert {"others_cpu_s", "loadavg", "machine_busy"} <= set(b)


def test_the_walks_are_sent_and_answered(report: dict[str, Any]) -> None:
    [single] = report["rounds"]
    for run_ in (report["warm_up"], single["pings"]):
        assert run_["requests"] > 0
        assert run_["non_2xx"] + run_["socket_errors"] == 0
        assert run_["accepted"] > 0
        assert run_["exhausted"] == 0  # the walks were long enough
        assert {"service_us", "redis_us", "events_per_s", "notifications_per_s"} <= set(run_)
    assert report["walk_pings"] >= 2


def test_the_ceiling_takes_turns_with_the_pings(report: dict[str, Any]) -> None:
    [single] = report["rounds"]
    if shutil.which("wrk"):
        assert single["ceiling"]["requests"] > 0
        assert list(single) == ["pings", "ceiling"]
        assert report["summary"]["of_ceiling"]["median"] > 0
    else:
        assert single["ceiling"] is None
        assert "of_ceiling" not in report["summary"]


def test_the_report_renders_with_each_run_and_the_goals(report: dict[str, Any]) -> None:
    text = run.http_section(report)
    assert text.startswith("## The service over HTTP\n")
    assert "| warm-up | POST /v1/pings |" in text
    assert "median of the rounds" in text
    assert "RSS after the runs" in text
    rows = run.targets({"http": report})
    assert [what.split(" (")[0] for what, *_ in rows] == [
        "single pings",
        "… their p99 at 50 connections, median",
    ]


@pytest.mark.redis
def test_the_catalogue_is_loaded_as_serve_does_beside_the_table_build() -> None:
    r = catalogue_load.measure(REDIS_URL, 300)
    assert r["serve"]["fences"] == r["table"]["fences"] == 300
    assert r["serve"]["peak_mb"] > 0
    assert r["table"]["peak_mb"] > 0
    assert catalogue_load.row(r).startswith("| 300 | ")
