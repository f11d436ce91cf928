"""Kopf's API client as the operator logs in (adapters/login.py `bounded`): at most N requests at once
besides watches, so a burst of new Webhooks does not open one TLS connection (~0.3 MiB) each."""

from __future__ import annotations

import asyncio

import kopf
from aiohttp import web
from operator_helpers import serve_on_loopback

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
