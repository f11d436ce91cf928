"""A delivery's body is the same whether it is encoded from the payload or taken from the bus bytes."""

from __future__ import annotations

import pytest

from hookline.sender.model.events import Event, parse_event
from hookline.sender.model.examples import example_event
from hookline.sender.model.wire import render_body, render_event


@pytest.mark.parametrize("event_type", ["open", "click", "bounce", "create", "update", "delete"])
@pytest.mark.parametrize("fmt", ["json", "form"])
def test_an_event_off_the_bus_renders_as_its_payload_does(event_type, fmt):
    published = parse_event({**example_event(event_type), "id": "e-1"})
    received = Event.from_bytes(published.to_bytes())
    assert render_event(received, fmt) == render_body(published.payload, fmt)


def test_a_json_body_is_the_bus_bytes_themselves():
    data = parse_event({**example_event("click"), "id": "e-2", "tags": ["é", "~"]}).to_bytes()
    content_type, body = render_event(Event.from_bytes(data), "json")
    assert content_type == "application/json"
    assert body is data


def test_an_event_built_in_memory_is_encoded():
    event = parse_event({**example_event("open"), "id": "e-3"})
    assert event.raw is None
    assert render_event(event, "json") == render_body(event.payload, "json")


def test_raw_bytes_do_not_change_what_an_event_equals():
    data = parse_event({**example_event("open"), "id": "e-4"}).to_bytes()
    received = Event.from_bytes(data)
    rebuilt = Event(received.id, received.type, received.database, received.collection, received.payload)
    assert received == rebuilt
