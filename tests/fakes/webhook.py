"""The push as the OpenAPI document's ``webhooks`` entry promises it to a gateway: the
body against its schema (times checked as RFC 3339), every header it names present and
of its pattern. The fake gateway checks every push it receives with ``push_problems``."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import cache
from typing import Any, Final

import jsonschema
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from geofence.http.openapi import openapi_document

DOC_URI: Final = "urn:geofence:openapi"
PUSH: Final = ("webhooks", "notification", "post")


def push_operation() -> dict[str, Any]:
    doc = openapi_document()
    operation: dict[str, Any] = doc["webhooks"]["notification"]["post"]
    return operation


@cache
def _body_validator() -> jsonschema.Draft202012Validator:
    doc = openapi_document()
    registry: Registry[Any] = Registry().with_resource(DOC_URI, DRAFT202012.create_resource(doc))
    pointer = "/".join(PUSH) + "/requestBody/content/application~1json/schema"
    return jsonschema.Draft202012Validator(
        {"$ref": f"{DOC_URI}#/{pointer}"},
        registry=registry,
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )


def push_problems(headers: Mapping[str, str], body: bytes) -> list[str]:
    """Where a push departs from the ``webhooks`` entry; empty when it conforms."""
    return _header_problems(headers) + body_problems(body)


def _header_problems(headers: Mapping[str, str]) -> list[str]:
    lowered = {k.lower(): v for k, v in headers.items()}
    problems = []
    for parameter in push_operation()["parameters"]:
        name = parameter["name"]
        value = lowered.get(name.lower())
        if value is None:
            problems.append(f"header {name} missing")
        elif not re.search(parameter["schema"]["pattern"], value):
            problems.append(f"header {name}={value!r} breaks {parameter['schema']['pattern']}")
    return problems


def body_problems(body: bytes) -> list[str]:
    try:
        doc = json.loads(body)
    except ValueError as e:
        return [f"body is not JSON: {e}"]
    return [f"body: {e.message} at {e.json_path}" for e in _body_validator().iter_errors(doc)]
