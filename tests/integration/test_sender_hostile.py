"""Senders against what the bus can throw at them (issue 9): dead letters that cannot fit, a dead-letter
store that refuses, a consumer deleted behind hookline's back, SIGTERM with NATS gone.

Real nats-server, real aiohttp receivers on 127.0.0.1, the real engine (in-process or `hookline sender`).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from dataplane_helpers import Receiver, sender_config, wait_until, wait_until_ready
from prometheus_client import CollectorRegistry

from hookline.sender import bus
from hookline.sender.bus.deadletter import (
    DEAD_LETTER_STREAM,
    DeadLetter,
    count_dead_letters,
    iter_dead_letters,
)
from hookline.sender.bus.natsserver import free_port
from hookline.sender.bus.recovery import remove_recovery_stream
from hookline.sender.cmd.sender import SenderRuntime
from hookline.sender.delivery.settings import EngineSettings
from hookline.sender.model.events import parse_event
from hookline.sender.model.outcomes import AttemptKind, AttemptOutcome, DeadLetterReason
from hookline.sender.observe.metrics import SenderMetrics
from hookline.sender.transport.egress import EgressPolicy


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


class Running:
    """One in-process sender for a Webhook named `name`; `stop()` ends it."""

    def __init__(self, runtime: SenderRuntime, task: asyncio.Task[None], stop: asyncio.Event, registry: Any):
        self.runtime = runtime
        self.task = task
        self._stop = stop
        self.registry = registry

    def sample(self, metric: str, **labels: str) -> float:
        ids = {"namespace": "default", "webhook": self.runtime.cfg.webhook.name, "database": "", **labels}
        return self.registry.get_sample_value(metric, ids) or 0.0

    async def stop(self) -> None:
        self._stop.set()
        await self.task


WATCHED = EngineSettings(watch_interval_seconds=1.0)
# A dead letter NATS refused is tried again soon.
RETRIED_SOON = EngineSettings(watch_interval_seconds=1.0, redeliver_after_failure_seconds=0.1)


async def start(
    nc: Any, receiver: Receiver, name: str = "shop", settings: EngineSettings = WATCHED, **spec: Any
) -> Running:
    cfg = sender_config("unused", f"{receiver.url}/hook", name=name, **spec)
    registry = CollectorRegistry()
    metrics = SenderMetrics(registry)
    runtime = await SenderRuntime.create(nc, cfg, EgressPolicy.for_dev(), metrics, None, settings=settings)
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    await wait_until(lambda: runtime.engine.readiness() is None, what="sender running")
    return Running(runtime, task, stop, registry)


def open_event(event_id: str, **fields: Any) -> Any:
    return parse_event(
        {"id": event_id, "type": "open", "recipient": "a@example.com", "ip": "192.0.2.1", **fields}
    )


async def publish_raw(js: Any, event_id: str, payload: dict[str, Any]) -> None:
    """What an older ingest (or another producer on the bus) may have stored: no size or depth checks."""
    data = json.dumps(payload, separators=(",", ":")).encode()
    await js.publish("hookline.events.open._._", data, headers={bus.MSG_ID_HEADER: event_id})


# ---------------------------------------------------------------------------------------------------------
# Item 2: a dead letter always fits; a dead-letter store that refuses is tried a bounded number of times


def test_a_dead_letter_over_the_limit_keeps_the_reason_and_the_envelope():
    event = {
        "id": "big-1",
        "type": "open",
        "time": 1,
        "timestamp": "1970-01-01 00:00:01",
        "ua": "u" * 2_000_000,
    }
    record = DeadLetter.from_attempts(
        namespace="default",
        name="shop",
        event=event,
        reason=DeadLetterReason.MAX_ATTEMPTS,
        last_outcome=AttemptOutcome(AttemptKind.HTTP_ERROR, 500, "HTTP 500 " + "e" * 50_000),
        attempts=3,
        first_attempt_at=1.0,
        last_attempt_at=2.0,
    )
    data = record.to_bytes(max_bytes=1024 * 1024)
    assert len(data) <= 1024 * 1024
    back = DeadLetter.from_bytes(data)
    assert back.event == {"id": "big-1", "type": "open", "time": 1, "timestamp": "1970-01-01 00:00:01"}
    assert back.reason is DeadLetterReason.MAX_ATTEMPTS and back.last_status == 500
    assert back.truncated is not None and back.truncated["originalBytes"] > 2_000_000
    assert len(back.last_error or "") <= 1003


def test_a_dead_letter_of_an_unencodable_event_is_summarised_not_raised():
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(5000):
        node["a"] = {}
        node = node["a"]
    for event in (
        {"id": "deep-1", "type": "create", "parameters": deep},
        {"id": "nan-1", "type": "create", "parameters": {"x": float("nan")}},
        {"id": "sur-1", "type": "open", "recipient": "\ud800"},
    ):
        record = DeadLetter.from_attempts(
            namespace="default",
            name="shop",
            event=event,
            reason=DeadLetterReason.MAX_ATTEMPTS,
            last_outcome=AttemptOutcome(AttemptKind.HTTP_ERROR, 500, "HTTP 500"),
            attempts=1,
            first_attempt_at=1.0,
            last_attempt_at=2.0,
        )
        back = DeadLetter.from_bytes(record.to_bytes(max_bytes=1024 * 1024))
        assert back.event_id == event["id"]
        assert back.truncated is not None and "cannot be encoded" in back.truncated["why"]


async def test_an_event_whose_dead_letter_would_not_fit_is_posted_once_and_dead_lettered(nats, receiver):
    nc, js = nats
    receiver.status = 500
    running = await start(nc, receiver, delivery={"maxAttempts": 1})
    try:
        # Fits the bus alone (an older ingest let it through), not with the dead-letter record around it.
        filler = nc.max_payload - 600
        await publish_raw(
            js,
            "huge-1",
            {"id": "huge-1", "type": "open", "recipient": "a", "ip": "1", "time": 1, "ua": "u" * filler},
        )
        await wait_until(lambda: running.sample("hookline_dead_letters_total", reason="max_attempts") == 1)
        records = [s.record async for s in iter_dead_letters(js, "default", "shop")]
        assert [r.event_id for r in records] == ["huge-1"]
        assert records[0].truncated is not None
        assert len(receiver.requests) == 1
        info = await js.consumer_info(bus.STREAM, running.runtime.cfg.nats.consumer)
        assert bus.pending_of(info) == 0
    finally:
        await running.stop()


async def test_a_refused_dead_letter_is_tried_a_bounded_number_of_times_and_the_event_kept(nats, receiver):
    nc, js = nats
    receiver.status = 500
    running = await start(nc, receiver, settings=RETRIED_SOON, delivery={"maxAttempts": 1})
    try:
        await js.delete_stream(DEAD_LETTER_STREAM)  # every dead-letter publish now fails
        await bus.publish_events(nc, js, [open_event("doomed")])
        await wait_until(lambda: running.sample("hookline_dead_letter_failures_total") == 1, what="give up")
        assert len(receiver.requests) == 1  # POSTed once, never again for its dead letter
        info = await js.consumer_info(bus.STREAM, running.runtime.cfg.nats.consumer)
        assert info.num_ack_pending == 1  # kept: waiting, not acked, not dropped
        assert (await js.stream_info(bus.STREAM)).state.messages == 1
    finally:
        await running.stop()


async def test_an_event_past_max_attempts_is_not_posted_again_after_a_restart(nats, receiver):
    nc, js = nats
    receiver.status = 500
    running = await start(nc, receiver, settings=RETRIED_SOON, delivery={"maxAttempts": 1})
    await js.delete_stream(DEAD_LETTER_STREAM)
    await bus.publish_events(nc, js, [open_event("again")])
    await wait_until(lambda: len(receiver.requests) == 1, what="first attempt")
    await running.stop()
    # The next start finds the dead-letter stream again (ensure_dead_letter_stream) and stores it.
    running = await start(nc, receiver, settings=RETRIED_SOON, delivery={"maxAttempts": 1})
    try:
        await wait_until(lambda: running.sample("hookline_dead_letters_total", reason="max_attempts") == 1)
        assert len(receiver.requests) == 1
        assert await count_dead_letters(js, "default", "shop") == 1
    finally:
        await running.stop()


# ---------------------------------------------------------------------------------------------------------
# Item 6: a lost consumer is noticed, reported and recreated; what the stream holds is delivered


@pytest.fixture
async def healthy_receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


async def start_other_webhook(nc: Any, receiver: Receiver) -> Running:
    """Another Webhook on the same events whose receiver takes everything at once: it acknowledges what
    it gets, so interest retention keeps nothing for the first Webhook's sake."""
    return await start(nc, receiver, name="other")


