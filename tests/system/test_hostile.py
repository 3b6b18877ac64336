"""Hostile input against a real ``geofence serve`` (contract §2 and §5).

A corpus of bad pings, each answered with the status and problem type the contract
gives, and none of them changing what is stored; schemathesis fuzzing every operation of
the served /openapi.json with the right credential, holding every answer to the document;
and a device flooding the ping route, refused with 429 until its Retry-After has passed.
State is in memory: each process is its own world, gone when it stops.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from yarl import URL

from geofence.domain.times import format_time
from tests.http.test_access_log import SECRETS, UNPARSABLE, raw_answer
from tests.http.test_pings_api import ping_body
from tests.json_logs import log_records
from tools.processes import SERVE, Process, free_port, running, service_env, wait_http

ADMIN, SDK, INGEST = (
    "sys-admin-key-0001",
    "sys-sdk-key-000001",
    "sys-ingest-key-0001",
)  # as service_env sets them
INSIDE = (60.1774, 24.9495)  # Rautamies, osm-way-88777732 in stores.geojson
OUTSIDE = (60.1790, 24.9480)  # about 200 m away
MAX_BODY_BYTES = 1024 * 1024  # the default GEOFENCE_MAX_BODY_BYTES
PROBLEM_JSON = "application/problem+json"


@dataclass
class Service:
    base: str
    process: Process

    def mark(self) -> int:
        return len(self.process.log())

    def assert_no_unexpected_error(self, since: int = 0) -> None:
        """What the client saw is one half; the other is that the service logged no error
        of its own since ``since`` (aiohttp's notes on requests it could not even parse
        are not ours), every line of it one JSON object."""
        records = log_records(self.process.log()[since:])
        ours = [r for r in records if str(r.get("logger")).startswith("geofence")]
        assert not [r for r in ours if r["level"] in ("ERROR", "CRITICAL")], ours[-5:]
        assert not [r for r in ours if r["message"] == "unexpected error"], ours[-5:]


def start(tmp: Path, name: str, **settings: Any) -> Iterator[Service]:
    port = free_port()
    env = service_env(port, redis_url="", **settings)  # "" = unset: state in memory
    process = Process(name, SERVE, env, tmp)
    with running(process):
        process.start()
        asyncio.run(wait_http(f"http://127.0.0.1:{port}/readyz"))
        yield Service(f"http://127.0.0.1:{port}", process)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One service for the corpus and the fuzzing, its rate limits off: they are tested on
    a process of their own below."""
    tmp = tmp_path_factory.mktemp("hostile")
    yield from start(tmp, "serve", device_rate_per_s=0, ingest_rate_per_s=0)


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("limited")
    yield from start(
        tmp,
        "serve-limited",
        device_rate_per_s=1,
        device_burst=3,
        ingest_rate_per_s=1,
        ingest_burst=2,
    )


@dataclass
class Answer:
    status: int
    content_type: str
    headers: dict[str, str]
    body: Any


class Api:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: Any = None,
        data: bytes | None = None,
        content_type: str | None = "application/json",
        chunked: bool = False,
    ) -> Answer:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        if data is None and body is not None:
            data = json.dumps(body).encode()
        if content_type is not None and data is not None:
            headers["Content-Type"] = content_type
        payload: Any = None
        if data is not None:  # a file-like body: aiohttp warns about large bytes
            payload = pieces(data) if chunked else io.BytesIO(data)
        async with self.session.request(
            method, self.base + path, data=payload, headers=headers
        ) as resp:
            raw = await resp.read()
            decoded = json.loads(raw) if raw and resp.content_type.endswith("json") else raw
            return Answer(resp.status, resp.content_type, dict(resp.headers), decoded)

    async def register(self, device_id: str) -> str:
        consent = {"location": True, "offers": True}
        answer = await self.call(
            "POST", "/v1/devices", token=SDK, body={"device_id": device_id, "consent": consent}
        )
        assert answer.status == 201, answer.body
        token: str = answer.body["device_token"]
        return token

    async def export(self, device_id: str) -> dict[str, Any]:
        """What is held about the device, without the TTLs that tick on their own."""
        answer = await self.call("GET", f"/v1/devices/{device_id}/export", token=ADMIN)
        assert answer.status == 200, answer.body
        held: dict[str, Any] = answer.body
        held["keys"] = sorted(key["name"] for key in held["keys"])
        return held

    async def ping(self, token: str | None, body: Any, **kwargs: Any) -> Answer:
        return await self.call("POST", "/v1/pings", token=token, body=body, **kwargs)


