"""Issue 23: strangers cannot write into the logs.

Anyone with the app holds the public SDK key. Registering devices named like the words of
a log line, and pinging for another device's id with one's own token (answered 404), must
leave every later log line as it would have been: the words still there, each line one
JSON object whose fields say what they said. Runs on the memory store and on Redis.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from geofence.config import Settings
from geofence.http.app import create_app
from geofence.ports import StateStore
from tests.conftest import SDK_KEY
from tests.http.test_pings_api import ping_body
from tests.json_logs import JsonLog

Client = TestClient[Any, Any]
WORDS = ("level", "INFO", "logger", "catalogue", "message", "time")
HELSINKI = (60.1699, 24.9384)
LATER = "catalogue loaded: level INFO, logger and message at the same time"
REGISTERED = re.compile(r"^device registered device=[0-9a-f]{32} location=true offers=true$")
REFUSED = re.compile(r"^device token refused device=[0-9a-f]{32} reason=other-device$")


@pytest.fixture
async def client(aiohttp_client: Any, store: StateStore, settings: Settings) -> Client:
    made: Client = await aiohttp_client(create_app(settings, store=store))
    return made


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def register(client: Client, device_id: str) -> str:
    body = {"device_id": device_id, "consent": {"location": True, "offers": True}}
    resp = await client.post("/v1/devices", json=body, headers=bearer(SDK_KEY))
    assert resp.status == 201, await resp.text()
    token: str = (await resp.json())["device_token"]
    return token


async def tamper(client: Client) -> None:
    """What anyone with the app can do: devices named like the words of a log line, each
    pinging as the next one."""
    tokens = [await register(client, word) for word in WORDS]
    for token, other in zip(tokens, WORDS[1:] + WORDS[:1], strict=True):
        body = ping_body(other, HELSINKI, time.time())
        assert (await client.post("/v1/pings", json=body, headers=bearer(token))).status == 404


async def test_later_log_lines_are_written_as_they_would_have_been(
    client: Client, json_log: JsonLog
) -> None:
    await tamper(client)
    since = len(json_log.text)
    logging.getLogger("geofence.service.catalogue").info(LATER, extra={"stores": 3})
    await register(client, "a-later-device")
    assert LATER in json_log.text[since:]  # every word as it was written
    later = json_log.records(since)
    assert later[0] | {"time": "-"} == {
        "time": "-",
        "level": "INFO",
        "logger": "geofence.service.catalogue",
        "message": LATER,
        "stores": 3,
    }
    registered = [r for r in later if r["logger"] == "geofence.service.devices"]
    assert [r["level"] for r in registered] == ["INFO"]
    assert REGISTERED.match(registered[0]["message"]), registered[0]


async def test_the_tampering_itself_is_logged_by_ref_only(
    client: Client, json_log: JsonLog
) -> None:
    await tamper(client)
    records = json_log.records()
    refused = [r["message"] for r in records if "reason=other-device" in r["message"]]
    assert len(refused) == len(WORDS), refused
    assert all(REFUSED.match(m) for m in refused), refused
    assert len([r for r in records if REGISTERED.match(r["message"])]) == len(WORDS)
    for record in records:
        assert not {k: v for k, v in record.items() if k != "level" and v in WORDS}, record
