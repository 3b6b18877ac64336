"""Operations endpoints and the error contract (contract §2, §7)."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from geofence.adapters.memory import MemoryStore
from geofence.config import Settings
from geofence.domain.errors import Unavailable
from geofence.http.app import create_app
from tests.conftest import admin


async def assert_problem(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"
    body: dict[str, Any] = await resp.json(content_type=None)
    assert body["status"] == status
    assert {"type", "title", "detail"} <= body.keys()
    return body


async def test_healthz_and_readyz(client: TestClient[Any, Any]) -> None:
    assert (await client.get("/healthz")).status == 200
    resp = await client.get("/readyz")
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "ready"
    assert body["stores"] == 0


async def test_readyz_with_the_sample_stores(aiohttp_client: Any, settings: Settings) -> None:
    client = await aiohttp_client(create_app(settings.replace(stores="stores.geojson")))
    body = await (await client.get("/readyz")).json()
    assert body["stores"] == 162


async def test_metrics_are_prometheus_text(client: TestClient[Any, Any]) -> None:
    await client.get("/healthz")
    resp = await client.get("/metrics")
    assert resp.status == 200
    text = await resp.text()
    assert 'geofence_http_requests_total{route="/healthz",status="200"} 1.0' in text
    assert "geofence_fences 0.0" in text


async def test_openapi_is_3_1_and_lists_the_routes(client: TestClient[Any, Any]) -> None:
    doc = await (await client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    for path in ("/healthz", "/readyz", "/v1/stores", "/v1/stores/{store_id}"):
        assert path in doc["paths"]


async def test_unknown_route_is_a_problem(client: TestClient[Any, Any]) -> None:
    await assert_problem(await client.get("/nope"), 404)


async def test_wrong_method_is_a_problem(client: TestClient[Any, Any]) -> None:
    resp = await client.post("/healthz")
    await assert_problem(resp, 405)
    assert "GET" in resp.headers["Allow"]


async def test_malformed_json_nan_and_wrong_type(client: TestClient[Any, Any]) -> None:
    h = {**admin(), "Content-Type": "application/json"}
    for body in (b"{", b'{"type": NaN}', b"[1, Infinity]", b'{"a": 1} trailing'):
        problem = await assert_problem(await client.put("/v1/stores", data=body, headers=h), 400)
        assert problem["type"].endswith("malformed-json")


async def test_wrong_content_type_is_415(client: TestClient[Any, Any]) -> None:
    h = {**admin(), "Content-Type": "text/plain"}
    await assert_problem(await client.put("/v1/stores", data=b"{}", headers=h), 415)


async def test_oversized_body_is_413(make_client: Any) -> None:
    client = await make_client(max_body_bytes=100, max_upload_bytes=1000)
    h = {**admin(), "Content-Type": "application/json"}
    big = b'{"type": "FeatureCollection", "features": [' + b" " * 2000 + b"]}"
    await assert_problem(await client.put("/v1/stores", data=big, headers=h), 413)


async def test_missing_and_wrong_credentials_are_401(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/v1/stores")
    await assert_problem(resp, 401)
    assert resp.headers["WWW-Authenticate"] == "Bearer"
    bad = await client.get("/v1/stores", headers={"Authorization": "Bearer nope"})
    await assert_problem(bad, 401)


async def test_wrong_kind_of_key_is_403(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/v1/stores", headers={"Authorization": "Bearer test-sdk-key"})
    await assert_problem(resp, 403)


class DownStore(MemoryStore):
    """A store whose backend is unreachable."""

    async def check(self) -> None:
        raise Unavailable("down")

    async def catalogue_version(self) -> int:
        raise Unavailable("down")

    async def load_catalogue(self) -> Any:
        raise Unavailable("down")


async def test_backend_down_is_503_with_retry_after(
    aiohttp_client: Any, settings: Settings
) -> None:
    client = await aiohttp_client(create_app(settings, store=DownStore()))
    resp = await client.get("/readyz")
    await assert_problem(resp, 503)
    assert resp.headers["Retry-After"] == "1"
    stores = await client.get("/v1/stores", headers=admin())
    await assert_problem(stores, 503)
    assert (await client.get("/healthz")).status == 200


async def test_unexpected_error_is_a_plain_500_problem(
    aiohttp_client: Any, settings: Settings
) -> None:
    class BrokenStore(MemoryStore):
        async def load_catalogue(self) -> Any:
            raise RuntimeError("secret internals")

    client = await aiohttp_client(create_app(settings, store=BrokenStore()))
    resp = await client.get("/v1/stores", headers=admin())
    body = await assert_problem(resp, 500)
    assert "secret internals" not in str(body)