async def pieces(data: bytes, size: int = 65_536) -> Any:
    """The body in pieces, sent chunked: no Content-Length to refuse it by."""
    for start in range(0, len(data), size):
        yield data[start : start + size]
        await asyncio.sleep(0)


@pytest.fixture
async def api(service: Service) -> Any:
    since = service.mark()
    async with aiohttp.ClientSession() as session:
        yield Api(session, service.base)
    service.assert_no_unexpected_error(since)


def assert_problem(answer: Answer, status: int, code: str | None = None) -> dict[str, Any]:
    assert answer.status == status, answer.body
    assert answer.content_type == PROBLEM_JSON
    body: dict[str, Any] = answer.body
    assert body["status"] == status
    assert {"type", "title", "detail"} <= body.keys()
    if code is not None:
        assert body["type"] == f"/problems/{code}", body
    return body


# (a) the corpus: bad pings, each refused as the contract says, changing nothing


@dataclass(frozen=True)
class Bad:
    name: str
    data: bytes
    status: int
    code: str | None = None  # the problem type, where it is fixed
    path: str | None = None  # where a 422 says the problem is
    content_type: str | None = "application/json"
    chunked: bool = False


def deep(depth: int, inner: bytes = b"1") -> bytes:
    return b"[" * depth + inner + b"]" * depth


def bad_pings(device_id: str, ts: float) -> list[Bad]:
    """Pings that would be accepted if they were not bad (a later ts, a real position)."""
    good = json.dumps(ping_body(device_id, INSIDE, ts))

    def swap(field: str, raw: str) -> bytes:
        """``good`` with the raw JSON text ``raw`` as the value of ``field``."""
        doc = json.loads(good)
        doc[field] = "@@"
        return json.dumps(doc).replace('"@@"', raw).encode()

    def without(field: str) -> bytes:
        doc = json.loads(good)
        del doc[field]
        return json.dumps(doc).encode()

    def invalid(name: str, field: str, raw: str, code: str = "validation-error") -> Bad:
        return Bad(name, swap(field, raw), 422, code, f"$.{field}")

    malformed = "malformed-json"
    not_utf8 = good.replace(device_id, "\udcff").encode(errors="surrogateescape")
    return [
        Bad("NaN literal", swap("lat", "NaN"), 400, malformed),
        Bad("Infinity literal", swap("lon", "Infinity"), 400, malformed),
        Bad("-Infinity literal", swap("accuracy_m", "-Infinity"), 400, malformed),
        invalid("a number no double holds", "lat", "1e999"),
        invalid("lat 91", "lat", "91"),
        invalid("lat -90.0001", "lat", "-90.0001"),
        invalid("lon 181", "lon", "181"),
        invalid("lon -180.5", "lon", "-180.5"),
        invalid("lat as a string", "lat", '"60.1774"'),
        invalid("accuracy as a boolean", "accuracy_m", "true"),
        invalid("ts as a list", "ts", "[]"),
        invalid("ts not a time", "ts", '"yesterday"'),
        invalid("ts without an offset", "ts", '"2026-01-01T10:00:00"'),
        invalid("device id as a number", "device_id", "42"),
        invalid("empty device id", "device_id", '""'),
        invalid("device id of 129 characters", "device_id", json.dumps("d" * 129)),
        invalid("mocked as a string", "mocked", '"yes"'),
        invalid("a deeply nested device id", "device_id", deep(50_000).decode()),
        Bad("unknown field", swap("speed_mps", "3"), 422, "validation-error", "$"),
        Bad("missing field", without("lat"), 422, "validation-error", "$"),
        Bad("empty body", b"", 400, malformed),
        Bad("whitespace body", b"  \n", 400, malformed),
        Bad("null", b"null", 422, "validation-error", "$"),
        Bad("a list", b"[]", 422, "validation-error", "$"),
        Bad("a number", b"42", 422, "validation-error", "$"),
        Bad("a string", b'"ping"', 422, "validation-error", "$"),
        Bad("a deeply nested list", deep(100_000), 422, "validation-error", "$"),
        Bad("truncated", good[:-5].encode(), 400, malformed),
        Bad("trailing garbage", good.encode() + b" {}", 400, malformed),
        Bad("two documents", good.encode() + good.encode(), 400, malformed),
        Bad("invalid UTF-8", not_utf8, 400, malformed),
        Bad("text/plain", good.encode(), 415, "unsupported-media-type", content_type="text/plain"),
        Bad(
            "a form",
            b"device_id=x&lat=1",
            415,
            "unsupported-media-type",
            content_type="application/x-www-form-urlencoded",
        ),
        Bad("no content type", good.encode(), 415, "unsupported-media-type", content_type=None),
        Bad("2 MiB", b" " * (2 * MAX_BODY_BYTES) + good.encode(), 413, "payload-too-large"),
        Bad(
            "4 MiB sent chunked",
            b" " * (4 * MAX_BODY_BYTES),
            413,
            "payload-too-large",
            chunked=True,
        ),
    ]


