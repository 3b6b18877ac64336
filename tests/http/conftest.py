"""HTTP fixtures: a client of create_app(...) over either store."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from geofence.config import Settings
from geofence.http.app import create_app
from geofence.ports import StateStore

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
def make_client(aiohttp_client: Any, store: StateStore, settings: Settings) -> ClientFactory:
    """Makes a client of a fresh app on the parametrised store; settings can be changed."""

    async def make(**changes: Any) -> TestClient[Any, Any]:
        client: TestClient[Any, Any] = await aiohttp_client(
            create_app(settings.replace(**changes), store=store)
        )
        return client

    return make


@pytest.fixture
async def client(make_client: ClientFactory) -> TestClient[Any, Any]:
    return await make_client()
