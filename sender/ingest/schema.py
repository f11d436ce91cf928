"""`GET /v1/schema`: the JSON Schema of what `POST /v1/events` takes (sender/model/schema.py), so a
producer can check its events, or generate types, before sending them. Open like /healthz: it tells
nothing about the events or the Webhooks."""

from __future__ import annotations

import json

from aiohttp import web

from hookline.sender.model.schema import events_schema

SCHEMA_PATH = "/v1/schema"
SCHEMA_CONTENT_TYPE = "application/schema+json"


def add_schema_route(app: web.Application, max_events: int) -> None:
    """Serve the schema, with this ingest's limit on events per request, rendered once."""
    body = json.dumps(events_schema(max_events), indent=2).encode()

    async def handle_schema(_: web.Request) -> web.Response:
        return web.Response(body=body, content_type=SCHEMA_CONTENT_TYPE)

    app.router.add_get(SCHEMA_PATH, handle_schema)
