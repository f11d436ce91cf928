"""Three nats-servers clustered on loopback, hookline's streams at R3 (ingest --nats-replicas 3, set
through HOOKLINE_NATS_REPLICAS as the chart does; ingest moves an existing R1 stream and bucket to R3
online), a real ingest and a real sender: the node leading the events stream is SIGKILLed while
events flow. Nothing ingest accepted (202) is lost, and ingest
and delivery go on with the two nodes left.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import aiohttp
import nats
import pytest
from harness import NATS_NOT_ANSWERING, Harness, click, report, wait_until
from nats.js import api

from hookline.sender import bus
from hookline.sender.bus import attemptlog
from hookline.sender.bus.natsserver import EmbeddedNats, NatsCluster
from hookline.sender.bus.reservations import IDS_STREAM, ensure_ids_stream


async def r3_stream_accepted(cluster: NatsCluster) -> bool:
    """The cluster has elected its JetStream leader and can place a stream on three nodes."""
    try:
        nc = await nats.connect(cluster.url, connect_timeout=2, allow_reconnect=False)
    except Exception:  # not listening yet, or no route formed: poll again
        return False
    try:
        js = nc.jetstream(timeout=2)
        await js.add_stream(api.StreamConfig(name="PROBE", subjects=["probe.>"], num_replicas=3))
        await js.delete_stream("PROBE")
        return True
    except Exception:  # "JetStream not ready" / "insufficient resources" while forming
        return False
    finally:
        await nc.close()


async def eventually(
    read: Callable[[], Awaitable[Any]], holds: Callable[[Any], bool], *, what: str, within: float = 60
) -> Any:
    """What `read()` returns once `holds` it. A cluster reaches these states only after an election (a
    stream or consumer gets its leader some time after the request that made or moved it was answered;
    after a node is lost, the leaders it held are elected again elsewhere), later on a loaded machine;
    meanwhile a read may go unanswered (timeout, no responders, 503), which is polled through too."""
    seen: list[Any] = []

    async def check() -> bool:
        try:
            seen[:] = [await read()]
        except NATS_NOT_ANSWERING as exc:
            seen[:] = [exc]
            return False
        return holds(seen[0])

    await wait_until(
        check, within=within, what=what, diagnostics=lambda: f"last seen: {seen[0] if seen else None!r}"
    )
    return seen[0]


def led_with_two_replicas(info: Any) -> bool:
    """A leader and the other two copies listed. A stream moved R1 -> R3 gets a new raft group whose
    election ends after the update was answered (until then its members answer leaderless, listing
    all three); a new consumer's group likewise."""
    return bool(info.cluster.leader) and len(info.cluster.replicas or ()) == 2


class Producer:
    """Posts batches of clicks until stopped; a refused batch (503 during the failover, or a lost
    connection) is posted again, same ids, as a producer following the contract would."""

    def __init__(self, harness: Harness, batch: int = 10) -> None:
        self.harness = harness
        self.batch = batch
        self.accepted: list[str] = []
        self.refusals: dict[str, int] = {}
        self.stopping = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self.stopping = True
        assert self._task is not None
        await self._task

    async def _run(self) -> None:
        number = 0
        while not self.stopping:
            events = [click(f"evt-{number + i:06d}") for i in range(self.batch)]
            while not self.stopping:  # a batch never accepted is not counted: nothing to account for
                try:
                    status, body = await self.harness.post(events)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    status, body = 0, {"error": type(exc).__name__}
                if status == 202:
                    self.accepted.extend(body["accepted"])
                    break
                assert status in (0, 503), f"ingest answered {status}: {body}"
                self.refusals[str(status)] = self.refusals.get(str(status), 0) + 1
                await asyncio.sleep(0.2)  # the producer's back-off before posting the batch again
            number += self.batch
            await asyncio.sleep(0.1)  # a steady flow (~100 events/s) the sender keeps up with