@pytest.mark.slow
async def test_a_deleted_consumer_is_recreated_within_seconds_and_every_event_is_delivered(
    nats, receiver, healthy_receiver
):
    nc, js = nats
    other = await start_other_webhook(nc, healthy_receiver)
    receiver.delay = 0.005  # slower than the other Webhook: its events wait when the consumer goes
    running = await start(nc, receiver)
    consumer = running.runtime.cfg.nats.consumer
    try:
        await bus.publish_events(nc, js, [open_event("before")])
        await wait_until(lambda: "before" in receiver.delivered(), what="first delivery")
        await wait_until(lambda: running.runtime.engine.watch.floor > 0, what="floor seen")
        events = [open_event(f"while-{i}") for i in range(500)]
        await bus.publish_events(nc, js, events[:100])
        await js.delete_consumer(bus.STREAM, consumer)
        for start_at in range(100, 500, 100):
            await bus.publish_events(nc, js, events[start_at : start_at + 100])
        await wait_until(
            lambda: running.sample("hookline_consumer_recreated_total") >= 1, within=15, what="recreated"
        )
        await wait_until(lambda: len(receiver.delivered()) == 501, what="every event delivered")
        await wait_until(lambda: len(healthy_receiver.delivered()) == 501, what="the other Webhook's too")
        assert running.runtime.engine.readiness() is None
        assert running.sample("hookline_consumer_lost") == 0
        assert running.sample("hookline_events_lost_total", reason="window_passed") == 0
    finally:
        await running.stop()
        await other.stop()


