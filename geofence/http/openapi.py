"""The OpenAPI 3.1 document of the service, built from the edge types where they exist.

Bodies that have a msgspec type are generated from it, so the document cannot drift from
the code. The views built as plain dicts (the stores report, stats, explain, dead letters)
are written out here; the tests validate real answers against every one of them. Every
time an answer carries is RFC 3339 (``format: date-time``), by the rule that converts them
(``domain.times``). The ``webhooks`` entry is the push to the gateway, and the tests
validate every pushed body against it.
"""

from __future__ import annotations

import copy
from functools import cache
from itertools import pairwise
from typing import Any, Final, get_args

import msgspec

from geofence.domain import errors, uploads
from geofence.domain.delivery import (
    DEFAULT_TOLERANCE_S,
    WEBHOOK_ID,
    WEBHOOK_SIGNATURE,
    WEBHOOK_TIMESTAMP,
)
from geofence.domain.devices import ProfilePatch, Registration
from geofence.domain.geojson import STORE_ID_PATTERN
from geofence.domain.lift import METHOD, MIN_CONVERSIONS, MIN_ENTRIES
from geofence.domain.model import PingStatus
from geofence.domain.offers import Notification, Offer
from geofence.domain.stats import BUCKET_SIZES, BYS, COLUMNS, MAX_POINTS, STAGES
from geofence.domain.times import is_time_field
from geofence.http.delivery import MAX_LISTED, SIGNATURE, ReceiptIn
from geofence.http.devices import Registered
from geofence.http.errors import PROBLEM_JSON
from geofence.http.offer_schema import OfferInput
from geofence.http.offers import ConversionIn
from geofence.http.pings import MAX_BATCH, PingIn
from geofence.ports import HISTORY_KEPT
from geofence.service.devices import DeviceExport, DeviceView
from geofence.service.pings import PingResult

Schema = dict[str, Any]
Params = tuple[Schema, ...]

JSON: Final = "application/json"
GEOJSON: Final = "application/geo+json"
REF_TEMPLATE: Final = "#/components/schemas/{name}"
ANY_OBJECT: Final[Schema] = {"type": "object"}
NUMBER: Final[Schema] = {"type": "number"}
INTEGER: Final[Schema] = {"type": "integer", "minimum": 0}
STRING: Final[Schema] = {"type": "string"}
STRINGS: Final[Schema] = {"type": "array", "items": STRING}
DATE_TIME: Final[Schema] = {"type": "string", "format": "date-time"}
TIME_IN: Final[Schema] = {
    "anyOf": [DATE_TIME, {"type": "number", "minimum": 0}],
    "description": "RFC 3339 with an offset, or epoch seconds",
}
PHASES: Final = ("pending", "confirmed", "suppressed", "departing")

STRUCTS: Final = (
    Registration,
    ProfilePatch,
    Registered,
    DeviceView,
    DeviceExport,
    PingIn,
    PingResult,
    Notification,
    Offer,
    OfferInput,
    ReceiptIn,
    ConversionIn,
    errors.Problem,
)

# what each problem status means on this service
PROBLEMS: Final = {
    400: "malformed JSON, or a query flag that is not true, false, 1 or 0",
    401: "a missing or invalid credential",
    403: "a credential of the wrong kind, or the consent the call needs is withheld",
    404: "no such resource; another device's id answers the same",
    408: "the body did not arrive within GEOFENCE_BODY_TIMEOUT_S (`body-timeout`)",
    409: "the request conflicts with what is stored",
    413: "the body is larger than the configured limit",
    415: "the body is not JSON",
    422: "the body or a query parameter breaks a rule; every problem is listed in errors",
    429: "the caller (device token or ingest key) is over its rate, or the client address "
    "over the rate it shares for unauthenticated and sdk-key requests (`rate-limited`); "
    "retry after Retry-After seconds",
    503: "the state store is down or did not answer within GEOFENCE_REDIS_TIMEOUT_S "
    "(`backend-unavailable`), or the catalogue is not loaded yet; retry later",
}
# the ping routes also shed load: past the cap on pings in flight they answer 503 at once
SHED: Final = (
    "the state store is down or did not answer within GEOFENCE_REDIS_TIMEOUT_S "
    "(`backend-unavailable`), or the catalogue is not loaded yet, or too many pings are in "
    "flight (`overloaded`); retry after Retry-After seconds"
)
RETRY_AFTER: Final[Schema] = {
    "required": True,
    "description": "whole seconds to wait before trying again",
    "schema": {"type": "string", "pattern": "^[0-9]+$"},
}
PROBLEM_HEADERS: Final = {
    401: {"WWW-Authenticate": {"required": True, "schema": STRING}},
    429: {"Retry-After": RETRY_AFTER},
    503: {"Retry-After": RETRY_AFTER},
}

