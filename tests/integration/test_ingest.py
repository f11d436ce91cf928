"""`POST /v1/events` against a real nats-server: what producers get back and what reaches the stream."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from dataplane_helpers import add_witness, wait_until, wait_until_ready
from prometheus_client import CollectorRegistry

from hookline.sender import bus
from hookline.sender.bus.natsserver import free_port
from hookline.sender.ingest.service import Ingest, start_ingest_site
from hookline.sender.ingest.settings import IngestSettings
from hookline.sender.observe.health import bound_port
from hookline.sender.observe.metrics import IngestMetrics

TOKEN = "s3cret-producer-token"


def open_event(**overrides):
    event = {"type": "open", "recipient": "anna@example.com", "ip": "192.0.2.7", "database": "newsletter"}
    event.update(overrides)
    return event


@dataclass
class IngestUnderTest:
    url: str
    nc: object
    js: object
    http: aiohttp.ClientSession

    async def post(self, body, *, token: str | None = TOKEN, content_type="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": content_type}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with self.http.post(f"{self.url}/v1/events", data=data, headers=headers) as response:
            return response.status, await response.json()

    async def stored(self) -> int:
        return (await self.js.stream_info(bus.STREAM)).state.messages


@pytest.fixture
async def ingest(nats) -> AsyncIterator[IngestUnderTest]:
    nc, js = nats
    await add_witness(js)
    registry = CollectorRegistry()
    settings = IngestSettings(max_body_bytes=64 * 1024, publish_timeout_seconds=2)
    ingest = Ingest(nc, js, IngestMetrics(registry), token=TOKEN.encode(), settings=settings)
    runner = await start_ingest_site(ingest, registry, "127.0.0.1", 0)
    async with aiohttp.ClientSession() as http:
        yield IngestUnderTest(f"http://127.0.0.1:{bound_port(runner)}", nc, js, http)
    await runner.cleanup()


async def test_one_event_is_accepted_and_stored_on_its_subject(ingest):
    status, body = await ingest.post(open_event(id="evt-1"))
    assert status == 202
    assert body == {"accepted": ["evt-1"], "duplicates": []}
    msg = await ingest.js.get_last_msg(bus.STREAM, "hookline.events.open.newsletter._")
    stored = json.loads(msg.data)
    assert stored["recipient"] == "anna@example.com"
    assert stored["id"] == "evt-1"
    assert msg.headers[bus.MSG_ID_HEADER] == "evt-1"


async def test_a_batch_is_accepted_with_generated_ids_in_order(ingest):
    batch = [open_event(recipient=f"r{i}@example.com") for i in range(50)]
    status, body = await ingest.post(batch)
    assert status == 202
    assert len(body["accepted"]) == 50
    assert len(set(body["accepted"])) == 50
    assert await ingest.stored() == 50


async def test_repeated_ids_are_stored_once_and_reported_as_duplicates(ingest):
    await ingest.post([open_event(id="a"), open_event(id="b")])
    status, body = await ingest.post([open_event(id="b"), open_event(id="c")])
    assert status == 202
    assert body == {"accepted": ["b", "c"], "duplicates": ["b"]}
    assert await ingest.stored() == 3


async def test_malformed_json_is_rejected(ingest):
    status, body = await ingest.post(b'{"type": "open", "recipient": ')
    assert status == 400
    assert "malformed JSON" in body["error"]
    assert await ingest.stored() == 0


async def test_unknown_type_is_rejected_naming_the_field(ingest):
    status, body = await ingest.post(open_event(type="bounced"))
    assert status == 400
    assert body["errors"][0]["field"] == "type"
    assert "bounced" in body["errors"][0]["message"]
    assert await ingest.stored() == 0


async def test_one_bad_event_in_a_batch_rejects_the_whole_batch_naming_index_and_field(ingest):
    good = open_event()
    missing = {"type": "click", "recipient": "x@example.com", "ip": "192.0.2.1"}  # no `original`
    mistyped = open_event(tags="vip")
    status, body = await ingest.post([good, missing, mistyped])
    assert status == 400
    named = {(e["index"], e["field"]) for e in body["errors"]}
    assert named == {(1, "original"), (2, "tags")}
    assert "events[1].original" in body["error"]
    assert "events[2].tags" in body["error"]
    assert await ingest.stored() == 0


async def test_non_object_items_and_empty_arrays_are_rejected(ingest):
    status, body = await ingest.post([open_event(), 42])
    assert status == 400
    assert body["errors"] == [{"index": 1, "field": "", "message": "must be a JSON object, not a number"}]
    status, body = await ingest.post([])
    assert status == 400
    assert "no events" in body["error"]
    assert await ingest.stored() == 0


async def test_oversize_body_is_refused_with_413(ingest):
    batch = [open_event(useragent="x" * 1000) for _ in range(100)]  # ~100 KiB > 64 KiB limit
    status, body = await ingest.post(batch)
    assert status == 413
    assert "larger than 65536 bytes" in body["error"]
    assert await ingest.stored() == 0


async def test_wrong_content_type_is_refused_with_415(ingest):
    status, body = await ingest.post(open_event(), content_type="application/x-www-form-urlencoded")
    assert status == 415
    assert "application/json" in body["error"]
    assert await ingest.stored() == 0


async def test_missing_or_wrong_token_is_refused_with_401(ingest):
    status, body = await ingest.post(open_event(), token=None)
    assert status == 401
    assert "bearer token" in body["error"]
    status, body = await ingest.post(open_event(), token="guess")
    assert status == 401
    assert body["error"] == "wrong bearer token"
    assert TOKEN not in json.dumps(body)
    assert await ingest.stored() == 0


async def test_bus_down_gives_503_and_nothing_is_stored_after_recovery(ingest, nats_server):
    nats_server.stop()
    status, body = await ingest.post([open_event(id="x1"), open_event(id="x2")])
    assert status == 503
    assert "retry" in body["error"]
    async with ingest.http.get(f"{ingest.url}/readyz") as response:
        assert response.status == 503
    nats_server.start()
    await wait_until(lambda: ingest.nc.is_connected, what="reconnect")
    assert await ingest.stored() == 0
    status, body = await ingest.post([open_event(id="x1"), open_event(id="x2")])
    assert status == 202
    assert await ingest.stored() == 2


async def test_metrics_count_requests_and_events(ingest):
    await ingest.post([open_event(id="m1"), open_event(id="m1")])
    await ingest.post(open_event(type="nope"))
    async with ingest.http.get(f"{ingest.url}/metrics") as response:
        text = await response.text()
    assert 'hookline_ingest_requests_total{code="202"} 1.0' in text
    assert 'hookline_ingest_requests_total{code="400"} 1.0' in text
    assert 'hookline_ingest_events_total{outcome="accepted"} 1.0' in text
    assert 'hookline_ingest_events_total{outcome="duplicate"} 1.0' in text
    assert 'hookline_ingest_events_total{outcome="rejected"} 1.0' in text
    assert TOKEN not in text


def start_ingest(nats_url: str, port: int, token_file) -> subprocess.Popen[bytes]:
    env = {**os.environ, "HOOKLINE_NATS_URL": nats_url}
    env.pop("HOOKLINE_INGEST_TOKEN", None)
    command = ["ingest", "--listen", f"127.0.0.1:{port}", "--token-file", str(token_file)]
    return subprocess.Popen([sys.executable, "-m", "hookline.cli", *command], env=env, stderr=subprocess.PIPE)


async def test_hookline_ingest_command_serves_with_a_token_file(nats_server, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    port = free_port()
    proc = start_ingest(nats_server.url, port, token_file)
    try:
        async with aiohttp.ClientSession() as http:
            await wait_until_ready(http, f"http://127.0.0.1:{port}/readyz", proc)
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with http.post(
                f"http://127.0.0.1:{port}/v1/events", json=open_event(id="cli-1"), headers=headers
            ) as r:
                assert r.status == 202
            async with http.post(f"http://127.0.0.1:{port}/v1/events", json=open_event()) as r:
                assert r.status == 401
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 0
        assert TOKEN not in stderr.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
