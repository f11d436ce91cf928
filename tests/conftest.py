"""Fixtures shared by every test module: a real nats-server, loopback-only egress policy."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hookline.sender.natsserver import EmbeddedNats


@pytest.fixture
def nats_server(tmp_path) -> Iterator[EmbeddedNats]:
    """A real JetStream-enabled nats-server on a free loopback port with its own store."""
    server = EmbeddedNats(tmp_path / "nats-store", log_file=tmp_path / "nats.log")
    with server:
        yield server
