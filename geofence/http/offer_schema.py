"""An offer as the API receives it (``PUT /v1/offers/{offer_id}``), checked at the edge.

``OfferInput`` states the shape and every bound (msgspec ``Meta``); the OpenAPI document
is generated from it, so the two cannot drift. ``parse_offer`` checks a decoded body
against it field by field, so that one answer lists every problem and not only the first
a decoder meets, then the rules a type cannot say: the body's id is the URL's, a store is
targeted, ``ends_at`` is after ``starts_at``, each range of ``hours`` is a span of the
day, and the body uses no braces but ``{store_name}``. What passes is the domain's
``Offer``; the domain only decides with it.

Each problem has a path (``$.hours.mon[1]``) and one of these codes: ``wrong-type``,
``unknown-field``, ``missing-field``, ``bad-id``, ``id-mismatch``, ``bad-time``,
``ends-before-starts``, ``bad-hours``, ``no-target``, ``bad-template``, ``out-of-range``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Final

import msgspec
from msgspec import Meta

from geofence.domain.errors import InvalidInput, Problem
from geofence.domain.offers import (
    DAY_S,
    MAX_CONTROL_PCT,
    MAX_PER_DEVICE_LIMIT,
    PLACEHOLDER,
    RANGE_PATTERN,
    WEEKDAYS,
    Offer,
    Weekday,
    parse_range,
)
from geofence.domain.times import MAX_EPOCH_S, parse_time
from geofence.http.schemas import located

MAX_ID_LEN: Final = 128
MAX_NAME_LEN: Final = 64
MAX_NAMES: Final = 1_000
MAX_TITLE_LEN: Final = 200
MAX_BODY_LEN: Final = 2_000
MAX_RANGES_PER_DAY: Final = 10
MAX_PRIORITY: Final = 1_000_000
MAX_COOLDOWN_S: Final = 366 * DAY_S
MAX_TTL_S: Final = 7 * DAY_S
MAX_BUDGET: Final = 1_000_000_000
MAX_ATTRIBUTION_WINDOW_S: Final = 90 * DAY_S
ID_PATTERN: Final = r"^[A-Za-z0-9._~:-]+$"

OfferId = Annotated[str, Meta(min_length=1, max_length=MAX_ID_LEN, pattern=ID_PATTERN)]
Name = Annotated[str, Meta(min_length=1, max_length=MAX_NAME_LEN)]
Names = Annotated[tuple[Name, ...], Meta(max_length=MAX_NAMES)]
SomeNames = Annotated[
    tuple[Name, ...],
    Meta(min_length=1, max_length=MAX_NAMES, description="at least one; null for everyone"),
]
TimeIn = Annotated[
    Annotated[str, Meta(extra_json_schema={"format": "date-time"})]
    | Annotated[float, Meta(ge=0, le=MAX_EPOCH_S)],
    Meta(description="RFC 3339 with an offset, or epoch seconds"),
]
TimeRange = Annotated[
    str,
    Meta(
        pattern=RANGE_PATTERN,
        description="HH:MM-HH:MM in the store's time; an end before the start crosses midnight",
    ),
]
DayHours = Annotated[tuple[TimeRange, ...], Meta(max_length=MAX_RANGES_PER_DAY)]
Hours = Annotated[dict[Weekday, DayHours], Meta(min_length=1)]
Title = Annotated[str, Meta(min_length=1, max_length=MAX_TITLE_LEN)]
Body = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=MAX_BODY_LEN,
        description="{store_name} is the store's name; no other braces",
    ),
]
Priority = Annotated[int, Meta(ge=-MAX_PRIORITY, le=MAX_PRIORITY)]
PerDeviceLimit = Annotated[int, Meta(ge=1, le=MAX_PER_DEVICE_LIMIT)]
CooldownS = Annotated[float, Meta(ge=0, le=MAX_COOLDOWN_S)]
Budget = Annotated[int, Meta(ge=0, le=MAX_BUDGET)]
TtlS = Annotated[float, Meta(ge=1, le=MAX_TTL_S)]
ControlPct = Annotated[
    float,
    Meta(
        ge=0,
        le=MAX_CONTROL_PCT,
        description="percent of devices held out as the control group (no notification)",
    ),
]
AttributionWindowS = Annotated[
    float,
    Meta(
        ge=60,
        le=MAX_ATTRIBUTION_WINDOW_S,
        description="how long after an eligible entry a conversion counts for it",
    ),
]

# an offer's defaults are the stored offer's: one place says them
_DEFAULT: Final = {field.name: field.default for field in msgspec.structs.fields(Offer)}


class OfferInput(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An offer as sent. The id comes from the URL; given here too, it must be the same."""

    id: OfferId | msgspec.UnsetType = msgspec.UNSET
    title: Title
    body: Body
    store_ids: Names = _DEFAULT["store_ids"]
    store_tags: Names = _DEFAULT["store_tags"]
    tiers: SomeNames | None = _DEFAULT["tiers"]
    segments: SomeNames | None = _DEFAULT["segments"]
    starts_at: TimeIn
    ends_at: TimeIn
    hours: Hours | None = _DEFAULT["hours"]
    priority: Priority = _DEFAULT["priority"]
    per_device_limit: PerDeviceLimit = _DEFAULT["per_device_limit"]
    per_device_cooldown_s: CooldownS = _DEFAULT["per_device_cooldown_s"]
    budget: Budget | None = _DEFAULT["budget"]
    ttl_s: TtlS = _DEFAULT["ttl_s"]
    active: bool = _DEFAULT["active"]
    control_pct: ControlPct = _DEFAULT["control_pct"]
    attribution_window_s: AttributionWindowS = _DEFAULT["attribution_window_s"]

    def offer(self, offer_id: str) -> Offer:
        """The offer to store, its times as epoch seconds."""
        fields = msgspec.structs.asdict(self)
        fields.update(
            id=offer_id, starts_at=parse_time(self.starts_at), ends_at=parse_time(self.ends_at)
        )
        return Offer(**fields)


