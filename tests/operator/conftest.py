"""Fixtures for the operator tests: the API emulator, the customer's site, the running operator.

See operator_helpers.py for what the emulator adds to kmock and why.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import kmock
import pytest
from aiohttp import web
from operator_helpers import (
    NS,
    Cluster,
    RunningOperator,
    Site,
    StartOperator,
    declare_resources,
    operator_config,
)


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async with Cluster() as emulator, kmock.Server(emulator):
        declare_resources(emulator)
        yield emulator


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    site = Site()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", site.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    port = tcp._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    site.base = f"http://127.0.0.1:{port}"
    yield site
    await runner.cleanup()


@pytest.fixture
async def start_operator(cluster: Cluster, nats_server: Any) -> AsyncIterator[StartOperator]:
    running: list[RunningOperator] = []
    server = str(cluster.url).rstrip("/")

    def login(**_: Any) -> Any:
        import kopf

        return kopf.ConnectionInfo(server=server, insecure=True, default_namespace=NS)

    async def start(**overrides: Any) -> RunningOperator:
        handle = RunningOperator(operator_config(nats_server.url, **overrides), login)
        running.append(handle)
        return await handle.start()

    yield start
    for handle in running:
        with contextlib.suppress(Exception):
            await handle.stop()