BODY: Final = (400, 401, 403, 413, 415, 422, 503)
LIST: Final = (401, 403, 503)
ONE: Final = (401, 403, 404, 503)


def ref(name: str) -> Schema:
    return {"$ref": REF_TEMPLATE.format(name=name)}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def obj(properties: Schema, *, optional: tuple[str, ...] = ()) -> Schema:
    """A closed object whose properties are all required except ``optional``."""
    return {
        "type": "object",
        "properties": properties,
        "required": [name for name in properties if name not in optional],
        "additionalProperties": False,
    }


# --- operations ---------------------------------------------------------------------------


def _problem(status: int) -> Schema:
    exact: Schema = {"properties": {"status": {"const": status}}}
    if status == 422:  # a validation failure lists every problem, with its path
        exact["required"] = ["errors"]
    schema = {"allOf": [ref("Problem"), exact]}
    response: Schema = {
        "description": PROBLEMS[status],
        "content": {PROBLEM_JSON: {"schema": schema}},
    }
    if status in PROBLEM_HEADERS:
        response["headers"] = PROBLEM_HEADERS[status]
    return response


def _responses(
    ok: tuple[int, ...], schema: Schema | None, media: str, errs: tuple[int, ...]
) -> Schema:
    out: Schema = {}
    for status in ok:
        out[str(status)] = {"description": "no content" if schema is None else "ok"}
        if schema is not None:
            out[str(status)]["content"] = {media: {"schema": schema}}
    out.update({str(status): _problem(status) for status in errs})
    return out


def _op(  # noqa: PLR0913 - an operation's parts, each by name
    op_id: str,
    summary: str,
    *,
    ok: tuple[int, ...] = (200,),
    schema: Schema | None = ANY_OBJECT,
    errs: tuple[int, ...] = LIST,
    body: Schema | None = None,
    params: Params = (),
    callers: tuple[str, ...] = ("admin key",),
    media: str = JSON,
) -> Schema:
    if callers:  # a caller that fails authentication takes from its address's rate
        errs = _with(errs, 429)
    if body is not None:
        errs = _with(errs, 408)
    op: Schema = {
        "operationId": op_id,
        "summary": summary,
        "responses": _responses(ok, schema, media, errs),
    }
    if callers:
        op["description"] = "May be called with: " + ", ".join(callers) + "."
        op["security"] = [{"bearer": []}]
    if body is not None:
        op["requestBody"] = {"required": True, "content": {JSON: {"schema": body}}}
    if params:
        op["parameters"] = list(params)
    return op


def _with(errs: tuple[int, ...], status: int) -> tuple[int, ...]:
    return tuple(sorted({*errs, status}))


def _flag(name: str, description: str) -> Schema:
    return {
        "name": name,
        "in": "query",
        "description": description + " (true, false, 1 or 0)",
        "schema": {"type": "boolean", "default": False},
    }


def _query(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "query", "schema": schema, "description": description}


def _path(name: str, schema: Schema = STRING) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": schema}


# the console's files (geofence/console/static/): pages, styles, scripts, images, licences
CONSOLE_MEDIA: Final = (
    "text/html",
    "text/css",
    "application/javascript",
    "application/json",
    "image/png",
    "application/octet-stream",
)


# --- paths ----------------------------------------------------------------------------------


def _ops_paths() -> Schema:
    public: dict[str, Any] = {"callers": (), "errs": ()}
    text = {"type": "string", "description": "Prometheus text exposition format"}
    return {
        "/healthz": {"get": _op("healthz", "process alive", schema=ref("Health"), **public)},
        "/readyz": {
            "get": _op(
                "readyz",
                "index loaded, Redis reachable when configured",
                schema=ref("Ready"),
                callers=(),
                errs=(503,),
            )
        },
        "/metrics": {
            "get": _op("metrics", "Prometheus metrics", schema=text, media="text/plain", **public)
        },
        "/openapi.json": {"get": _op("openapi", "this document", **public)},
        **_console_paths(public),
    }


def _console_paths(public: dict[str, Any]) -> Schema:
    """The marketers' console: public static files; its data comes from the admin API."""
    file = _op("console_file", "a file of the console", params=(_path("path"),), callers=())
    file["responses"] = _responses((200,), None, JSON, (404,))
    content: Schema = {media: {"schema": {}} for media in CONSOLE_MEDIA}
    file["responses"]["200"] = {"description": "ok", "content": content}
    config = _op("console_config", "its map tiles", schema=ref("ConsoleConfig"), **public)
    return {
        "/console": {
            "get": _op("console", "redirects to /console/", ok=(308,), schema=None, **public)
        },
        "/console/config.json": {"get": config},
        "/console/{path}": {"get": file},
    }


