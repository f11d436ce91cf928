"""Dead-letter records: their JSON, and storing and reading them on a real nats-server."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta

import nats
import pytest

from hookline.sender.bus import (
    STREAM,
    ConsumerSpec,
    ensure_consumer,
    ensure_stream,
    mark_gone,
    read_gone,
    redrive_subject,
)
from hookline.sender.bus.deadletter import (
    DEAD_LETTER_STREAM,
    DeadLetter,
    DeadLetterError,
    delete_dead_letter,
    ensure_dead_letter_stream,
    iter_dead_letters,
    publish_dead_letter,
)
from hookline.sender.bus.natsserver import free_port
from hookline.sender.cmd.redrive import parse_since
from hookline.sender.delivery.retry import classify
from hookline.sender.model.config import consumer_name
from hookline.sender.model.outcomes import DeadLetterReason, GoneState

FIRST = 1_750_000_000.0


def record(event_id: str = "evt-1", *, name: str = "orders", sequence: int | None = 7, **kw) -> DeadLetter:
    values = {
        "namespace": "shop",
        "name": name,
        "event": {"id": event_id, "type": "click", "recipient": "a@b.example", "tags": ["x"]},
        "reason": DeadLetterReason.MAX_ATTEMPTS,
        "last_outcome": classify(500),
        "attempts": 10,
        "first_attempt_at": FIRST,
        "last_attempt_at": FIRST + 171_305.5,
        "subject": "hookline.events.click._._",
        "source_sequence": sequence,
    }
    values.update(kw)
    return DeadLetter.from_attempts(**values)


def test_record_json_carries_the_reason_and_the_attempt_history():
    doc = json.loads(record().to_bytes())
    assert doc["webhook"] == {"namespace": "shop", "name": "orders"}
    assert doc["eventId"] == "evt-1"
    assert doc["reason"] == "max_attempts"
    assert doc["lastStatusCode"] == 500
    assert doc["lastError"] == "HTTP 500"
    assert doc["attempts"] == 10
    assert doc["firstAttemptAt"] == "2025-06-15T15:06:40.000Z"
    assert doc["lastAttemptAt"] == "2025-06-17T14:41:45.500Z"
    assert doc["event"]["recipient"] == "a@b.example"


def test_record_of_a_timeout_has_no_status_but_says_what_happened():
    doc = json.loads(record(last_outcome=classify(None, TimeoutError())).to_bytes())
    assert doc["lastStatusCode"] is None
    assert doc["lastError"].startswith("timeout")


def test_record_round_trips():
    original = record()
    assert DeadLetter.from_bytes(original.to_bytes()) == original


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.pop("webhook"), "webhook"),
        (lambda d: d["event"].pop("id"), "event"),
        (lambda d: d.update(reason="tired"), "reason"),
        (lambda d: d.update(attempts=-1), "attempts"),
        (lambda d: d.update(firstAttemptAt="yesterday"), "firstAttemptAt"),
        (lambda d: d.update(lastStatusCode="500"), "lastStatusCode"),
    ],
)
def test_bad_record_is_refused_naming_the_field(mutate, field):
    doc = json.loads(record().to_bytes())
    mutate(doc)
    with pytest.raises(DeadLetterError, match=field):
        DeadLetter.from_bytes(json.dumps(doc).encode())


def test_msg_id_is_stable_per_occurrence_and_new_after_a_redrive():
    assert record().msg_id == record().msg_id
    assert record(sequence=7).msg_id != record(sequence=9).msg_id
    assert record(name="a").msg_id != record(name="b").msg_id


async def test_published_dead_letters_are_read_back_per_webhook(nats_server):
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await ensure_dead_letter_stream(js)
        for i in range(5):
            await publish_dead_letter(js, record(f"evt-{i}", sequence=i))
        await publish_dead_letter(js, record("other", name="newsletter"))
        stored = [s async for s in iter_dead_letters(js, "shop", "orders")]
        assert [s.record.event_id for s in stored] == [f"evt-{i}" for i in range(5)]
        assert all(s.record.reason is DeadLetterReason.MAX_ATTEMPTS for s in stored)
        others = [s async for s in iter_dead_letters(js, "shop", "newsletter")]
        assert [s.record.event_id for s in others] == ["other"]
    finally:
        await nc.close()


async def test_a_retried_publish_is_stored_once(nats_server):
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await ensure_dead_letter_stream(js)
        first = await publish_dead_letter(js, record())
        again = await publish_dead_letter(js, record())
        assert not first.duplicate and again.duplicate
        assert len([s async for s in iter_dead_letters(js, "shop", "orders")]) == 1
    finally:
        await nc.close()


async def test_dead_letter_stream_keeps_records_on_disk_for_two_weeks(nats_server):
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await ensure_dead_letter_stream(js)
        info = await js.stream_info(DEAD_LETTER_STREAM)
        assert info.config.storage == "file"
        assert info.config.max_age >= 14 * 24 * 3600
        assert "hookline.dead.>" in info.config.subjects
        await publish_dead_letter(js, record())
    finally:
        await nc.close()
    nats_server.restart()
    nc = await nats.connect(nats_server.url)
    try:
        stored = [s async for s in iter_dead_letters(nc.jetstream(), "shop", "orders")]
        assert [s.record.event_id for s in stored] == ["evt-1"]
    finally:
        await nc.close()


async def test_since_skips_older_records(nats_server):
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await ensure_dead_letter_stream(js)
        await publish_dead_letter(js, record("old", sequence=1))
        stored = [s async for s in iter_dead_letters(js, "shop", "orders")]
        cut = stored[0].stored_at + timedelta(microseconds=1)
        await publish_dead_letter(js, record("new", sequence=2))
        recent = [s async for s in iter_dead_letters(js, "shop", "orders", since=cut)]
        assert [s.record.event_id for s in recent] == ["new"]
        future = datetime.now(UTC) + timedelta(days=1)
        assert [s async for s in iter_dead_letters(js, "shop", "orders", since=future)] == []
    finally:
        await nc.close()


async def test_reading_without_any_dead_letter_stream_yields_nothing(nats_server):
    nc = await nats.connect(nats_server.url)
    try:
        assert [s async for s in iter_dead_letters(nc.jetstream(), "shop", "orders")] == []
    finally:
        await nc.close()


async def test_unparseable_records_are_skipped_and_left_in_place(nats_server):
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await ensure_dead_letter_stream(js)
        await js.publish("hookline.dead.shop.orders", b"not json", stream=DEAD_LETTER_STREAM)
        await publish_dead_letter(js, record())
        stored = [s async for s in iter_dead_letters(js, "shop", "orders")]
        assert [s.record.event_id for s in stored] == ["evt-1"]
        assert (await js.stream_info(DEAD_LETTER_STREAM)).state.messages == 2
    finally:
        await nc.close()


async def test_deleting_a_record_removes_only_that_one(nats_server):
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await ensure_dead_letter_stream(js)
        for i in range(3):
            await publish_dead_letter(js, record(f"evt-{i}", sequence=i))
        stored = [s async for s in iter_dead_letters(js, "shop", "orders")]
        assert await delete_dead_letter(js, stored[1].sequence)
        assert not await delete_dead_letter(js, stored[1].sequence)
        left = [s async for s in iter_dead_letters(js, "shop", "orders")]
        assert [s.record.event_id for s in left] == ["evt-0", "evt-2"]
    finally:
        await nc.close()


# ---------------------------------------------------------------------------------------------------------
# hookline redrive


async def redrive_cli(*argv: str) -> tuple[int, str, str]:
    """Run the real `hookline redrive` command as a user would, capturing its output."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hookline.cli",
        "redrive",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(120):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()  # a hung command must not outlive the test
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode(), err.decode()


