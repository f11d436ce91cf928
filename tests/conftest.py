"""Fixtures shared by every test module (a real nats-server) and the tiers.

The tiers are the folders: ``unit`` (pure, no sockets), ``integration`` (real processes: nats-server, HTTP
servers on loopback, helm, promtool), ``flows`` (the data path and the operator on the strict API
emulator), ``faults`` (kills, outages, full stores, with counts) and ``realapi`` (a real kube-apiserver).
Each test gets its folder's marker, so ``pytest -m unit`` or ``-m "not faults"`` select by tier;
``make test-fast`` runs the quick tiers, ``make test`` all of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hookline.sender import bus
from hookline.sender.bus.natsserver import EmbeddedNats


@pytest.fixture(autouse=True)
def no_personal_kubeconfig(monkeypatch, tmp_path_factory) -> None:
    """The CLI under test never reaches the cluster of whoever runs the tests: no kubeconfig and no
    namespace from the environment unless a test gives them."""
    monkeypatch.setenv("KUBECONFIG", str(tmp_path_factory.getbasetemp() / "no-kubeconfig"))
    monkeypatch.delenv("HOOKLINE_NAMESPACE", raising=False)


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


TIERS = ("unit", "integration", "flows", "faults", "realapi")
TESTS_ROOT = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with its tier, taken from the folder it lives in."""
    for item in items:
        relative = Path(str(item.path)).resolve().relative_to(TESTS_ROOT)
        tier = relative.parts[0]
        if tier not in TIERS:
            raise pytest.UsageError(f"{relative}: a test lives in one of the tier folders {', '.join(TIERS)}")
        item.add_marker(getattr(pytest.mark, tier))