STORE_ID: Final[Schema] = {
    "type": "string",
    "pattern": STORE_ID_PATTERN,
    "description": "1 to 128 ASCII letters, digits and . _ : - (an upload with another "
    "id is 422 `invalid-id`)",
}
UPLOAD_CONFLICT: Final = (
    "`upload-in-progress`: another upload is being checked in this process (Retry-After); "
    "`catalogue-shrink`: the upload would remove more than half of the catalogue; "
    "`confirm-move`: it has a warning of likely swapped longitude and latitude "
    f"({', '.join(sorted(uploads.NEEDS_CONFIRM_MOVE))}). The last two attach the report."
)


def _upload_op(op_id: str, summary: str, **kwargs: Any) -> Schema:
    """A store upload: its 409s are the upload guards, with Retry-After when busy."""
    op = _op(op_id, summary, errs=(*BODY, 409), **kwargs)
    conflict = op["responses"]["409"]
    conflict["description"] = UPLOAD_CONFLICT
    conflict["headers"] = {"Retry-After": {**RETRY_AFTER, "required": False}}
    return op


def _with_files(op: Schema) -> Schema:
    """The catalogue upload also takes a GeoPackage or a zipped Shapefile."""
    binary = {"schema": {"type": "string", "contentMediaType": "application/octet-stream"}}
    content = op["requestBody"]["content"]
    content[GEOJSON] = content[JSON]
    content["application/geopackage+sqlite3"] = binary
    content["application/zip"] = binary
    op["description"] += (
        " A GeoPackage (`application/geopackage+sqlite3`) or a zipped Shapefile "
        "(`application/zip`) is converted on the server by the CLI's import code, its first "
        "layer reprojected to WGS 84 (`notes` say so), then checked as GeoJSON is; any other "
        "Content-Type is read as GeoJSON."
    )
    return op


def _store_paths() -> Schema:
    store = _path("store_id", STORE_ID)
    repair = _flag("repair", "repair invalid polygons with make_valid and report the change")
    dry_run = _flag("dry_run", "validate and report without applying (never refused by a guard)")
    allow_shrink = _flag(
        "allow_shrink", "apply an upload that removes more than half of the catalogue, or all"
    )
    confirm_move = _flag(
        "confirm_move",
        "apply an upload with a warning of likely swapped longitude and latitude "
        "(catalogue-moved, swapped-coordinates)",
    )
    return {
        "/v1/stores": {
            "put": _with_files(
                _upload_op(
                    "putStores",
                    "replace the whole catalogue atomically",
                    schema=ref("StoresReport"),
                    body=ref("FeatureCollection"),
                    params=(dry_run, repair, allow_shrink, confirm_move),
                )
            ),
            "get": _op(
                "getStores", "the catalogue", schema=ref("FeatureCollection"), media=GEOJSON
            ),
        },
        "/v1/stores/versions": {
            "get": _op(
                "storeVersions",
                f"the catalogue's last {HISTORY_KEPT} versions, newest first: when, how many "
                "stores, and how many were added, changed and removed (never who)",
                schema={"type": "array", "items": ref("CatalogueVersion")},
            ),
        },
        "/v1/stores/{store_id}": {
            "put": _upload_op(
                "putStore",
                "upsert one store: 201 when created, 200 when replaced",
                ok=(200, 201),
                schema=ref("StoreUpserted"),
                body=ref("Feature"),
                params=(store, repair, confirm_move),
            ),
            "get": _op(
                "getStore",
                "one store",
                schema=ref("Feature"),
                media=GEOJSON,
                errs=ONE,
                params=(store,),
            ),
            "delete": _op(
                "deleteStore", "remove one store", ok=(204,), schema=None, errs=ONE, params=(store,)
            ),
        },
    }


def _device_paths() -> Schema:
    device = (_path("device_id"),)
    owner = ("device token (its own device)",)
    owner_or_admin = (*owner, "admin key")
    return {
        "/v1/devices": {
            "post": _op(
                "registerDevice",
                "register a new device (201) and answer its device token; the same "
                "device_id with the install_secret it was registered with: a new token "
                "for that device, the old one revoked (200); without it, or with another: 409",
                ok=(200, 201),
                schema=ref("Registered"),
                body=ref("Registration"),
                errs=(400, 401, 403, 409, 413, 415, 422, 503),
                callers=("sdk key",),
            ),
        },
        "/v1/devices/{device_id}": {
            "patch": _op(
                "patchDevice",
                "change consent, tier, segments, timezone, push token; withdrawing `location` "
                "erases the visit state and position, withdrawing `offers` the device's queued "
                "notifications and dead letters",
                schema=ref("DeviceView"),
                body=ref("ProfilePatch"),
                errs=(400, 401, 403, 404, 413, 415, 422, 503),
                params=device,
                callers=owner,
            ),
            "delete": _op(
                "eraseDevice",
                "erase every key of the device, its queued notifications and dead letters; 204 "
                "again when repeated",
                ok=(204,),
                schema=None,
                errs=ONE,
                params=device,
                callers=owner_or_admin,
            ),
        },
        "/v1/devices/{device_id}/export": {
            "get": _op(
                "exportDevice",
                "everything held about the device",
                schema=ref("DeviceExport"),
                errs=ONE,
                params=device,
                callers=owner_or_admin,
            ),
        },
        "/v1/devices/{device_id}/token": {
            "post": _op(
                "rotateDeviceToken",
                "a new device token; the one used for this call is refused from now on",
                schema=ref("Registered"),
                errs=ONE,
                params=device,
                callers=owner,
            ),
        },
        "/v1/devices/{device_id}/explain": {
            "get": _op(
                "explainDevice",
                "per store: visit state, cooldown end, limits and caps used, last decisions",
                schema=ref("DeviceExplain"),
                errs=ONE,
                params=device,
            ),
        },
    }


