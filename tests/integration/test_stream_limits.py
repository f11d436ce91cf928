"""The events stream's consumer limit and replicas against the real nats-server (2.15, from the wheel).

nats-server >= 2.15 caps a stream created without max_consumers at 1,000 consumers; hookline sets
the limit explicitly and ingest raises a lower one on an existing stream.
"""

from __future__ import annotations

import argparse

import pytest
from dataplane_helpers import sender_config
from nats.js import api
from nats.js.errors import APIError

from hookline.operator.settings import config_from_env, parse_replicas
from hookline.sender import bus
from hookline.sender.bus import attemptlog
from hookline.sender.cmd import ingest
from hookline.sender.model.events import parse_event


def test_stream_config_sets_the_consumer_limit_and_replicas_explicitly():
    config = bus.stream_config()
    assert config.max_consumers == bus.DEFAULT_MAX_CONSUMERS >= 20_000
    assert config.num_replicas == 1
    assert bus.stream_config(max_consumers=50_000, replicas=3).num_replicas == 3
    with pytest.raises(ValueError, match="max consumers"):
        bus.stream_config(max_consumers=0)
    with pytest.raises(ValueError, match="replicas must be 1 to 5"):
        bus.stream_config(replicas=7)


@pytest.mark.parametrize(
    ("have", "want", "change"),
    [
        (-1, 20_000, 20_000),  # unset: the server's 1,000 applies, so it is raised
        (0, 20_000, 20_000),
        (1_000, 20_000, 20_000),
        (20_000, 20_000, None),
        (50_000, 20_000, None),  # raised by hand: never lowered
        (-1, 500, None),  # asking for less than the server's default changes nothing
    ],
)
def test_ingest_raises_a_lower_consumer_limit_and_keeps_a_higher_one(have, want, change):
    wanted = bus.stream_config(max_consumers=want)
    existing = wanted.evolve(max_consumers=have)
    assert bus.stream_changes(existing, wanted).get("max_consumers") == change
    # Senders and the operator never touch it.
    assert "max_consumers" not in bus.stream_changes(existing, wanted, update_existing=False)


def test_replicas_are_moved_by_ingest_only():
    wanted = bus.stream_config(replicas=3)
    existing = wanted.evolve(num_replicas=None)  # unset is one replica
    assert bus.stream_changes(existing, wanted)["num_replicas"] == 3
    assert "num_replicas" not in bus.stream_changes(existing, wanted, update_existing=False)
    assert "num_replicas" not in bus.stream_changes(existing.evolve(num_replicas=3), wanted)


def test_ingest_flags_and_env_for_the_consumer_limit_and_replicas(monkeypatch):
    parser = argparse.ArgumentParser()
    ingest.add_arguments(parser)
    defaults = parser.parse_args([])
    assert (defaults.stream_max_consumers, defaults.nats_replicas) == (bus.DEFAULT_MAX_CONSUMERS, 1)
    monkeypatch.setenv(ingest.MAX_CONSUMERS_ENV, "40000")
    monkeypatch.setenv(ingest.REPLICAS_ENV, "3")
    parser = argparse.ArgumentParser()
    ingest.add_arguments(parser)
    from_env = parser.parse_args([])
    assert (from_env.stream_max_consumers, from_env.nats_replicas) == (40_000, 3)
    assert parser.parse_args(["--nats-replicas", "1"]).nats_replicas == 1
    with pytest.raises(SystemExit):
        parser.parse_args(["--nats-replicas", "9"])
    monkeypatch.setenv(ingest.REPLICAS_ENV, "three")
    parser = argparse.ArgumentParser()
    ingest.add_arguments(parser)
    with pytest.raises(SystemExit):  # argparse's message names the flag, no traceback
        parser.parse_args([])


def test_operator_replicas_from_env_and_flag():
    assert config_from_env({}).nats_replicas == 0  # as the stream
    assert config_from_env({"HOOKLINE_NATS_REPLICAS": "3"}).nats_replicas == 3
    assert config_from_env({"HOOKLINE_NATS_REPLICAS": "3"}, nats_replicas=1).nats_replicas == 1
    with pytest.raises(ValueError, match="1 to 5"):
        parse_replicas("6")
    with pytest.raises(ValueError, match="whole number"):
        config_from_env({"HOOKLINE_NATS_REPLICAS": "three"})


def test_consumer_replicas_come_from_the_sender_config():
    cfg = sender_config("nats://unused", "http://127.0.0.1:1/")
    assert bus.consumer_config(bus.consumer_spec(cfg)).num_replicas == 0  # as the stream
    r3 = cfg.model_copy(update={"nats": cfg.nats.model_copy(update={"replicas": 3})})
    want = bus.consumer_config(bus.consumer_spec(r3))
    assert want.num_replicas == 3
    assert bus.consumer_needs_update(want.evolve(num_replicas=1), want)
    assert not bus.consumer_needs_update(want, want)


