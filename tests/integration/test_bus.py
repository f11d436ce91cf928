"""The JetStream adapter against a real nats-server: stream, per-Webhook consumers, publishing, pulling."""

from __future__ import annotations

import asyncio

import pytest
from dataplane_helpers import add_witness, sender_config, wait_until

from hookline.sender import bus
from hookline.sender.bus.feed import _HandOff
from hookline.sender.model.config import SenderConfig
from hookline.sender.model.events import parse_event
from hookline.sender.model.outcomes import GoneState


def event(event_type: str = "open", **fields):
    base = {
        "open": {"recipient": "a@example.com", "ip": "192.0.2.1"},
        "create": {"profile": 7, "database": "newsletter"},
    }[event_type]
    return parse_event({"type": event_type, **base, **fields})


async def test_stream_is_created_once_with_retention_and_dedup_window(nats_server):
    nc = await bus.connect(nats_server.url)
    js = nc.jetstream()
    info = await bus.ensure_stream(js, retention_seconds=3600, duplicate_window=30)
    assert info.config.name == "HOOKLINE_EVENTS"
    assert info.config.max_age == 3600
    assert info.config.duplicate_window == 30
    assert "hookline.events.>" in info.config.subjects
    again = await bus.ensure_stream(js, retention_seconds=3600, duplicate_window=30)
    assert again.config == info.config
    # A sender never undoes the retention ingest chose.
    kept = await bus.ensure_stream(js, update_existing=False)
    assert kept.config.max_age == 3600
    changed = await bus.ensure_stream(js, retention_seconds=7200, duplicate_window=60)
    assert (changed.config.max_age, changed.config.duplicate_window) == (7200, 60)
    await nc.close()


async def test_bad_stream_settings_are_refused_before_touching_nats():
    with pytest.raises(ValueError, match="duplicate window"):
        bus.stream_config(retention_seconds=60, duplicate_window=120)


async def test_same_event_id_is_stored_once(nats):
    nc, js = nats
    await add_witness(js)
    first = event(id="evt-42")
    assert await bus.publish_events(nc, js, [first, event()]) == [False, False]
    assert await bus.publish_events(nc, js, [first]) == [True]
    assert (await js.stream_info(bus.STREAM)).state.messages == 2


async def test_consumer_filters_on_events_and_scope_and_is_updated_in_place(nats):
    _, js = nats
    cfg = sender_config(
        "nats://unused", "http://127.0.0.1:1/", events=["open", "create"], database="newsletter"
    )
    info = await bus.ensure_consumer(js, cfg)
    assert set(info.config.filter_subjects) == {
        "hookline.events.open.newsletter.*",
        "hookline.events.create.newsletter.*",
        bus.redrive_subject("default", "shop"),
    }
    # Events waiting for a delayed retry count as ack-pending: maxInFlight must not cap them.
    assert info.config.max_ack_pending == bus.MAX_ACK_PENDING
    assert info.config.ack_wait > cfg.spec.delivery.timeout_seconds
    again = await bus.ensure_consumer(js, cfg)
    assert again.created == info.created

    narrowed = sender_config(
        "nats://unused",
        "http://127.0.0.1:1/",
        events=["click"],
        database="newsletter",
        collection="orders",
        delivery={"timeoutSeconds": 20},
    )
    updated = await bus.ensure_consumer(js, narrowed)
    assert updated.created == info.created  # the same durable consumer, not a new one
    assert set(updated.config.filter_subjects) == {
        "hookline.events.click.newsletter.orders",
        bus.redrive_subject("default", "shop"),
    }
    assert updated.config.ack_wait == 20 + bus.ACK_WAIT_MARGIN_SECONDS

    assert await bus.delete_consumer(js, cfg.nats.consumer) is True
    assert await bus.delete_consumer(js, cfg.nats.consumer) is False


