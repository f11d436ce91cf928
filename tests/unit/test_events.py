"""The event model: Copernica field names per type, every bad field named, ids and times filled in,
NATS-safe subjects, and the bus encoding."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import UTC, datetime

import pytest

from hookline.api import EVENT_TYPES
from hookline.sender.model.events import Event, EventError, format_timestamp, parse_event
from hookline.sender.model.examples import example_event
from hookline.sender.model.subjects import decode_token, encode_token, filter_subjects, subject_for

NOW = 1_730_800_000  # 2024-11-05 09:46:40 UTC
NOW_TS = "2024-11-05 09:46:40"


def errors_of(obj: object) -> dict[str, str]:
    with pytest.raises(EventError) as info:
        parse_event(obj, now=NOW)
    return {e.field: e.message for e in info.value.errors}


# Field names of each type, per Copernica's webhook documentation (DESIGN.md "Events").
COPERNICA_FIELDS = {
    "open": {"recipient", "ip", "useragent", "referer", "tags"},
    "click": {"recipient", "ip", "original", "useragent", "tags"},
    "bounce": {"recipient", "envelope", "mime", "tags"},
    "failure": {"recipient", "action", "state", "code", "extended", "description", "tags"},
    "delivery": {"recipient", "tags"},
    "create": {"profile", "database", "created", "modified", "fields", "interests", "parameters"},
    "update": {"profile", "database", "created", "modified", "fields", "interests", "parameters"},
    "delete": {"profile", "database", "fields"},
}


@pytest.mark.parametrize("event_type", EVENT_TYPES)
@pytest.mark.parametrize("subprofile", [False, True])
def test_every_type_validates_with_copernica_field_names(event_type, subprofile):
    raw = example_event(event_type, subprofile=subprofile)
    event = parse_event(raw, now=NOW)
    assert event.type == event_type
    assert COPERNICA_FIELDS[event_type] <= set(event.payload)
    assert {"id", "type", "timestamp", "time"} <= set(event.payload)
    for key, value in raw.items():
        assert event.payload[key] == value
    if subprofile:
        assert (event.payload["subprofile"], event.collection) == (815, "orders")
    assert event.database == "newsletter"


def test_id_time_and_timestamp_are_filled_in_when_absent():
    event = parse_event({"type": "delivery", "recipient": "a@b.example"}, now=NOW)
    assert re.fullmatch(r"[0-9a-f]{32}", event.id)
    assert event.payload["id"] == event.id
    assert event.payload["time"] == NOW
    assert event.payload["timestamp"] == NOW_TS
    assert event.payload["tags"] == []
    other = parse_event({"type": "delivery", "recipient": "a@b.example"}, now=NOW)
    assert other.id != event.id


def test_now_may_be_a_datetime():
    event = parse_event({"type": "delivery", "recipient": "x@y"}, now=datetime.fromtimestamp(NOW, UTC))
    assert event.payload["timestamp"] == NOW_TS


def test_time_alone_derives_timestamp_and_the_reverse():
    from_time = parse_event({"type": "delivery", "recipient": "x@y", "time": 86400}, now=NOW)
    assert from_time.payload["timestamp"] == "1970-01-02 00:00:00"
    from_ts = parse_event(
        {"type": "delivery", "recipient": "x@y", "timestamp": "1970-01-02 00:00:00"}, now=NOW
    )
    assert from_ts.payload["time"] == 86400


def test_consistent_time_and_timestamp_are_kept():
    event = parse_event({"type": "delivery", "recipient": "x@y", "time": NOW, "timestamp": NOW_TS})
    assert (event.payload["time"], event.payload["timestamp"]) == (NOW, NOW_TS)


def test_inconsistent_time_and_timestamp_is_an_error_naming_both_values():
    errs = errors_of(
        {"type": "delivery", "recipient": "x@y", "time": NOW, "timestamp": "2024-11-05 09:46:41"}
    )
    assert "timestamp" in errs
    assert str(NOW) in errs["timestamp"] and NOW_TS in errs["timestamp"]


def test_profile_events_default_created_and_modified_to_the_event_time():
    event = parse_event({"type": "create", "profile": 1, "database": "d"}, now=NOW)
    assert event.payload["created"] == event.payload["modified"] == NOW_TS
    assert (event.payload["fields"], event.payload["interests"], event.payload["parameters"]) == ({}, [], {})


def test_caller_supplied_id_is_kept():
    event = parse_event({"type": "delivery", "recipient": "x@y", "id": "msg_2x:a.b-c"}, now=NOW)
    assert event.id == "msg_2x:a.b-c"


BAD_EVENTS = [
    pytest.param(
        {"type": "click", "ip": "1.2.3.4", "original": "https://x"}, "recipient", "required", id="missing"
    ),
    pytest.param({"type": "open", "recipient": 5, "ip": "1.2.3.4"}, "recipient", "string", id="wrong-type"),
    pytest.param({"type": "open", "recipient": "", "ip": "1.2.3.4"}, "recipient", "empty", id="empty"),
    pytest.param(
        {"type": "open", "recipient": "a", "ip": "1", "tags": "x"}, "tags", "list", id="tags-not-list"
    ),
    pytest.param(
        {"type": "open", "recipient": "a", "ip": "1", "tags": ["x", 3]}, "tags[1]", "string", id="tag"
    ),
    pytest.param(
        {"type": "delivery", "recipient": "a", "recipent": "b"}, "recipent", "unknown field", id="typo"
    ),
    pytest.param({"type": "delivery", "recipient": "a", "time": "123"}, "time", "integer", id="time-string"),
    pytest.param({"type": "delivery", "recipient": "a", "time": True}, "time", "integer", id="time-bool"),
    pytest.param({"type": "delivery", "recipient": "a", "time": -1}, "time", "negative", id="time-negative"),
    pytest.param(
        {"type": "delivery", "recipient": "a", "time": 10**12}, "time", "year 9999", id="time-too-far"
    ),
    pytest.param({"type": "delivery", "recipient": "a", "time": 1.5}, "time", "integer", id="time-float"),
    pytest.param(
        {"type": "delivery", "recipient": "a", "timestamp": "2024-11-05T09:46:40Z"},
        "timestamp",
        "YYYY-MM-DD HH:MM:SS",
        id="timestamp-iso",
    ),
    pytest.param(
        {"type": "delivery", "recipient": "a", "timestamp": "2024-02-30 10:00:00"},
        "timestamp",
        "YYYY-MM-DD HH:MM:SS",
        id="timestamp-no-such-day",
    ),
    pytest.param({"type": "delivery", "recipient": "a", "id": "a b"}, "id", "characters", id="id-space"),
    pytest.param({"type": "delivery", "recipient": "a", "id": "x" * 129}, "id", "128", id="id-too-long"),
    pytest.param({"type": "delivery", "recipient": "a", "id": 7}, "id", "characters", id="id-number"),
    pytest.param(
        {"type": "delivery", "recipient": "a", "collection": "c"}, "collection", "database", id="scope"
    ),
    pytest.param(
        {"type": "failure", "recipient": "a", "action": "x", "state": "y", "code": 5.5}, "code", "integer"
    ),
    pytest.param({"type": "create", "profile": 1}, "database", "required", id="create-no-db"),
    pytest.param({"type": "create", "profile": True, "database": "d"}, "profile", "string or an integer"),
    pytest.param({"type": "create", "profile": 1, "database": "d", "fields": []}, "fields", "object"),
    pytest.param(
        {"type": "create", "profile": 1, "database": "d", "fields": {"email": {"a": 1}}}, "fields.email", ""
    ),
    pytest.param(
        {"type": "create", "profile": 1, "database": "d", "fields": {"n": float("nan")}}, "fields.n", "finite"
    ),
    pytest.param(
        {"type": "update", "profile": 1, "database": "d", "created": "yesterday"}, "created", "YYYY"
    ),
    pytest.param(
        {"type": "update", "profile": 1, "database": "d", "subprofile": 2}, "collection", "subprofile"
    ),
    pytest.param(
        {"type": "delete", "profile": 1, "database": "d", "collection": "c"}, "subprofile", "subprofile"
    ),
    pytest.param(
        {"type": "delete", "profile": 1, "database": "d", "interests": []}, "interests", "unknown field"
    ),
]


@pytest.mark.parametrize(("raw", "field", "words"), BAD_EVENTS)
def test_bad_field_is_named(raw, field, words):
    errs = errors_of(raw)
    assert field in errs, errs
    assert words in errs[field]


def test_every_bad_field_is_reported_at_once():
    errs = errors_of(
        {
            "type": "click",
            "recipient": 3,
            "original": None,
            "ip": "1.2.3.4",
            "timestamp": "bad",
            "colour": "red",
            "id": "no spaces please",
        }
    )
    assert set(errs) == {"recipient", "original", "timestamp", "colour", "id"}
    assert "allowed:" in errs["colour"] and "recipient" in errs["colour"]


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ({"recipient": "a"}, "required"),
        ({"type": "unsubscribe"}, "unknown event type 'unsubscribe'"),
        ({"type": ["open"]}, "unknown event type"),
    ],
)
def test_missing_or_unknown_type_lists_the_known_types(raw, words):
    errs = errors_of(raw)
    assert words in errs["type"]
    assert "open, click, bounce" in errs["type"]


@pytest.mark.parametrize("raw", [[], "open", 3, None])
def test_non_object_is_refused(raw):
    assert "object" in errors_of(raw)["$"]


def test_event_error_message_names_each_field():
    with pytest.raises(EventError, match=r"recipient: .*ip: "):
        parse_event({"type": "open"}, now=NOW)


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_bus_round_trip_keeps_everything(event_type):
    event = parse_event(example_event(event_type, subprofile=True), now=NOW)
    data = event.to_bytes()
    assert b'": ' not in data and b', "' not in data  # compact separators
    again = Event.from_bytes(data)
    assert again == event
    assert (again.id, again.type, again.database, again.collection) == (
        event.id,
        event.type,
        event.database,
        event.collection,
    )
    assert again.raw == data  # sent as it is by a JSON delivery
    assert subject_for(again) == subject_for(event)
    with pytest.raises(dataclasses.FrozenInstanceError):  # read off the bus, still immutable
        again.id = "changed"  # type: ignore[misc]


def test_bus_encoding_keeps_unicode():
    event = parse_event({"type": "delivery", "recipient": "zoë@example.com", "database": "ñ"}, now=NOW)
    assert Event.from_bytes(event.to_bytes()).payload["recipient"] == "zoë@example.com"


@pytest.mark.parametrize(
    "data",
    [
        # the extremes of what ingest lets onto the bus: 64-bit integers, escapes, a float
        b'{"id":"e1","type":"open","time":1,"profile":9223372036854775807,"n":-9223372036854775808}',
        b'{"id":"e1","type":"open","time":1,"recipient":"\\u00eb\\ud83d\\ude00","x":0.1}',
        # what the fast reader refuses and the standard library reads: the same answer as before
        b'{"id":"e1","type":"open","time":1,"recipient":"\\ud800"}',
        b'{"id":"e1","type":"open","time":1,"v":NaN} ',
    ],
)
def test_events_read_off_the_bus_equal_the_standard_librarys_reading(data):
    event = Event.from_bytes(data)
    assert event.payload == json.loads(data) or str(event.payload) == str(json.loads(data))  # NaN != NaN
    assert type(event.payload.get("profile", 0)) is int


@pytest.mark.parametrize("data", [b"not json", b"[1]", b'{"id": "x"}', b'{"id": 3, "type": "open"}'])
def test_garbage_from_the_bus_is_an_event_error(data):
    with pytest.raises(EventError):
        Event.from_bytes(data)


# ---------------------------------------------------------------------------------------------------------
# Subjects

NAMES = [
    "newsletter",
    "news.letter",
    "news_2Eletter",
    "a b",
    "a\tb",
    "*",
    ">",
    "a.*.>",
    "_",
    "__",
    "",
    "-",
    "Ümlaut",
    "日本",
    "123",
    "a/b",
    "%2E",
]


@pytest.mark.parametrize("name", NAMES)
def test_token_is_subject_safe_and_reversible(name):
    token = encode_token(name)
    assert token
    assert not set(token) & {".", "*", ">", " ", "\t", "\r", "\n"}
    assert token.isascii()
    assert decode_token(token) == name


def test_tokens_are_injective():
    tokens = [encode_token(n) for n in NAMES] + [encode_token(None)]
    assert len(set(tokens)) == len(tokens)


def test_none_is_underscore_and_plain_names_stay_readable():
    assert encode_token(None) == "_"
    assert encode_token("newsletter") == "newsletter"
    assert encode_token(42) == "42"


def test_subject_encodes_type_database_collection():
    event = parse_event({"type": "click", **example_event("click"), "database": "news.letter"}, now=NOW)
    assert subject_for(event) == "hookline.events.click.news_2Eletter._"
    sub = parse_event(example_event("update", subprofile=True), now=NOW)
    assert subject_for(sub) == "hookline.events.update.newsletter.orders"
    unscoped = parse_event({"type": "delivery", "recipient": "x@y"}, now=NOW)
    assert subject_for(unscoped) == "hookline.events.delivery._._"


def _matches(pattern: str, subject: str) -> bool:
    """NATS wildcard matching (only '*' is used in filters)."""
    p, s = pattern.split("."), subject.split(".")
    return len(p) == len(s) and all(a in ("*", b) for a, b in zip(p, s, strict=True))


def test_filter_subjects_select_exactly_the_scoped_events():
    scoped = filter_subjects(["click", "open"], "news.letter", None)
    assert scoped == ["hookline.events.click.news_2Eletter.*", "hookline.events.open.news_2Eletter.*"]
    in_scope = parse_event({**example_event("click"), "database": "news.letter", "collection": "c"})
    other_db = parse_event({**example_event("click"), "database": "news"})
    other_type = parse_event({**example_event("bounce"), "database": "news.letter"})
    assert any(_matches(f, subject_for(in_scope)) for f in scoped)
    assert not any(_matches(f, subject_for(other_db)) for f in scoped)
    assert not any(_matches(f, subject_for(other_type)) for f in scoped)


def test_filter_subjects_unscoped_and_collection_scoped():
    assert filter_subjects(["open", "open"], None, None) == ["hookline.events.open.*.*"]
    assert filter_subjects(["delete"], "db", "orders") == ["hookline.events.delete.db.orders"]
    with pytest.raises(ValueError, match="collection requires database"):
        filter_subjects(["open"], None, "orders")
    with pytest.raises(ValueError, match="unknown event type"):
        filter_subjects(["opened"], None, None)


def test_format_timestamp_is_utc():
    assert format_timestamp(0) == "1970-01-01 00:00:00"


ODD_VALUES = [
    None,
    0,
    -1,
    1.5,
    10**30,
    True,
    "",
    " ",
    "x" * 5000,
    "2024-11-05 09:46:40",
    [],
    {},
    [1],
    {"a": []},
    ["a"],
]


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_any_json_value_in_any_field_is_accepted_or_an_event_error(event_type):
    base = example_event(event_type, subprofile=True)
    fields = [*base, "id", "time", "timestamp", "created", "modified", "code", "extended", "referer"]
    for name in fields:
        for value in ODD_VALUES:
            try:
                event = parse_event({**base, name: value}, now=NOW)
            except EventError as exc:
                assert exc.errors and all(e.field and e.message for e in exc.errors)
            else:
                assert Event.from_bytes(event.to_bytes()) == event