def _ping_paths() -> Schema:
    explain = _flag("explain", "add the decisions: every offer considered and why it was refused")
    one = _op(
        "postPing",
        "one location fix of the device: its status, visit events and notifications",
        schema=ref("PingResult"),
        body=ref("PingIn"),
        errs=(400, 401, 403, 404, 413, 415, 422, 429, 503),
        params=(explain,),
        callers=("device token (its own device)",),
    )
    batch = _op(
        "postPingBatch",
        f"up to {MAX_BATCH} pings: one result per ping, in order; a bad ping fails alone",
        schema=ref("BatchResults"),
        body=ref("BatchIn"),
        errs=(400, 401, 403, 413, 415, 422, 429, 503),
        params=(explain,),
        callers=("device token (its own pings only)", "ingest key"),
    )
    for op in (one, batch):
        op["responses"]["503"]["description"] = SHED
        op["description"] += (
            " Each device token, and each ingest key, has a request rate of its own (429)."
        )
    return {"/v1/pings": {"post": one}, "/v1/pings/batch": {"post": batch}}


def _offer_paths() -> Schema:
    offer = (_path("offer_id"),)
    return {
        "/v1/offers": {
            "get": _op("listOffers", "every offer", schema=ref("OfferList")),
        },
        "/v1/offers/{offer_id}": {
            "put": _op(
                "putOffer",
                "create (201) or replace (200) an offer",
                ok=(200, 201),
                schema=ref("Offer"),
                body=ref("OfferInput"),
                errs=BODY,
                params=offer,
            ),
            "get": _op("getOffer", "one offer", schema=ref("Offer"), errs=ONE, params=offer),
            "delete": _op(
                "deleteOffer", "remove an offer", ok=(204,), schema=None, errs=ONE, params=offer
            ),
        },
        "/v1/offers/{offer_id}/preview": {
            "get": _op(
                "previewOffer",
                "the offer's title and body as a notification at that store shows them "
                "({store_name} rendered); 404 for an unknown offer or store",
                schema=obj({"title": STRING, "body": STRING}),
                errs=ONE,
                params=(*offer, {**_query("store_id", STRING, "the store"), "required": True}),
            ),
        },
    }


def _stats_paths() -> Schema:
    window = "; the window is at most 400 days"
    caps = ", ".join(f"{n} {bucket}s" for bucket, n in MAX_POINTS.items())
    params = (
        _query("from", TIME_IN, "start of the window (default: 7 days before `to`)" + window),
        _query("to", TIME_IN, "end of the window (default: now)"),
        _query("by", {"enum": list(BYS), "default": "store"}, "one row per store or per offer"),
        _query(
            "bucket",
            {"enum": list(BUCKET_SIZES)},
            "a time series per store (or offer) instead of totals: a point per hour, or per "
            f"UTC day, every one of the window, zeros included; at most {caps} (else 422)",
        ),
        _query("store_id", STRING, "only this store (with by=store)"),
        _query("offer_id", STRING, "only this offer (with by=offer)"),
    )
    conversion = _op(
        "postConversion",
        "a purchase, attributed to the device's latest eligible entry (notified: treated; "
        "held out: control) within its offer's attribution_window_s before `at`, at "
        "`store_id` when given; counted once, then forgotten. 202 whether attributed or not: "
        "a device without consent to offers is accepted and never attributed",
        ok=(202,),
        schema=ref("ConversionAttributed"),
        body=ref("ConversionIn"),
        errs=(*BODY, 404),
        callers=("ingest key",),
    )
    return {
        "/v1/stats": {
            "get": _op(
                "stats",
                "the funnel: entries, notifications, delivered, opened, redeemed, with rates; "
                "with `bucket`, its time series with control and conversions; by offer, the "
                "lift over each offer's control group",
                schema={"oneOf": [ref("Stats"), ref("StatsSeries")]},
                errs=(401, 403, 422, 503),
                params=params,
            ),
        },
        "/v1/conversions": {"post": conversion},
    }


