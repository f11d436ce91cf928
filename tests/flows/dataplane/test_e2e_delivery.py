"""Producer -> ingest -> JetStream -> sender -> customer endpoint, with a real nats-server and real receivers.

Ingest and the senders run in this process (the subprocess paths are in test_sender_process.py and
test_dev.py); the receivers are real aiohttp servers on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from dataplane_helpers import SECRET, Receiver, sender_config, wait_until
from prometheus_client import CollectorRegistry
from standardwebhooks.webhooks import Webhook

from hookline import USER_AGENT
from hookline.sender import bus
from hookline.sender.bus.natsserver import free_port
from hookline.sender.cmd.sender import SenderRuntime
from hookline.sender.ingest.service import Ingest, create_app
from hookline.sender.model.events import parse_event
from hookline.sender.model.signing import parse_secret
from hookline.sender.model.wire import form_view
from hookline.sender.observe.health import bound_port, start_site
from hookline.sender.observe.metrics import IngestMetrics, SenderMetrics, render
from hookline.sender.transport.egress import EgressPolicy

T = {"time": 1_700_000_000}
MAIL = {"recipient": "anna@example.com", "database": "newsletter", "profile": 12, "tags": ["spring", "vip"]}
PROFILE = {"profile": 12, "database": "newsletter", "fields": {"email": "anna@example.com", "name": "Anna"}}
SUB = {**PROFILE, "subprofile": 99, "collection": "orders", "fields": {"total": "42.50"}}

# Every event type, with the profile and subprofile variants of profile events.
SAMPLES: list[dict] = [
    {"id": "e-open", "type": "open", **T, **MAIL, "ip": "192.0.2.7", "useragent": "Mail/1.0", "referer": ""},
    {
        "id": "e-click",
        "type": "click",
        **T,
        **MAIL,
        "ip": "192.0.2.7",
        "original": "https://shop.example/?a=1&b=2",
    },
    {
        "id": "e-bounce",
        "type": "bounce",
        **T,
        **MAIL,
        "envelope": "<a@b>",
        "mime": "Content-Type: text/plain",
    },
    {
        "id": "e-failure",
        "type": "failure",
        **T,
        **MAIL,
        "action": "failed",
        "state": "permanent",
        "code": 550,
        "extended": "5.1.1",
        "description": "mailbox unavailable",
    },
    {"id": "e-delivery", "type": "delivery", **T, **MAIL},
    {
        "id": "e-create",
        "type": "create",
        **T,
        **PROFILE,
        "interests": ["shoes", "bags"],
        "parameters": {"src": "api"},
    },
    {"id": "e-create-sub", "type": "create", **T, **SUB},
    {"id": "e-update", "type": "update", **T, **PROFILE, "interests": ["shoes"]},
    {"id": "e-update-sub", "type": "update", **T, **SUB},
    {"id": "e-delete", "type": "delete", **T, **PROFILE},
    {"id": "e-delete-sub", "type": "delete", **T, **SUB},
]
ALL_TYPES = ["open", "click", "bounce", "failure", "delivery", "create", "update", "delete"]


@dataclass
class Pipeline:
    nc: object
    js: object
    ingest_url: str
    http: aiohttp.ClientSession
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    sender_metrics: SenderMetrics | None = None
    tasks: list = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def post(self, events) -> list[str]:
        async with self.http.post(f"{self.ingest_url}/v1/events", json=events) as response:
            body = await response.json()
            assert response.status == 202, body
            return body["accepted"]

    async def start_sender(self, receiver: Receiver, name: str, **spec) -> SenderRuntime:
        cfg = sender_config("unused", f"{receiver.url}/hooks/{name}.php", name=name, **spec)
        key = parse_secret(SECRET) if spec.get("signing") else None
        if self.sender_metrics is None:
            self.sender_metrics = SenderMetrics(self.registry)
        metrics = self.sender_metrics
        runtime = await SenderRuntime.create(self.nc, cfg, EgressPolicy.for_dev(), metrics, key)
        self.tasks.append(asyncio.create_task(runtime.run(self.stop)))
        await wait_until(lambda: runtime.engine.readiness() is None, what="sender running")
        return runtime

    def metrics_text(self) -> str:
        return render(self.registry).decode()

    def sample(self, name: str, webhook: str, outcome: str) -> float:
        labels = {"namespace": "default", "webhook": webhook, "database": "", "outcome": outcome}
        return self.registry.get_sample_value(name, labels) or 0.0


SIGNING = {"secretRef": {"name": "hook-secret", "key": "secret"}}


@pytest.fixture
async def pipeline(nats) -> AsyncIterator[Pipeline]:
    nc, js = nats
    registry = CollectorRegistry()
    runner = await start_site(create_app(Ingest(nc, js, IngestMetrics(registry)), registry), "127.0.0.1", 0)
    async with aiohttp.ClientSession() as http:
        p = Pipeline(nc, js, f"http://127.0.0.1:{bound_port(runner)}", http)
        yield p
        p.stop.set()
        await asyncio.gather(*p.tasks)
    await runner.cleanup()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


async def test_every_event_type_arrives_in_both_formats_with_its_fields(pipeline, receiver):
    await pipeline.start_sender(receiver, "as-json", events=ALL_TYPES, format="json", signing=SIGNING)
    await pipeline.start_sender(
        receiver, "as-form", events=ALL_TYPES, format="form", headers={"X-Team": "crm"}
    )
    await pipeline.post(copy.deepcopy(SAMPLES))
    expected = {s["id"]: parse_event(s).payload for s in SAMPLES}

    await wait_until(
        lambda: sum(r.answered == 200 for r in receiver.requests) >= 2 * len(SAMPLES), what="all deliveries"
    )
    as_json = {r.headers["webhook-id"]: r for r in receiver.requests if r.path == "/hooks/as-json.php"}
    as_form = {r.headers["webhook-id"]: r for r in receiver.requests if r.path == "/hooks/as-form.php"}
    assert set(as_json) == set(as_form) == set(expected)
    for event_id, payload in expected.items():
        j, f = as_json[event_id], as_form[event_id]
        assert j.headers["Content-Type"] == "application/json"
        assert json.loads(j.body) == payload
        assert f.headers["Content-Type"] == "application/x-www-form-urlencoded"
        assert f.fields == form_view(payload)
        for request in (j, f):
            assert request.headers["User-Agent"] == USER_AGENT
            assert request.headers["webhook-timestamp"].isdigit()
        assert f.headers["X-Team"] == "crm"
        assert "webhook-signature" not in f.headers
        # The reference Standard Webhooks implementation accepts the signature.
        assert Webhook(SECRET).verify(j.body, j.headers) == payload
    # A PHP script reading $_POST sees nested fields and lists.
    sub = as_form["e-create-sub"].fields
    assert sub["fields"] == {"total": "42.50"}
    assert sub["subprofile"] == "99"
    assert as_form["e-create"].fields["interests"] == ["shoes", "bags"]
    assert as_form["e-click"].fields["original"] == "https://shop.example/?a=1&b=2"


async def test_signature_fails_with_another_secret(pipeline, receiver):
    await pipeline.start_sender(receiver, "signed", format="json", signing=SIGNING)
    await pipeline.post({"type": "open", "recipient": "a@example.com", "ip": "192.0.2.1"})
    await wait_until(lambda: len(receiver.delivered()) == 1, what="delivery")
    request = receiver.requests[0]
    with pytest.raises(Exception, match="No matching signature"):
        Webhook("whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB").verify(request.body, request.headers)
    tampered = request.body.replace(b"a@example.com", b"b@example.com")
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(SECRET).verify(tampered, request.headers)


async def test_events_outside_a_webhooks_types_or_scope_are_not_delivered(pipeline, receiver):
    await pipeline.start_sender(
        receiver, "orders", events=["create", "update"], database="newsletter", collection="orders"
    )
    base = {"type": "create", "profile": 1, "database": "newsletter", "subprofile": 5, "collection": "orders"}
    out_of_scope = [
        {**base, "id": "wrong-type", "type": "delete"},
        {**base, "id": "wrong-db", "database": "crm"},
        {**base, "id": "wrong-coll", "collection": "returns"},
        {"id": "no-coll", "type": "create", "profile": 1, "database": "newsletter"},
        {
            "id": "mail",
            "type": "open",
            "recipient": "a@example.com",
            "ip": "192.0.2.1",
            "database": "newsletter",
        },
    ]
    in_scope = [{**base, "id": "match-1"}, {**base, "id": "match-2", "type": "update"}]
    await pipeline.post([*out_of_scope, in_scope[0]])
    await pipeline.post(in_scope[1])
    await wait_until(lambda: set(receiver.delivered()) >= {"match-1", "match-2"}, what="in-scope deliveries")
    # Out-of-scope events were stored before the last in-scope one; the consumer never offers them.
    info = await pipeline.js.consumer_info(bus.STREAM, "hookline_default_orders")
    assert info.delivered.stream_seq == 7
    assert sorted(receiver.ids()) == ["match-1", "match-2"]


async def test_a_receiver_error_leads_to_redelivery_not_loss(pipeline, receiver):
    receiver.status = 500
    await pipeline.start_sender(receiver, "flaky", format="json")
    [event_id] = await pipeline.post({"type": "open", "recipient": "a@example.com", "ip": "192.0.2.1"})
    await wait_until(lambda: len(receiver.requests) >= 1, what="a first attempt answered 500")
    assert set(receiver.ids()) == {event_id}
    assert receiver.delivered() == {}
    receiver.status = 200  # the retry (5 s later, per the Standard Webhooks schedule) succeeds
    await wait_until(lambda: event_id in receiver.delivered(), what="delivery after recovery")
    # The receiver has answered; the sender counts once it has read that answer.
    await wait_until(
        lambda: pipeline.sample("hookline_deliveries_total", "flaky", "delivered") == 1, what="counted"
    )
    text = pipeline.metrics_text()
    assert pipeline.sample("hookline_delivery_attempts_total", "flaky", "success") == 1
    assert pipeline.sample("hookline_delivery_attempts_total", "flaky", "http_error") == 1
    assert pipeline.sample("hookline_deliveries_total", "flaky", "delivered") == 1
    assert "hookline_delivery_duration_seconds_bucket" in text
    assert event_id not in text and receiver.url not in text


async def test_unreachable_receiver_keeps_the_event_until_it_comes_back(pipeline):
    port = free_port()
    receiver = Receiver(url=f"http://127.0.0.1:{port}")  # nothing listens there yet
    await pipeline.start_sender(receiver, "down", format="json")
    [event_id] = await pipeline.post({"type": "open", "recipient": "a@example.com", "ip": "192.0.2.1"})
    await wait_until(
        lambda: pipeline.sample("hookline_delivery_attempts_total", "down", "connection_error") >= 1
    )
    await receiver.start(port)
    try:
        await wait_until(lambda: event_id in receiver.delivered(), what="delivery once the receiver is back")
    finally:
        await receiver.stop()
