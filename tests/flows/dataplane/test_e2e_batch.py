"""Batched delivery end to end (spec.delivery.batch): ingest -> real nats-server -> sender -> real
aiohttp receivers on 127.0.0.1, in both formats.

What a receiver gets: a JSON array of the event objects, or a PHP-style form that decodes (with the
project's own form decoder, as PHP fills $_POST) into the list of events; one webhook-id (the batch
id) and one Standard Webhooks signature (checked with the reference library) per request. A failed
batch is retried as the same events with the same batch id; dead letters are per event; scope
filters hold; every request respects maxEvents and maxBytes.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import test_e2e_delivery
from aiohttp import web
from dataplane_helpers import SECRET, wait_until
from standardwebhooks.webhooks import Webhook
from test_e2e_delivery import Pipeline

from hookline.sender.bus.attemptlog import read_attempts
from hookline.sender.bus.deadletter import iter_dead_letters
from hookline.sender.model.events import parse_event
from hookline.sender.model.request import batch_id
from hookline.sender.model.wire import decode_form, form_view
from hookline.sender.observe.health import bound_port, start_site

pipeline = test_e2e_delivery.pipeline  # the fixture: ingest and senders in this process, real NATS
SIGNING = {"secretRef": {"name": "hook-secret", "key": "secret"}}
T = {"time": 1_700_000_000}


def opens(count: int, prefix: str, **extra: Any) -> list[dict[str, Any]]:
    return [
        {"id": f"{prefix}-{i:03d}", "type": "open", **T, "recipient": f"u{i}@example.com", "ip": "192.0.2.7"}
        | extra
        for i in range(count)
    ]


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def events(self) -> list[dict[str, Any]]:
        """The batch as the receiving application reads it."""
        if self.headers["Content-Type"].startswith("application/json"):
            value = json.loads(self.body)
            assert isinstance(value, list), "a JSON batch is an array"
            return value
        decoded = decode_form(self.body)
        assert list(decoded) == ["events"], "a form batch is events[i][...] only"
        return decoded["events"]

    @property
    def ids(self) -> list[str]:
        return [e["id"] for e in self.events]


@dataclass
class BatchReceiver:
    """A customer endpoint: answers `status`, or the next of `answers` while there are some."""

    status: int = 200
    answers: deque[int] = field(default_factory=deque)
    requests: list[Request] = field(default_factory=list)
    url: str = ""
    runner: web.AppRunner | None = None

    async def start(self) -> BatchReceiver:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/{tail:.*}", self._handle)
        self.runner = await start_site(app, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{bound_port(self.runner)}"
        return self

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        status = self.answers.popleft() if self.answers else self.status
        self.requests.append(Request(request.path, dict(request.headers), body, status))
        return web.Response(status=status, text="ok" if status < 300 else "nope")

    def to(self, name: str) -> list[Request]:
        return [r for r in self.requests if r.path == f"/hooks/{name}.php"]

    def delivered(self, name: str) -> list[str]:
        """Event ids answered 2xx at this Webhook's path, repeats included."""
        return [i for r in self.to(name) if 200 <= r.status < 300 for i in r.ids]


@pytest.fixture
async def receiver() -> AsyncIterator[BatchReceiver]:
    r = await BatchReceiver().start()
    yield r
    assert r.runner is not None
    await r.runner.cleanup()


def batch(max_events: int = 100, wait_ms: int = 200, **extra: int) -> dict[str, Any]:
    return {"batch": {"maxEvents": max_events, "maxWaitMilliseconds": wait_ms, **extra}}


def sample(p: Pipeline, metric: str, webhook: str, **labels: str) -> float:
    values = {"namespace": "default", "webhook": webhook, "database": "", **labels}
    return p.registry.get_sample_value(metric, values) or 0.0


