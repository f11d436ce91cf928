"""A pool replica's engines share their way out (transport/sharing.py, delivery/outbound.py): at most
`--max-in-flight-per-origin` requests to one receiver at once whatever each Webhook's maxInFlight,
over keep-alive connections shared only by Webhooks of one namespace with the default TLS context.

The receiver is a real aiohttp server on 127.0.0.1 that holds each request a moment and records how
many it holds at once and on which connection (the client's port) each arrived.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from dataplane_helpers import wait_until
from prometheus_client import CollectorRegistry

from hookline.sender.delivery.outbound import Outbound
from hookline.sender.observe.metrics import SenderMetrics
from hookline.sender.transport.client import SafeHTTPClient
from hookline.sender.transport.egress import EgressPolicy
from hookline.sender.transport.sharing import EgressSharing

LOOPBACK = EgressPolicy(["127.0.0.0/8"], allow_http=True)
HOLD_SECONDS = 0.02


@dataclass
class Receiver:
    url: str = ""
    held: int = 0
    most_held: int = 0
    ports_by_path: dict[str, set[int]] = field(default_factory=dict)
    answered: int = 0
    started: dict[str, int] = field(default_factory=dict)  # requests that reached the handler, by path


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    released = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        rec.held += 1
        rec.most_held = max(rec.most_held, rec.held)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        path = request.path.split("/")[1]
        rec.ports_by_path.setdefault(path, set()).add(peer[1] if peer else -1)
        rec.started[path] = rec.started.get(path, 0) + 1
        if path == "stuck":  # a receiver script that hangs (until the test ends)
            await released.wait()
        await asyncio.sleep(HOLD_SECONDS)
        rec.held -= 1
        rec.answered += 1
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/{tail:.*}", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    rec.url = f"http://{host}:{port}"
    yield rec
    released.set()
    await runner.cleanup()


class HeldMessage:
    """The NAK and progress acks a worker's event gets (NATS's Msg interface, nothing else)."""

    def __init__(self) -> None:
        self.naks = 0
        self.in_progress_calls = 0

    async def nak(self, delay: float | None = None) -> None:
        self.naks += 1

    async def in_progress(self) -> None:
        self.in_progress_calls += 1


REGISTRY = CollectorRegistry()
METRICS = SenderMetrics(REGISTRY)


def outbound(
    client: SafeHTTPClient, url: str, sharing: EgressSharing, keep_every: float = 30.0, timeout: float = 10.0
) -> Outbound:
    metrics = METRICS.bind("team", url.removeprefix("http://"), "")
    return Outbound(client, url, timeout, metrics, sharing.gate, keep_every)


def waiting_for_receiver(url: str) -> float | None:
    labels = {"namespace": "team", "webhook": url.removeprefix("http://"), "database": ""}
    return REGISTRY.get_sample_value("hookline_requests_waiting_for_receiver", labels)


async def deliver(out: Outbound, requests: int, workers: int) -> int:
    """`workers` concurrent workers (a Webhook's maxInFlight) sending `requests` POSTs; answers 200."""
    queue = list(range(requests))
    ok = 0

    async def worker() -> None:
        nonlocal ok
        while queue:
            queue.pop()
            assert await out.take([HeldMessage()])
            try:
                status, *_ = await out.post(b'{"id":"e"}', {"Content-Type": "application/json"})
            finally:
                out.give_back()
            ok += status == 200

    await asyncio.gather(*(worker() for _ in range(workers)))
    return ok


async def test_webhooks_of_a_replica_hold_at_most_the_cap_to_one_receiver_over_shared_connections(receiver):
    sharing = EgressSharing(4)
    clients = [SafeHTTPClient(LOOPBACK, limit=8, sharing=sharing, share_key="team") for _ in range(10)]
    try:
        for client in clients:
            await client.start()
        outs = [outbound(c, f"{receiver.url}/team/hook-{i}", sharing) for i, c in enumerate(clients)]
        answered = await asyncio.gather(*(deliver(out, 12, 8) for out in outs))  # 10 x maxInFlight 8
    finally:
        for client in clients:
            await client.close()
    assert answered == [12] * 10 and receiver.answered == 120  # every request made, none lost in line
    assert receiver.most_held == 4  # the cap, reached, never passed (80 workers wanted to send)
    assert len(receiver.ports_by_path["team"]) <= 4  # the ten Webhooks reused each other's connections
    assert sharing.pools() == 0  # closed with the last of its clients


async def test_connections_are_not_shared_across_namespaces_or_client_certificates(receiver):
    sharing = EgressSharing(8)
    own_tls = ssl.create_default_context()  # as a Webhook with spec.tls has its own context
    a = SafeHTTPClient(LOOPBACK, limit=4, sharing=sharing, share_key="team-a")
    b = SafeHTTPClient(LOOPBACK, limit=4, sharing=sharing, share_key="team-b")
    a_cert = SafeHTTPClient(LOOPBACK, limit=4, sharing=sharing, share_key="team-a", ssl=own_tls)
    try:
        for client in (a, b, a_cert):
            await client.start()
        assert sharing.pools() == 2  # team-a and team-b; the client with its own TLS keeps its own
        for client, path in ((a, "team-a"), (b, "team-b"), (a_cert, "team-a-cert"), (a, "team-a")):
            await deliver(outbound(client, f"{receiver.url}/{path}/hook", sharing), 8, 4)
    finally:
        for client in (a, b, a_cert):
            await client.close()
    ports = receiver.ports_by_path
    assert ports["team-a"].isdisjoint(ports["team-b"])
    assert ports["team-a-cert"].isdisjoint(ports["team-a"] | ports["team-b"])


async def test_a_worker_in_line_keeps_its_event_in_progress_and_hands_it_back_on_stop(receiver):
    sharing = EgressSharing(1)
    async with SafeHTTPClient(LOOPBACK, sharing=sharing, share_key="team") as client:
        first = outbound(client, f"{receiver.url}/team/one", sharing, keep_every=0.05)
        second = outbound(client, f"{receiver.url}/team/two", sharing, keep_every=0.05)
        assert await first.take([HeldMessage()])  # the one place, held (a request in flight)
        waiting = HeldMessage()
        turn = asyncio.ensure_future(second.take([waiting]))
        # JetStream is told, so it does not hand the event out again (a sweep every 0.025 s).
        await wait_until(lambda: waiting.in_progress_calls >= 2, within=10, what="two progress reports")
        assert not turn.done()
        assert waiting.in_progress_calls >= 2
        assert waiting_for_receiver(second.url) == 1  # what an SRE sees on /metrics
        second.stop()  # the engine stops: the worker leaves the line
        assert await turn is False
        assert waiting.naks == 1  # handed back for the next engine
        assert waiting_for_receiver(second.url) == 0
        first.give_back()
        assert sharing.gate.in_flight(first.origin) == 0 and sharing.gate.waiting(first.origin) == 0
        assert await second.take([HeldMessage()])  # the place is free again, not lost to the stop
        second.give_back()


async def test_a_webhook_whose_receiver_hangs_does_not_keep_the_others_of_its_origin_out(receiver):
    """One script of a customer's server hangs; its Webhook (64 workers, 0.3 s timeout) holds every
    place. As its requests time out the places go to the waiting Webhooks in turn, not to its 60 other
    workers that asked first: the healthy Webhook of the same server is served between them."""
    sharing = EgressSharing(4)
    async with SafeHTTPClient(LOOPBACK, sharing=sharing, share_key="team") as client:
        stuck = outbound(client, f"{receiver.url}/stuck/hook", sharing, timeout=0.3)
        healthy = outbound(client, f"{receiver.url}/healthy/hook", sharing)
        hanging = asyncio.ensure_future(deliver(stuck, 10_000, 64))
        try:
            # It holds the 4 places, 60 workers in line.
            await wait_until(
                lambda: sharing.gate.waiting(stuck.origin) == 60, what="the stuck Webhook in line"
            )
            served = await asyncio.wait_for(deliver(healthy, 6, 2), 60)  # first come, first served: never
            stuck_started = receiver.started["stuck"]
        finally:
            hanging.cancel()
            await asyncio.gather(hanging, return_exceptions=True)
    assert served == 6
    # First come, first served would have started all 60 waiting stuck requests before the first
    # healthy one; in turn, the hanging Webhook got about one place per healthy request.
    assert stuck_started <= 4 + 2 * 6, stuck_started
    assert sharing.gate.in_flight(stuck.origin) == 0 and sharing.gate.waiting(stuck.origin) == 0
