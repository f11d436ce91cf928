"""Delivery health on the data plane: the attempt log, the tally and the health report (issue 10).

Pure tests of the tally and records, then a real nats-server, a real sender and a real receiver
switched between healthy, failing and slow: what `hookline attempts` prints and what the operator
reads, and that neither holds a secret.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator

import pytest
import yaml
from dataplane_helpers import SECRET, Receiver, sender_config, wait_until
from prometheus_client import CollectorRegistry

from hookline.sender import bus
from hookline.sender.bus.attemptlog import ATTEMPTS_STREAM, health_bucket, health_key, read_attempts
from hookline.sender.cmd import attempts as attemptscli
from hookline.sender.cmd.sender import SenderRuntime
from hookline.sender.delivery.retry import classify
from hookline.sender.delivery.settings import EngineSettings
from hookline.sender.model.config import consumer_name
from hookline.sender.model.deliveryhealth import (
    SUCCESS_SAMPLE_SECONDS,
    DeliveryTally,
    HealthReport,
    attempt_record,
    receiver_address,
)
from hookline.sender.model.events import parse_event
from hookline.sender.model.signing import parse_secret
from hookline.sender.observe.metrics import SenderMetrics
from hookline.sender.transport.egress import EgressPolicy

TOKEN = "s3cret-in-the-query"
HEADER_SECRET = "header-s3cret"
OK, FAIL = classify(200), classify(500)


def test_the_receiver_address_never_holds_path_or_query():
    assert receiver_address(f"https://shop.example.com:8443/hooks/x.php?token={TOKEN}") == (
        "https://shop.example.com:8443"
    )
    assert receiver_address("http://[::1]:80/h") == "http://[::1]:80"
    assert receiver_address("https://user@shop.example.com/") == "https://shop.example.com"


def test_the_tally_counts_a_window_and_knows_since_when_it_fails():
    tally = DeliveryTally("shop", "orders", window=60, bucket=10)
    tally.record(1000.0, OK)
    tally.record(1005.0, FAIL, b"<html>\n  database down\n</html>")
    tally.record(1015.0, FAIL, b"")
    report = tally.report(1020.0)
    assert (report.recent_attempts, report.recent_failures) == (3, 2)
    assert report.last_success_at == 1000.0 and report.failing_since == 1005.0
    assert report.last_failure == "HTTP 500"  # the last answer had no body
    tally.record(1030.0, FAIL, b"<html>\n  database down\n</html>")
    assert tally.report(1030.0).last_failure == "HTTP 500: <html> database down </html>"
    assert tally.report(1065.0).recent_attempts == 2  # the first bucket (two attempts) left the window
    tally.record(1080.0, OK)
    assert tally.report(1080.0).failing_since is None


def test_a_report_changes_only_when_something_changed():
    tally = DeliveryTally("shop", "orders")
    first = tally.report(100.0)
    assert first.same_as(tally.report(105.0))
    tally.record(106.0, FAIL)
    assert not first.same_as(tally.report(107.0))


def test_pending_growth_over_the_last_minute():
    tally = DeliveryTally("shop", "orders")
    tally.observe_pending(0.0, 100)
    assert tally.report(0.0).pending_growth_per_minute is None  # one sample says nothing of a trend
    for t in range(5, 65, 5):
        tally.observe_pending(float(t), 100 + 10 * t)
    report = tally.report(60.0)
    assert report.pending == 700 and report.pending_growth_per_minute == 600


def test_successes_are_sampled_and_each_sample_counts_what_it_stands_for():
    tally = DeliveryTally("shop", "orders")
    counts = [tally.sample_success(t * 0.5) for t in range(int(SUCCESS_SAMPLE_SECONDS * 2) + 1)]
    assert counts[0] == 1 and sum(counts) == len(counts)
    assert sum(1 for c in counts if c) == 2


def test_an_attempt_record_keeps_a_kib_of_the_answer_and_no_url_path():
    record = attempt_record(
        at=1.0,
        event_id="e1",
        event_type="open",
        attempt=2,
        outcome=classify(None, TimeoutError()),
        duration=10.0,
        url=f"https://shop.example.com/h?token={TOKEN}",
        response=b"x" * 5000,
    )
    assert (record.outcome, record.status_code, record.error_kind) == ("timeout", None, "timeout")
    assert len(record.response) == 1024 and record.duration_ms == 10000
    assert TOKEN not in record.to_bytes().decode()


# --- with a real nats-server, sender and receiver -----------------------------------------------------


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


WATCHED_OFTEN = EngineSettings(watch_interval_seconds=0.2)


async def start_sender(
    nc, receiver: Receiver, name: str, stop: asyncio.Event, *, record_attempts: bool = True, **spec
) -> SenderRuntime:
    cfg = sender_config(
        "unused",
        f"{receiver.url}/hooks/{name}.php?token={TOKEN}",
        name=name,
        headers={"X-Api-Key": HEADER_SECRET},
        signing={"secretRef": {"name": "s", "key": "k"}},
        **spec,
    ).model_copy(update={"record_attempts": record_attempts})
    metrics = SenderMetrics(CollectorRegistry())
    runtime = await SenderRuntime.create(
        nc, cfg, EgressPolicy.for_dev(), metrics, parse_secret(SECRET), settings=WATCHED_OFTEN
    )
    asyncio.get_running_loop().create_task(runtime.run(stop))
    await wait_until(lambda: runtime.engine.readiness() is None, what="sender running")
    return runtime


async def publish(js, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        event = parse_event({"id": f"e{i}", "type": "open", "recipient": "a@b.example", "ip": "192.0.2.1"})
        await js.publish(event.subject, event.to_bytes(), headers={"Nats-Msg-Id": event.id})


async def health_of(js, name: str) -> HealthReport | None:
    kv = await health_bucket(js)
    try:
        entry = await kv.get(health_key("default", name))
    except Exception:  # no report yet
        return None
    return HealthReport.from_bytes(entry.value)


@pytest.mark.slow
async def test_failures_are_logged_with_status_and_answer_and_reported_then_recover(nats, receiver):
    nc, js = nats
    stop = asyncio.Event()
    receiver.status = 500
    await start_sender(nc, receiver, "flaky", stop, format="json")
    try:
        await publish(js, 3)
        await wait_until(lambda: len(receiver.requests) >= 3, what="three failed attempts")
        failed = []

        async def logged() -> bool:
            failed[:] = await read_attempts(js, "default", "flaky", failed_only=True)
            return len(failed) >= 3

        for _ in range(200):
            if await logged():
                break
            await asyncio.sleep(0.05)
        assert len(failed) >= 3
        assert {r.status_code for r in failed} == {500} and {r.outcome for r in failed} == {"HTTP 500"}
        assert all(r.response == "nope" and not r.ok for r in failed)
        assert {r.event_id for r in failed} == {"e0", "e1", "e2"}
        assert {r.receiver for r in failed} == {receiver.url}

        report = None
        for _ in range(200):
            report = await health_of(js, "flaky")
            if report and report.recent_failures >= 3:
                break
            await asyncio.sleep(0.05)
        assert report is not None and report.recent_failures >= 3
        assert report.last_failure == "HTTP 500: nope" and report.failing_since is not None
        assert report.last_success_at is None

        receiver.status = 200  # the receiver is fixed: the retries (after 5 s) succeed
        await wait_until(lambda: len(receiver.delivered()) == 3, within=60, what="the retries delivered")
        for _ in range(200):
            report = await health_of(js, "flaky")
            if report and report.last_success_at is not None and report.pending == 0:
                break
            await asyncio.sleep(0.05)
        assert report.last_success_at is not None and report.failing_since is None
        every = await read_attempts(js, "default", "flaky")
        assert any(r.ok for r in every)  # a sampled success
    finally:
        stop.set()

    out = io.StringIO()
    records = await read_attempts(js, "default", "flaky", failed_only=True)
    attemptscli.render(records, "table", "attempts", out)
    lines = out.getvalue().splitlines()
    assert lines[0].split()[:5] == ["TIME", "EVENT", "TYPE", "ATTEMPT", "OUTCOME"]
    assert sum("HTTP 500" in line and "nope" in line for line in lines) == len(records)
    out = io.StringIO()
    attemptscli.render(records, "json", "attempts", out)
    assert {r["statusCode"] for r in json.loads(out.getvalue())} == {500}
    # Nothing secret anywhere: not the URL's query, not a header value, not the signing key.
    stored = []
    sub = await js.subscribe("hookline.attempts.>", ordered_consumer=True)
    while True:
        try:
            stored.append((await sub.next_msg(timeout=0.5)).data.decode())
        except Exception:
            break
    await sub.unsubscribe()
    kv_text = (await health_bucket(js)).get(health_key("default", "flaky"))
    everything = "\n".join(stored) + (await kv_text).value.decode()
    for secret in (TOKEN, HEADER_SECRET, SECRET, SECRET.removeprefix("whsec_")):
        assert secret not in everything
    info = await js.stream_info(ATTEMPTS_STREAM)
    assert info.config.max_age and info.config.max_bytes and info.config.max_bytes > 0


async def test_timeouts_are_logged_as_timeouts(nats, receiver):
    nc, js = nats
    stop = asyncio.Event()
    receiver.delay = 3.0
    await start_sender(nc, receiver, "slow", stop, format="json", delivery={"timeoutSeconds": 1})
    try:
        await publish(js, 1)
        records: list = []
        for _ in range(200):
            records = await read_attempts(js, "default", "slow", failed_only=True)
            if records:
                break
            await asyncio.sleep(0.05)
        assert records and records[0].outcome == "timeout" and records[0].status_code is None
        assert 900 <= records[0].duration_ms < 3000
    finally:
        receiver.delay = 0
        stop.set()


async def test_recording_can_be_switched_off(nats, receiver):
    nc, js = nats
    stop = asyncio.Event()
    receiver.status = 500
    await start_sender(nc, receiver, "quiet", stop, format="json", record_attempts=False)
    try:
        await publish(js, 2)
        await wait_until(lambda: len(receiver.requests) >= 2, what="two attempts")
        assert await read_attempts(js, "default", "quiet") == []
        assert await health_of(js, "quiet") is None
    finally:
        stop.set()


@pytest.mark.slow
async def test_the_circuit_breaker_stops_after_only_failures_and_resumes_like_a_410(nats, receiver):
    nc, js = nats
    stop = asyncio.Event()
    receiver.status = 500
    runtime = await start_sender(
        nc, receiver, "breaker", stop, format="json", delivery={"disableAfter": "2s", "maxAttempts": 50}
    )
    engine = runtime.engine
    try:
        await publish(js, 3)
        # Attempts fail at once and again 5 s later: by then only failures for over 2 s trip it.
        await wait_until(lambda: engine.gone.state.disabled, within=30, what="the breaker to trip")
        await wait_until(lambda: engine.gone.recorded, within=30, what="the stop recorded on the consumer")
        state = await bus.read_gone(js, engine.consumer)
        assert state.gone and state.disabled and state.cause == "disabled"
        posts = len(receiver.requests)
        await asyncio.sleep(1.0)  # stopped: nothing more goes out, the events stay
        assert len(receiver.requests) == posts
        assert bus.pending_of(await js.consumer_info(bus.STREAM, engine.consumer)) == 3
        report = await health_of(js, "breaker")
        assert report is not None and report.failing_since is not None
        # Resumed like a 410 stop (hookline redrive --resume lifts the same record): new events go out
        # at once, the kept ones on their retry schedule.
        receiver.status = 200
        assert await bus.clear_gone(js, engine.consumer)
        await wait_until(
            lambda: not engine.gone.state.gone, within=30, what="the sender to notice the resume"
        )
        await publish(js, 1, start=10)
        await wait_until(lambda: "e10" in receiver.delivered(), within=30, what="a new event after resume")
        left = bus.pending_of(await js.consumer_info(bus.STREAM, engine.consumer))
        assert len(receiver.delivered()) + left == 4  # the kept events: delivered or still waiting
    finally:
        stop.set()


async def test_the_command_prints_the_log_and_says_what_to_do_without_nats(nats, nats_server, capsys):
    _, js = nats
    from hookline import cli
    from hookline.sender.bus.natsserver import free_port

    record = attempt_record(
        at=1_700_000_000.0,
        event_id="e1",
        event_type="click",
        attempt=3,
        outcome=FAIL,
        duration=0.05,
        url="https://shop.example.com/h",
        response=b"database down",
    )
    await health_bucket(js)
    from hookline.sender.bus.attemptlog import attempts_stream_config, attempts_subject

    await js.add_stream(attempts_stream_config(3600, 1024 * 1024))
    await js.publish(attempts_subject("shop", "orders"), record.to_bytes())
    # Without a kubeconfig, the Webhook's consumer in NATS tells that the Webhook exists.
    orders = bus.ConsumerSpec(consumer_name("shop", "orders"), ("hookline.events.>",), 10, 30.0)
    await bus.ensure_consumer(js, orders)
    code = await asyncio.to_thread(
        cli.main, ["attempts", "orders", "-n", "shop", "--failed", "--nats-url", nats_server.url]
    )
    out = capsys.readouterr().out
    assert code == 0 and "2023-11-14T22:13:20Z  e1" in out and "HTTP 500" in out and "database down" in out
    code = await asyncio.to_thread(
        cli.main, ["attempts", "orders", "-n", "shop", "-o", "json", "--nats-url", nats_server.url]
    )
    assert code == 0 and json.loads(capsys.readouterr().out)[0]["attempt"] == 3
    code = await asyncio.to_thread(
        cli.main, ["attempts", "orders", "-n", "shop", "-o", "yaml", "--nats-url", nats_server.url]
    )
    assert code == 0 and "database down" in yaml.safe_load(capsys.readouterr().out)[0]["response"]
    code = await asyncio.to_thread(
        cli.main, ["attempts", "nobody", "-n", "shop", "--nats-url", nats_server.url]
    )
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: webhook shop/nobody not found") and "checked NATS" in err
    assert err.count("\n") == 1
    dead = f"nats://127.0.0.1:{free_port()}"
    assert await asyncio.to_thread(cli.main, ["attempts", "orders", "--nats-url", dead]) == 1
    assert "cannot connect to NATS" in capsys.readouterr().err
    assert await asyncio.to_thread(cli.main, ["attempts", "Not_A_Name", "--nats-url", dead]) == 2