async def webhook_consumer(js, namespace: str = "shop", name: str = "orders"):
    """The Webhook's consumer as phase 2 will make it: its event filters plus its redrive subject."""
    await ensure_stream(js)
    spec = ConsumerSpec(
        name=consumer_name(namespace, name),
        filter_subjects=("hookline.events.click.*.*", redrive_subject(namespace, name)),
        max_ack_pending=100,
        ack_wait_seconds=30.0,
    )
    await ensure_consumer(js, spec)
    return await js.pull_subscribe_bind(spec.name, stream=STREAM)


async def fetch_all(sub, expected: int) -> list:
    msgs = []
    async with asyncio.timeout(60):
        while len(msgs) < expected:
            try:
                batch = await sub.fetch(expected - len(msgs), timeout=2)
            except TimeoutError:
                continue
            for msg in batch:
                await msg.ack()  # the consumer hands out at most max_ack_pending unacked messages
            msgs.extend(batch)
    return msgs


@pytest.mark.slow
async def test_redrive_puts_events_back_for_that_webhook_only(nats_server):
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        mine = await webhook_consumer(js, "shop", "orders")
        theirs = await webhook_consumer(js, "shop", "newsletter")
        await ensure_dead_letter_stream(js)
        for i in range(250):
            await publish_dead_letter(js, record(f"evt-{i}", sequence=i))
        await publish_dead_letter(js, record("not-mine", name="newsletter"))

        code, out, err = await redrive_cli("orders", "-n", "shop", "--nats-url", nats_server.url)
        assert (code, err) == (0, "")
        assert out.splitlines() == ["redriven 100/250", "redriven 200/250", "redriven 250/250"]

        msgs = await fetch_all(mine, 250)
        assert sorted(json.loads(m.data)["id"] for m in msgs) == sorted(f"evt-{i}" for i in range(250))
        assert {m.subject for m in msgs} == {"hookline.redrive.shop.orders"}
        assert json.loads(msgs[0].data)["recipient"] == "a@b.example"  # the payload as it was
        with pytest.raises(TimeoutError):
            await theirs.fetch(1, timeout=1)  # the other Webhook gets nothing again
        assert [s async for s in iter_dead_letters(js, "shop", "orders")] == []
        assert [s.record.event_id async for s in iter_dead_letters(js, "shop", "newsletter")] == ["not-mine"]
    finally:
        await nc.close()