def _delivery_paths() -> Schema:
    limit = {"type": "integer", "minimum": 1, "maximum": MAX_LISTED, "default": 100}
    receipt = _op(
        "postReceipt",
        "a delivery receipt from the push gateway; each (notification, event) counts once",
        schema=ref("ReceiptRecorded"),
        body=ref("ReceiptIn"),
        errs=BODY,
        callers=(),
    )
    receipt["security"] = [{"gatewaySignature": []}, {"standardWebhooks": []}]
    receipt["description"] = (
        "The way back from the push gateway (see the `notification` webhook): signed with "
        "GEOFENCE_GATEWAY_SECRET by `X-Geofence-Signature`, or by the Standard Webhooks "
        f"headers when that one is absent; refused beyond {DEFAULT_TOLERANCE_S:g} s. `at` is "
        "RFC 3339 or epoch seconds."
    )
    return {
        "/v1/receipts": {"post": receipt},
        "/v1/deadletters": {
            "get": _op(
                "listDeadLetters",
                "notifications that will not be delivered, newest first; each is kept "
                "GEOFENCE_DEAD_LETTER_TTL_S (14 days), and goes with its device's erasure or "
                "withdrawal of consent to offers",
                schema=ref("DeadLetterList"),
                errs=(401, 403, 422, 503),
                params=(_query("limit", limit, "how many"),),
            ),
        },
        "/v1/deadletters/{notification_id}/retry": {
            "post": _op(
                "retryDeadLetter",
                "put a dead letter back in the outbox; 409 when it has expired",
                ok=(202,),
                schema=ref("Requeued"),
                errs=(401, 403, 404, 409, 503),
                params=(_path("notification_id"),),
            ),
        },
    }


# --- schemas generated from the types -----------------------------------------------------


def _schema_hook(kind: type) -> Schema:
    """msgspec's hook for types it has no schema for; raising NotImplementedError is how a
    hook declines (msgspec then reports the type as unsupported)."""
    if kind is object:
        return {"description": "any JSON value"}
    raise NotImplementedError


def _ping_result(schema: Schema) -> Schema:
    """The status is one of the contract's; notifications are the caller's view of them."""
    out = copy.deepcopy(schema)
    out["properties"]["status"] = {"enum": list(get_args(PingStatus))}
    out["properties"]["notifications"]["items"] = ref("Notification")
    out["properties"]["decisions"]["description"] = "with ?explain=true only"
    return out


def _public_notification(schema: Schema) -> Schema:
    """``public()``: a notification without whom it goes to."""
    out = copy.deepcopy(schema)
    hidden = ("device_ref", "push_token")
    out["properties"] = {k: v for k, v in out["properties"].items() if k not in hidden}
    out["required"] = list(out["properties"])
    out["additionalProperties"] = False
    out["description"] = "A notification made on an entry, as the ping's caller sees it."
    return out


def _push_notification(schema: Schema) -> Schema:
    """The body pushed to the gateway: every field of the notification, whom it goes to
    included (a push always has a token: a device without one is dead-lettered first)."""
    out = copy.deepcopy(schema)
    out["properties"]["device_ref"] = {
        "type": "string",
        "minLength": 1,
        "description": "the device's pseudonym (a keyed HMAC of its id), never the raw id",
    }
    out["properties"]["push_token"] = {"type": "string", "minLength": 1}
    out["required"] = list(out["properties"])
    out["additionalProperties"] = False
    out["title"] = "PushNotification"
    out["description"] = "A notification as pushed to GEOFENCE_PUSH_URL (contract §6)."
    return out


def _offer_view(schema: Schema) -> Schema:
    """``offer_doc``: times in RFC 3339 (UTC), with the budget spent so far."""
    out = copy.deepcopy(schema)
    out["properties"].update(starts_at=DATE_TIME, ends_at=DATE_TIME, budget_spent=INTEGER)
    out["required"] = list(out["properties"])
    out["description"] = "An offer as the API shows it: times in RFC 3339 (UTC)."
    return out


@cache
def _generated() -> Schema:
    _, components = msgspec.json.schema_components(
        STRUCTS, schema_hook=_schema_hook, ref_template=REF_TEMPLATE
    )
    # the name "Problem" belongs to the RFC 9457 document; no generated type refers to this one
    components["InputProblem"] = components.pop("Problem")
    components["PingResult"] = _ping_result(components["PingResult"])
    components["PushNotification"] = _push_notification(components["Notification"])
    components["Notification"] = _public_notification(components["Notification"])
    components["ReceiptIn"]["properties"]["at"] = TIME_IN
    components["Offer"] = _offer_view(components["Offer"])
    return components


# --- schemas of the views built as dicts ------------------------------------------------------


