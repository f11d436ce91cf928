"""Moving a backlog aside (sender/bus/backlog.py) on a real nats-server: what is moved is a dead letter
first and acknowledged after; a full dead-letter stream refuses the move and nothing is dropped; a
consumer paused by a 410 Gone is moved and paused again."""

from __future__ import annotations

import asyncio
import json

from dataplane_helpers import sender_config
from nats.js import api
from natsauth_helpers import start_authed_nats

from hookline.sender import bus
from hookline.sender.bus.backlog import move_aside
from hookline.sender.bus.connection import BusAuth
from hookline.sender.bus.deadletter import count_dead_letters, iter_dead_letters
from hookline.sender.bus.layout import DEAD_LETTER_STREAM, ensure_dead_letter_stream
from hookline.sender.bus.natsperms import inbox_prefix
from hookline.sender.cmd.ingest import ensure_bus_layout
from hookline.sender.model.bundles import pack
from hookline.sender.model.outcomes import DeadLetterReason, GoneState

NAMESPACE, NAME = "team-a", "orders"


async def webhook_with_backlog(nats_server, js, count: int) -> str:
    cfg = sender_config(
        nats_server.url, "https://example.com/hook", name=NAME, namespace=NAMESPACE, events=["click"]
    )
    await bus.ensure_consumer(js, cfg)
    for i in range(count):
        event = {"id": f"evt-{i:03d}", "type": "click", "recipient": "a@example.com", "database": "dba"}
        await js.publish("hookline.events.click.dba._", json.dumps(event).encode(), stream=bus.STREAM)
    return cfg.nats.consumer


async def stored(js) -> int:
    return int((await js.stream_info(bus.STREAM)).state.messages)


