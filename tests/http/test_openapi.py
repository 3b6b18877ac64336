"""/openapi.json (contract §7): it documents every route, and real answers match it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote

import jsonschema
import pytest
from aiohttp.test_utils import TestClient
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from geofence.adapters.memory import MemoryStore
from geofence.config import Settings
from geofence.domain.delivery import sign
from geofence.domain.offers import WEEKDAYS
from geofence.domain.times import is_time_field
from geofence.http.app import create_app
from geofence.http.keys import STORE
from geofence.http.openapi import INPUTS, openapi_document
from tests.conftest import INGEST_KEY, SDK_KEY, admin
from tests.http.test_offers_api import STORE_ID, offer_doc
from tests.http.test_pings_api import INSIDE, INSIDE_2, OUTSIDE, ping_body

Client = TestClient[Any, Any]
Schema = dict[str, Any]

DOC_URI = "urn:geofence:openapi"
OPERATIONS = ("get", "put", "post", "patch", "delete")
GATEWAY_SECRET = "test-gateway-secret"
MAX_BODY_BYTES = 16_384


class UndocumentedResponse(AssertionError):
    """The service answered with a status (or media type) the document does not list."""


class OpenAPI:
    """Validates answers against the document, resolving its ``#/components`` refs."""

    def __init__(self, doc: Schema) -> None:
        self.doc = doc
        self.registry: Registry[Any] = Registry().with_resource(
            DOC_URI, DRAFT202012.create_resource(doc)
        )

    def validator(self, *pointer: str) -> jsonschema.Draft202012Validator:
        """A validator of the schema at ``pointer``; its refs resolve inside the document."""
        escaped = "/".join(p.replace("~", "~0").replace("/", "~1") for p in pointer)
        schema = {"$ref": f"{DOC_URI}#/{quote(escaped, safe='/~')}"}
        return jsonschema.Draft202012Validator(
            schema,
            registry=self.registry,
            format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
        )

    def check(
        self,
        method: str,
        path: str,
        status: int,
        content_type: str,
        body: Any,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Raise unless the answer is one the operation documents, body included."""
        operation = self.doc["paths"].get(path, {}).get(method.lower())
        if operation is None:
            raise UndocumentedResponse(f"{method} {path} is not documented")
        response = operation["responses"].get(str(status))
        if response is None:
            raise UndocumentedResponse(f"{method} {path} answered {status}: undocumented")
        for name, header in response.get("headers", {}).items():
            assert not header.get("required") or name in (headers or {}), f"{name} missing"
        content = response.get("content")
        if content is None:
            assert body is None, f"{method} {path} {status} documents no body"
            return
        if content_type not in content:
            raise UndocumentedResponse(f"{method} {path} {status}: {content_type} undocumented")
        pointer = ("paths", path, method.lower(), "responses", str(status), "content")
        self.validator(*pointer, content_type, "schema").validate(body)


def operations(doc: Schema) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if method in OPERATIONS
    }


def walk_operations(doc: Schema) -> Iterator[tuple[str, str, Schema]]:
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            yield method, path, operation


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


# the document itself


def test_every_route_is_documented_and_nothing_else(settings: Settings) -> None:
    app = create_app(settings, store=MemoryStore())
    routed = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    documented = operations(openapi_document())
    assert routed - documented == set(), "routes missing from /openapi.json"
    assert documented - routed == set(), "documented operations that no route serves"


def test_the_document_is_openapi_3_1_with_valid_schemas() -> None:
    doc = openapi_document()
    assert doc["openapi"] == "3.1.0"
    check = jsonschema.Draft202012Validator.check_schema
    for schema in doc["components"]["schemas"].values():
        check(schema)
    for method, path, operation in walk_operations(doc):
        assert operation["responses"], f"{method} {path} has no responses"
        for response in operation["responses"].values():
            for media in response.get("content", {}).values():
                check(media["schema"])
        for media in operation.get("requestBody", {}).get("content", {}).values():
            check(media["schema"])
        for parameter in operation.get("parameters", []):
            check(parameter["schema"])


def test_every_ref_resolves_and_every_operation_is_complete() -> None:
    doc = openapi_document()
    api = OpenAPI(doc)
    for target in set(refs(doc)):
        assert target.startswith("#/components/schemas/"), target
        api.registry.resolver(DOC_URI).lookup(target)  # raises when it does not resolve
    ids = [op["operationId"] for _, _, op in walk_operations(doc)]
    assert len(ids) == len(set(ids))
    schemes = doc["components"]["securitySchemes"]
    for method, path, operation in walk_operations(doc):
        declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
        assert declared == {part[1:-1] for part in path.split("/") if part.startswith("{")}
        if "401" in operation["responses"]:
            for requirement in operation["security"]:  # alternatives: one is enough
                assert set(requirement) <= set(schemes), f"{method} {path}"


def numbers_under(node: Any) -> list[Any]:
    """The number schemas anywhere in ``node``."""
    if isinstance(node, list):
        return [n for item in node for n in numbers_under(item)]
    if not isinstance(node, dict):
        return []
    found = [node] if node.get("type") == "number" else []
    return found + [n for value in node.values() for n in numbers_under(value)]


def properties_of(node: Any) -> Iterator[tuple[str, Any]]:
    """Every (name, schema) of every ``properties`` map in ``node``, nested ones too."""
    if isinstance(node, list):
        for item in node:
            yield from properties_of(item)
    elif isinstance(node, dict):
        if isinstance(node.get("properties"), dict):
            yield from node["properties"].items()
        for value in node.values():
            yield from properties_of(value)


def test_every_time_an_answer_carries_is_rfc_3339() -> None:
    """The rule that writes the answers' times (``domain.times``) also writes the document."""
    schemas = openapi_document()["components"]["schemas"]
    answers = {name: s for name, s in schemas.items() if name not in INPUTS}
    times = [(name, p, s) for name, s in answers.items() for p, s in properties_of(s)]
    timed = [(name, p) for name, p, s in times if is_time_field(p)]
    assert ("VisitEvent", "at") in timed
    assert ("DeadLetter", "created_at") in timed
    assert ("DeviceExplain", "now") in timed
    assert ("Ledger", "device_sent") in timed
    assert [(n, p) for n, p, s in times if is_time_field(p) and numbers_under(s)] == []


def test_the_push_is_documented_as_a_webhook() -> None:
    push = openapi_document()["webhooks"]["notification"]["post"]
    headers = {p["name"] for p in push["parameters"] if p["in"] == "header" and p["required"]}
    assert headers == {
        "Idempotency-Key",
        "X-Geofence-Signature",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
    assert set(push["responses"]) == {"2XX", "410", "429", "4XX", "5XX", "default"}
    assert "Retry-After" in push["responses"]["429"]["headers"]
    assert "/v1/receipts" in push["description"]
    assert "whsec_" in push["description"]
    body = OpenAPI(openapi_document()).validator(
        "webhooks", "notification", "post", "requestBody", "content", "application/json", "schema"
    )
    note = {
        "notification_id": "n1",
        "device_ref": "ref",
        "push_token": "tok",
        "offer_id": "o",
        "store_id": "s",
        "title": "t",
        "body": "b",
        "created_at": "2026-12-06T18:30:00Z",
        "expires_at": "2026-12-06T19:30:00.5Z",
    }
    body.validate(note)
    for wrong in ({**note, "created_at": 1.0}, {**note, "expires_at": "tomorrow"}, {"x": 1}):
        with pytest.raises(jsonschema.ValidationError):
            body.validate(wrong)


# the validator refuses what the document does not allow


def test_the_validator_refuses_a_wrong_body_and_an_undocumented_status() -> None:
    api = OpenAPI(openapi_document())
    good: dict[str, Any] = {"status": "accepted", "reason": None, "events": [], "notifications": []}
    api.check("POST", "/v1/pings", 200, "application/json", good)
    wrong_bodies = [
        {**good, "status": "maybe"},
        {**good, "events": [{"type": "entry", "at": 1.0}]},
        {**good, "notifications": [{"notification_id": "n1"}]},
        {key: value for key, value in good.items() if key != "events"},
    ]
    for body in wrong_bodies:
        with pytest.raises(jsonschema.ValidationError):
            api.check("POST", "/v1/pings", 200, "application/json", body)
    with pytest.raises(UndocumentedResponse):
        api.check("POST", "/v1/pings", 418, "application/problem+json", {})
    with pytest.raises(UndocumentedResponse):
        api.check("GET", "/v1/offers", 200, "text/html", {"offers": []})
    with pytest.raises(UndocumentedResponse):
        api.check("PATCH", "/v1/offers", 200, "application/json", {"offers": []})
    problem = {"type": "/problems/x", "title": "Not Found", "status": 500, "detail": "x"}
    with pytest.raises(jsonschema.ValidationError):
        api.check("GET", "/v1/offers/{offer_id}", 404, "application/problem+json", problem)
    with pytest.raises(AssertionError, match="WWW-Authenticate"):
        api.check("GET", "/v1/offers", 401, "application/problem+json", {**problem, "status": 401})


# a day of traffic, every answer held to the document


class Session:
    """Calls the app and checks every answer against the served document."""

    def __init__(self, client: Client, api: OpenAPI) -> None:
        self.client = client
        self.api = api
        self.answered: set[tuple[str, str, int]] = set()

    async def __call__(
        self,
        method: str,
        template: str,
        expect: int,
        *,
        path: Mapping[str, str] | None = None,
        query: str = "",
        **kwargs: Any,
    ) -> Any:
        resp = await self.client.request(method, template.format(**(path or {})) + query, **kwargs)
        raw = await resp.read()
        body = _decode(resp.content_type, raw)
        assert resp.status == expect, f"{method} {template}{query}: {resp.status} {raw!r}"
        self.api.check(method, template, resp.status, resp.content_type, body, resp.headers)
        self.answered.add((method, template, resp.status))
        return body

    async def register(self, device_id: str) -> dict[str, str]:
        body = {"device_id": device_id, "consent": {"location": True, "offers": True}}
        answer = await self("POST", "/v1/devices", 201, json=body, headers=bearer(SDK_KEY))
        return bearer(answer["device_token"])


async def _console(s: Session) -> None:
    await s("GET", "/console", 308, allow_redirects=False)
    await s("GET", "/console/config.json", 200)
    await s("GET", "/console/{path}", 200, path={"path": "index.html"})
    await s("GET", "/console/{path}", 404, path={"path": "nothing.js"})


def _decode(content_type: str, raw: bytes) -> Any:
    if not raw:
        return None
    if content_type.endswith("json"):
        return json.loads(raw)
    return raw.decode()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def signed(body: bytes) -> dict[str, str]:
    t = int(time.time())
    return {
        "Content-Type": "application/json",
        "X-Geofence-Signature": sign(GATEWAY_SECRET, body, t),
    }


async def test_a_day_of_traffic_matches_the_document(make_client: Any) -> None:
    client = await make_client(
        stores="stores.geojson",
        quiet_hours="off",
        gateway_secret=GATEWAY_SECRET,
        max_body_bytes=MAX_BODY_BYTES,
    )
    doc = await (await client.get("/openapi.json")).json()
    assert doc == json.loads(json.dumps(openapi_document()))
    s = Session(client, OpenAPI(doc))
    await _operations(s)
    await _stores(s)
    await _offers(s)
    device = await _device(s)
    notification_id = await _walk_in(s, device)
    await _batches(s, device)
    await _results(s, notification_id)
    await _refusals(s, device)
    await _erasure(s, device)
    await _console(s)
    exercised = {(method, path) for method, path, _ in s.answered}
    assert operations(doc) - exercised == set(), "operations the scenario never called"
    statuses = {status for _, _, status in s.answered}
    assert {400, 401, 403, 404, 409, 413, 415, 422} <= statuses


async def _operations(s: Session) -> None:
    await s("GET", "/healthz", 200)
    await s("GET", "/readyz", 200)
    await s("GET", "/metrics", 200)
    await s("GET", "/openapi.json", 200)


async def _stores(s: Session) -> None:
    collection = await s("GET", "/v1/stores", 200, headers=admin())
    await s("GET", "/v1/stores/{store_id}", 200, path={"store_id": STORE_ID}, headers=admin())
    report = await s(
        "PUT", "/v1/stores", 200, query="?dry_run=true", json=collection, headers=admin()
    )
    assert report["dry_run"] is True
    assert report["added"] == []
    kiosk = {"store_id": "kiosk-1"}
    feature = {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [24.9300, 60.1600]},
        "properties": {"name": "Kiosk", "radius_m": 25, "tags": ["kiosk"]},
    }
    await s("PUT", "/v1/stores/{store_id}", 201, path=kiosk, json=feature, headers=admin())
    await s("PUT", "/v1/stores/{store_id}", 200, path=kiosk, json=feature, headers=admin())
    no_radius = {**feature, "properties": {"name": "Kiosk"}}
    await s("PUT", "/v1/stores/{store_id}", 422, path=kiosk, json=no_radius, headers=admin())
    await s("DELETE", "/v1/stores/{store_id}", 204, path=kiosk, headers=admin())
    await s("GET", "/v1/stores/{store_id}", 404, path=kiosk, headers=admin())
    await s("DELETE", "/v1/stores/{store_id}", 404, path=kiosk, headers=admin())
    versions = await s("GET", "/v1/stores/versions", 200, headers=admin())
    assert [(v["added"], v["changed"], v["removed"]) for v in versions[:3]] == [
        (0, 0, 1),
        (0, 0, 0),
        (1, 0, 0),
    ]


async def _offers(s: Session) -> None:
    welcome = {"offer_id": "welcome"}
    await s("PUT", "/v1/offers/{offer_id}", 201, path=welcome, json=offer_doc(), headers=admin())
    always = {day: ["00:00-24:00"] for day in WEEKDAYS}
    better = offer_doc(priority=5, budget=10, hours=always, tiers=None)
    await s("PUT", "/v1/offers/{offer_id}", 200, path=welcome, json=better, headers=admin())
    elsewhere = offer_doc(store_ids=[], store_tags=["nowhere"], starts_at=0)
    await s(
        "PUT",
        "/v1/offers/{offer_id}",
        201,
        path={"offer_id": "elsewhere"},
        json=elsewhere,
        headers=admin(),
    )
    await s("GET", "/v1/offers/{offer_id}", 200, path=welcome, headers=admin())
    listed = await s("GET", "/v1/offers", 200, headers=admin())
    assert [o["id"] for o in listed["offers"]] == ["elsewhere", "welcome"]
    bad = offer_doc(starts_at="tomorrow", colour="red")
    await s("PUT", "/v1/offers/{offer_id}", 422, path=welcome, json=bad, headers=admin())
    at_store = f"?store_id={STORE_ID}"
    preview = "/v1/offers/{offer_id}/preview"
    shown = await s("GET", preview, 200, path=welcome, query=at_store, headers=admin())
    assert shown["title"] == "Welcome in"
    assert "{store_name}" not in shown["body"]
    await s("GET", preview, 404, path=welcome, query="?store_id=nowhere", headers=admin())


async def _device(s: Session) -> dict[str, str]:
    token = await s.register("member-7")
    body = {"device_id": "member-7", "consent": {"location": True, "offers": True}}
    await s("POST", "/v1/devices", 409, json=body, headers=bearer(SDK_KEY))
    await s("POST", "/v1/devices", 422, json={**body, "colour": 1}, headers=bearer(SDK_KEY))
    me = {"device_id": "member-7"}
    changes = {"segments": ["vip"], "timezone": "Europe/Helsinki", "push_token": "tok-1"}
    await s("PATCH", "/v1/devices/{device_id}", 200, path=me, json=changes, headers=token)
    await s("GET", "/v1/devices/{device_id}/export", 200, path=me, headers=token)
    await s("GET", "/v1/devices/{device_id}/explain", 200, path=me, headers=admin())
    rotated = await s("POST", "/v1/devices/{device_id}/token", 200, path=me, headers=token)
    await s("POST", "/v1/devices/{device_id}/token", 401, path=me, headers=token)
    secret = {**body, "device_id": "member-8", "install_secret": "s" * 32}
    await s("POST", "/v1/devices", 201, json=secret, headers=bearer(SDK_KEY))
    await s("POST", "/v1/devices", 200, json=secret, headers=bearer(SDK_KEY))
    return bearer(rotated["device_token"])


async def _walk_in(s: Session, token: dict[str, str]) -> str:
    """Four pings that make an entry on the last one, explained; then a stale duplicate."""
    now = time.time()
    answers = []
    for where, ago in [(OUTSIDE, 400), (INSIDE, 300), (INSIDE_2, 240), (INSIDE, 170)]:
        body = ping_body("member-7", where, now - ago)
        answers.append(
            await s("POST", "/v1/pings", 200, query="?explain=true", json=body, headers=token)
        )
    last = answers[-1]
    assert [e["type"] for e in last["events"]] == ["entry"]
    [note] = last["notifications"]
    assert note["offer_id"] == "welcome"
    assert last["decisions"][0]["offer_id"] == "welcome"
    again = await s(
        "POST", "/v1/pings", 200, json=ping_body("member-7", INSIDE, now - 170), headers=token
    )
    assert (again["status"], again["reason"]) == ("ignored", "stale")
    notification_id: str = note["notification_id"]
    return notification_id


async def _batches(s: Session, token: dict[str, str]) -> None:
    now = time.time()
    pings = [
        ping_body("member-7", INSIDE, now - 100),
        {"device_id": "member-7", "lat": "north", "lon": 24.9, "accuracy_m": 5, "ts": now},
        ping_body("member-7", INSIDE_2, now - 90, mocked=True),
    ]
    answer = await s("POST", "/v1/pings/batch", 200, json={"pings": pings}, headers=token)
    assert [r["status"] for r in answer["results"]] == ["accepted", "invalid", "flagged"]
    assert answer["results"][1]["errors"][0]["path"].startswith("$.pings[1]")
    ingest = [ping_body("member-7", INSIDE, now - 60), ping_body("nobody", INSIDE, now - 60)]
    answer = await s(
        "POST",
        "/v1/pings/batch",
        200,
        query="?explain=true",
        json={"pings": ingest},
        headers=bearer(INGEST_KEY),
    )
    assert [r["status"] for r in answer["results"]] == ["accepted", "invalid"]


async def _results(s: Session, notification_id: str) -> None:
    me = {"device_id": "member-7"}
    report = await s("GET", "/v1/devices/{device_id}/explain", 200, path=me, headers=admin())
    assert report["stores"][0]["visit"]["state"] == "confirmed"
    await _delivered(s)  # a gateway sends a receipt only for a push it was given
    receipt = json.dumps(
        {"notification_id": notification_id, "event": "opened", "at": time.time()}
    ).encode()
    recorded = await s("POST", "/v1/receipts", 200, data=receipt, headers=signed(receipt))
    assert recorded["status"] == "recorded"
    bad = {**signed(receipt), "X-Geofence-Signature": f"t={int(time.time())},v1={'0' * 64}"}
    await s("POST", "/v1/receipts", 401, data=receipt, headers=bad)
    await s(
        "POST", "/v1/receipts", 422, data=b'{"event": "lost"}', headers=signed(b'{"event": "lost"}')
    )
    for by in ("store", "offer"):
        stats = await s("GET", "/v1/stats", 200, query=f"?by={by}", headers=admin())
        assert stats["rows"]
        assert stats["totals"]["entries"] >= 1
    window = "?from=2026-01-02T00:00:00Z&to=1700000000&by=offer"
    await s("GET", "/v1/stats", 422, query=window, headers=admin())
    series = await s("GET", "/v1/stats", 200, query="?by=offer&bucket=hour", headers=admin())
    assert series["series"]
    assert series["lift"][0]["interval"]["method"] == "newcombe"
    sale = {"device_id": "member-7", "at": time.time(), "value": 12.5}
    bought = await s("POST", "/v1/conversions", 202, json=sale, headers=bearer(INGEST_KEY))
    assert bought == {"attributed": "welcome", "group": "treated"}
    nobody = {**sale, "device_id": "nobody"}
    await s("POST", "/v1/conversions", 404, json=nobody, headers=bearer(INGEST_KEY))
    await s("GET", "/v1/deadletters", 200, query="?limit=10", headers=admin())
    await s("GET", "/v1/deadletters", 422, query="?limit=0", headers=admin())
    missing = {"notification_id": "nope"}
    await s("POST", "/v1/deadletters/{notification_id}/retry", 404, path=missing, headers=admin())


async def _delivered(s: Session, timeout_s: float = 5.0) -> None:
    """Once the dispatcher, running beside the requests, has emptied the outbox."""
    deadline = time.monotonic() + timeout_s
    while await s.client.app[STORE].outbox_depth():
        assert time.monotonic() < deadline, "the notification was never delivered"
        await asyncio.sleep(0.01)


async def _refusals(s: Session, token: dict[str, str]) -> None:
    ping = ping_body("member-7", OUTSIDE, time.time())
    await s("GET", "/v1/offers", 401)
    await s("GET", "/v1/offers", 401, headers=bearer("not a token"))
    await s("GET", "/v1/stats", 403, headers=token)
    await s("POST", "/v1/pings", 403, json=ping, headers=bearer(SDK_KEY))
    await s("GET", "/v1/offers/{offer_id}", 404, path={"offer_id": "nope"}, headers=admin())
    other = ping_body("member-8", OUTSIDE, time.time())
    await s("POST", "/v1/pings", 404, json=other, headers=token)
    await s("POST", "/v1/pings", 415, data=json.dumps(ping), headers=token)
    json_headers = {**token, "Content-Type": "application/json"}
    await s("POST", "/v1/pings", 400, data=b'{"lat": NaN}', headers=json_headers)
    await s("POST", "/v1/pings", 400, query="?explain=maybe", json=ping, headers=token)
    await s("POST", "/v1/pings", 422, json={**ping, "ts": "yesterday"}, headers=token)
    big = {"pings": [ping] * 200}
    await s("POST", "/v1/pings/batch", 413, json=big, headers=token)
    me = {"device_id": "member-7"}
    await s("PATCH", "/v1/devices/{device_id}", 403, path=me, json={}, headers=admin())


async def _erasure(s: Session, token: dict[str, str]) -> None:
    me = {"device_id": "member-7"}
    await s("DELETE", "/v1/offers/{offer_id}", 204, path={"offer_id": "welcome"}, headers=admin())
    await s("DELETE", "/v1/offers/{offer_id}", 404, path={"offer_id": "welcome"}, headers=admin())
    withdraw = {"consent": {"location": False}}
    await s("PATCH", "/v1/devices/{device_id}", 200, path=me, json=withdraw, headers=token)
    ping = ping_body("member-7", INSIDE, time.time())
    problem = await s("POST", "/v1/pings", 403, json=ping, headers=token)
    assert problem["type"].endswith("consent-required")
    await s("DELETE", "/v1/devices/{device_id}", 204, path=me, headers=token)
    await s("DELETE", "/v1/devices/{device_id}", 204, path=me, headers=admin())
    await s("GET", "/v1/devices/{device_id}/export", 404, path=me, headers=admin())