@pytest.mark.timeout(180)
async def test_r3_stream_keeps_every_accepted_event_when_its_leader_is_sigkilled(tmp_path, monkeypatch):
    monkeypatch.setenv("HOOKLINE_NATS_REPLICAS", "3")
    began = time.monotonic()

    def stamp(what: str) -> None:
        print(f"[cluster] {time.monotonic() - began:6.1f}s {what}")

    with NatsCluster(tmp_path / "cluster") as cluster:
        await wait_until(lambda: r3_stream_accepted(cluster), within=60, what="cluster forms", interval=0.2)
        # As an installation made before the setting left them: one replica each. Ingest moves them.
        nc = await nats.connect(cluster.url)
        js = nc.jetstream()
        await js.add_stream(bus.stream_config().evolve(max_consumers=None, num_replicas=1))
        await attemptlog.health_bucket(js)
        await ensure_ids_stream(js)  # the event-id reservations (bundles), made at one replica too
        await nc.close()
        async with Harness(tmp_path, cast(EmbeddedNats, cluster)) as harness:

            async def info(call: Any) -> Any:
                return await harness._js_call(call)

            async def stream_info() -> Any:
                return await info(lambda js: js.stream_info(bus.STREAM))

            stream = await eventually(
                stream_info, led_with_two_replicas, what="the events stream on three nodes, with a leader"
            )
            assert stream.config.num_replicas == 3 and len(stream.cluster.replicas) == 2
            assert stream.config.max_consumers == bus.DEFAULT_MAX_CONSUMERS
            for name in (
                bus.DEAD_LETTER_STREAM,
                attemptlog.ATTEMPTS_STREAM,
                f"KV_{attemptlog.HEALTH_BUCKET}",
                IDS_STREAM,
            ):
                assert (await info(lambda js, n=name: js.stream_info(n))).config.num_replicas == 3, name

            stamp("ingest ready, streams R3")
            receiver = await harness.receiver(delay=0.005)
            # A rate limit above the producer's (the default, 50/s, would make the backlog the measure).
            webhook = await harness.webhook(
                "orders", receiver, maxInFlight=10, timeoutSeconds=1, maxRequestsPerSecond=2000
            )
            consumer = await eventually(
                lambda: info(lambda js: js.consumer_info(bus.STREAM, webhook.consumer)),
                led_with_two_replicas,
                what="the consumer on three nodes, with a leader",
            )
            assert len(consumer.cluster.replicas) == 2  # the consumer has the stream's three copies

            stamp("sender ready")
            producer = Producer(harness)
            producer.start()
            try:
                await wait_until(lambda: receiver.successes >= 200, what="deliveries under way")
                # The leader now, not the one seen at startup: a loaded cluster may have moved it since.
                leading = await eventually(
                    stream_info, lambda s: bool(s.cluster.leader), what="the events stream's leader"
                )
                killed = leading.cluster.leader
                cluster.kill(cluster.names.index(killed))
                stamp(f"killed {killed} after {len(producer.accepted)} accepted")
                accepted_at_kill = len(producer.accepted)
                delivered_at_kill = receiver.successes
                # Ingest accepts again on the two nodes left, and the sender delivers what it accepts.
                await wait_until(
                    lambda: len(producer.accepted) >= accepted_at_kill + 300,
                    within=90,
                    what="ingest accepting after the kill",
                    diagnostics=harness.diagnostics,
                )
            finally:
                await producer.stop()
            stamp(f"{len(producer.accepted) - accepted_at_kill} more accepted since the kill")
            # Answered by the stream's leader (a member answers only while there is none, then with none).
            after = await eventually(
                stream_info, lambda s: bool(s.cluster.leader), what="the events stream's new leader"
            )
            assert after.cluster.leader != killed
            try:
                accounting = await harness.settled(webhook, producer.accepted, within=90)
            except AssertionError as failure:
                state = await info(lambda js: js.consumer_info(bus.STREAM, webhook.consumer))
                missing = sorted(set(producer.accepted) - receiver.delivered_ids)
                raise AssertionError(
                    f"{failure}\nconsumer: pending {state.num_pending}, ack pending {state.num_ack_pending}, "
                    f"redelivered {state.num_redelivered}, ack floor {state.ack_floor}"
                    f"\nmissing {len(missing)}: {missing[:3]}; at the kill {accepted_at_kill}"
                ) from None
            stamp("all delivered")
            report(
                f"R3 stream, leader {killed} SIGKILLed; refusals {producer.refusals}",
                accounting,
            )
            assert accounting.lost == 0 and accounting.dead_lettered == 0
            assert accounting.delivered == len(producer.accepted) >= accepted_at_kill + 300
            assert receiver.successes >= delivered_at_kill + 300
            with contextlib.suppress(Exception):
                await info(lambda js: js.delete_stream(bus.STREAM))