async def test_json_and_form_batches_carry_every_event_signed(pipeline, receiver):
    for fmt in ("json", "form"):
        await pipeline.start_sender(
            receiver,
            f"batch-{fmt}",
            events=["open", "click", "create"],
            format=fmt,
            signing=SIGNING,
            delivery=batch(100),
            headers={"X-Team": "a"},
        )
    click = {"id": "e-click", "type": "click", **T, "recipient": "a@example.com", "ip": "192.0.2.7"}
    click |= {"original": "https://shop.example/?a=1&b=2", "tags": ["spring", "vip"]}
    create = {"id": "e-create", "type": "create", **T, "profile": 7, "database": "newsletter"}
    create |= {"fields": {"email": "a@example.com", "name": "Anna"}, "interests": ["shoes", "bags"]}
    events = [*opens(30, "e"), click, create]
    await pipeline.post(events)
    payloads = {e["id"]: parse_event(e).payload for e in events}
    for name in ("batch-json", "batch-form"):
        await wait_until(lambda n=name: len(receiver.delivered(n)) >= len(events), what=f"{name} delivered")
    for fmt in ("json", "form"):
        name = f"batch-{fmt}"
        requests = receiver.to(name)
        assert sorted(receiver.delivered(name)) == sorted(payloads)  # each event once
        assert len(requests) < len(events) / 4  # batched: a few requests, not one per event
        for request in requests:
            assert request.headers["webhook-id"] == batch_id(request.ids)
            assert request.headers["X-Team"] == "a"
            Webhook(SECRET).verify(request.body, request.headers, json_parse=False)  # raises if wrong
            for item in request.events:
                expected = payloads[item["id"]]
                assert item == (expected if fmt == "json" else form_view(expected))
        await wait_until(
            lambda n=name: (
                sample(pipeline, "hookline_deliveries_total", n, outcome="delivered") == len(events)
            ),
            what="deliveries counted per event",
        )
        attempts = sample(pipeline, "hookline_delivery_attempts_total", name, outcome="success")
        assert attempts == len(requests)  # attempts count requests
        assert sample(pipeline, "hookline_delivery_request_events_count", name) == len(requests)
        assert sample(pipeline, "hookline_delivery_request_events_sum", name) == len(events)
    form = next(r for r in receiver.to("batch-form") if "e-create" in r.ids)
    create = next(e for e in form.events if e["id"] == "e-create")
    assert create["fields"] == {"email": "a@example.com", "name": "Anna"}
    assert create["interests"] == ["shoes", "bags"]  # what PHP's $_POST['events'][i] holds


async def test_every_request_keeps_to_max_events_and_max_bytes(pipeline, receiver):
    await pipeline.start_sender(receiver, "small", format="json", delivery=batch(4))
    await pipeline.start_sender(receiver, "bytes", format="form", delivery=batch(100, maxBytes=1024))
    big = opens(1, "big", useragent="x" * 2000)  # larger than maxBytes on its own: sent alone
    await pipeline.post(opens(10, "s") + big)
    await wait_until(lambda: len(receiver.delivered("small")) >= 11, what="small delivered")
    await wait_until(lambda: len(receiver.delivered("bytes")) >= 11, what="bytes delivered")
    assert sorted(receiver.delivered("small")) == sorted(receiver.delivered("bytes"))
    assert all(len(r.ids) <= 4 for r in receiver.to("small"))
    assert len(receiver.to("small")) >= 3
    for request in receiver.to("bytes"):
        assert len(request.body) <= 1024 or request.ids == ["big-000"]
    assert [r.ids for r in receiver.to("bytes") if len(r.body) > 1024] == [["big-000"]]
    assert len(receiver.to("bytes")) >= 3  # ~250-byte events in 1 KiB bodies


async def test_a_failed_batch_is_retried_as_the_same_events_with_the_same_batch_id(pipeline, receiver):
    receiver.answers.extend([500])  # the first request fails, everything after succeeds
    await pipeline.start_sender(receiver, "retried", format="form", signing=SIGNING, delivery=batch(3))
    events = opens(9, "r")
    await pipeline.post(events)
    await wait_until(lambda: len(set(receiver.delivered("retried"))) >= 9, what="all delivered after retry")
    requests = receiver.to("retried")
    failed = [r for r in requests if r.status == 500]
    assert len(failed) == 1
    again = [
        r for r in requests if r.status == 200 and r.headers["webhook-id"] == failed[0].headers["webhook-id"]
    ]
    assert len(again) == 1 and again[0].ids == failed[0].ids  # same events, same order, same id
    Webhook(SECRET).verify(again[0].body, again[0].headers, json_parse=False)
    assert sorted(receiver.delivered("retried")) == sorted(e["id"] for e in events)  # none twice
    # One attempt record per request, naming the batch and its events.
    await wait_until(
        lambda: sample(pipeline, "hookline_deliveries_total", "retried", outcome="delivered") == 9,
        what="count",
    )
    records = await read_attempts(pipeline.js, "default", "retried", failed_only=True)
    assert len(records) == 1
    (record,) = records
    assert record.event_id == failed[0].headers["webhook-id"]
    assert record.event_ids == failed[0].ids and record.events == 3 and record.status_code == 500
    assert sample(pipeline, "hookline_delivery_attempts_total", "retried", outcome="http_error") == 1


