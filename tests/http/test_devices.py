"""Devices over HTTP (contract §1, §4), on the memory store and on Redis."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from geofence.domain.model import DeviceState, Fix
from geofence.http.keys import DEVICES
from geofence.ports import StateStore
from tests.conftest import ADMIN_KEY, INGEST_KEY, SDK_KEY, admin

Client = TestClient[Any, Any]
CONSENT = {"location": True, "offers": True}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


SDK = bearer(SDK_KEY)


async def register(client: Client, device_id: str = "dev-1", **extra: Any) -> str:
    body = {"device_id": device_id, "consent": CONSENT, **extra}
    resp = await client.post("/v1/devices", json=body, headers=SDK)
    assert resp.status == 201, await resp.text()
    data = await resp.json()
    assert data["device_id"] == device_id
    token: str = data["device_token"]
    return token


async def problem(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"
    body: dict[str, Any] = await resp.json(content_type=None)
    assert body["status"] == status
    assert {"type", "title", "detail"} <= body.keys()
    return body


def ref_of(token: str) -> str:
    return token.partition(".")[0]


# the round trip


async def test_register_patch_export_delete(client: Client, store: StateStore) -> None:
    token = await register(client, tier="silver", segments=["coffee"], timezone="Europe/Oslo")
    assert ref_of(token) == client.app[DEVICES].ref_of("dev-1")
    patch = {"tier": "gold", "segments": ["coffee", "vip"], "push_token": "apns-1"}
    resp = await client.patch("/v1/devices/dev-1", json=patch, headers=bearer(token))
    assert resp.status == 200
    view = await resp.json()
    assert view["tier"] == "gold"
    assert view["segments"] == ["coffee", "vip"]
    assert view["timezone"] == "Europe/Oslo"
    assert view["push_token"] == "apns-1"
    assert resp.headers["Cache-Control"] == "no-store"
    export = await (await client.get("/v1/devices/dev-1/export", headers=bearer(token))).json()
    assert export["device_id"] == "dev-1"
    assert export["profile"] == view
    assert (await client.delete("/v1/devices/dev-1", headers=bearer(token))).status == 204
    assert await store.get_device(ref_of(token)) is None
    assert await store.device_keys(ref_of(token)) == {}


async def test_patch_null_clears_and_absent_keeps(client: Client) -> None:
    token = await register(client, tier="silver", timezone="Europe/Oslo", push_token="t")
    resp = await client.patch("/v1/devices/dev-1", json={"tier": None}, headers=bearer(token))
    view = await resp.json()
    assert view["tier"] is None
    assert view["timezone"] == "Europe/Oslo"
    assert view["push_token"] == "t"
    resp = await client.patch("/v1/devices/dev-1", json={}, headers=bearer(token))
    assert resp.status == 200


async def test_an_existing_device_id_is_a_conflict(client: Client) -> None:
    token = await register(client)
    body = {"device_id": "dev-1", "consent": {"location": False, "offers": False}}
    body_409 = await problem(await client.post("/v1/devices", json=body, headers=SDK), 409)
    assert body_409["type"].endswith("conflict")
    # the first registration is untouched and its token still works
    export = await (await client.get("/v1/devices/dev-1/export", headers=bearer(token))).json()
    assert export["profile"]["consent"] == CONSENT


async def test_device_ids_may_hold_any_printable_characters(client: Client) -> None:
    token = await register(client, "Tablet 7/ü")
    resp = await client.get("/v1/devices/Tablet%207%2F%C3%BC/export", headers=bearer(token))
    assert resp.status == 200
    assert (await resp.json())["device_id"] == "Tablet 7/ü"


# consent


async def test_the_ledger_records_each_consent_change_with_its_time(client: Client) -> None:
    devices = client.app[DEVICES]
    devices.clock = lambda: 1000.0
    token = await register(client)
    devices.clock = lambda: 2000.0
    patch = {"consent": {"offers": False, "location": True}}
    await client.patch("/v1/devices/dev-1", json=patch, headers=bearer(token))
    devices.clock = lambda: 3000.0
    await client.patch(
        "/v1/devices/dev-1", json={"consent": {"offers": True}}, headers=bearer(token)
    )
    export = await (await client.get("/v1/devices/dev-1/export", headers=admin())).json()
    assert export["consent_ledger"] == [
        {"purpose": "location", "granted": True, "at": "1970-01-01T00:16:40Z"},
        {"purpose": "offers", "granted": True, "at": "1970-01-01T00:16:40Z"},
        {"purpose": "offers", "granted": False, "at": "1970-01-01T00:33:20Z"},
        {"purpose": "offers", "granted": True, "at": "1970-01-01T00:50:00Z"},
    ]
    assert export["profile"]["created_at"] == "1970-01-01T00:16:40Z"
    assert export["profile"]["updated_at"] == "1970-01-01T00:50:00Z"


async def test_withdrawing_location_erases_location_state_at_once(
    client: Client, store: StateStore
) -> None:
    token = await register(client)
    ref = ref_of(token)
    state = DeviceState(last_ts=100.0, last_fix=Fix(lat=60.17, lng=24.94, ts=100.0))
    assert await store.save_state(ref, state, 0)
    assert len(await store.device_keys(ref)) == 3
    patch = {"consent": {"location": False}}
    resp = await client.patch("/v1/devices/dev-1", json=patch, headers=bearer(token))
    assert (await resp.json())["consent"] == {"location": False, "offers": True}
    loaded = await store.load_state(ref)
    assert loaded.state == DeviceState()
    assert loaded.version > 1
    # the position is gone; the state key keeps only its version and the offer ledger
    keys = await store.device_keys(ref)
    assert len(keys) == 2
    assert not any("fix" in name for name in keys)


async def test_export_holds_visit_state_and_keys_but_no_token_hash(
    client: Client, store: StateStore
) -> None:
    token = await register(client)
    ref = ref_of(token)
    state = DeviceState(last_ts=5.5, last_entry_at={"s1": 4.0}, flags={"mocked": 2})
    await store.save_state(ref, state, 0)
    resp = await client.get("/v1/devices/dev-1/export", headers=bearer(token))
    export = await resp.json()
    assert export["device_ref"] == ref
    assert export["state_version"] == 1
    # every time in RFC 3339, counts left as numbers
    assert export["visit_state"]["last_ts"] == "1970-01-01T00:00:05.5Z"
    assert export["visit_state"]["last_entry_at"] == {"s1": "1970-01-01T00:00:04Z"}
    assert export["visit_state"]["flags"] == {"mocked": 2}
    assert len(export["keys"]) == 2
    assert all(k["ttl_s"] > 0 for k in export["keys"])
    stored = await store.get_device(ref)
    assert stored is not None
    text = await resp.text()
    assert stored.token_hash not in text
    assert "token_hash" not in text
    assert token not in text


async def test_patch_refreshes_every_ttl(client: Client, store: StateStore) -> None:
    store.device_ttl_s = 100  # type: ignore[attr-defined]
    token = await register(client)
    await store.save_state(ref_of(token), DeviceState(last_ts=1.0), 0)
    store.device_ttl_s = 10_000  # type: ignore[attr-defined]
    await client.patch("/v1/devices/dev-1", json={"tier": "gold"}, headers=bearer(token))
    ttls = list((await store.device_keys(ref_of(token))).values())
    assert len(ttls) == 2
    assert all(t is not None and t > 100 for t in ttls)


# deletion


async def test_delete_twice_answers_204_twice(client: Client, store: StateStore) -> None:
    token = await register(client)
    await store.save_state(ref_of(token), DeviceState(last_ts=1.0), 0)
    for _ in range(2):
        assert (await client.delete("/v1/devices/dev-1", headers=bearer(token))).status == 204
    assert await store.device_keys(ref_of(token)) == {}
    # the erased device's token no longer reaches anything else
    resp = await client.get("/v1/devices/dev-1/export", headers=bearer(token))
    await problem(resp, 404)


async def test_admin_erases_any_device_and_repeats(client: Client, store: StateStore) -> None:
    token = await register(client)
    for _ in range(2):
        assert (await client.delete("/v1/devices/dev-1", headers=admin())).status == 204
    assert await store.get_device(ref_of(token)) is None
    assert (await client.delete("/v1/devices/never-seen", headers=admin())).status == 204


async def test_a_device_can_register_again_after_erasure(client: Client) -> None:
    old = await register(client)
    await client.delete("/v1/devices/dev-1", headers=bearer(old))
    new = await register(client)
    assert new != old
    await problem(await client.get("/v1/devices/dev-1/export", headers=bearer(old)), 401)


# who may call what (contract §1)


async def test_a_device_token_never_reaches_another_device(client: Client) -> None:
    token_a = await register(client, "dev-a")
    await register(client, "dev-b")
    calls = [
        ("PATCH", "/v1/devices/dev-b", {"tier": "x"}),
        ("GET", "/v1/devices/dev-b/export", None),
        ("DELETE", "/v1/devices/dev-b", None),
    ]
    for method, path, body in calls:
        resp = await client.request(method, path, json=body, headers=bearer(token_a))
        other = await problem(resp, 404)
        missing_path = path.replace("dev-b", "dev-none")
        resp = await client.request(method, missing_path, json=body, headers=bearer(token_a))
        assert await problem(resp, 404) == other  # indistinguishable from no device
    export = await (await client.get("/v1/devices/dev-b/export", headers=admin())).json()
    assert export["profile"]["tier"] is None


async def test_the_sdk_key_never_touches_an_existing_device(client: Client) -> None:
    await register(client)
    for method, path in [
        ("PATCH", "/v1/devices/dev-1"),
        ("GET", "/v1/devices/dev-1/export"),
        ("DELETE", "/v1/devices/dev-1"),
    ]:
        resp = await client.request(method, path, json={"tier": "x"}, headers=SDK)
        await problem(resp, 403)
    assert (await client.get("/v1/devices/dev-1/export", headers=admin())).status == 200


@pytest.mark.parametrize(
    ("method", "path", "key"),
    [
        ("POST", "/v1/devices", ADMIN_KEY),
        ("POST", "/v1/devices", INGEST_KEY),
        ("PATCH", "/v1/devices/dev-1", ADMIN_KEY),
        ("PATCH", "/v1/devices/dev-1", INGEST_KEY),
        ("GET", "/v1/devices/dev-1/export", INGEST_KEY),
        ("DELETE", "/v1/devices/dev-1", INGEST_KEY),
    ],
)
async def test_the_wrong_kind_of_key_is_403(
    client: Client, method: str, path: str, key: str
) -> None:
    await register(client)
    body = {"device_id": "dev-2", "consent": CONSENT} if method == "POST" else {}
    await problem(await client.request(method, path, json=body, headers=bearer(key)), 403)


async def test_a_device_token_on_admin_and_sdk_routes_is_403(client: Client) -> None:
    token = await register(client)
    await problem(await client.get("/v1/stores", headers=bearer(token)), 403)
    body = {"device_id": "dev-2", "consent": CONSENT}
    await problem(await client.post("/v1/devices", json=body, headers=bearer(token)), 403)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": "Bearer a.b.c"},
        {"Authorization": f"Bearer {SDK_KEY}x"},
    ],
)
async def test_a_missing_or_garbage_credential_is_401(
    client: Client, headers: dict[str, str]
) -> None:
    await register(client)
    for method, path in [
        ("POST", "/v1/devices"),
        ("PATCH", "/v1/devices/dev-1"),
        ("GET", "/v1/devices/dev-1/export"),
        ("DELETE", "/v1/devices/dev-1"),
    ]:
        resp = await client.request(method, path, json={}, headers=headers)
        await problem(resp, 401)
        assert resp.headers["WWW-Authenticate"] == "Bearer"


async def test_a_forged_device_token_is_401_wherever_it_points(client: Client) -> None:
    token = await register(client)
    forged = ref_of(token) + ".forged-secret"
    stranger = "0" * 32 + ".forged-secret"
    for path in ["/v1/devices/dev-1/export", "/v1/devices/dev-2/export"]:
        for credential in (forged, stranger):
            resp = await client.get(path, headers=bearer(credential))
            await problem(resp, 401)
    assert (await client.delete("/v1/devices/dev-1", headers=bearer(forged))).status == 401
    assert (await client.get("/v1/devices/dev-1/export", headers=bearer(token))).status == 200


# bad input: 400, 413, 415 or 422 with problem+json, never 500, and nothing stored


def reg(fields: str) -> bytes:
    """A registration body with both consents given, plus ``fields``."""
    return ('{"consent": {"location": true, "offers": true}, ' + fields + "}").encode()


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{", 400),
        (b'{"device_id": "d", "consent": {"location": true, "offers": NaN}}', 400),
        (reg('"device_id": Infinity'), 400),
        (b"[]", 422),
        (b'{"device_id": "d"}', 422),
        (b'{"device_id": "d", "consent": {"location": true}}', 422),
        (b'{"device_id": "d", "consent": {"location": 1, "offers": 0}}', 422),
        (reg('"device_id": ""'), 422),
        (reg('"device_id": 7'), 422),
        (reg('"device_id": "a\\nb"'), 422),
        (reg('"device_id": "' + "x" * 129 + '"'), 422),
        (reg('"device_id": "d", "tier": 3'), 422),
        (reg('"device_id": "d", "timezone": "Mars/Base"'), 422),
        (reg('"device_id": "d", "timezone": "../etc"'), 422),
        (reg('"device_id": "d", "segments": "vip"'), 422),
    ],
)
async def test_bad_registrations(
    client: Client, store: StateStore, body: bytes, status: int
) -> None:
    headers = {**SDK, "Content-Type": "application/json"}
    await problem(await client.post("/v1/devices", data=body, headers=headers), status)
    assert await store.get_device(client.app[DEVICES].ref_of("d")) is None


@pytest.mark.parametrize(
    "extra",
    [
        {"consent_granted_at": 1.0},
        {"device_ref": "0" * 32},
        {"token_hash": "0" * 64},
        {"ledger": []},
    ],
)
async def test_unknown_fields_are_refused_and_nothing_is_stored(
    client: Client, store: StateStore, extra: dict[str, Any]
) -> None:
    body = {"device_id": "dev-1", "consent": CONSENT, **extra}
    err = await problem(await client.post("/v1/devices", json=body, headers=SDK), 422)
    assert err["errors"][0]["code"] == "unknown-field"
    assert await store.get_device(client.app[DEVICES].ref_of("dev-1")) is None
    token = await register(client)
    resp = await client.patch("/v1/devices/dev-1", json=extra, headers=bearer(token))
    await problem(resp, 422)
    stored = await store.get_device(ref_of(token))
    assert stored is not None
    assert stored.updated_at == stored.created_at


@pytest.mark.parametrize(
    "patch",
    [
        {"consent": {"location": "no"}},
        {"consent": {"marketing": True}},
        {"consent": None},
        {"segments": None},
        {"segments": ["x" * 65]},
        {"timezone": "Nowhere/City"},
        {"timezone": ""},
        {"push_token": 5},
    ],
)
async def test_bad_patches(client: Client, store: StateStore, patch: dict[str, Any]) -> None:
    token = await register(client)
    resp = await client.patch("/v1/devices/dev-1", json=patch, headers=bearer(token))
    await problem(resp, 422)
    stored = await store.get_device(ref_of(token))
    assert stored is not None
    assert stored.updated_at == stored.created_at


async def test_body_limits(make_client: Any) -> None:
    client = await make_client(max_body_bytes=200)
    big = {"device_id": "d", "consent": CONSENT, "push_token": "x" * 300}
    await problem(await client.post("/v1/devices", json=big, headers=SDK), 413)
    resp = await client.post("/v1/devices", data="device_id=d", headers=SDK)
    await problem(resp, 415)


async def test_openapi_documents_the_device_routes(client: Client) -> None:
    doc = await (await client.get("/openapi.json")).json()
    paths = doc["paths"]
    assert set(paths["/v1/devices/{device_id}"]) >= {"patch", "delete"}
    assert "post" in paths["/v1/devices"]
    assert "get" in paths["/v1/devices/{device_id}/export"]
    body = paths["/v1/devices"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    registration = doc["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
    assert registration["additionalProperties"] is False
    assert set(registration["required"]) == {"device_id", "consent"}