async def test_consumer_of_an_older_sender_gets_the_higher_ack_pending_limit(nats):
    _, js = nats
    cfg = sender_config("nats://unused", "http://127.0.0.1:1/")
    old = bus.consumer_spec(cfg)
    await bus.ensure_consumer(js, bus.ConsumerSpec(**{**old.__dict__, "max_ack_pending": 10}))
    info = await bus.ensure_consumer(js, cfg)
    assert info.config.max_ack_pending == bus.MAX_ACK_PENDING


@pytest.mark.slow
async def test_a_410_stop_is_kept_on_the_consumer_until_cleared(nats):
    nc, js = nats
    cfg = sender_config("nats://unused", "http://127.0.0.1:1/", events=["open"])
    name = cfg.nats.consumer
    await bus.ensure_consumer(js, cfg)
    assert (await bus.read_gone(js, name)).gone is False
    assert await bus.clear_gone(js, name) is False  # nothing to clear

    stop = GoneState().mark(1_750_000_000.0, "evt-410", cfg.spec.url)
    await bus.mark_gone(js, name, stop)
    await bus.mark_gone(js, name, stop.mark(1_750_000_100.0, "evt-later"))  # another replica: no change
    stored = await bus.read_gone(js, name)
    assert stored == stop
    assert stored.answered_by(cfg.spec.url) and not stored.answered_by("https://new.example.com/hook")
    assert (await js.consumer_info(bus.STREAM, name)).paused  # no replica gets another event

    # The operator updating the consumer for a spec change keeps the stop.
    await bus.ensure_consumer(js, sender_config("nats://unused", cfg.spec.url, events=["open", "click"]))
    assert (await bus.read_gone(js, name)).gone
    await bus.publish_events(nc, js, [event(id="while-gone")])
    feed = bus.MessageFeed(nc, name, capacity=5)
    await feed.start()
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(feed.queue.get(), 2)  # a fixed wait: here nothing must happen

        assert await bus.clear_gone(js, name) is True
        msg = await asyncio.wait_for(feed.queue.get(), 60)
        assert msg.headers[bus.MSG_ID_HEADER] == "while-gone"
        await msg.ack()
    finally:
        await feed.stop()
    info = await js.consumer_info(bus.STREAM, name)
    assert not info.paused and bus.gone_of(info).gone is False


async def pull_all(nc, consumer: str, expected: int, capacity: int = 10) -> list:
    feed = bus.MessageFeed(nc, consumer, capacity)
    await feed.start()
    got = []
    try:
        while len(got) < expected:
            msg = await asyncio.wait_for(feed.queue.get(), 60)
            got.append(msg)
            await msg.ack_sync()
            feed.release()
    finally:
        await feed.stop()
    return got


async def started_feed(
    nc, js, ids: list[str], capacity: int, **options
) -> tuple[SenderConfig, bus.MessageFeed]:
    """A Webhook's consumer, events with these ids published to it, and a started feed on it."""
    cfg = sender_config("nats://unused", "http://127.0.0.1:1/")
    await bus.ensure_consumer(js, cfg)
    if ids:
        await bus.publish_events(nc, js, [event(id=i) for i in ids])
    feed = bus.MessageFeed(nc, cfg.nats.consumer, capacity, **options)
    await feed.start()
    return cfg, feed


async def test_the_feed_takes_messages_straight_from_the_reader_and_gives_back_the_unstarted(nats):
    nc, js = nats
    cfg, feed = await started_feed(nc, js, [f"handed-{i}" for i in range(5)], 5)
    # nats-py still has the subscription queue the feed replaces (one task and queue less per message);
    # a nats-py without it would fall back to its callback, slower but the same.
    assert isinstance(feed._sub._pending_queue, _HandOff)
    await wait_until(lambda: feed.queue.qsize() == 5, what="five messages on the feed's queue")
    assert feed.in_hand == 5 and feed._sub.pending_msgs == 0
    unstarted = await feed.stop()
    assert [m.headers[bus.MSG_ID_HEADER] for m in unstarted] == [f"handed-{i}" for i in range(5)]
    for msg in unstarted:
        await msg.nak()
    again = await pull_all(nc, cfg.nats.consumer, 5)  # handed back: delivered again, none lost
    assert sorted(m.headers[bus.MSG_ID_HEADER] for m in again) == [f"handed-{i}" for i in range(5)]