async def test_an_unset_limit_stops_at_1000_and_ingest_raises_it(nats_server):
    """The server's default, measured: the 1,001st consumer is refused (10026) until ingest raises it."""
    nc = await bus.connect(nats_server.url)
    js = nc.jetstream()
    # A stream as hookline made it before it set the limit (and as `nats stream add` makes it).
    await js.add_stream(bus.stream_config().evolve(max_consumers=None))
    try:
        for i in range(bus.SERVER_DEFAULT_MAX_CONSUMERS):
            await js.add_consumer(bus.STREAM, api.ConsumerConfig(durable_name=f"c{i}", ack_policy="explicit"))
        extra = api.ConsumerConfig(durable_name="one-more", ack_policy="explicit")
        with pytest.raises(APIError) as refused:
            await js.add_consumer(bus.STREAM, extra)
        assert refused.value.err_code == 10026
        # Senders and the operator do not change it ...
        kept = await bus.ensure_stream(js, update_existing=False)
        assert bus.effective_max_consumers(kept.config) == 1_000
        # ... ingest does, on the running stream, keeping every consumer.
        raised = await bus.ensure_stream(js, max_consumers=30_000)
        assert raised.config.max_consumers == 30_000
        assert raised.state.consumer_count == 1_000
        await js.add_consumer(bus.STREAM, extra)
        mirror_reader = 1  # ingest made the recovery stream's reader once the limit allowed it
        assert (await js.stream_info(bus.STREAM)).state.consumer_count == 1_001 + mirror_reader
        await js.delete_stream(bus.STREAM)  # else the server takes its 10 s grace to stop
    finally:
        await nc.close()


async def test_ingest_says_which_setting_a_single_server_refuses(nats_server):
    nc = await bus.connect(nats_server.url)
    js = nc.jetstream()
    try:
        with pytest.raises(ValueError, match=r"replicas 3.*err_code 10074.*--nats-replicas 1"):
            await ingest.ensure_bus_layout(
                js, retention=3600, duplicate_window=60, max_bytes=-1, max_consumers=20_000, replicas=3
            )
        await ingest.ensure_bus_layout(
            js, retention=3600, duplicate_window=60, max_bytes=-1, max_consumers=20_000, replicas=1
        )
        for stream in (
            bus.STREAM,
            bus.DEAD_LETTER_STREAM,
            attemptlog.ATTEMPTS_STREAM,
            f"KV_{attemptlog.HEALTH_BUCKET}",
            f"KV_{bus.FLOORS_BUCKET}",
        ):
            assert (await js.stream_info(stream)).config.num_replicas == 1, stream
    finally:
        await nc.close()


async def test_1500_verified_webhooks_get_their_consumers_on_one_stream(nats):
    """Made the way senders and the operator make them (bus.ensure_consumer), each with its own
    scope; events reach exactly the consumers whose filters match."""
    nc, js = nats
    webhooks = 1_500
    configs = [
        sender_config(
            "nats://unused",
            "http://127.0.0.1:1/",
            name=f"hook-{i}",
            namespace=f"tenant-{i % 50}",
            events=["open", "click"],
            database=f"db-{i}",
        )
        for i in range(webhooks)
    ]
    for cfg in configs:
        await bus.ensure_consumer(js, cfg)
    info = await js.stream_info(bus.STREAM)
    mirror_reader = 1  # the recovery stream's reader on the events stream is a consumer too
    assert info.state.consumer_count == webhooks + mirror_reader
    assert info.config.max_consumers == bus.DEFAULT_MAX_CONSUMERS
    # Idempotent: a second pass (every sender restarting) changes nothing.
    for cfg in configs[:100]:
        await bus.ensure_consumer(js, cfg)
    assert (await js.stream_info(bus.STREAM)).state.consumer_count == webhooks + mirror_reader
    targets = (0, 777, webhooks - 1)
    events = [
        parse_event({"type": "open", "recipient": "a@example.com", "ip": "192.0.2.1", "database": f"db-{i}"})
        for i in targets
    ]
    await bus.publish_events(nc, js, events)
    for i in (*targets, 1, 778, webhooks - 2):
        consumer = await js.consumer_info(bus.STREAM, configs[i].nats.consumer)
        assert consumer.num_pending == (1 if i in targets else 0), i
    await js.delete_stream(bus.STREAM)  # else the server takes its 10 s grace to stop


async def test_an_existing_consumer_moves_to_the_configured_replicas(nats):
    """After an upgrade the chart's operator writes `replicas: 1` into every sender's config, so a
    consumer made before (replicas unset) is updated in place on the single server, keeping its place."""
    nc, js = nats
    cfg = sender_config("nats://unused", "http://127.0.0.1:1/", name="old")
    before = await bus.ensure_consumer(js, cfg)
    assert not before.config.num_replicas
    await bus.publish_events(
        nc, js, [parse_event({"type": "open", "recipient": "a@b.example", "ip": "192.0.2.1"})]
    )
    r1 = cfg.model_copy(update={"nats": cfg.nats.model_copy(update={"replicas": 1})})
    after = await bus.ensure_consumer(js, r1)
    assert after.config.num_replicas == 1
    assert after.num_pending == 1  # the event published before the update is still its to deliver
    again = await bus.ensure_consumer(js, r1)
    assert again.config == after.config
