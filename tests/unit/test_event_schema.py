"""The JSON Schema of `GET /v1/schema` says what parse_event says: built from the same tables
(sender/model/eventtypes.py), it takes every example event and refuses what ingest refuses, field by
field, with the draft 2020-12 validator a producer would use."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from hookline.api import EVENT_TYPES
from hookline.sender.model.events import EventError, parse_event
from hookline.sender.model.eventtypes import EVENT_SPECS
from hookline.sender.model.examples import example_event
from hookline.sender.model.schema import DRAFT, events_schema

NOW = 1_730_800_000
SCHEMA = events_schema(max_events=3)
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())
# A value of the wrong kind per check (what each kind refuses).
WRONG: dict[str, Any] = {
    "_is_str": 12,
    "_is_nonempty_str": "  ",
    "_is_ref": [1],
    "_is_str_or_int": {"a": 1},
    "_is_str_list": "x",
    "_is_object": "x",
    "_is_timestamp": "2024-11-05T09:30:00Z",
}


def schema_accepts(body: Any) -> bool:
    return VALIDATOR.is_valid(body)


def model_accepts(event: dict[str, Any]) -> bool:
    try:
        parse_event(event, now=NOW)
    except EventError:
        return False
    return True


def test_the_schema_is_a_valid_draft_2020_12_schema():
    assert SCHEMA["$schema"] == DRAFT
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert jsonschema.validators.validator_for(SCHEMA) is jsonschema.Draft202012Validator


@pytest.mark.parametrize("event_type", EVENT_TYPES)
@pytest.mark.parametrize("subprofile", [False, True])
def test_every_example_event_is_valid(event_type, subprofile):
    event = example_event(event_type, subprofile=subprofile)
    assert list(VALIDATOR.iter_errors(event)) == []
    assert model_accepts(event)


def test_a_batch_of_examples_is_valid_and_the_limits_on_a_batch_hold():
    examples = [example_event(t) for t in EVENT_TYPES[:3]]
    assert schema_accepts(examples)
    assert not schema_accepts([])
    assert not schema_accepts([*examples, example_event("open")])  # max_events=3
    assert not schema_accepts([example_event("open"), "not an event"])


def mutations() -> list[Any]:
    """Each required field missing and null, each field mistyped, each optional field null."""
    cases = []
    for event_type in EVENT_TYPES:
        spec = EVENT_SPECS[event_type]
        for name in spec.required:
            missing = example_event(event_type)
            missing.pop(name, None)
            cases.append(pytest.param(missing, False, id=f"{event_type}-{name}-missing"))
            cases.append(pytest.param({**missing, name: None}, False, id=f"{event_type}-{name}-null"))
        for name, kind in {**spec.required, **spec.optional}.items():
            mistyped = {**example_event(event_type), name: WRONG[kind.check.__name__]}
            if name == "collection":
                mistyped["subprofile"] = 1  # a profile event's collection needs its subprofile
            cases.append(pytest.param(mistyped, False, id=f"{event_type}-{name}-mistyped"))
        for name in spec.optional:
            if name not in ("collection", "subprofile"):
                cases.append(
                    pytest.param(
                        {**example_event(event_type), name: None}, True, id=f"{event_type}-{name}-null"
                    )
                )
    return cases


SPECIAL = [
    pytest.param({**example_event("open"), "recipent": "typo"}, False, id="unknown-field"),
    pytest.param({"recipient": "a@b.example"}, False, id="no-type"),
    pytest.param({**example_event("open"), "type": "opne"}, False, id="unknown-type"),
    pytest.param({**example_event("create"), "subprofile": 5}, False, id="subprofile-without-collection"),
    pytest.param({**example_event("create"), "collection": "c"}, False, id="collection-without-subprofile"),
    pytest.param(
        {**example_event("open"), "database": None, "collection": "c"},
        False,
        id="collection-without-database",
    ),
    pytest.param({**example_event("open"), "collection": "c"}, True, id="open-with-collection"),
    pytest.param({**example_event("open"), "id": "a b"}, False, id="id-with-space"),
    pytest.param({**example_event("open"), "id": "x" * 129}, False, id="id-too-long"),
    pytest.param({**example_event("open"), "id": "shop:42_a.b-c"}, True, id="id-ok"),
    pytest.param({**example_event("open"), "time": -1}, False, id="time-negative"),
    pytest.param({**example_event("open"), "time": "12"}, False, id="time-string"),
    pytest.param({**example_event("open"), "timestamp": "2024-11-05 9:30:00"}, False, id="timestamp-short"),
    pytest.param({**example_event("open"), "timestamp": "2024-11-05 09:30:00"}, True, id="timestamp-ok"),
    pytest.param({**example_event("create"), "fields": {"a": {"b": 1}}}, False, id="fields-nested"),
    pytest.param({**example_event("create"), "fields": {"a": None, "b": 1.5}}, True, id="fields-scalars"),
    pytest.param({**example_event("open"), "tags": ["a", 1]}, False, id="tags-with-number"),
    pytest.param({**example_event("create"), "parameters": {"a": {"b": [1]}}}, True, id="parameters-nested"),
]


@pytest.mark.parametrize(("event", "valid"), [*mutations(), *SPECIAL])
def test_the_schema_refuses_what_ingest_refuses(event, valid):
    assert model_accepts(event) is valid
    assert schema_accepts(event) is valid
    assert schema_accepts([example_event("delivery"), event]) is valid


def test_a_missing_required_field_is_named_by_the_validator():
    event = example_event("bounce")
    del event["envelope"]
    [error] = VALIDATOR.iter_errors(event)
    assert error.validator == "required"
    assert "'envelope' is a required property" in error.message


def test_every_field_is_described():
    for event_type in EVENT_TYPES:
        definition = SCHEMA["$defs"][event_type]
        assert definition["description"]
        for name, prop in definition["properties"].items():
            described = prop.get("description") or prop["anyOf"][0]["description"]
            assert described, f"{event_type}.{name}"


@pytest.mark.parametrize("event_type", ["open", "update"])
def test_the_message_for_a_missing_field_reads_well(event_type):
    with pytest.raises(EventError, match=f"is required for an {event_type} event"):
        parse_event({"type": event_type}, now=NOW)
    with pytest.raises(EventError, match="is required for a click event"):
        parse_event({"type": "click"}, now=NOW)