async def test_a_malformed_reply_on_the_inbox_does_not_stop_the_connection_reading(nats, nats_server, caplog):
    """The feed takes messages inside nats-py's reader; an error there would end the reader's loop."""
    nc, js = nats
    _, feed = await started_feed(nc, js, [], 5)
    try:
        other = await bus.connect(nats_server.url)
        bad = {"Status": "408", "Nats-Pending-Messages": "not-a-number"}
        await other.publish(feed._inbox, b"", headers=bad)
        await other.flush()
        await other.close()
        await wait_until(lambda: "could not be taken" in caplog.text, what="the malformed reply logged")
        await bus.publish_events(nc, js, [event(id="after-garbage")])
        msg = await asyncio.wait_for(feed.queue.get(), 60)
        assert msg is not None and msg.headers[bus.MSG_ID_HEADER] == "after-garbage"
        await msg.ack()
        feed.release()
    finally:
        await feed.stop()


async def test_acks_held_in_the_outbox_are_written_together_and_acked_on_the_server(nats):
    nc, js = nats
    cfg, feed = await started_feed(nc, js, [f"bulk-{i}" for i in range(30)], 30)
    outbox = bus.Outbox(nc, linger=3600)  # nothing goes out until flushed
    try:
        msgs = [await asyncio.wait_for(feed.queue.get(), 60) for _ in range(30)]
        await msgs[0].ack()  # acked on its own before: acked once, not again
        await outbox.ack(msgs[:20])
        await outbox.publish("hookline.test.record", b"a record")
        await outbox.ack(msgs[20:])
        assert all(m.is_acked for m in msgs) and outbox.held == 30  # 29 acks and the record
        writes = nc.stats["out_msgs"]
        await outbox.flush()
        assert outbox.held == 0 and nc.stats["out_msgs"] == writes + 30
        feed.release(30)
    finally:
        await feed.stop()

    async def settled() -> bool:
        info = await js.consumer_info(bus.STREAM, cfg.nats.consumer)
        return info.num_ack_pending == 0 and info.ack_floor.stream_seq == msgs[-1].metadata.sequence.stream

    await wait_until(settled, what="every event acked on the server")
    info = await js.consumer_info(bus.STREAM, cfg.nats.consumer)
    assert (info.num_pending, info.num_redelivered) == (0, 0)


async def test_the_outbox_writes_by_itself_within_its_linger(nats):
    nc, js = nats
    cfg, feed = await started_feed(nc, js, ["lingering"], 1)
    try:
        msg = await asyncio.wait_for(feed.queue.get(), 60)
        await bus.outbox_of(nc).ack([msg])
        feed.release()
    finally:
        await feed.stop()

    async def acked() -> bool:
        return (await js.consumer_info(bus.STREAM, cfg.nats.consumer)).num_ack_pending == 0

    await wait_until(acked, what="the held ack written without a flush")


async def test_consumer_gets_only_in_scope_events_published_after_it_was_created(nats):
    nc, js = nats
    before = event(id="before", database="newsletter")
    await bus.publish_events(nc, js, [before])
    cfg = sender_config("nats://unused", "http://127.0.0.1:1/", events=["open"], database="newsletter")
    await bus.ensure_consumer(js, cfg)
    wanted = [event(id=f"in-{i}", database="newsletter") for i in range(3)]
    wanted.append(event(id="in-coll", database="newsletter", collection="orders"))
    unwanted = [
        event(id="other-db", database="crm"),
        event(id="no-db"),
        event("create", id="other-type"),
    ]
    await bus.publish_events(nc, js, [*unwanted[:2], *wanted[:2], unwanted[2], *wanted[2:]])
    got = await pull_all(nc, cfg.nats.consumer, expected=len(wanted))
    assert [m.headers[bus.MSG_ID_HEADER] for m in got] == [e.id for e in wanted]
    info = await js.consumer_info(bus.STREAM, cfg.nats.consumer)
    assert bus.pending_of(info) == 0