def _problem_schema() -> Schema:
    """RFC 9457; ``errors`` for validation failures."""
    return {
        "type": "object",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": STRING,
            "title": STRING,
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": STRING,
            "errors": {"type": "array", "items": ref("InputProblem")},
            "report": {
                **ANY_OBJECT,
                "description": "a store upload held back by a guard (409): what it would do",
            },
        },
    }


def _ops_schemas() -> Schema:
    return {
        "Health": obj({"status": {"const": "ok"}}),
        "ConsoleConfig": obj(
            {
                "tile_url": {"type": "string", "description": "GEOFENCE_TILE_URL; empty: none"},
                "tile_attribution": {"type": "string"},
            }
        ),
        "Ready": obj(
            {
                "status": {"const": "ready"},
                "catalogue_version": INTEGER,
                "stores": INTEGER,
                "persistence": {
                    "enum": ["aof", "rdb", "off", "unknown", "memory"],
                    "description": "how Redis keeps the state across its restarts (CONFIG GET "
                    "appendonly and save; unknown where CONFIG is refused); memory: in-process, "
                    "nothing survives a restart",
                },
                "warnings": {
                    "type": "array",
                    "items": STRING,
                    "description": "what an operator should fix, e.g. persistence off",
                },
            }
        ),
    }


def _geojson_schemas() -> Schema:
    feature = {
        "type": "object",
        "required": ["type", "geometry"],
        "properties": {
            "type": {"const": "Feature"},
            "id": STORE_ID,
            "geometry": {"type": "object", "required": ["type"]},
            "properties": nullable(ANY_OBJECT),
        },
    }
    collection = {
        "type": "object",
        "required": ["type", "features"],
        "properties": {
            "type": {"const": "FeatureCollection"},
            "version": {**INTEGER, "description": "the catalogue version (GET only)"},
            "features": {"type": "array", "items": ref("Feature")},
        },
    }
    return {"Feature": feature, "FeatureCollection": collection}


def _store_schemas() -> Schema:
    warnings = {"type": "array", "items": ANY_OBJECT}
    report = {
        "version": INTEGER,
        "stores": INTEGER,
        "cells": INTEGER,
        "added": STRINGS,
        "changed": STRINGS,
        "removed": STRINGS,
        "shrink": obj({"removed": INTEGER, "of": INTEGER}),
        "warnings": warnings,
        "notes": {**STRINGS, "description": "what a GeoPackage or Shapefile's conversion did"},
        "dry_run": {"type": "boolean"},
    }
    version = obj(
        {
            "version": INTEGER,
            "at": DATE_TIME,
            "stores": INTEGER,
            "added": INTEGER,
            "changed": INTEGER,
            "removed": INTEGER,
        }
    )
    upserted = {"version": INTEGER, "id": STRING, "created": {"type": "boolean"}}
    return {
        "StoresReport": obj(report, optional=("notes",)),
        "CatalogueVersion": version,
        "StoreUpserted": obj({**upserted, "warnings": warnings}),
    }


def _ping_schemas() -> Schema:
    invalid = obj(
        {
            "status": {"const": "invalid"},
            "reason": STRING,
            "errors": {"type": "array", "items": ref("InputProblem")},
        }
    )
    batch_in = obj({"pings": {"type": "array", "maxItems": MAX_BATCH, "items": ref("PingIn")}})
    result = {"oneOf": [ref("PingResult"), ref("InvalidPing")]}
    return {
        "BatchIn": {**batch_in, "description": "A ping that fails to parse fails alone."},
        "InvalidPing": invalid,
        "BatchResults": obj({"results": {"type": "array", "items": result}}),
    }


def _stats_schemas() -> Schema:
    stages = dict.fromkeys(STAGES, INTEGER)
    rates = {f"{later}_rate": nullable(NUMBER) for _, later in pairwise(STAGES)}
    row = obj(
        {"store_id": STRING, "offer_id": STRING, **stages, "rates": obj(rates)},
        optional=("store_id", "offer_id"),
    )
    row["oneOf"] = [{"required": [f"{by}_id"]} for by in BYS]
    stats = {
        "from": DATE_TIME,
        "to": DATE_TIME,
        "by": {"enum": list(BYS)},
        "rows": {"type": "array", "items": ref("StatsRow")},
        "totals": obj(stages),
        "lift": {"type": "array", "items": ref("Lift")},
    }
    point = obj({"at": DATE_TIME, **dict.fromkeys(COLUMNS, INTEGER)})
    line = obj({"key": STRING, "points": {"type": "array", "items": point}})
    series = {
        "from": DATE_TIME,
        "to": DATE_TIME,
        "by": {"enum": list(BYS)},
        "bucket": {"enum": list(BUCKET_SIZES)},
        "series": {"type": "array", "items": line},
        "lift": {"type": "array", "items": ref("Lift")},
    }
    return {
        "StatsRow": row,
        "Stats": obj(stats, optional=("lift",)),
        "StatsSeries": obj(series, optional=("lift",)),
        "Lift": _lift_schema(),
        "ConversionAttributed": obj(
            {"attributed": nullable(STRING), "group": nullable({"enum": ["treated", "control"]})}
        ),
    }