async def test_dead_letters_are_per_event_with_the_batch_answer(pipeline, receiver):
    receiver.status = 500
    await pipeline.start_sender(receiver, "dead", format="json", delivery={"maxAttempts": 1, **batch(10)})
    events = opens(5, "d")
    await pipeline.post(events)
    await wait_until(
        lambda: sample(pipeline, "hookline_deliveries_total", "dead", outcome="dead_lettered") == 5,
        what="five dead letters",
    )
    stored = [s.record async for s in iter_dead_letters(pipeline.js, "default", "dead")]
    assert sorted(r.event["id"] for r in stored) == [e["id"] for e in events]
    assert {(r.reason, r.last_status, r.attempts) for r in stored} == {("max_attempts", 500, 1)}
    assert len(receiver.to("dead")) < 5  # they shared requests
    assert sample(pipeline, "hookline_dead_letters_total", "dead", reason="max_attempts") == 5


async def test_a_410_dead_letters_the_batch_as_gone_and_stops_the_webhook(pipeline, receiver):
    receiver.status = 410
    await pipeline.start_sender(receiver, "gone", format="json", delivery=batch(10))
    await pipeline.post(opens(4, "g"))
    await wait_until(
        lambda: sample(pipeline, "hookline_dead_letters_total", "gone", reason="gone") >= 1, what="gone"
    )
    assert (
        pipeline.registry.get_sample_value(
            "hookline_webhook_gone", {"namespace": "default", "webhook": "gone", "database": ""}
        )
        == 1
    )

    def gone_count() -> float:
        return sample(pipeline, "hookline_dead_letters_total", "gone", reason="gone")

    def answered_gone() -> list[str]:  # every request got 410 (several may have been in flight)
        return [i for r in receiver.to("gone") for i in r.ids]

    await wait_until(
        lambda: gone_count() == len(answered_gone()),
        what="the events of every batch answered 410 dead-lettered",
    )
    stored = [s.record async for s in iter_dead_letters(pipeline.js, "default", "gone")]
    assert sorted(r.event["id"] for r in stored) == sorted(answered_gone())
    assert {r.reason for r in stored} == {"gone"}
    assert len(set(answered_gone())) == len(answered_gone())  # no event was posted twice


async def test_scope_filters_hold_for_batches(pipeline, receiver):
    await pipeline.start_sender(
        receiver,
        "scoped",
        format="form",
        events=["create", "update"],
        database="newsletter",
        collection="orders",
        delivery=batch(50),
    )
    base = {
        "type": "create",
        **T,
        "profile": 1,
        "database": "newsletter",
        "subprofile": 5,
        "collection": "orders",
    }
    out_of_scope = [
        {**base, "id": "wrong-type", "type": "delete"},
        {**base, "id": "wrong-db", "database": "crm"},
        {**base, "id": "wrong-coll", "collection": "returns"},
        {"id": "no-coll", "type": "create", **T, "profile": 1, "database": "newsletter"},
    ]
    in_scope = [{**base, "id": f"match-{i}", "type": ("create", "update")[i % 2]} for i in range(6)]
    await pipeline.post(out_of_scope + in_scope[:3])
    await pipeline.post(in_scope[3:])
    await wait_until(lambda: len(receiver.delivered("scoped")) >= 6, what="in-scope deliveries")
    assert sorted(receiver.delivered("scoped")) == sorted(e["id"] for e in in_scope)
    for request in receiver.to("scoped"):
        assert {e["collection"] for e in request.events} == {"orders"}


async def test_without_a_batch_each_event_is_its_own_request_as_before(pipeline, receiver):
    await pipeline.start_sender(receiver, "single", format="json")
    events = opens(5, "u")
    await pipeline.post(events)
    await wait_until(lambda: len(receiver.to("single")) >= 5, what="five requests")
    for request in receiver.to("single"):
        payload = json.loads(request.body)
        assert isinstance(payload, dict) and request.headers["webhook-id"] == payload["id"]
    await asyncio.sleep(0)  # nothing more is due
    assert sample(pipeline, "hookline_delivery_request_events_sum", "single") == 5


async def test_on_stop_the_events_of_an_unsent_batch_go_back_at_once(pipeline, receiver):
    first = await pipeline.start_sender(receiver, "handover", format="json", delivery=batch(100, 10_000))
    events = opens(5, "h")
    await pipeline.post(events)
    await wait_until(
        lambda: len(first.engine.assembler.assembling) == 5, what="the batch waiting for more events"
    )
    pipeline.stop.set()  # the batch is not sent: its events go back to the stream unacknowledged
    await asyncio.gather(*pipeline.tasks)
    assert receiver.to("handover") == []
    pipeline.stop, pipeline.tasks = asyncio.Event(), []
    loop = asyncio.get_running_loop()
    started = loop.time()
    await pipeline.start_sender(receiver, "handover", format="json", delivery=batch(100, 50))
    await wait_until(lambda: len(receiver.delivered("handover")) >= 5, what="delivered by the next start")
    # NAKed, not left to the ack wait (timeoutSeconds 10 + 30 s): the next start has them at once.
    assert loop.time() - started < 30
    assert sorted(receiver.delivered("handover")) == [e["id"] for e in events]
