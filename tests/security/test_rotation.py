"""Token rotation and re-registration (issue 24 item 5): a device replaces its token with
its current one; an install that lost its token registers its device id again by
proving its install secret; the old token is refused at once either way."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from geofence.http.keys import DEVICES
from geofence.ports import StateStore
from tests.conftest import SDK_KEY, admin
from tests.http.test_devices import CONSENT, bearer, problem, ref_of

Client = TestClient[Any, Any]
SDK = bearer(SDK_KEY)
SECRET = "install-secret-from-the-keystore-0001"


async def registration(client: Client, status: int, **extra: Any) -> Any:
    body = {"device_id": "dev-1", "consent": CONSENT, **extra}
    resp = await client.post("/v1/devices", json=body, headers=SDK)
    assert resp.status == status, await resp.text()
    return await resp.json(content_type=None)


async def works(client: Client, token: str) -> bool:
    resp = await client.get("/v1/devices/dev-1/export", headers=bearer(token))
    assert resp.status in (200, 401), await resp.text()
    return resp.status == 200


async def test_rotation_revokes_the_old_token_at_once(client: Client) -> None:
    old = (await registration(client, 201))["device_token"]
    resp = await client.post("/v1/devices/dev-1/token", headers=bearer(old))
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "no-store"
    answer = await resp.json()
    new = answer["device_token"]
    assert answer["device_id"] == "dev-1"
    assert new != old
    assert ref_of(new) == ref_of(old)
    assert not await works(client, old)
    assert await works(client, new)
    await problem(await client.post("/v1/devices/dev-1/token", headers=bearer(old)), 401)


async def test_only_the_device_itself_rotates(client: Client) -> None:
    token = (await registration(client, 201))["device_token"]
    other = (await registration(client, 201, device_id="dev-2"))["device_token"]
    await problem(await client.post("/v1/devices/dev-1/token", headers=bearer(other)), 404)
    for credential in (admin(), SDK):
        await problem(await client.post("/v1/devices/dev-1/token", headers=credential), 403)
    assert await works(client, token)


async def test_re_registration_with_the_install_secret_gets_a_new_token(
    client: Client, store: StateStore
) -> None:
    old = (await registration(client, 201, install_secret=SECRET, tier="gold"))["device_token"]
    again = await registration(client, 200, install_secret=SECRET)
    assert again["device_id"] == "dev-1"
    assert again["device_token"] != old
    assert not await works(client, old)
    assert await works(client, again["device_token"])
    export = await (await client.get("/v1/devices/dev-1/export", headers=admin())).json()
    assert export["profile"]["tier"] == "gold"  # the same device, kept as it was
    stored = await store.get_device(client.app[DEVICES].ref_of("dev-1"))
    assert stored is not None
    assert stored.install_hash
    assert SECRET not in stored.install_hash
    assert SECRET not in str(export)
    assert stored.install_hash not in str(export)


async def test_a_wrong_or_missing_secret_is_the_same_409(client: Client) -> None:
    token = (await registration(client, 201, install_secret=SECRET))["device_token"]
    wrong = await registration(client, 409, install_secret=SECRET[:-1] + "2")
    missing = await registration(client, 409)
    assert wrong == missing
    assert wrong["type"] == "/problems/conflict"
    assert await works(client, token)


async def test_a_device_registered_without_a_secret_cannot_be_taken_over(client: Client) -> None:
    token = (await registration(client, 201))["device_token"]
    await registration(client, 409, install_secret=SECRET)
    assert await works(client, token)


async def test_an_install_secret_too_short_is_refused(client: Client) -> None:
    err = await registration(client, 422, install_secret="short")
    assert err["errors"][0]["path"] == "$.install_secret"