async def wait_for(read, expected: int, within: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while (value := await read()) != expected:
        assert loop.time() < deadline, f"{value} != {expected} after {within:g} s"
        await asyncio.sleep(0.05)


async def pending(js, consumer: str) -> int:
    """Events the consumer has not had acknowledged. nats-server applies acks on the consumer's own
    queue, so an info request right after a move may still count a few: read it with wait_for."""
    return bus.pending_of(await js.consumer_info(bus.STREAM, consumer))


async def test_moved_events_become_dead_letters_with_the_reason_and_leave_the_stream(nats_server, nats):
    _, js = nats
    consumer = await webhook_with_backlog(nats_server, js, 30)
    result = await move_aside(js, consumer, NAMESPACE, NAME, limit=20, why="test limit", fetch_wait=2.0)
    assert result.moved == 20 and result.refused is None
    await wait_for(lambda: pending(js, consumer), 10)  # nats-server applies acks on its own queue
    # Interest retention: an acked event leaves once the recovery stream's reader has it too.
    await wait_for(lambda: stored(js), 10)
    records = [s.record async for s in iter_dead_letters(js, NAMESPACE, NAME)]
    assert [r.event_id for r in records] == [f"evt-{i:03d}" for i in range(20)]  # oldest first
    assert {r.reason for r in records} == {DeadLetterReason.BACKLOG_LIMIT}
    assert records[0].attempts == 0 and records[0].last_error == "moved aside: test limit"
    assert records[0].event["database"] == "dba"  # the whole event: redrive sends it again


async def test_a_full_dead_letter_stream_refuses_the_move_and_keeps_the_events(nats_server, nats):
    _, js = nats
    consumer = await webhook_with_backlog(nats_server, js, 30)
    info = await ensure_dead_letter_stream(js)
    assert info.config.discard == api.DiscardPolicy.NEW  # a limit set later refuses, never drops
    await js.update_stream(info.config.evolve(max_msgs=12))
    result = await move_aside(js, consumer, NAMESPACE, NAME, limit=100, why="test", fetch_wait=0.2)
    assert result.moved < 30 and result.refused is not None
    assert await count_dead_letters(js, NAMESPACE, NAME) == result.moved <= 12
    await wait_for(lambda: pending(js, consumer), 30 - result.moved)  # nothing accepted is lost
    again = await move_aside(js, consumer, NAMESPACE, NAME, limit=100, why="test", fetch_wait=0.2)
    assert again.moved == 0 and DEAD_LETTER_STREAM in (again.refused or "")
    print(
        f"[backlog] dead-letter stream limited to 12 records: moved {result.moved}, refused: {again.refused}"
    )


async def test_a_consumer_stopped_by_a_410_is_moved_and_stays_stopped(nats_server, nats):
    _, js = nats
    consumer = await webhook_with_backlog(nats_server, js, 10)
    await bus.mark_gone(js, consumer, GoneState().mark(1.0, "evt-000"))
    assert (await js.consumer_info(bus.STREAM, consumer)).paused
    result = await move_aside(
        js, consumer, NAMESPACE, NAME, limit=10, why="gone", resume=True, fetch_wait=0.2
    )
    assert result.moved == 10
    info = await js.consumer_info(bus.STREAM, consumer)
    assert info.paused and bus.gone_of(info).gone  # paused again, its stop record kept


async def test_ingest_moves_an_older_dead_letter_stream_to_discard_new(nats):
    _, js = nats
    config = api.StreamConfig(
        name=DEAD_LETTER_STREAM,
        subjects=["hookline.dead.>"],
        retention=api.RetentionPolicy.LIMITS,
        storage=api.StorageType.FILE,
        discard=api.DiscardPolicy.OLD,
    )
    await js.add_stream(config)
    await ensure_dead_letter_stream(js)  # a sender only makes it when missing
    assert (await js.stream_info(DEAD_LETTER_STREAM)).config.discard == api.DiscardPolicy.OLD
    await ensure_dead_letter_stream(js, update_existing=True)  # ingest
    assert (await js.stream_info(DEAD_LETTER_STREAM)).config.discard == api.DiscardPolicy.NEW


async def test_under_nats_auth_the_operators_user_moves_a_backlog(tmp_path):
    """With the chart's nats.auth, the operator's user may pull from Webhook consumers for this
    (sender/bus/natsperms.operator_permissions): the move works as without auth."""
    server = start_authed_nats(tmp_path)
    try:
        auth = BusAuth(creds_file=str(server.creds["layout"]), inbox_prefix=inbox_prefix("layout"))
        layout = await bus.connect(server.url, auth=auth)
        await ensure_bus_layout(
            layout.jetstream(),
            retention=3600,
            duplicate_window=60,
            max_bytes=-1,
            max_consumers=100,
            replicas=1,
        )
        await layout.close()
        auth = BusAuth(creds_file=str(server.creds["operator"]), inbox_prefix=inbox_prefix("operator"))
        operator = await bus.connect(server.url, auth=auth)
        js = operator.jetstream()
        try:
            consumer = await webhook_with_backlog(server, js, 0)
            ingest = await bus.connect(
                server.url,
                auth=BusAuth(creds_file=str(server.creds["ingest"]), inbox_prefix=inbox_prefix("ingest")),
            )
            for i in range(5):
                body = json.dumps({"id": f"a-{i}", "type": "click", "recipient": "a@example.com"}).encode()
                await ingest.jetstream().publish("hookline.events.click.dba._", body)
            await ingest.close()
            result = await move_aside(js, consumer, NAMESPACE, NAME, limit=5, why="test", fetch_wait=0.5)
            print(f"[backlog] under nats.auth: moved {result.moved}, refused: {result.refused}")
            assert result.moved == 5 and result.refused is None
            await wait_for(lambda: pending(js, consumer), 0)
        finally:
            await operator.close()
    finally:
        server.server.close()


async def test_a_bundle_moved_aside_becomes_one_dead_letter_per_event(nats_server, nats):
    """Events stored several to a message (model/bundles.py) are moved, and counted, one by one."""
    _, js = nats
    consumer = await webhook_with_backlog(nats_server, js, 0)
    events = [
        json.dumps(
            {"id": f"b-{i}", "type": "click", "recipient": "a@example.com", "database": "dba"}
        ).encode()
        for i in range(5)
    ]
    payload, headers = pack(events)
    await js.publish("hookline.events.click.dba._", payload, headers=headers, stream=bus.STREAM)
    result = await move_aside(js, consumer, NAMESPACE, NAME, limit=20, why="test limit", fetch_wait=2.0)
    assert result.moved == 5 and result.refused is None
    await wait_for(lambda: pending(js, consumer), 0)
    records = [s.record async for s in iter_dead_letters(js, NAMESPACE, NAME)]
    assert [r.event_id for r in records] == [f"b-{i}" for i in range(5)]
    assert {r.reason for r in records} == {DeadLetterReason.BACKLOG_LIMIT}
