"""Kopf's API client as the operator logs in (adapters/login.py `bounded`, adapters/apisession.py): at
most N requests at once besides watches, so a burst of new Webhooks does not open one TLS connection
(~0.3 MiB) each; watch events and lists without managedFields and kubectl's last-applied annotation."""

from __future__ import annotations

import asyncio
import json

import kopf
from aiohttp import web
from operator_helpers import serve_on_loopback

from hookline.operator.adapters import apisession as login_session
from hookline.operator.adapters import login


class HeldServer:
    """Answers every request once released; counts how many were in hand at once."""

    def __init__(self) -> None:
        self.inside = 0
        self.most = 0
        self.release = asyncio.Event()
        self.watches = 0

    async def handle(self, request: web.Request) -> web.Response:
        if request.query.get("watch") == "true":
            self.watches += 1
            return web.Response(text="")
        self.inside += 1
        self.most = max(self.most, self.inside)
        try:
            await self.release.wait()
        finally:
            self.inside -= 1
        return web.json_response({"path": request.path})


async def test_requests_wait_for_a_slot_and_watches_do_not():
    server = HeldServer()
    runner, base = await serve_on_loopback(server.handle)
    made = login.bounded(lambda **_: kopf.ConnectionInfo(server=base, token="t"), requests=3)
    context = await made(settings=kopf.OperatorSettings(), logger=None)
    assert isinstance(context, kopf.AiohttpSession) and context.server == base
    session = context.aiohttp_session
    try:

        async def get(n: int) -> dict:
            async with session.get(f"{base}/objects/{n}") as response:
                return await response.json()

        gets = [asyncio.create_task(get(n)) for n in range(10)]
        for _ in range(100):
            if server.most >= 3:
                break
            await asyncio.sleep(0.01)
        # Three in hand, seven waiting; a watch still goes through.
        async with session.get(f"{base}/objects", params={"watch": "true"}) as watch:
            assert watch.status == 200
        assert server.watches == 1
        assert (server.inside, server.most) == (3, 3)
        assert session.headers["Authorization"] == "Bearer t"
        server.release.set()
        answers = await asyncio.gather(*gets)
        assert [a["path"] for a in answers] == [f"/objects/{n}" for n in range(10)]
        assert server.most == 3
    finally:
        await session.close()
        await runner.cleanup()


async def test_an_async_login_and_other_contexts_pass_through():
    async def nothing(**_: object) -> None:
        return None

    assert await login.bounded(nothing, requests=1)() is None


def an_object(name: str) -> dict:
    meta = {
        "name": name,
        "managedFields": [{"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:spec": {}}}],
        "annotations": {login_session.LAST_APPLIED: '{"spec":{}}', "hookline.io/resume-delivery": "1"},
    }
    return {"metadata": meta, "spec": {"url": "https://x.example/"}}


async def test_watch_events_and_lists_arrive_without_managed_fields_and_last_applied():
    async def handle(request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") == "true":
            response = web.StreamResponse()
            await response.prepare(request)
            for n in range(3):  # one event split across writes, as a network would
                line = json.dumps({"type": "ADDED", "object": an_object(f"w{n}")}).encode() + b"\n"
                await response.write(line[:10])
                await response.write(line[10:])
            await response.write(b'{"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}}')
            return response
        if request.path.endswith("/one"):
            return web.json_response(an_object("one"))
        return web.json_response({"kind": "WebhookList", "items": [an_object("a"), an_object("b")]})

    runner, base = await serve_on_loopback(handle)
    context = login_session.session_for(kopf.ConnectionInfo(server=base), requests=4)
    session = context.aiohttp_session
    try:
        async with session.get(f"{base}/objects", params={"watch": "true"}) as response:
            chunks = [chunk async for chunk in response.content.iter_chunked(1024 * 1024)]
        events = [json.loads(line) for line in b"".join(chunks).splitlines()]
        assert [e["type"] for e in events] == ["ADDED", "ADDED", "ADDED", "BOOKMARK"]
        for event in events[:3]:
            meta = event["object"]["metadata"]
            assert "managedFields" not in meta
            assert meta["annotations"] == {"hookline.io/resume-delivery": "1"}
            assert event["object"]["spec"] == {"url": "https://x.example/"}
        async with session.get(f"{base}/objects") as response:
            listed = await response.json()
        assert [sorted(i["metadata"]) for i in listed["items"]] == [["annotations", "name"]] * 2
        # A single object (what a PUT is built from) comes as the server sent it.
        async with session.get(f"{base}/objects/one") as response:
            one = await response.json()
        assert (
            "managedFields" in one["metadata"]
            and login_session.LAST_APPLIED in one["metadata"]["annotations"]
        )
    finally:
        await session.close()
        await runner.cleanup()