async def test_feed_hands_over_a_single_event_without_waiting_for_a_full_batch(nats):
    nc, js = nats
    _, feed = await started_feed(nc, js, [], 50, expires=120)
    try:
        await asyncio.sleep(0)  # let the first pull request go out
        await bus.publish_events(nc, js, [event(id="lonely")])
        # The pull request asked for 50 and lingers for 120 s; the one event must come well before.
        msg = await asyncio.wait_for(feed.queue.get(), 60)
        assert msg.headers[bus.MSG_ID_HEADER] == "lonely"
        await msg.ack()
        feed.release()
    finally:
        await feed.stop()


async def test_feed_keeps_delivering_after_nats_restarts(nats, nats_server):
    nc, js = nats
    _, feed = await started_feed(nc, js, [], 5, heartbeat=1)
    try:
        nats_server.restart()
        await wait_until(lambda: nc.is_connected and nc.stats["reconnects"] >= 1, what="reconnect")
        await bus.publish_events(nc, js, [event(id="after-restart")])
        msg = await asyncio.wait_for(feed.queue.get(), 60)
        assert msg.headers[bus.MSG_ID_HEADER] == "after-restart"
        await msg.ack()
    finally:
        await feed.stop()


async def test_connect_failure_says_what_to_check():
    with pytest.raises(bus.BusUnavailable, match=r"cannot connect to NATS at nats://127\.0\.0\.1:1"):
        await bus.connect("nats://127.0.0.1:1", connect_timeout=1, initial_attempts=1)


async def test_delivered_events_hold_no_space_and_ingest_owns_the_retention_policy(nats):
    nc, js = nats
    cfg = sender_config("nats://unused", "http://127.0.0.1:1/")
    await bus.ensure_consumer(js, cfg)
    await bus.publish_events(nc, js, [event(id="kept")])
    info = await js.stream_info(bus.STREAM)
    assert info.config.retention == bus.api.RetentionPolicy.INTEREST
    assert info.config.discard == bus.api.DiscardPolicy.NEW
    assert info.state.messages == 1  # a Webhook wants it
    sub = await js.pull_subscribe_bind(cfg.nats.consumer, bus.STREAM)
    for msg in await sub.fetch(1, timeout=5):
        await msg.ack_sync()
    for _ in range(500):  # delivered: gone from the store (the server removes it right after the ack)
        if (await js.stream_info(bus.STREAM)).state.messages == 0:
            break
        await asyncio.sleep(0.02)
    assert (await js.stream_info(bus.STREAM)).state.messages == 0
    # `--stream-retention limits` (ingest) holds; a sender's ensure_stream does not undo it.
    limited = await bus.ensure_stream(js, retention="limits", max_bytes=64 * 1024 * 1024)
    assert limited.config.retention == bus.api.RetentionPolicy.LIMITS
    kept = await bus.ensure_stream(js, update_existing=False)
    assert kept.config.retention == bus.api.RetentionPolicy.LIMITS
    assert kept.config.max_bytes == 64 * 1024 * 1024
    with pytest.raises(ValueError, match="retention policy"):
        bus.stream_config(retention="forever")


async def test_a_lost_consumer_is_not_made_again_from_new_while_its_floor_cannot_be_read():
    """A KV timeout under load once made the consumer from "new", skipping what the stream held."""
    import nats.errors
    from nats.js.errors import NotFoundError

    from hookline.sender.bus import BusUnavailable, consumer_spec, ensure_consumer

    class Floors:
        async def get(self, key):
            raise nats.errors.TimeoutError

    class JetStream:
        created: list = []

        async def consumer_info(self, stream, name):
            raise NotFoundError

        async def key_value(self, bucket):
            return Floors()

        async def add_consumer(self, stream, config):
            self.created.append(config)

    cfg = sender_config("nats://unused", "https://shop.example.com/h")
    js = JetStream()
    with pytest.raises(BusUnavailable, match="recorded floor cannot be read"):
        await ensure_consumer(js, consumer_spec(cfg))
    assert js.created == []
