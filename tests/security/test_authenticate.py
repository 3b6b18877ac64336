"""Authenticate first (issue 23 item 1): a stranger costs one check and a 401, before the
body is read, with no state of its own; strangers share one bounded rate per address."""

from __future__ import annotations

import time
from typing import Any

import pytest

from geofence.config import Settings
from geofence.http.keys import PING_GATE
from geofence.http.limits import PingGate
from tests.conftest import ADMIN_KEY, SDK_KEY
from tests.http.test_pings_api import INSIDE, ping_body
from tests.security.conftest import CONSENT, Serve, Served, post_head, read_answer

MADE_UP = [
    "0" * 32 + "." + "x" * 32 + "." + "y" * 22,  # shaped like a token, tag made up
    "0123abcd.made-up-secret",  # the two-part shape of tokens before tags
    "not-a-key",
]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def no_body_answer(served: Served, path: str, token: str, method: bytes = b"POST") -> Any:
    """The answer to a request whose body is announced and never sent."""
    reader, _ = await served.send(post_head(path, token, 500, method=method))
    return await read_answer(reader)


@pytest.mark.parametrize("token", MADE_UP)
async def test_a_made_up_token_is_refused_before_its_body_and_gets_no_bucket(
    serve: Serve, token: str
) -> None:
    served = await serve(device_rate_per_s=2.0, device_burst=5)
    for path in ("/v1/pings", "/v1/pings/batch", "/v1/devices/dev-1/token"):
        answer = await no_body_answer(served, path, token)
        assert answer.status == 401
        assert answer.headers["www-authenticate"] == "Bearer"
        answer.problem()
    gate = served.app[PING_GATE]
    assert gate.device is not None
    assert len(gate.device) == 0
    assert gate.inflight == 0


async def test_a_forged_token_naming_a_real_device_is_401(serve: Serve) -> None:
    served = await serve()
    token = await served.register("victim")
    ref, nonce, tag = token.split(".")
    forged = [f"{ref}.{nonce}.{'A' * len(tag)}", f"{ref}.{'B' * len(nonce)}.{tag}", ref + ".x"]
    for credential in forged:
        for method, path in [(b"POST", "/v1/pings"), (b"PATCH", "/v1/devices/victim")]:
            answer = await no_body_answer(served, path, credential, method)
            assert answer.status == 401, answer
    url = f"{served.base}/v1/devices/victim/export"
    async with served.session.get(url, headers=bearer(token)) as resp:
        assert resp.status == 200  # the real token still works


async def test_another_devices_path_is_404_before_the_body(serve: Serve) -> None:
    served = await serve()
    mine = await served.register("mine")
    await served.register("theirs")
    for method, path in [(b"PATCH", "/v1/devices/theirs"), (b"POST", "/v1/devices/theirs/token")]:
        answer = await no_body_answer(served, path, mine, method)
        assert answer.status == 404
        assert answer.problem()["type"] == "/problems/not-found"


async def test_a_ping_for_another_device_is_404_and_changes_nothing(serve: Serve) -> None:
    served = await serve()
    mine = await served.register("mine")
    theirs = await served.register("theirs")
    body = ping_body("theirs", INSIDE, time.time() - 5)
    url = f"{served.base}/v1/pings"
    async with served.session.post(url, json=body, headers=bearer(mine)) as resp:
        assert resp.status == 404
    async with served.session.post(url, json=body, headers=bearer(theirs)) as resp:
        assert (await resp.json())["status"] == "accepted"  # the same ts: never taken before


async def test_strangers_share_one_rate_per_address(serve: Serve) -> None:
    served = await serve(stranger_rate_per_s=0.5, stranger_burst=3)
    url = f"{served.base}/v1/stores"
    statuses = []
    for _ in range(5):
        async with served.session.get(url, headers=bearer("nope")) as resp:
            statuses.append(resp.status)
            if resp.status == 429:
                assert resp.content_type == "application/problem+json"
                assert int(resp.headers["Retry-After"]) >= 1
    assert statuses == [401, 401, 401, 429, 429]
    async with served.session.get(url, headers=bearer(ADMIN_KEY)) as resp:
        assert resp.status == 200  # an authenticated caller is not a stranger
    body = {"device_id": "new", "consent": CONSENT}
    reg = f"{served.base}/v1/devices"
    async with served.session.post(reg, json=body, headers=bearer(SDK_KEY)) as resp:
        assert resp.status == 429  # the public sdk key shares the strangers' rate
    assert len(served.app[PING_GATE].strangers or ()) == 1


def test_the_strangers_table_is_bounded(settings: Settings) -> None:
    gate = PingGate.from_settings(settings.replace(stranger_addresses=3))
    for i in range(50):
        gate.admit_stranger(f"198.51.100.{i}")
    assert gate.strangers is not None
    assert len(gate.strangers) == 3