async def test_redriving_twice_delivers_again_despite_the_duplicate_window(nats_server):
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        sub = await webhook_consumer(js)
        await ensure_dead_letter_stream(js)
        await publish_dead_letter(js, record("evt-1", sequence=1))
        assert (await redrive_cli("orders", "-n", "shop", "--nats-url", nats_server.url))[0] == 0
        await fetch_all(sub, 1)
        # It failed again and was dead-lettered again (a new occurrence): a second redrive must deliver.
        await publish_dead_letter(js, record("evt-1", sequence=2))
        code, out, _ = await redrive_cli("orders", "-n", "shop", "--nats-url", nats_server.url)
        assert code == 0 and "redriven 1/1" in out
        assert [json.loads(m.data)["id"] for m in await fetch_all(sub, 1)] == ["evt-1"]
    finally:
        await nc.close()


async def test_dry_run_lists_and_changes_nothing(nats_server):
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        sub = await webhook_consumer(js)
        await ensure_dead_letter_stream(js)
        await publish_dead_letter(js, record("evt-1", sequence=1))
        code, out, _ = await redrive_cli("orders", "-n", "shop", "--nats-url", nats_server.url, "--dry-run")
        assert code == 0
        assert "evt-1" in out and "reason=max_attempts" in out and "HTTP 500" in out
        assert "would redrive 1 " in out
        assert len([s async for s in iter_dead_letters(js, "shop", "orders")]) == 1
        with pytest.raises(TimeoutError):
            await sub.fetch(1, timeout=1)
    finally:
        await nc.close()


async def test_resume_lifts_a_410_stop_and_says_when_there_is_none(nats_server):
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await webhook_consumer(js)
        name = consumer_name("shop", "orders")
        code, out, _ = await redrive_cli("orders", "-n", "shop", "--nats-url", nats_server.url, "--resume")
        assert code == 0 and "not stopped by a 410 Gone" in out and "no dead letters" in out

        await mark_gone(js, name, GoneState().mark(FIRST, "evt-1", "https://shop.example.com/hook"))
        await ensure_dead_letter_stream(js)
        await publish_dead_letter(
            js, record("evt-1", reason=DeadLetterReason.GONE, last_outcome=classify(410))
        )
        code, out, _ = await redrive_cli("orders", "-n", "shop", "--nats-url", nats_server.url)
        assert code == 0 and "redriven 1/1" in out
        assert "stopped by a 410 Gone" in out and "--resume" in out  # the redriven event waits: say why
        assert (await read_gone(js, name)).gone

        args = ("orders", "-n", "shop", "--nats-url", nats_server.url, "--resume")
        code, out, _ = await redrive_cli(*args, "--dry-run")
        assert code == 0 and "would resume Webhook shop/orders" in out
        assert (await read_gone(js, name)).gone
        code, out, _ = await redrive_cli(*args)
        assert code == 0 and "resumed deliveries of Webhook shop/orders" in out
        assert not (await read_gone(js, name)).gone
    finally:
        await nc.close()


