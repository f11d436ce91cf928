"""`GET /v1/schema` on ingest: the JSON Schema of what `POST /v1/events` takes, open like /healthz, with
this ingest's limit on events per request; what it accepts ingest accepts, what it refuses ingest refuses."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import jsonschema
import pytest
from dataplane_helpers import add_witness
from prometheus_client import CollectorRegistry

from hookline.api import EVENT_TYPES
from hookline.sender.ingest.service import Ingest, start_ingest_site
from hookline.sender.ingest.settings import IngestSettings
from hookline.sender.model.examples import example_event
from hookline.sender.observe.health import bound_port
from hookline.sender.observe.metrics import IngestMetrics

TOKEN = "schema-test-token"


@pytest.fixture
async def ingest_url(nats) -> AsyncIterator[str]:
    nc, js = nats
    await add_witness(js)
    registry = CollectorRegistry()
    settings = IngestSettings(max_events_per_request=50, publish_timeout_seconds=2)
    ingest = Ingest(nc, js, IngestMetrics(registry), token=TOKEN.encode(), settings=settings)
    runner = await start_ingest_site(ingest, registry, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{bound_port(runner)}"
    await runner.cleanup()


async def test_the_schema_is_served_and_agrees_with_ingest(ingest_url):
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{ingest_url}/v1/schema") as response:  # no token needed
            assert response.status == 200
            assert response.content_type == "application/schema+json"
            schema = json.loads(await response.read())
        validator = jsonschema.Draft202012Validator(schema)
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["then"]["maxItems"] == 50

        examples = [example_event(t, subprofile=t in ("create", "delete")) for t in EVENT_TYPES]
        assert list(validator.iter_errors(examples)) == []
        async with http.post(f"{ingest_url}/v1/events", json=examples, headers=headers) as response:
            assert response.status == 202, await response.text()

        no_mime = example_event("bounce")
        del no_mime["mime"]
        assert not validator.is_valid(no_mime)
        async with http.post(f"{ingest_url}/v1/events", json=no_mime, headers=headers) as response:
            assert response.status == 400
            assert "mime: is required for a bounce event" in (await response.json())["error"]