async def refused(api: Api, path: str, token: str, bad: Bad) -> None:
    answer = await api.call(
        "POST",
        path,
        token=token,
        data=bad.data,
        content_type=bad.content_type,
        chunked=bad.chunked,
    )
    assert answer.status == bad.status, (bad.name, answer.body)
    body = assert_problem(answer, bad.status, bad.code)
    if bad.path is not None:
        assert body["errors"][0]["path"] == bad.path, (bad.name, body)


async def test_bad_pings_are_refused_as_the_contract_says_and_change_nothing(api: Api) -> None:
    token = await api.register("hostile-1")
    now = time.time()
    accepted = await api.ping(token, ping_body("hostile-1", OUTSIDE, now - 600))
    assert accepted.body["status"] == "accepted"
    before = await api.export("hostile-1")
    for bad in bad_pings("hostile-1", now - 300):
        await refused(api, "/v1/pings", token, bad)
    assert await api.export("hostile-1") == before
    after = await api.ping(token, ping_body("hostile-1", INSIDE, now - 500))
    assert after.body["status"] == "accepted"  # none of the later bad ts was taken


async def test_wrong_callers_are_refused_and_change_nothing(api: Api) -> None:
    token = await api.register("hostile-owner")
    await api.register("hostile-other")
    now = time.time()
    mine = ping_body("hostile-owner", INSIDE, now)
    theirs = ping_body("hostile-other", INSIDE, now)
    assert_problem(await api.ping(token, theirs), 404)  # another device's id: as if absent
    assert_problem(await api.ping(None, mine), 401)
    assert_problem(await api.ping("not-a-token", mine), 401)
    assert_problem(await api.ping(token.split(".")[0] + ".forged", mine), 401)
    assert_problem(await api.ping(SDK, mine), 403)
    assert_problem(await api.ping(ADMIN, mine), 403)
    for device_id in ("hostile-owner", "hostile-other"):
        assert (await api.export(device_id))["visit_state"]["last_ts"] is None


def bad_batches(one: dict[str, Any]) -> list[Bad]:
    """Batches refused whole: what is wrong is the batch, not one of its pings."""
    too_many = json.dumps({"pings": [one] * 1001}).encode()
    nan = json.dumps({"pings": [one, {**one, "lat": "@@"}]}).replace('"@@"', "NaN").encode()
    nested = b'{"pings": [' + deep(100_000) + b"]}"
    extra = json.dumps({"pings": [one], "source": "x"}).encode()
    invalid = "validation-error"
    return [
        Bad("1001 pings", too_many, 422, "batch-too-large", "$.pings"),
        Bad("NaN in one ping", nan, 400, "malformed-json"),
        Bad("pings an object", b'{"pings": {}}', 422, invalid, "$.pings"),
        Bad("no pings", b"{}", 422, invalid, "$"),
        Bad("unknown field", extra, 422, invalid, "$"),
        Bad("a deeply nested list", deep(100_000), 422, invalid, "$"),
        Bad("a deeply nested ping", nested, 400, "malformed-json"),
        Bad("2 MiB", b" " * (2 * MAX_BODY_BYTES) + too_many, 413, "payload-too-large"),
        Bad("text/plain", extra, 415, "unsupported-media-type", content_type="text/plain"),
    ]


async def test_bad_batches_are_refused_whole_and_change_nothing(api: Api) -> None:
    await api.register("hostile-batch")
    now = time.time()
    one = ping_body("hostile-batch", INSIDE, now - 60)
    before = await api.export("hostile-batch")
    for bad in bad_batches(one):
        await refused(api, "/v1/pings/batch", INGEST, bad)
    assert await api.export("hostile-batch") == before
    answer = await api.call("POST", "/v1/pings/batch", token=INGEST, body={"pings": [one] * 1000})
    assert answer.status == 200
    assert len(answer.body["results"]) == 1000
    assert [r["reason"] for r in answer.body["results"][:3]] == [None, "stale", "stale"]