def _lift_schema() -> Schema:
    rate = nullable(NUMBER)
    group = obj({"entries": INTEGER, "conversions": INTEGER, "rate": rate})
    interval = obj({"low": rate, "high": rate, "method": {"const": METHOD}})
    lift = obj(
        {
            "offer_id": STRING,
            "treated": group,
            "control": group,
            "lift": rate,
            "relative_lift": rate,
            "interval": interval,
            "enough_data": {"type": "boolean"},
            "note": STRING,
        }
    )
    lift["description"] = (
        "Conversion rates of the offer's eligible entries, notified (treated) and held out "
        "(control). `lift` is the absolute difference treated rate - control rate; "
        "`relative_lift` that over the control rate. `interval` is its 95 % interval by "
        "Newcombe's hybrid score method (method 10 of Newcombe 1998, from the groups' Wilson "
        f"intervals). `enough_data` is false under {MIN_ENTRIES} entries or "
        f"{MIN_CONVERSIONS} conversions in either group, or when the interval includes 0; "
        "`note` says which in plain words."
    )
    return lift


def _explain_schemas() -> Schema:
    when = nullable(NUMBER)
    visit = obj(
        {
            "state": {"enum": list(PHASES)},
            "arrived_at": NUMBER,
            "last_inside_at": NUMBER,
            "departing_since": when,
        }
    )
    store = {
        "store_id": STRING,
        "visit": nullable(visit),
        "cooldown_ends_at": when,
        "decisions": {"type": "array", "items": ref("EntryDecision")},
    }
    cap = {"used": INTEGER, "cap": INTEGER, "window_s": NUMBER, "frees_at": when}
    offer = {
        "offer_id": STRING,
        "used": INTEGER,
        "per_device_limit": INTEGER,
        "cooldown_ends_at": when,
        "budget": nullable(INTEGER),
        "budget_spent": INTEGER,
    }
    explain = {
        "device_ref": STRING,
        "now": NUMBER,
        "device_cap": obj(cap),
        "stores": {"type": "array", "items": obj(store)},
        "offers": {"type": "array", "items": obj(offer)},
    }
    return {"DeviceExplain": obj(explain)}


def _offer_schemas() -> Schema:
    return {"OfferList": obj({"offers": {"type": "array", "items": ref("Offer")}})}


def _delivery_schemas() -> Schema:
    letter = {
        "notification_id": STRING,
        "reason": STRING,
        "at": NUMBER,
        "attempts": INTEGER,
        "last_error": nullable(STRING),
        "device_ref": STRING,
        "offer_id": STRING,
        "store_id": STRING,
        "created_at": NUMBER,
        "expires_at": NUMBER,
    }
    return {
        "ReceiptRecorded": obj({"status": {"enum": ["recorded", "duplicate"]}}),
        "DeadLetter": obj(letter),
        "DeadLetterList": obj({"dead_letters": {"type": "array", "items": ref("DeadLetter")}}),
        "Requeued": obj({"notification_id": STRING, "due_at": NUMBER}),
    }


# what callers send: their times may be epoch seconds too (TIME_IN)
INPUTS: Final = frozenset(
    {"Registration", "Consent", "ProfilePatch", "ConsentPatch", "PingIn", "BatchIn"}
    | {"ReceiptIn", "OfferInput", "Feature", "FeatureCollection"}
)


def _schemas() -> Schema:
    schemas = {
        "Problem": _problem_schema(),
        **_generated(),
        **_ops_schemas(),
        **_geojson_schemas(),
        **_store_schemas(),
        **_ping_schemas(),
        **_offer_schemas(),
        **_stats_schemas(),
        **_explain_schemas(),
        **_delivery_schemas(),
    }
    return {name: s if name in INPUTS else _dated(s) for name, s in schemas.items()}


