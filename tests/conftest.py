"""Fixtures shared by every test module: a real nats-server, loopback-only egress policy."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hookline.sender import bus
from hookline.sender.bus.natsserver import EmbeddedNats


@pytest.fixture
def nats_server(tmp_path) -> Iterator[EmbeddedNats]:
    """A real JetStream-enabled nats-server on a free loopback port with its own store."""
    server = EmbeddedNats(tmp_path / "nats-store", log_file=tmp_path / "nats.log")
    with server:
        yield server


@pytest.fixture
async def nats(nats_server):
    """A client connection and JetStream context, with the events stream in place."""
    nc = await bus.connect(nats_server.url)
    js = nc.jetstream()
    await bus.ensure_stream(js)
    yield nc, js
    await nc.close()
