"""The offer as the API receives it, checked at the edge (``http/offer_schema.py``): every
problem with its path and code, and the published schema refusing what the edge refuses."""

from __future__ import annotations

import json
import math
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geofence.domain.errors import InvalidInput
from geofence.domain.offers import Offer, offer_doc, render
from geofence.http.offer_schema import parse_offer
from geofence.http.openapi import openapi_document
from tests.unit.test_offers import DAY, names, offer, utc


def valid_doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "title": "Coffee",
        "body": "Free coffee at {store_name}",
        "store_ids": ["s1"],
        "starts_at": "2026-06-01T00:00:00+03:00",
        "ends_at": "2026-07-01T00:00:00Z",
    }
    return doc | changes


@given(st.lists(st.text().filter(lambda s: "{" not in s and "}" not in s), min_size=1))
def test_a_body_of_text_and_placeholders_is_taken_as_it_is(chunks: list[str]) -> None:
    body = "{store_name}".join(chunks)
    if 0 < len(body) <= 2_000:
        assert parse_offer("x", valid_doc(body=body)).body == body


def test_parse_a_full_offer() -> None:
    doc = valid_doc(
        id="o1",
        store_tags=["mall"],
        tiers=["gold"],
        segments=["students"],
        hours={"mon": ["09:00-21:00"], "fri": ["22:00-02:00"], "sun": []},
        priority=3,
        per_device_limit=2,
        per_device_cooldown_s=3_600,
        budget=100,
        ttl_s=600,
        active=False,
    )
    assert parse_offer("o1", doc) == Offer(
        id="o1",
        title="Coffee",
        body="Free coffee at {store_name}",
        store_ids=("s1",),
        store_tags=("mall",),
        tiers=("gold",),
        segments=("students",),
        starts_at=utc("2026-05-31T21:00:00Z"),
        ends_at=utc("2026-07-01T00:00:00Z"),
        hours={"mon": ("09:00-21:00",), "fri": ("22:00-02:00",), "sun": ()},
        priority=3,
        per_device_limit=2,
        per_device_cooldown_s=3_600.0,
        budget=100,
        ttl_s=600.0,
        active=False,
    )


def test_parse_defaults() -> None:
    parsed = parse_offer("o1", valid_doc())
    assert (parsed.priority, parsed.per_device_limit, parsed.per_device_cooldown_s) == (
        0,
        1,
        86_400,
    )
    assert (parsed.budget, parsed.ttl_s, parsed.active) == (None, 3_600, True)
    assert (parsed.tiers, parsed.segments, parsed.hours, parsed.store_tags) == (
        None,
        None,
        None,
        (),
    )


@pytest.mark.parametrize(
    ("value", "epoch"),
    [
        ("2026-06-01T00:00:00Z", utc("2026-06-01T00:00:00Z")),
        ("2026-06-01t00:00:00z", utc("2026-06-01T00:00:00Z")),
        ("2026-06-01 03:00:00+03:00", utc("2026-06-01T00:00:00Z")),
        ("2026-06-01T05:30:00.5+05:30", utc("2026-06-01T00:00:00Z") + 0.5),
        ("2026-05-31T20:00:00.123456789-04:00", utc("2026-06-01T00:00:00Z") + 0.123456),
        (1_780_272_000, 1_780_272_000.0),
        (1_780_272_000.25, 1_780_272_000.25),
    ],
)
def test_times_rfc3339_or_epoch(value: Any, epoch: float) -> None:
    assert parse_offer("o1", valid_doc(starts_at=value, ends_at=2e9)).starts_at == pytest.approx(
        epoch
    )