def _dated(schema: Any) -> Any:
    """``schema`` with the numbers of its time fields (``is_time_field``) as RFC 3339."""
    if isinstance(schema, list):
        return [_dated(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _dated(value) for key, value in schema.items()}
    if isinstance(out.get("properties"), dict):
        out["properties"] = {
            name: _as_time(s) if is_time_field(name) else s for name, s in out["properties"].items()
        }
    return out


def _as_time(schema: Any) -> Any:
    """Every number in ``schema`` (alone, in a union, a list or a map) as a date-time."""
    if isinstance(schema, list):
        return [_as_time(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if schema.get("type") == "number":
        return DATE_TIME
    return {key: _as_time(value) for key, value in schema.items()}


# --- the push to the gateway (OpenAPI 3.1 webhooks) ----------------------------------------

PUSH_DESCRIPTION: Final = f"""\
Each notification is POSTed to GEOFENCE_PUSH_URL with this body, until the gateway
settles it; retries carry the same body and `notification_id`, delivery is at least once:
deduplicate by `Idempotency-Key`.

Two signatures of the raw body, both made at the same second with GEOFENCE_PUSH_SECRET;
check either:

- `X-Geofence-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, keyed by the
  secret's UTF-8 bytes;
- Standard Webhooks: `webhook-id` (the notification id), `webhook-timestamp` (unix
  seconds), `webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`.
  A secret of the form `whsec_<base64>` is keyed by its decoded bytes (as that scheme's
  libraries expect), any other by its UTF-8 bytes.

Refuse a push whose timestamp is more than {DEFAULT_TOLERANCE_S:g} s from your clock.

No answer within GEOFENCE_PUSH_TIMEOUT_S (5 s), or a connection error, is retried like a
429 or 5xx: exponential backoff with full jitter, never sooner than `Retry-After`, never at
or after `expires_at` (then the notification is dead-lettered `expired`).

The way back is `POST /v1/receipts` (`delivered`, `opened`, `redeemed`), signed with
GEOFENCE_GATEWAY_SECRET by either scheme: the funnel's `delivered` counts those receipts,
not the 2xx answers."""

PUSH_ANSWERS: Final = {
    "2XX": "settled: the notification leaves the outbox and is not sent again",
    "410": "the push token is gone: the device's token is dropped and the notification "
    "dead-lettered `rejected`",
    "429": "retried with backoff, not sooner than Retry-After",
    "4XX": "any other 4xx: dead-lettered `rejected`, not retried",
    "5XX": "retried with backoff, not sooner than Retry-After",
    "default": "any other answer: dead-lettered `rejected`",
}
RETRY_AFTER_IN: Final[Schema] = {
    "description": "delta-seconds or an HTTP-date; a retry waits at least this long",
    "schema": STRING,
}


def _header(name: str, pattern: str, description: str) -> Schema:
    schema = {"type": "string", "pattern": pattern}
    return {
        "name": name,
        "in": "header",
        "required": True,
        "schema": schema,
        "description": description,
    }


def _push_headers() -> Params:
    return (
        _header("Idempotency-Key", "^.+$", "the notification id, the same on every retry"),
        _header(SIGNATURE, "^t=[0-9]+,v1=[0-9a-f]{64}$", 'hex HMAC-SHA256 of "<t>.<body>"'),
        _header(WEBHOOK_ID, "^.+$", "Standard Webhooks: the notification id"),
        _header(WEBHOOK_TIMESTAMP, "^[0-9]+$", "Standard Webhooks: unix seconds"),
        _header(
            WEBHOOK_SIGNATURE,
            "^v1,[A-Za-z0-9+/]+={0,2}$",
            'Standard Webhooks: base64 HMAC-SHA256 of "<id>.<timestamp>.<body>"',
        ),
    )


def _webhooks() -> Schema:
    answers: Schema = {code: {"description": text} for code, text in PUSH_ANSWERS.items()}
    for code in ("429", "5XX"):
        answers[code]["headers"] = {"Retry-After": RETRY_AFTER_IN}
    push = {
        "operationId": "pushNotification",
        "summary": "a notification made on an entry, pushed to the gateway",
        "description": PUSH_DESCRIPTION,
        "parameters": list(_push_headers()),
        "requestBody": {
            "required": True,
            "content": {JSON: {"schema": ref("PushNotification")}},
        },
        "responses": answers,
    }
    return {"notification": {"post": push}}


def _security_schemes() -> Schema:
    return {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "an admin, sdk or ingest key, or the device token from registration",
        },
        "gatewaySignature": {
            "type": "apiKey",
            "in": "header",
            "name": SIGNATURE,
            "description": 't=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>',
        },
        "standardWebhooks": {
            "type": "apiKey",
            "in": "header",
            "name": WEBHOOK_SIGNATURE,
            "description": "with webhook-id and webhook-timestamp: v1,<base64 HMAC-SHA256(key, "
            '"<id>.<timestamp>.<raw body>")>; a whsec_<base64> secret keys it decoded',
        },
    }


def _paths() -> Schema:
    return {
        **_ops_paths(),
        **_store_paths(),
        **_device_paths(),
        **_ping_paths(),
        **_offer_paths(),
        **_stats_paths(),
        **_delivery_paths(),
    }


@cache
def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "geofence",
            "version": "0.1.0",
            "description": "Geofencing and proximity offers for loyalty programmes.",
        },
        "paths": _paths(),
        "webhooks": _webhooks(),
        "components": {"securitySchemes": _security_schemes(), "schemas": _schemas()},
    }
