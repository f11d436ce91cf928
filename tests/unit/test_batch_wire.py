"""Batch bodies (sender/model/wire.py, sender/model/request.py): a JSON array of the event objects, a
PHP-style form `events[0][type]=...&events[1][...]` that decodes back into the list of events, one batch
id per set of events, and one Standard Webhooks signature over the whole body (reference library)."""

from __future__ import annotations

import json
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from hookline.api import EVENT_TYPES, parse_webhook_spec
from hookline.sender.model.events import parse_event
from hookline.sender.model.examples import example_event
from hookline.sender.model.request import Delivery, batch_id
from hookline.sender.model.signing import parse_secret
from hookline.sender.model.wire import (
    batch_size,
    decode_form,
    form_view,
    join_batch,
    render_batch,
    render_batch_part,
)

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NOW = 1_730_800_000


def events() -> list:
    return [parse_event(example_event(t, subprofile=i % 2 == 1), now=NOW) for i, t in enumerate(EVENT_TYPES)]


def delivery(fmt: str) -> Delivery:
    spec = parse_webhook_spec(
        {
            "url": "https://shop.example.com/hooks/copernica.php",
            "events": ["open"],
            "format": fmt,
            "headers": {"X-Team": "crm"},
            "delivery": {"batch": {"maxEvents": 100}},
        }
    )
    return Delivery(spec, parse_secret(SECRET))


def test_a_json_batch_is_an_array_of_the_event_objects():
    batch = events()
    content_type, body = render_batch(batch, "json")
    assert content_type == "application/json"
    assert json.loads(body) == [e.payload for e in batch]


def test_a_form_batch_decodes_into_the_list_of_events_as_php_reads_it():
    batch = events()
    content_type, body = render_batch(batch, "form")
    assert content_type == "application/x-www-form-urlencoded"
    assert body.startswith(b"events[0][")
    decoded = decode_form(body)
    assert list(decoded) == ["events"]
    assert decoded["events"] == [form_view(e.payload) for e in batch]
    assert [item["id"] for item in decoded["events"]] == [e.id for e in batch]
    assert decoded["events"][5]["fields"] and decoded["events"][5]["interests"]  # nested map and list


def test_a_form_batch_of_one_is_still_a_list():
    (event,) = events()[:1]
    assert decode_form(render_batch([event], "form")[1]) == {"events": [form_view(event.payload)]}


@pytest.mark.parametrize("fmt", ["json", "form"])
def test_batch_size_is_the_length_of_the_joined_body(fmt):
    batch = events()
    parts = [render_batch_part(e, i, fmt) for i, e in enumerate(batch)]
    for count in range(1, len(parts) + 1):
        assert batch_size(sum(map(len, parts[:count])), count, fmt) == len(join_batch(parts[:count], fmt))


def test_the_batch_id_depends_on_the_set_of_events_only():
    ids = [e.id for e in events()]
    assert batch_id(ids) == batch_id(list(reversed(ids)))
    assert batch_id(ids) != batch_id(ids[:-1])
    assert batch_id(ids).startswith("batch_") and len(batch_id(ids)) == len("batch_") + 32


@pytest.mark.parametrize("fmt", ["json", "form"])
def test_one_signature_over_the_whole_batch_verifies_with_the_reference_library(fmt):
    batch = events()
    ident, body, headers = delivery(fmt).build_batch(batch, time.time())
    assert headers["webhook-id"] == ident == batch_id([e.id for e in batch])
    assert headers["X-Team"] == "crm"
    assert headers["Content-Type"].startswith("application/" + ("json" if fmt == "json" else "x-www"))
    Webhook(SECRET).verify(body, headers, json_parse=False)  # raises if the signature is wrong
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body + b"&", headers, json_parse=False)


def test_build_batch_with_parts_given_is_the_same_request():
    d = delivery("form")
    batch = events()
    parts = [d.part(e, i) for i, e in enumerate(batch)]
    assert d.build_batch(batch, NOW, parts) == d.build_batch(batch, NOW)


def test_a_single_delivery_is_unchanged_by_the_batch_module():
    d = delivery("json")
    event = events()[0]
    body, headers = d.build(event, NOW)
    assert json.loads(body) == event.payload and headers["webhook-id"] == event.id


@pytest.mark.parametrize("fmt", ["json", "form"])
def test_the_demo_receiver_shows_a_batch_as_one_line(fmt):
    from hookline.demo_receiver import describe_request

    batch = events()[:3]
    ident, body, headers = delivery(fmt).build_batch(batch, time.time())
    line = describe_request("/hooks/a.php", headers, body, [SECRET])
    assert line.startswith("POST /hooks/a.php  batch of 3 (")
    assert f"id={ident}" in line and line.endswith("signature OK")
    single_body, single_headers = delivery(fmt).build(batch[0], time.time())
    assert "batch" not in describe_request("/hooks/a.php", single_headers, single_body, [SECRET])


def test_the_batch_reaches_the_sender_through_its_config_document():
    from hookline.sender.model.config import parse_sender_config

    doc = {
        "webhook": {"namespace": "shop", "name": "clicks"},
        "spec": {"url": "https://x.example/h", "events": ["open"], "delivery": {"batch": {"maxEvents": 50}}},
        "nats": {"consumer": "hookline_shop_clicks"},
    }
    cfg = parse_sender_config(doc)
    again = parse_sender_config(cfg.to_document())
    assert again.spec.delivery.batch == cfg.spec.delivery.batch
    assert again.to_document()["spec"]["delivery"]["batch"] == {"maxEvents": 50, "maxWaitMilliseconds": 1000}
    unbatched = parse_sender_config({**doc, "spec": {"url": "https://x.example/h.php", "events": ["open"]}})
    assert "batch" not in unbatched.to_document()["spec"]["delivery"]
