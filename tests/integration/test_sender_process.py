"""`hookline sender --config FILE` as a real process: health endpoints, metrics, startup errors, SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
import yaml
from dataplane_helpers import SECRET, Receiver, sender_config, wait_until, wait_until_ready
from standardwebhooks.webhooks import Webhook

from hookline.sender import bus
from hookline.sender.model.events import parse_event


def start_sender(config_path: Path, log_path: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKLINE_")}
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "hookline.cli", "sender", "--config", str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )


def write_config(tmp_path: Path, cfg) -> Path:
    path = tmp_path / "sender.yaml"
    path.write_text(yaml.safe_dump(cfg.to_document()))
    return path


def open_events(count: int, prefix: str) -> list:
    return [
        parse_event(
            {"id": f"{prefix}-{i}", "type": "open", "recipient": f"r{i}@example.com", "ip": "192.0.2.1"}
        )
        for i in range(count)
    ]


@pytest.fixture
async def receiver():
    r = await Receiver().start()
    yield r
    await r.stop()


async def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    proc.send_signal(sig)
    for _ in range(1200):
        if proc.poll() is not None:
            return proc.returncode
        await asyncio.sleep(0.05)
    proc.kill()
    proc.wait()
    raise AssertionError("sender did not exit within 60 s of SIGTERM")


async def test_sender_process_delivers_signed_events_and_serves_health_and_metrics(
    tmp_path, nats_server, nats, receiver
):
    nc, js = nats
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    cfg = sender_config(nats_server.url, f"{receiver.url}/hook", format="json", secret_file=str(secret_file))
    proc = start_sender(write_config(tmp_path, cfg), tmp_path / "sender.log")
    base = f"http://{cfg.listen}"
    try:
        async with aiohttp.ClientSession() as http:
            await wait_until_ready(http, f"{base}/readyz", proc)
            async with http.get(f"{base}/healthz") as response:
                assert response.status == 200
            await bus.publish_events(nc, js, open_events(5, "p"))
            await wait_until(lambda: len(receiver.delivered()) == 5, what="5 deliveries")
            for request in receiver.requests:
                Webhook(SECRET).verify(request.body, request.headers)
            async with http.get(f"{base}/metrics") as response:
                text = await response.text()
        labels = 'database="",namespace="default",outcome="delivered",webhook="shop"'
        assert f"hookline_deliveries_total{{{labels}}} 5.0" in text
        assert "hookline_pending_events" in text
        assert "hookline_in_flight_requests" in text
        assert await stop_process(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = (tmp_path / "sender.log").read_text()
    assert SECRET not in log
    assert SECRET.removeprefix("whsec_") not in log


@pytest.mark.slow
async def test_sigterm_finishes_in_flight_requests_and_loses_nothing(tmp_path, nats_server, nats, receiver):
    nc, js = nats
    receiver.delay = 0.3  # a slow customer: requests are in flight when SIGTERM arrives
    cfg = sender_config(nats_server.url, f"{receiver.url}/hook", format="json", delivery={"maxInFlight": 8})
    config_path = write_config(tmp_path, cfg)
    await bus.ensure_consumer(js, cfg)
    events = open_events(120, "t")
    await bus.publish_events(nc, js, events)
    first = start_sender(config_path, tmp_path / "first.log")
    try:
        await wait_until(lambda: len(receiver.delivered()) >= 16, what="some deliveries before SIGTERM")
        assert await stop_process(first) == 0
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    delivered_by_first = len(receiver.delivered())
    assert delivered_by_first < len(events)

    # Nothing is left hanging: requests in flight finished and were acked, and every other event
    # (received but not started, or waiting for a rate-limit slot) is back in the consumer at once.
    # One stuck with the stopped sender would come back only after ack_wait (40 s here).
    remaining = len(events) - delivered_by_first
    back = await fetch_now(js, cfg.nats.consumer, remaining, within=20.0)
    assert len(back) == remaining
    assert not {m.headers[bus.MSG_ID_HEADER] for m in back} & set(receiver.delivered())
    info = await js.consumer_info(bus.STREAM, cfg.nats.consumer)
    assert info.num_ack_pending == remaining  # just the ones fetched here: no event hangs elsewhere
    for msg in back:
        await msg.nak()  # for the next sender

    second = start_sender(config_path, tmp_path / "second.log")
    try:
        await wait_until(lambda: len(receiver.delivered()) == len(events), what="every event delivered")
        assert await stop_process(second) == 0
    finally:
        if second.poll() is None:
            second.kill()
            second.wait()
    assert set(receiver.delivered()) == {e.id for e in events}


async def fetch_now(js, consumer: str, count: int, within: float) -> list:
    """Pull up to `count` messages from the durable consumer, giving up after `within` seconds."""
    sub = await js.pull_subscribe_bind(consumer, stream=bus.STREAM)
    got: list = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    try:
        while len(got) < count and loop.time() < deadline:
            with contextlib.suppress(TimeoutError):
                got += await sub.fetch(count - len(got), timeout=1)
    finally:
        await sub.unsubscribe()
    return got


def test_bad_config_and_unreadable_secret_are_named(tmp_path, nats_server):
    missing = tmp_path / "nope.yaml"
    proc = subprocess.run(
        [sys.executable, "-m", "hookline.cli", "sender", "--config", str(missing)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert str(missing) in proc.stderr

    bad = tmp_path / "bad.yaml"
    cfg = sender_config(nats_server.url, "http://127.0.0.1:9/hook").to_document()
    cfg["spec"]["delivery"] = {"maxInFlight": 0}
    bad.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(
        [sys.executable, "-m", "hookline.cli", "sender", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "spec.delivery.maxInFlight" in proc.stderr

    no_secret = sender_config(
        nats_server.url, "http://127.0.0.1:9/hook", secret_file=str(tmp_path / "absent")
    )
    path = tmp_path / "no-secret.yaml"
    path.write_text(yaml.safe_dump(no_secret.to_document()))
    proc = subprocess.run(
        [sys.executable, "-m", "hookline.cli", "sender", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "signingSecretFile" in proc.stderr
    assert str(tmp_path / "absent") in proc.stderr