async def test_a_consumer_deleted_while_the_sender_was_down_is_recreated_from_its_floor(
    nats, receiver, healthy_receiver
):
    nc, js = nats
    other = await start_other_webhook(nc, healthy_receiver)
    running = await start(nc, receiver)
    consumer = running.runtime.cfg.nats.consumer
    await bus.publish_events(nc, js, [open_event("first")])
    await wait_until(lambda: "first" in receiver.delivered(), what="first delivery")
    await wait_until(lambda: running.runtime.engine.watch.floor_recorded > 0, what="floor recorded")
    await running.stop()
    await js.delete_consumer(bus.STREAM, consumer)
    await bus.publish_events(nc, js, [open_event(f"down-{i}") for i in range(50)])
    await wait_until(
        lambda: len(healthy_receiver.delivered()) == 51, what="the other Webhook acknowledged all"
    )
    running = await start(nc, receiver)
    try:
        await wait_until(lambda: len(receiver.delivered()) == 51, what="events of the downtime delivered")
        assert running.sample("hookline_events_recovered_total") == 50
    finally:
        await running.stop()
        await other.stop()


async def test_without_the_recovery_stream_a_deleted_consumers_events_are_counted_lost(nats, receiver):
    nc, js = nats
    running = await start(nc, receiver)
    watch = running.runtime.engine.watch
    spec, watch.consumer_spec = watch.consumer_spec, None  # hold the recreation until the events are in
    try:
        await bus.publish_events(nc, js, [open_event("first")])
        await wait_until(lambda: "first" in receiver.delivered(), what="first delivery")
        await wait_until(lambda: watch.floor_recorded > 0, what="floor recorded")
        await remove_recovery_stream(js)  # removed by hand (or the server refused it)
        await js.delete_consumer(bus.STREAM, running.runtime.cfg.nats.consumer)
        await bus.publish_events(nc, js, [open_event(f"gone-{i}") for i in range(20)])  # nobody wants them
        await wait_until(lambda: running.sample("hookline_consumer_lost") == 1, within=15, what="noticed")
        watch.consumer_spec = spec
        watch.wake()
        await wait_until(
            lambda: running.sample("hookline_events_lost_total", reason="no_recovery_stream") == 20,
            within=15,
            what="the loss counted",
        )
        await bus.publish_events(nc, js, [open_event("after")])
        await wait_until(lambda: "after" in receiver.delivered(), what="deliveries go on")
        assert running.runtime.engine.reporter.tally.events_lost == 20
    finally:
        await running.stop()


