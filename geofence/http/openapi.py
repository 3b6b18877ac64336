"""The OpenAPI 3.1 document of the service, built from the edge types where they exist."""

from __future__ import annotations

from functools import cache
from typing import Any

import msgspec

from geofence.domain.devices import ProfilePatch, Registration
from geofence.http.devices import Registered
from geofence.service.devices import DeviceExport, DeviceView

PROBLEM = {"$ref": "#/components/schemas/Problem"}
ANY_OBJECT: dict[str, Any] = {"type": "object"}
ADMIN: list[dict[str, list[str]]] = [{"bearer": []}]


def _problem_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "errors": {"type": "array", "items": {"type": "object"}},
        },
    }


def _responses(ok: int, schema: dict[str, Any] | None, *errors: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if schema is None:
        out[str(ok)] = {"description": "done"}
    else:
        out[str(ok)] = {"description": "ok", "content": {"application/json": {"schema": schema}}}
    for status in errors:
        out[str(status)] = {
            "description": "problem",
            "content": {"application/problem+json": {"schema": PROBLEM}},
        }
    return out


def _op(
    summary: str,
    ok: int = 200,
    schema: dict[str, Any] | None = ANY_OBJECT,
    errors: tuple[int, ...] = (401, 403),
    body: dict[str, Any] | None = None,
    params: list[dict[str, Any]] | None = None,
    security: list[dict[str, list[str]]] | None = ADMIN,
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": _responses(ok, schema, *errors)}
    if security is not None:
        op["security"] = security
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if params:
        op["parameters"] = params
    return op


def _query_flag(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": {"type": "boolean"}, "description": description}


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _ops_paths() -> dict[str, Any]:
    status = {"type": "object", "properties": {"status": {"type": "string"}}}
    return {
        "/healthz": {"get": _op("process alive", schema=status, errors=(), security=None)},
        "/readyz": {
            "get": _op("index loaded, Redis reachable", schema=status, errors=(503,), security=None)
        },
        "/metrics": {"get": _op("Prometheus metrics", schema=None, errors=(), security=None)},
        "/openapi.json": {"get": _op("this document", errors=(), security=None)},
    }


def _store_paths() -> dict[str, Any]:
    store = [_path("store_id")]
    fc = {"$ref": "#/components/schemas/FeatureCollection"}
    upload_errors = (400, 401, 403, 413, 415, 422, 503)
    flags = [
        _query_flag("dry_run", "validate and report without applying"),
        _query_flag("repair", "repair invalid polygons with make_valid and report the change"),
    ]
    return {
        "/v1/stores": {
            "put": _op("replace the catalogue", body=fc, errors=upload_errors, params=flags),
            "get": _op("the catalogue as a FeatureCollection", schema=fc),
        },
        "/v1/stores/{store_id}": {
            "put": _op(
                "upsert one store", body=ANY_OBJECT, errors=upload_errors, params=[*store, flags[1]]
            ),
            "get": _op("one store as a Feature", errors=(401, 403, 404), params=store),
            "delete": _op(
                "remove one store", ok=204, schema=None, errors=(401, 403, 404), params=store
            ),
        },
    }


@cache
def _device_types() -> tuple[tuple[dict[str, Any], ...], dict[str, Any]]:
    """The device edge types as JSON Schema, referenced from components/schemas."""
    types = (Registration, ProfilePatch, Registered, DeviceView, DeviceExport)
    return msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")


def _device_paths() -> dict[str, Any]:
    (registration, patch, registered, view, export), _ = _device_types()
    device = [_path("device_id")]
    body_errors = (400, 401, 403, 404, 413, 415, 422, 503)
    return {
        "/v1/devices": {
            "post": _op(
                "register a new device (sdk key); answers its device token",
                ok=201,
                schema=registered,
                body=registration,
                errors=(400, 401, 403, 409, 413, 415, 422, 503),
            ),
        },
        "/v1/devices/{device_id}": {
            "patch": _op(
                "change consent, tier, segments, timezone, push token (device token)",
                schema=view,
                body=patch,
                errors=body_errors,
                params=device,
            ),
            "delete": _op(
                "erase every key of the device (device token or admin); 204 when repeated",
                ok=204,
                schema=None,
                errors=(401, 403, 404, 503),
                params=device,
            ),
        },
        "/v1/devices/{device_id}/export": {
            "get": _op(
                "everything held about the device (device token or admin)",
                schema=export,
                errors=(401, 403, 404, 503),
                params=device,
            ),
        },
    }


@cache
def openapi_document() -> dict[str, Any]:
    paths: dict[str, Any] = {**_ops_paths(), **_store_paths(), **_device_paths()}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "geofence",
            "version": "0.1.0",
            "description": "Geofencing and proximity offers for loyalty programmes.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Problem": _problem_schema(),
                **_device_types()[1],
                "FeatureCollection": {
                    "type": "object",
                    "required": ["type", "features"],
                    "properties": {
                        "type": {"const": "FeatureCollection"},
                        "features": {"type": "array", "items": ANY_OBJECT},
                    },
                },
            },
        },
    }
