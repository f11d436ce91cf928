"""A fast customer endpoint for benchmarks, run as its own process: `python bench/receiver.py PORT`.

Answers every POST with 200 and counts them; `GET /stats` gives the count and the receiver's own
clock at the first and last request, so a rate is measured where the requests arrive; `POST /reset`
starts a new measurement. Loopback only. `events` counts the events the requests carried: a JSON
batch (an array) counts its objects' `"id":` keys (the bench events have no nested ids), anything
else one.
"""

from __future__ import annotations

import sys
import time

from aiohttp import web


def build_app() -> web.Application:
    stats = {"count": 0, "first": 0.0, "last": 0.0, "events": 0, "first_events": 0}

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        now = time.perf_counter()
        events = body.count(b'"id":') if body[:1] == b"[" else 1
        if stats["count"] == 0:
            stats["first"] = now
            stats["first_events"] = events
        stats["last"] = now
        stats["count"] += 1
        stats["events"] += events
        return web.Response(text="ok")

    async def get_stats(_: web.Request) -> web.Response:
        return web.json_response(stats)

    async def reset(_: web.Request) -> web.Response:
        stats.update(count=0, first=0.0, last=0.0, events=0, first_events=0)
        return web.json_response(stats)

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_get("/stats", get_stats)
    app.router.add_post("/reset", reset)
    app.router.add_post("/{tail:.*}", receive)
    return app


if __name__ == "__main__":
    web.run_app(build_app(), host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