BAD_OFFERS: list[tuple[str, dict[str, Any], str, str]] = [
    ("unknown field", {"colour": "red"}, "unknown-field", "$.colour"),
    ("id differs", {"id": "o2"}, "id-mismatch", "$.id"),
    ("title missing", {"title": None}, "wrong-type", "$.title"),
    ("title empty", {"title": ""}, "out-of-range", "$.title"),
    ("title long", {"title": "x" * 201}, "out-of-range", "$.title"),
    ("body number", {"body": 7}, "wrong-type", "$.body"),
    ("body long", {"body": "x" * 2_001}, "out-of-range", "$.body"),
    ("positional", {"body": "{0}"}, "bad-template", "$.body"),
    ("attribute", {"body": "{store_name.__class__}"}, "bad-template", "$.body"),
    ("index", {"body": "{store_name[0]}"}, "bad-template", "$.body"),
    ("conversion", {"body": "{store_name!r}"}, "bad-template", "$.body"),
    ("format spec", {"body": "{store_name:>99999}"}, "bad-template", "$.body"),
    ("other name", {"body": "Hi {x}"}, "bad-template", "$.body"),
    ("escaped", {"body": "{{store_name}}"}, "bad-template", "$.body"),
    ("spaced", {"body": "{ store_name }"}, "bad-template", "$.body"),
    ("lone brace", {"body": "50% off {"}, "bad-template", "$.body"),
    ("closing brace", {"body": "} at {store_name}"}, "bad-template", "$.body"),
    ("no target", {"store_ids": []}, "no-target", "$.store_ids"),
    ("store ids string", {"store_ids": "s1"}, "wrong-type", "$.store_ids"),
    ("store id number", {"store_ids": ["s1", 2]}, "wrong-type", "$.store_ids[1]"),
    ("store tag empty", {"store_tags": [""]}, "out-of-range", "$.store_tags[0]"),
    ("tiers empty", {"tiers": []}, "out-of-range", "$.tiers"),
    ("tiers string", {"tiers": "gold"}, "wrong-type", "$.tiers"),
    ("segment long", {"segments": ["s" * 65]}, "out-of-range", "$.segments[0]"),
    ("no offset", {"starts_at": "2026-06-01T00:00:00"}, "bad-time", "$.starts_at"),
    ("date only", {"starts_at": "2026-06-01"}, "bad-time", "$.starts_at"),
    ("no such day", {"starts_at": "2026-02-30T00:00:00Z"}, "bad-time", "$.starts_at"),
    ("bool time", {"ends_at": True}, "bad-time", "$.ends_at"),
    ("words", {"ends_at": "next week"}, "bad-time", "$.ends_at"),
    ("huge epoch", {"ends_at": 10**5000}, "bad-time", "$.ends_at"),
    ("infinite epoch", {"ends_at": float("inf")}, "bad-time", "$.ends_at"),
    ("negative epoch", {"starts_at": -1}, "bad-time", "$.starts_at"),
    ("year 1", {"starts_at": "0001-01-01T00:00:00Z"}, "bad-time", "$.starts_at"),
    ("ends first", {"ends_at": "2026-05-31T20:59:59Z"}, "ends-before-starts", "$.ends_at"),
    ("ends at start", {"ends_at": "2026-05-31T21:00:00Z"}, "ends-before-starts", "$.ends_at"),
    ("hours list", {"hours": ["09:00-17:00"]}, "wrong-type", "$.hours"),
    ("hours empty", {"hours": {}}, "bad-hours", "$.hours"),
    ("weekday", {"hours": {"monday": ["09:00-17:00"]}}, "bad-hours", "$.hours.monday"),
    ("day string", {"hours": {"mon": "09:00-17:00"}}, "bad-hours", "$.hours.mon"),
    ("range hour", {"hours": {"mon": ["09:00-17:00", "25:00-26"]}}, "bad-hours", "$.hours.mon[1]"),
    ("range empty", {"hours": {"tue": ["09:00-09:00"]}}, "bad-hours", "$.hours.tue[0]"),
    ("range number", {"hours": {"sun": [900]}}, "bad-hours", "$.hours.sun[0]"),
    ("range format", {"hours": {"sat": ["9-17"]}}, "bad-hours", "$.hours.sat[0]"),
    ("priority float", {"priority": 1.5}, "wrong-type", "$.priority"),
    ("priority bool", {"priority": True}, "wrong-type", "$.priority"),
    ("priority huge", {"priority": 10**7}, "out-of-range", "$.priority"),
    ("budget enormous", {"budget": 10**5000}, "out-of-range", "$.budget"),
    ("cooldown NaN", {"per_device_cooldown_s": math.nan}, "out-of-range", "$.per_device_cooldown_s"),  # noqa: E501
    ("limit zero", {"per_device_limit": 0}, "out-of-range", "$.per_device_limit"),
    ("cooldown negative", {"per_device_cooldown_s": -1}, "out-of-range", "$.per_device_cooldown_s"),
    ("cooldown string", {"per_device_cooldown_s": "1h"}, "wrong-type", "$.per_device_cooldown_s"),
    ("budget negative", {"budget": -1}, "out-of-range", "$.budget"),
    ("budget float", {"budget": 1.0}, "wrong-type", "$.budget"),
    ("ttl zero", {"ttl_s": 0}, "out-of-range", "$.ttl_s"),
    ("ttl infinite", {"ttl_s": float("inf")}, "out-of-range", "$.ttl_s"),
    ("ttl week+1", {"ttl_s": 7 * DAY + 1}, "out-of-range", "$.ttl_s"),
    ("active string", {"active": "yes"}, "wrong-type", "$.active"),
    ("active null", {"active": None}, "wrong-type", "$.active"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "code", "path"),
    [case[1:] for case in BAD_OFFERS],
    ids=[case[0] for case in BAD_OFFERS],
)
def test_bad_offer(changes: dict[str, Any], code: str, path: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_offer("o1", valid_doc(**changes))
    assert [(p.code, p.path) for p in caught.value.problems] == [(code, path)]
    assert all(p.detail for p in caught.value.problems)


@pytest.mark.parametrize("field", ["title", "body", "starts_at", "ends_at"])
def test_required_fields(field: str) -> None:
    doc = valid_doc()
    del doc[field]
    with pytest.raises(InvalidInput) as caught:
        parse_offer("o1", doc)
    assert [(p.code, p.path) for p in caught.value.problems] == [("missing-field", f"$.{field}")]


@pytest.mark.parametrize("offer_id", ["", "has space", "x" * 129, "é", "a/b"])
def test_bad_offer_id(offer_id: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_offer(offer_id, valid_doc())
    assert [(p.code, p.path) for p in caught.value.problems] == [("bad-id", "$.id")]


@pytest.mark.parametrize("doc", [None, [], "offer", 3])
def test_not_an_object(doc: Any) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_offer("o1", doc)
    assert [(p.code, p.path) for p in caught.value.problems] == [("wrong-type", "$")]


def test_every_problem_at_once() -> None:
    doc = {
        "id": "other",
        "title": 3,
        "body": "{store_name.__init__.__globals__}",
        "store_ids": [None],
        "starts_at": "yesterday",
        "hours": {"mon": ["09:00-17:00", "x"], "funday": []},
        "priority": "high",
        "budget": -5,
        "ttl_s": 0,
        "active": 1,
        "extra": {},
    }
    with pytest.raises(InvalidInput) as caught:
        parse_offer("o1", doc)
    assert {(p.code, p.path) for p in caught.value.problems} == {
        ("id-mismatch", "$.id"),
        ("unknown-field", "$.extra"),
        ("missing-field", "$.ends_at"),
        ("wrong-type", "$.title"),
        ("bad-template", "$.body"),
        ("wrong-type", "$.store_ids[0]"),
        ("bad-time", "$.starts_at"),
        ("bad-hours", "$.hours.mon[1]"),
        ("bad-hours", "$.hours.funday"),
        ("wrong-type", "$.priority"),
        ("out-of-range", "$.budget"),
        ("out-of-range", "$.ttl_s"),
        ("wrong-type", "$.active"),
    }
    assert len(caught.value.problems) == 13


def test_every_bad_item_of_a_list_is_named() -> None:
    doc = valid_doc(
        store_ids=[1, "s1", ""],
        segments=["ok", None],
        hours={"mon": ["x", "09:00-17:00", "25:00-26:00", 900]},
    )
    with pytest.raises(InvalidInput) as caught:
        parse_offer("o1", doc)
    assert [(p.code, p.path) for p in caught.value.problems] == [
        ("wrong-type", "$.store_ids[0]"),
        ("out-of-range", "$.store_ids[2]"),
        ("wrong-type", "$.segments[1]"),
        ("bad-hours", "$.hours.mon[0]"),
        ("bad-hours", "$.hours.mon[2]"),
        ("bad-hours", "$.hours.mon[3]"),
    ]


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"store_ids": ["s"] * 1_001}, "$.store_ids"),
        ({"hours": {"mon": ["09:00-10:00"] * 11}}, "$.hours.mon"),
    ],
)
def test_a_list_too_long_is_one_problem(changes: dict[str, Any], path: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_offer("o1", valid_doc(**changes))
    assert [p.path for p in caught.value.problems] == [path]


def test_no_target_is_not_reported_over_a_bad_target() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_offer("o1", valid_doc(store_ids=[1], store_tags=[]))
    assert [p.code for p in caught.value.problems] == ["wrong-type"]


def test_targets_by_tag_only() -> None:
    doc = valid_doc(store_tags=["mall"])
    del doc["store_ids"]
    assert parse_offer("o1", doc).store_tags == ("mall",)


@settings(max_examples=100, deadline=None)
@given(
    st.builds(
        offer,
        id=st.from_regex(r"[a-z0-9-]{1,20}", fullmatch=True),
        priority=st.integers(-5, 5),
        starts_at=st.integers(0, 2_000_000_000).map(float),
        tiers=st.none() | st.lists(names, min_size=1).map(tuple),
        hours=st.none() | st.just({"mon": ("22:00-02:00",), "tue": ()}),
        budget=st.none() | st.integers(0, 99),
    ).filter(lambda o: o.starts_at < o.ends_at)
)
def test_offer_doc_round_trips(the_offer: Offer) -> None:
    doc = offer_doc(the_offer)
    assert isinstance(doc["starts_at"], str)
    assert parse_offer(the_offer.id, doc) == the_offer


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-(10**400), 10**400)
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["2026-06-01T00:00:00Z", "09:00-17:00", "{0}"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
fields = st.sampled_from(
    ["title", "body", "store_ids", "store_tags", "tiers", "segments", "starts_at", "ends_at",
     "hours", "priority", "per_device_limit", "per_device_cooldown_s", "budget", "ttl_s", "active"]
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(fields, json_values, max_size=6))
def test_parse_offer_fails_only_with_problems(changes: dict[str, Any]) -> None:
    try:
        parsed = parse_offer("o1", valid_doc(**changes))
    except InvalidInput as e:
        problems = e.problems
    else:
        assert parsed.starts_at < parsed.ends_at
        assert parsed.store_ids or parsed.store_tags
        assert render(parsed.body, "{x}").count("{") == parsed.body.count("{store_name}")
        return
    assert problems
    assert all(p.path and p.path.startswith("$") and p.code for p in problems)


# --- the published schema ------------------------------------------------------------------

# what only the edge can tell: a rule between fields, or a value the schema's pattern lets by
EDGE_ONLY = {"id-mismatch", "no-target", "ends-before-starts", "bad-template", "bad-time"}


def published() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(
        openapi_document()["components"]["schemas"]["OfferInput"]
    )


def is_json(doc: dict[str, Any]) -> bool:
    try:
        json.dumps(doc, allow_nan=False)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize(
    ("changes", "code"),
    [(case[1], case[2]) for case in BAD_OFFERS],
    ids=[case[0] for case in BAD_OFFERS],
)
def test_the_published_schema_refuses_what_a_type_refuses(
    changes: dict[str, Any], code: str
) -> None:
    """The OpenAPI document's OfferInput is generated from the edge's type: a body it
    accepts, the edge refuses only for a rule a JSON Schema cannot say."""
    doc = valid_doc(**changes)
    if not is_json(doc) or changes == {"budget": 1.0}:  # JSON Schema counts 1.0 an integer
        return
    if published().is_valid(doc):
        assert code in EDGE_ONLY or code == "bad-hours", code
    else:
        assert code not in EDGE_ONLY - {"bad-time"}, code


def test_the_published_schema_takes_a_full_offer_and_its_view() -> None:
    validator = published()
    validator.validate(valid_doc(hours={"mon": ["09:00-21:00"], "fri": ["22:00-02:00"]}))
    validator.validate(offer_doc(offer(tiers=("gold",), budget=3)))
    assert not validator.is_valid(valid_doc(hours={"monday": ["09:00-17:00"]}))
    assert not validator.is_valid(valid_doc(priority=math.pi))
