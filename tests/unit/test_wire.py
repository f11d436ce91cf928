"""Wire formats: the form body a PHP script reads from $_POST, and compact JSON."""

from __future__ import annotations

import json

import pytest

from hookline.api import EVENT_TYPES
from hookline.sender.model.events import parse_event
from hookline.sender.model.examples import example_event
from hookline.sender.model.wire import decode_form, encode_form, form_view, render_body

NOW = 1_730_800_000


def php_sees(value):
    """Independent oracle: what PHP puts in $_POST for a value (strings; empty arrays vanish)."""
    if isinstance(value, dict):
        items = {str(k): php_sees(v) for k, v in value.items()}
        return {k: v for k, v in items.items() if v not in ({}, [])}
    if isinstance(value, list):
        return [v for v in (php_sees(v) for v in value) if v not in ({}, [])]
    if value is True:
        return "1"
    if value is False:
        return "0"
    return "" if value is None else str(value)


@pytest.mark.parametrize("event_type", EVENT_TYPES)
@pytest.mark.parametrize("subprofile", [False, True])
def test_form_round_trip_for_every_event_type(event_type, subprofile):
    event = parse_event(example_event(event_type, subprofile=subprofile), now=NOW)
    content_type, body = render_body(event.payload, "form")
    assert content_type == "application/x-www-form-urlencoded"
    assert decode_form(body) == php_sees(event.payload)
    assert form_view(event.payload) == decode_form(body)


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_json_round_trip_for_every_event_type(event_type):
    event = parse_event(example_event(event_type, subprofile=True), now=NOW)
    content_type, body = render_body(event.payload, "json")
    assert content_type == "application/json"
    assert json.loads(body) == event.payload
    assert b"\n" not in body and b'": ' not in body


def test_nested_maps_and_lists_use_php_brackets():
    body = encode_form({"fields": {"email": "a@b.example", "name": "Jane Doe"}, "interests": ["x", "y z"]})
    assert body == "fields[email]=a%40b.example&fields[name]=Jane+Doe&interests[]=x&interests[]=y+z"


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (True, "1"),
        (False, "0"),
        (None, ""),
        (42, "42"),
        (2.0, "2"),
        (2.5, "2.5"),
        ("a b", "a+b"),
        ("~*'()!", "%7E%2A%27%28%29%21"),  # PHP urlencode escapes these; only -_. stay
        ("-_.", "-_."),
        ("é", "%C3%A9"),
        ("a&b=c", "a%26b%3Dc"),
        ("line\r\nbreak", "line%0D%0Abreak"),
    ],
)
def test_scalars_are_encoded_like_php_urlencode(value, encoded):
    assert encode_form({"v": value}) == f"v={encoded}"


def test_keys_are_escaped_but_brackets_stay_structural():
    assert (
        encode_form({"fields": {"e-mail address": "x", "a&b": "y"}})
        == "fields[e-mail+address]=x&fields[a%26b]=y"
    )
    assert decode_form("fields[e-mail+address]=x&fields[a%26b]=y") == {
        "fields": {"e-mail address": "x", "a&b": "y"}
    }


def test_empty_containers_send_nothing_like_http_build_query():
    assert encode_form({"a": "1", "interests": [], "parameters": {}}) == "a=1"


def test_lists_of_maps_use_indices_so_php_keeps_items_together():
    body = encode_form({"rows": [{"a": 1, "b": 2}, {"a": 3}]})
    assert body == "rows[0][a]=1&rows[0][b]=2&rows[1][a]=3"
    assert decode_form(body) == {"rows": [{"a": "1", "b": "2"}, {"a": "3"}]}


def test_deeply_nested_maps():
    payload = {"parameters": {"utm": {"source": "nl", "tags": ["a", "b"]}}}
    assert (
        encode_form(payload)
        == "parameters[utm][source]=nl&parameters[utm][tags][]=a&parameters[utm][tags][]=b"
    )
    assert decode_form(encode_form(payload)) == {"parameters": {"utm": {"source": "nl", "tags": ["a", "b"]}}}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # what PHP's own http_build_query emits: brackets percent-encoded, numeric list indices
        (
            "fields%5Bemail%5D=a%40b&interests%5B0%5D=x&interests%5B1%5D=y",
            {"fields": {"email": "a@b"}, "interests": ["x", "y"]},
        ),
        ("a=1&a=2", {"a": "2"}),  # PHP: the last one wins
        ("a[]=1&a[]=2&a[5]=3&a[]=4", {"a": {"0": "1", "1": "2", "5": "3", "6": "4"}}),  # PHP's next index
        ("a=&b", {"a": "", "b": ""}),
        ("", {}),
        ("&&x=1&", {"x": "1"}),
        ("m[k]=1&m[k2][]=2", {"m": {"k": "1", "k2": ["2"]}}),
        ("q=%E2%82%AC+5", {"q": "€ 5"}),
    ],
)
def test_decode_form_follows_php(body, expected):
    assert decode_form(body) == expected
    assert decode_form(body.encode()) == expected


def test_unknown_format_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown format 'xml'; use one of form, json"):
        render_body({"a": 1}, "xml")


def test_json_keeps_unicode_and_types():
    _, body = render_body({"n": 1, "b": True, "s": "zoë", "none": None}, "json")
    assert body == '{"n":1,"b":true,"s":"zoë","none":null}'.encode()