async def test_a_bad_ping_in_a_batch_fails_alone(api: Api) -> None:
    await api.register("hostile-mixed")
    now = time.time()
    pings = [
        {**ping_body("hostile-mixed", INSIDE, now - 50), "lat": 91},
        {**ping_body("hostile-mixed", INSIDE, now - 40), "colour": "red"},
        ping_body("hostile-mixed", INSIDE, now - 30),
        ping_body("nobody-registered", INSIDE, now - 30),
    ]
    answer = await api.call("POST", "/v1/pings/batch", token=INGEST, body={"pings": pings})
    assert answer.status == 200, answer.body
    results = answer.body["results"]
    assert [(r["status"], r["reason"]) for r in results] == [
        ("invalid", "validation-error"),
        ("invalid", "validation-error"),
        ("accepted", None),
        ("invalid", "not-found"),
    ]
    assert results[0]["errors"][0]["path"] == "$.pings[0].lat"
    assert (await api.export("hostile-mixed"))["visit_state"]["last_ts"] == format_time(now - 30)


async def test_screening_answers_200_with_its_reason_and_moves_no_visit(api: Api) -> None:
    token = await api.register("hostile-screen")
    now = time.time()

    async def screened(where: tuple[float, float], ts: Any, **extra: Any) -> tuple[str, str | None]:
        answer = await api.ping(token, ping_body("hostile-screen", where, ts, **extra))
        assert answer.status == 200, answer.body
        assert answer.body["events"] == []
        assert answer.body["notifications"] == []
        return answer.body["status"], answer.body["reason"]

    # a first ping out of the window; nothing before it, so the window is the reason
    assert await screened(INSIDE, now - 2 * 86_400) == ("ignored", "too_old")
    assert await screened(INSIDE, 0) == ("ignored", "too_old")
    assert await screened(INSIDE, now + 3600) == ("ignored", "future")
    assert await screened(INSIDE, "2999-01-01T00:00:00Z") == ("ignored", "future")
    assert (await api.export("hostile-screen"))["visit_state"]["last_ts"] is None
    t0 = now - 3000
    assert await screened(OUTSIDE, t0) == ("accepted", None)
    base = (await api.export("hostile-screen"))["visit_state"]
    # flagged inside the store: counted, but no visit starts
    assert await screened(INSIDE, t0 + 10, accuracy_m=0) == ("flagged", "inaccurate")
    assert await screened(INSIDE, t0 + 20, accuracy_m=-1) == ("flagged", "inaccurate")
    assert await screened(INSIDE, t0 + 30, accuracy_m=5000) == ("flagged", "inaccurate")
    assert await screened(INSIDE, t0 + 40, mocked=True) == ("flagged", "mocked")
    state = (await api.export("hostile-screen"))["visit_state"]
    assert state["visits"] == {}
    assert state["last_fix"] == base["last_fix"]
    assert state["last_accepted_ts"] == format_time(t0)
    assert state["last_ts"] == format_time(t0 + 40)
    assert state["flags"] == {"inaccurate": 3, "mocked": 1}
    # not later than the last ping that was not ignored: stale, whatever else is wrong
    before = await api.export("hostile-screen")
    assert await screened(INSIDE, t0 + 40) == ("ignored", "stale")
    assert await screened(INSIDE, t0 + 35, mocked=True) == ("ignored", "stale")
    assert await screened(INSIDE, now - 2 * 86_400) == ("ignored", "stale")
    assert await api.export("hostile-screen") == before
    # a glitch 111 km away costs two flagged pings; the third is accepted
    far = (OUTSIDE[0] + 1.0, OUTSIDE[1])
    assert await screened(far, t0 + 50) == ("flagged", "jump")
    assert await screened(OUTSIDE, t0 + 60) == ("flagged", "jump")
    assert await screened(OUTSIDE, t0 + 70) == ("accepted", None)
    state = (await api.export("hostile-screen"))["visit_state"]
    assert state["visits"] == {}
    assert state["flags"]["jump"] == 2


# (b) schemathesis: every operation fuzzed, every answer held to the served document

