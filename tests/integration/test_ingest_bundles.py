"""`hookline ingest --bundle-events` against a real nats-server: the events of a request and subject are
stored together, answered per event as without bundles, and an event id is stored once within the
duplicate window however a producer regroups its retries (a subset, merged with new events, in another
order, alone), including after a bundle whose publish ended unknown."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from dataplane_helpers import add_witness
from prometheus_client import CollectorRegistry

from hookline.sender import bus
from hookline.sender.bus.reservations import IdReservations, KeptBundle, ensure_ids_stream
from hookline.sender.ingest.service import Ingest, start_ingest_site
from hookline.sender.ingest.settings import IngestSettings
from hookline.sender.model.bundles import bundle_size, pack, unpack
from hookline.sender.model.events import parse_event
from hookline.sender.observe.health import bound_port
from hookline.sender.observe.metrics import IngestMetrics

TOKEN = "bundling-producer-token"
OPENS = "hookline.events.open.newsletter._"


def open_event(event_id: str, **more) -> dict:
    return {
        "id": event_id,
        "type": "open",
        "recipient": "anna@example.com",
        "ip": "192.0.2.7",
        "database": "newsletter",
        **more,
    }


@dataclass
class Bundling:
    url: str
    js: object
    http: aiohttp.ClientSession

    async def post(self, events: list[dict]) -> tuple[int, dict]:
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        async with self.http.post(
            f"{self.url}/v1/events", data=json.dumps(events), headers=headers
        ) as response:
            return response.status, await response.json()

    async def stored(self) -> tuple[int, Counter]:
        """Messages in the events stream, and how often each event id is stored in them."""
        info = await self.js.stream_info(bus.STREAM)
        ids: Counter = Counter()
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await self.js.get_msg(bus.STREAM, seq)
            size = bundle_size(msg.headers)
            for data in unpack(msg.data, size) if size else [msg.data]:
                ids[json.loads(data)["id"]] += 1
        return info.state.messages, ids


@pytest.fixture
async def bundling(nats) -> AsyncIterator[Bundling]:
    nc, js = nats
    await add_witness(js)
    await ensure_ids_stream(js)
    registry = CollectorRegistry()
    settings = IngestSettings(publish_timeout_seconds=2, bundle_events=100)
    ingest = Ingest(nc, js, IngestMetrics(registry), token=TOKEN.encode(), settings=settings)
    runner = await start_ingest_site(ingest, registry, "127.0.0.1", 0)
    async with aiohttp.ClientSession() as http:
        yield Bundling(f"http://127.0.0.1:{bound_port(runner)}", js, http)
    await runner.cleanup()


async def test_a_requests_events_are_stored_one_message_per_subject_and_answered_per_event(bundling):
    events = [open_event(f"o{i}") for i in range(50)]
    click = {
        "id": "c0",
        "type": "click",
        "recipient": "a@example.com",
        "ip": "192.0.2.7",
        "original": "https://x.example",
    }
    status, body = await bundling.post([*events, click])
    assert status == 202
    assert body == {"accepted": [f"o{i}" for i in range(50)] + ["c0"], "duplicates": []}
    messages, ids = await bundling.stored()
    assert messages == 2  # one bundle of 50 opens, the click alone
    assert ids == Counter({e["id"]: 1 for e in [*events, click]})
    bundle = await bundling.js.get_last_msg(bus.STREAM, OPENS)
    assert bundle_size(bundle.headers) == 50


async def test_the_same_request_again_is_all_duplicates(bundling):
    events = [open_event(f"r{i}") for i in range(5)]
    await bundling.post(events)
    status, body = await bundling.post(events)
    assert (status, body["duplicates"]) == (202, [f"r{i}" for i in range(5)])
    assert (await bundling.stored())[0] == 1


async def test_a_retried_subset_merged_with_new_events_in_another_order_stores_each_id_once(bundling):
    await bundling.post([open_event(i) for i in ("a", "b", "c")])
    status, body = await bundling.post([open_event(i) for i in ("x", "c", "y", "b")])
    assert status == 202
    assert body == {"accepted": ["x", "c", "y", "b"], "duplicates": ["c", "b"]}
    messages, ids = await bundling.stored()
    assert ids == Counter(dict.fromkeys("abcxy", 1)) and messages == 2


async def test_an_event_sent_alone_and_then_in_a_bundle_is_stored_once(bundling):
    await bundling.post([open_event("s")])
    status, body = await bundling.post([open_event("s"), open_event("t")])
    assert (status, body["duplicates"]) == (202, ["s"])
    assert (await bundling.stored())[1] == Counter(s=1, t=1)


async def test_an_id_repeated_within_a_request_is_stored_once(bundling):
    status, body = await bundling.post([open_event("d"), open_event("e"), open_event("d")])
    assert (status, body) == (202, {"accepted": ["d", "e", "d"], "duplicates": ["d"]})
    assert (await bundling.stored())[1] == Counter(d=1, e=1)


async def test_a_bundle_whose_publish_ended_unknown_is_settled_by_the_retry(bundling, nats):
    """What a request left when NATS stored its reservations and kept bundle but the bundle's publish
    got no answer (and was not stored): a retry of one of its ids stores the whole bundle then, once;
    a retry of the others finds them stored."""
    _, js = nats
    lost = [parse_event(open_event(i)) for i in ("u1", "u2", "u3")]
    reservations = IdReservations(js)
    for event in lost:
        assert (await reservations.reserve(event.id, "lostbundle")).ours
    payload, _ = pack([e.to_bytes() for e in lost])
    await reservations.keep_bundle("lostbundle", KeptBundle(OPENS, payload, 3))
    status, body = await bundling.post([open_event("u2"), open_event("new")])
    assert status == 202 and sorted(body["accepted"]) == ["new", "u2"]
    status, body = await bundling.post([open_event("u1"), open_event("u3")])
    assert (status, body["duplicates"]) == (202, ["u1", "u3"])
    assert (await bundling.stored())[1] == Counter(u1=1, u2=1, u3=1, new=1)


async def test_a_reservation_whose_bundle_was_never_kept_is_taken_over(bundling, nats):
    """A request that died after reserving, before keeping its bundle, never published it."""
    _, js = nats
    assert (await IdReservations(js).reserve("z", "neverkept")).ours
    status, body = await bundling.post([open_event("z"), open_event("z2")])
    assert (status, body["duplicates"]) == (202, [])
    assert (await bundling.stored())[1] == Counter(z=1, z2=1)


async def test_without_the_reservation_stream_nothing_is_stored_and_the_answer_says_retry(nats):
    nc, js = nats
    await add_witness(js)
    registry = CollectorRegistry()
    settings = IngestSettings(publish_timeout_seconds=1, bundle_events=100)
    ingest = Ingest(nc, js, IngestMetrics(registry), token=TOKEN.encode(), settings=settings)
    runner = await start_ingest_site(ingest, registry, "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as http:
            status, body = await Bundling(f"http://127.0.0.1:{bound_port(runner)}", js, http).post(
                [open_event("n1"), open_event("n2")]
            )
    finally:
        await runner.cleanup()
    assert status == 503
    assert body["notAccepted"] == ["n1", "n2"] and "HOOKLINE_EVENT_IDS" in body["error"]
    assert (await js.stream_info(bus.STREAM)).state.messages == 0