async def test_a_lost_consumer_that_cannot_be_recreated_shows_in_readiness_and_the_metric(nats, receiver):
    nc, js = nats
    running = await start(nc, receiver)
    running.runtime.engine.watch.consumer_spec = None  # report only (as if recreating kept failing)
    try:
        await js.delete_consumer(bus.STREAM, running.runtime.cfg.nats.consumer)
        await wait_until(lambda: running.sample("hookline_consumer_lost") == 1, within=15, what="noticed")
        assert "missing" in (running.runtime.engine.readiness() or "")
    finally:
        await running.stop()


# ---------------------------------------------------------------------------------------------------------
# Item 9: SIGTERM after NATS went away is a clean exit for ingest and sender


def _spawn(args: list[str], log_path: Path, nats_url: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKLINE_")}
    env["HOOKLINE_NATS_URL"] = nats_url
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "hookline.cli", *args], stdout=log, stderr=subprocess.STDOUT, env=env
        )


async def _exit_code(proc: subprocess.Popen[bytes]) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while proc.poll() is None:
        if loop.time() > deadline:
            proc.kill()
            proc.wait()
            raise AssertionError("did not exit within 60 s of SIGTERM")
        await asyncio.sleep(0.05)
    return proc.returncode


async def test_sigterm_after_nats_went_away_exits_cleanly(nats_server, tmp_path, receiver):
    ingest_port = free_port()
    ingest = _spawn(
        ["ingest", "--listen", f"127.0.0.1:{ingest_port}", "--insecure-no-auth"],
        tmp_path / "ingest.log",
        nats_server.url,
    )
    cfg = sender_config(nats_server.url, f"{receiver.url}/hook")
    config_path = tmp_path / "sender.yaml"
    config_path.write_text(yaml.safe_dump(cfg.to_document()))
    sender = _spawn(["sender", "--config", str(config_path)], tmp_path / "sender.log", nats_server.url)
    try:
        async with aiohttp.ClientSession() as http:
            await wait_until_ready(http, f"http://127.0.0.1:{ingest_port}/readyz", ingest)
            await wait_until_ready(http, f"http://{cfg.listen}/readyz", sender)
            nats_server.stop()
            await wait_until_ready(http, f"http://127.0.0.1:{ingest_port}/readyz", status=503)
            await wait_until_ready(http, f"http://{cfg.listen}/readyz", status=503)
        ingest.send_signal(signal.SIGTERM)
        sender.send_signal(signal.SIGTERM)
        assert await _exit_code(ingest) == 0, (tmp_path / "ingest.log").read_text()
        assert await _exit_code(sender) == 0, (tmp_path / "sender.log").read_text()
        for name in ("ingest.log", "sender.log"):
            assert "Traceback" not in (tmp_path / name).read_text()
    finally:
        for proc in (ingest, sender):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