async def test_resume_of_an_unknown_webhook_says_what_to_check(nats_server):
    nc = await nats.connect(nats_server.url)
    try:
        await ensure_stream(nc.jetstream())
    finally:
        await nc.close()
    code, _, err = await redrive_cli("orders", "-n", "shop", "--nats-url", nats_server.url, "--resume")
    assert code == 1 and "no consumer" in err and "kubectl get wh -n shop orders" in err


async def test_since_limits_the_redrive_to_recent_dead_letters(nats_server):
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        sub = await webhook_consumer(js)
        await ensure_dead_letter_stream(js)
        await publish_dead_letter(js, record("old", sequence=1))
        stored = [s async for s in iter_dead_letters(js, "shop", "orders")]
        cut = (stored[0].stored_at + timedelta(milliseconds=1)).isoformat()
        await asyncio.sleep(0.01)  # the next record must be stored strictly after the cut
        await publish_dead_letter(js, record("new", sequence=2))
        code, out, _ = await redrive_cli(
            "orders", "-n", "shop", "--nats-url", nats_server.url, "--since", cut
        )
        assert code == 0 and "redriven 1/1" in out
        assert [json.loads(m.data)["id"] for m in await fetch_all(sub, 1)] == ["new"]
        assert [s.record.event_id async for s in iter_dead_letters(js, "shop", "orders")] == ["old"]
        code, out, _ = await redrive_cli(
            "orders", "-n", "shop", "--nats-url", nats_server.url, "--since", "1h"
        )
        assert code == 0 and "redriven 1/1" in out
    finally:
        await nc.close()


async def test_nothing_to_redrive_says_so(nats_server):
    nc = await nats.connect(nats_server.url)
    try:
        await webhook_consumer(nc.jetstream())  # without a kubeconfig, the consumer says the Webhook exists
    finally:
        await nc.close()
    code, out, err = await redrive_cli("orders", "-n", "shop", "--nats-url", nats_server.url)
    assert code == 0 and err == ""
    assert "no dead letters for Webhook shop/orders" in out


async def test_unreachable_nats_names_the_url_and_what_to_do():
    url = f"nats://127.0.0.1:{free_port()}"
    code, out, err = await redrive_cli("orders", "-n", "shop", "--nats-url", url)
    assert code == 1 and out == ""
    assert url in err and "--nats-url" in err


async def test_consumer_without_the_redrive_subject_is_refused_and_nothing_moves(nats_server):
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await ensure_stream(js)
        spec = ConsumerSpec(consumer_name("shop", "orders"), ("hookline.events.click.*.*",), 100, 30.0)
        await ensure_consumer(js, spec)
        await ensure_dead_letter_stream(js)
        await publish_dead_letter(js, record())
        code, _, err = await redrive_cli("orders", "-n", "shop", "--nats-url", nats_server.url)
        assert code == 1
        assert "hookline.redrive.shop.orders" in err and "Nothing was changed" in err
        assert len([s async for s in iter_dead_letters(js, "shop", "orders")]) == 1
    finally:
        await nc.close()


async def test_bad_arguments_name_the_flag():
    code, _, err = await redrive_cli("orders", "--since", "last tuesday")
    assert code == 2 and "--since" in err and "2h" in err
    code, _, err = await redrive_cli("Not_A_Name")
    assert code == 2 and "Not_A_Name" in err


def test_parse_since():
    now = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    assert parse_since("2h", now) == datetime(2025, 6, 1, 10, 0, tzinfo=UTC)
    assert parse_since("2025-05-31T08:00:00Z", now) == datetime(2025, 5, 31, 8, 0, tzinfo=UTC)
    assert parse_since("2025-05-31T10:00:00+02:00", now) == datetime(2025, 5, 31, 8, 0, tzinfo=UTC)
    assert parse_since("1h30m", now) == datetime(2025, 6, 1, 10, 30, tzinfo=UTC)
    with pytest.raises(argparse.ArgumentTypeError, match="90s, 15m, 1h30m"):
        parse_since("30", now)  # plain seconds are not a duration