_FIELDS: Final = msgspec.structs.fields(OfferInput)
_TYPES: Final = {field.name: field.type for field in _FIELDS if field.name != "id"}
_REQUIRED: Final = tuple(field.name for field in _FIELDS if field.required)
_WRONG_TYPE = re.compile(r"^Expected `[^`]+`, got `[^`]+`$")


class _Refused(Exception):
    """A field's problems; raised by the field checks, collected by parse_offer."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(problems)
        self.problems = problems


def _refused(path: str, code: str, detail: str) -> _Refused:
    return _Refused([Problem(path=path, code=code, detail=detail)])


def _convert(value: Any, kind: Any, path: str, code: str | None = None) -> Any:
    """``value`` as ``kind``; the first problem msgspec finds, at its path below ``path``."""
    try:
        return msgspec.convert(value, kind)
    except msgspec.ValidationError as e:
        where, detail = located(str(e), prefix=path)
        raise _refused(where, code or _code(detail), detail) from None


def _code(detail: str) -> str:
    """msgspec says "Expected `int`, got `str`" for a wrong type, else a bound was broken."""
    return "wrong-type" if _WRONG_TYPE.match(detail) else "out-of-range"


# --- the fields with a rule beyond their type --------------------------------------------

# a check takes a field's value, its type and its path: the value as the type, or _Refused
FieldCheck = Callable[[Any, Any, str], Any]


def _problems(check: Callable[[Any, str], Any], value: Any, path: str) -> list[Problem]:
    try:
        check(value, path)
    except _Refused as refused:
        return refused.problems
    return []


def _each(
    value: Any, kind: Any, path: str, item: Callable[[Any, str], Any], code: str | None = None
) -> Any:
    """``value`` as the list type ``kind``, every item also through ``item``: each bad item
    is named, where msgspec names only the first."""
    try:
        whole = _convert(value, kind, path, code)
    except _Refused as refused:
        if refused.problems[0].path == path:  # the list itself: not a list, or its length
            raise
        whole = value
    items = enumerate(whole or ())
    problems = [p for i, one in items for p in _problems(item, one, f"{path}[{i}]")]
    if problems:
        raise _Refused(problems)
    return whole


def _name(value: Any, path: str) -> str:
    name: str = _convert(value, Name, path)
    return name


def _names(value: Any, kind: Any, path: str) -> Any:
    return _each(value, kind, path, _name)


def _time(value: Any, kind: Any, path: str) -> float:
    given = _convert(value, kind, path, "bad-time")
    try:
        return parse_time(given)
    except ValueError as e:
        raise _refused(path, "bad-time", str(e)) from None


def _body(value: Any, kind: Any, path: str) -> str:
    body: str = _convert(value, kind, path)
    rest = body.replace(PLACEHOLDER, "")
    if "{" in rest or "}" in rest:
        raise _refused(path, "bad-template", "only {store_name} may be used in braces")
    return body


def _hours(value: Any, kind: Any, path: str) -> Any:
    """Every weekday on its own, so that each bad one is named."""
    if value == {}:
        raise _refused(path, "bad-hours", "give at least one weekday, or null for any time")
    if isinstance(value, dict):
        problems = [p for day, ranges in value.items() for p in _day(day, ranges, path)]
        if problems:
            raise _Refused(problems)
    return _convert(value, kind, path)


def _day(day: str, ranges: Any, hours_path: str) -> list[Problem]:
    path = f"{hours_path}.{day}"
    if day not in WEEKDAYS:
        return [Problem(path=path, code="bad-hours", detail="weekdays are mon..sun")]
    return _problems(lambda v, p: _each(v, DayHours, p, _span, "bad-hours"), ranges, path)


def _span(value: Any, path: str) -> str:
    text: str = _convert(value, TimeRange, path, "bad-hours")
    try:
        parse_range(text)
    except ValueError as e:
        raise _refused(path, "bad-hours", str(e)) from None
    return text


_CHECKS: Final[dict[str, FieldCheck]] = {
    "body": _body,
    "store_ids": _names,
    "store_tags": _names,
    "tiers": _names,
    "segments": _names,
    "starts_at": _time,
    "ends_at": _time,
    "hours": _hours,
}


# --- the offer ----------------------------------------------------------------------------


def parse_offer(offer_id: str, doc: Any) -> Offer:
    """The offer ``doc`` (a decoded JSON body) describes, or InvalidInput with every problem."""
    if not isinstance(doc, dict):
        problem = Problem(path="$", code="wrong-type", detail="an offer is a JSON object")
        raise InvalidInput([problem], "an offer is a JSON object")
    values, problems = _field_values(doc)
    problems = [
        *_id_problems(offer_id, doc),
        *_unknown_fields(doc),
        *_missing_fields(doc),
        *problems,
        *_cross_problems(doc, values),
    ]
    if problems:
        raise InvalidInput(problems, f"{len(problems)} problem(s) in the offer")
    return OfferInput(**values).offer(offer_id)


def _id_problems(offer_id: str, doc: dict[str, Any]) -> list[Problem]:
    try:
        msgspec.convert(offer_id, OfferId)
    except msgspec.ValidationError:
        detail = f"1..{MAX_ID_LEN} of letters, digits and ._~:-"
        return [Problem(path="$.id", code="bad-id", detail=detail)]
    if "id" in doc and doc["id"] != offer_id:
        return [Problem(path="$.id", code="id-mismatch", detail="differs from the URL's id")]
    return []


def _unknown_fields(doc: dict[str, Any]) -> list[Problem]:
    return [
        Problem(path=f"$.{name}", code="unknown-field", detail=f"{name!r} is not an offer field")
        for name in doc
        if name not in OfferInput.__struct_fields__
    ]


def _missing_fields(doc: dict[str, Any]) -> list[Problem]:
    return [
        Problem(path=f"$.{name}", code="missing-field", detail=f"{name!r} is required")
        for name in _REQUIRED
        if name not in doc
    ]


def _field_values(doc: dict[str, Any]) -> tuple[dict[str, Any], list[Problem]]:
    """Each known field as its type, and the problems of those that are not."""
    values: dict[str, Any] = {}
    problems: list[Problem] = []
    for name in _TYPES:
        if name not in doc:
            continue
        try:
            values[name] = _field(name, doc[name])
        except _Refused as refused:
            problems.extend(refused.problems)
    return values, problems


def _field(name: str, value: Any) -> Any:
    """One field as its type, with its own rule if it has one; _Refused with its problems."""
    return _CHECKS.get(name, _convert)(value, _TYPES[name], f"$.{name}")


def _cross_problems(doc: dict[str, Any], values: dict[str, Any]) -> list[Problem]:
    """Rules between fields, judged only on fields that are valid themselves."""
    problems: list[Problem] = []
    targets_known = all(name in values for name in ("store_ids", "store_tags") if name in doc)
    if targets_known and not (values.get("store_ids") or values.get("store_tags")):
        detail = "give store_ids and/or store_tags"
        problems.append(Problem(path="$.store_ids", code="no-target", detail=detail))
    starts, ends = values.get("starts_at"), values.get("ends_at")
    if starts is not None and ends is not None and ends <= starts:
        detail = "ends_at must be after starts_at"
        problems.append(Problem(path="$.ends_at", code="ends-before-starts", detail=detail))
    return problems