EXAMPLES = 25  # per operation and mode: about 900 requests, some 15 s on two cores
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Left out on purpose: positive_data_acceptance (the document does not carry every
# cross-field rule, e.g. an offer's ends_at after its starts_at, so a schema-valid request
# may rightly be a 422) and negative_data_rejection (unknown query parameters are ignored,
# as HTTP services do).
FUZZ_DEVICE = "fuzz-device"
OWN_DEVICE = {  # called with the fuzz device's token, on that device
    ("PATCH", "/v1/devices/{device_id}"),
    ("GET", "/v1/devices/{device_id}/export"),
    ("POST", "/v1/pings"),
}
KEYS = {("POST", "/v1/devices"): SDK, ("POST", "/v1/pings/batch"): INGEST}


def fuzz(operation: Any, mode: GenerationMode, token: str, failures: list[str]) -> int:
    """Run ``EXAMPLES`` cases of one operation; failures are collected, not raised."""
    key = (operation.method.upper(), operation.path)
    own = key in OWN_DEVICE
    credential = token if own else KEYS.get(key, ADMIN)
    path = {"device_id": FUZZ_DEVICE} if own and "{device_id}" in operation.path else None
    made = 0

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path))
    def run(case: Any) -> None:
        nonlocal made
        made += 1
        if own and isinstance(case.body, dict) and "device_id" in case.body:
            case.body["device_id"] = FUZZ_DEVICE  # past the 404, into the ping itself
        try:
            case.call_and_validate(
                headers={"Authorization": f"Bearer {credential}"}, checks=CHECKS, timeout=10
            )
        except BaseException as e:  # noqa: BLE001 - schemathesis raises a group of its findings
            failures.append(f"{key[0]} {key[1]} ({mode.value}):\n{e}")

    try:
        run()
    except Unsatisfiable:  # nothing to negate in an operation without inputs
        assert mode is GenerationMode.NEGATIVE
        assert not made
    return made


async def register(base: str, device_id: str) -> str:
    async with aiohttp.ClientSession() as session:
        return await Api(session, base).register(device_id)


def test_every_operation_fuzzed_answers_as_documented_and_never_5xx(service: Service) -> None:
    token = asyncio.run(register(service.base, FUZZ_DEVICE))
    since = service.mark()
    schema = schemathesis.openapi.from_url(f"{service.base}/openapi.json")
    failures: list[str] = []
    fuzzed: dict[tuple[str, str], int] = {}
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            failures.append(f"an operation schemathesis cannot load: {result.err()}")
            continue
        operation = result.ok()
        key = (operation.method.upper(), operation.path)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzzed[key] = fuzzed.get(key, 0) + fuzz(operation, mode, token, failures)
    assert not failures, "\n\n".join(failures[:10])
    assert len(fuzzed) >= 20, fuzzed
    assert all(fuzzed.values()), fuzzed
    service.assert_no_unexpected_error(since)


async def test_requests_it_cannot_parse_leave_no_byte_of_theirs_in_the_log(
    service: Service,
) -> None:
    since = service.mark()
    url = URL(service.base)
    assert url.host is not None
    assert url.port is not None
    for request in UNPARSABLE:
        answer = await raw_answer(url.host, url.port, request)
        assert answer.split(b" ")[1].startswith(b"4"), answer[:200]
    log = service.process.log()[since:]
    assert [s for s in SECRETS if s in log] == []
    service.assert_no_unexpected_error(since)


# (c) a device flooding the real process


async def test_a_flooding_device_is_refused_until_its_retry_after(limited: Service) -> None:
    async with aiohttp.ClientSession() as session:
        api = Api(session, limited.base)
        flood, quiet = await api.register("flood"), await api.register("quiet")
        now = time.time() - 100
        answers = [await api.ping(flood, ping_body("flood", INSIDE, now + i)) for i in range(10)]
        statuses = [a.status for a in answers]
        assert statuses[:3] == [200] * 3, statuses
        assert 429 in statuses, statuses
        assert set(statuses) == {200, 429}, statuses
        refused = next(a for a in answers if a.status == 429)
        assert_problem(refused, 429, "rate-limited")
        retry_after = int(refused.headers["Retry-After"])
        assert retry_after == 1  # one request a second
        assert (await api.ping(quiet, ping_body("quiet", INSIDE, now))).status == 200
        await asyncio.sleep(retry_after)
        again = await api.ping(flood, ping_body("flood", INSIDE, now + 20))
        assert again.status == 200
        assert again.body["status"] == "accepted"
        assert await ingest_refusals(api, now) == [200, 200, 429]
        metrics = (await api.call("GET", "/metrics")).body.decode()
        assert 'geofence_requests_refused_total{reason="rate-limited"}' in metrics
    limited.assert_no_unexpected_error()


async def ingest_refusals(api: Api, now: float) -> list[int]:
    """Three batches at once from an ingest key with a burst of two."""
    body = {"pings": [ping_body("quiet", OUTSIDE, now + 30)]}
    return [
        (await api.call("POST", "/v1/pings/batch", token=INGEST, body=body)).status
        for _ in range(3)
    ]
