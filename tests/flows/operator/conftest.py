"""Fixtures for the operator tests: the API emulator, the customer's site, the running operator.

`cluster` is the strict emulator (strict_api.py: kube-apiserver's refusals, the CRDs read from crds/
now, the chart's RBAC for the operator); the operator logs in with its ServiceAccount's token. A
test fails at teardown when the API refused the operator (400, 401, 403, 415, 422) or pruned a
field it wrote, as a real cluster would have, even if the test's own assertions passed.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import kmock
import pytest
from operator_helpers import (
    NS,
    OPERATOR_TOKEN,
    RunningOperator,
    Site,
    StartOperator,
    declare_resources,
    operator_config,
    serve_on_loopback,
)
from strict_api import WATCH_WINDOW, StrictCluster


@pytest.fixture
def watch_window() -> int:
    """Watch events the emulator keeps for resuming watches; override it to expire watches sooner."""
    return WATCH_WINDOW


@pytest.fixture
async def cluster(watch_window: int) -> AsyncIterator[StrictCluster]:
    async with StrictCluster(watch_window=watch_window) as emulator, kmock.Server(emulator):
        declare_resources(emulator)
        yield emulator
        faults = emulator.operator_faults()
        assert not faults, "a real API server refused the operator or dropped its fields:\n" + "\n".join(
            faults
        )


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    site = Site()
    runner, site.base = await serve_on_loopback(site.handle)
    yield site
    await runner.cleanup()


@pytest.fixture
async def start_operator(cluster: StrictCluster, nats_server: Any) -> AsyncIterator[StartOperator]:
    running: list[RunningOperator] = []
    server = str(cluster.url).rstrip("/")

    def login(**_: Any) -> Any:
        import kopf

        return kopf.ConnectionInfo(server=server, insecure=True, default_namespace=NS, token=OPERATOR_TOKEN)

    async def start(**overrides: Any) -> RunningOperator:
        handle = RunningOperator(operator_config(nats_server.url, **overrides), login)
        running.append(handle)
        return await handle.start()

    yield start
    for handle in running:
        with contextlib.suppress(Exception):
            await handle.stop()
