"""NATS in the chart's auth mode (decentralized JWT auth, credentials minted by hookline's own code):
the delivery flow works with every component on its own least-privilege user, and each forbidden
operation of a tenant's sender, of ingest and of an anonymous client is refused by the server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
import yaml
from dataplane_helpers import Receiver, sender_config, wait_until, wait_until_ready
from nats.js import api
from natsauth_helpers import AuthedNats, Client, start_authed_nats

from hookline.operator.adapters.consumers import Consumers
from hookline.operator.adapters.pools import PoolDirectory, pool_entry
from hookline.operator.loops.natsauth import mirror_gone, remake_consumer
from hookline.sender import bus
from hookline.sender.bus.connection import BusAuth
from hookline.sender.bus.natsaccounts import revoke_users
from hookline.sender.bus.natsperms import inbox_prefix
from hookline.sender.bus.natsserver import free_port
from hookline.sender.bus.poolproto import PoolKey
from hookline.sender.cmd.ingest import ensure_bus_layout
from hookline.sender.model.events import parse_event
from hookline.sender.model.outcomes import GoneState

pytestmark = pytest.mark.slow

TOKEN = "producer-token-0123456789abcdef"


@pytest.fixture
async def authed(tmp_path):
    """The server with accounts, the layout made with the layout user, two Webhooks' consumers made by
    the operator user (team-a/orders and team-b/billing)."""
    server = start_authed_nats(tmp_path)
    try:
        layout = await bus.connect(
            server.url,
            auth=BusAuth(creds_file=str(server.creds["layout"]), inbox_prefix=inbox_prefix("layout")),
        )
        await ensure_bus_layout(
            layout.jetstream(),
            retention=3600,
            duplicate_window=60,
            max_bytes=-1,
            max_consumers=100,
            replicas=1,
        )
        await layout.close()
        operator = await bus.connect(
            server.url,
            auth=BusAuth(creds_file=str(server.creds["operator"]), inbox_prefix=inbox_prefix("operator")),
        )
        js = operator.jetstream()
        for namespace, name in (("team-a", "orders"), ("team-b", "billing")):
            await bus.ensure_consumer(
                js, sender_config(server.url, "http://127.0.0.1:9/", namespace=namespace, name=name)
            )
        await operator.close()
        yield server
    finally:
        server.server.close()


async def test_anonymous_and_revoked_connections_are_refused(authed: AuthedNats):
    with pytest.raises(Exception, match=r"Authorization Violation|no servers"):
        await Client().connect(authed.url, None)
    who, creds = authed.sender_creds("team-a", "orders")
    client = await Client().connect(authed.url, creds, who.consumer)
    system = await bus.connect(
        authed.url, auth=BusAuth(creds_file=str(authed.creds["system"]), inbox_prefix=inbox_prefix("system"))
    )
    revoked = await revoke_users(system, authed.keys, [authed.keys.sender_user(who, "uid-1").public])
    await system.close()
    assert authed.keys.sender_user(who, "uid-1").public in revoked
    await wait_until(lambda: client.nc.is_closed, 10, "the revoked sender disconnected")
    with pytest.raises(Exception, match=r"Authorization Violation|no servers"):
        await Client().connect(authed.url, creds, who.consumer)


async def test_a_senders_credentials_allow_nothing_but_its_own_webhook(authed: AuthedNats):
    who, creds = authed.sender_creds("team-a", "orders")
    other, _ = authed.sender_creds("team-b", "billing")
    client = await Client().connect(authed.url, creds, who.consumer)
    nc, js = client.nc, client.nc.jetstream()
    stream = bus.STREAM
    try:
        # Its own consumer answers.
        info = await js.consumer_info(stream, who.consumer)
        assert info.name == who.consumer
        await client.refused(
            "read another consumer",
            lambda: nc.request(
                f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{other.consumer}", b'{"batch":1}', timeout=1
            ),
        )
        await client.refused(
            "another consumer's info", lambda: js.consumer_info(stream, other.consumer, timeout=0.5)
        )
        await client.refused(
            "ack another consumer's message",
            lambda: nc.publish(f"$JS.ACK.{stream}.{other.consumer}.1.1.1.0.0"),
        )
        await client.refused(
            "publish an event", lambda: js.publish("hookline.events.open.shop.people", b"{}", timeout=0.5)
        )
        await client.refused(
            "publish an event (core)", lambda: nc.publish("hookline.events.open.shop.people", b"{}")
        )
        await client.refused(
            "write the pools bucket",
            lambda: nc.request("$KV.HOOKLINE_POOLS.default.entry.x", b"{}", timeout=0.5),
        )
        await client.refused(
            "write another Webhook's health key",
            lambda: nc.request("$KV.HOOKLINE_HEALTH.team-b.billing", b"{}", timeout=0.5),
        )
        await client.refused(
            "read another Webhook's health key",
            lambda: nc.request(
                "$JS.API.DIRECT.GET.KV_HOOKLINE_HEALTH.$KV.HOOKLINE_HEALTH.team-b.billing", b"", timeout=1
            ),
        )
        config = api.ConsumerConfig(durable_name="hookline_team-a_extra", ack_policy=api.AckPolicy.EXPLICIT)
        await client.refused("create a consumer", lambda: js.add_consumer(stream, config, timeout=0.5))
        widened = api.ConsumerConfig(
            name=who.consumer,
            durable_name=who.consumer,
            filter_subject="hookline.events.>",
            ack_policy=api.AckPolicy.EXPLICIT,
        )
        await client.refused("widen its own consumer", lambda: js.add_consumer(stream, widened, timeout=0.5))
        await client.refused("delete another consumer", lambda: js.delete_consumer(stream, other.consumer))
        await client.refused("delete its own consumer", lambda: js.delete_consumer(stream, who.consumer))
        await client.refused(
            "publish another Webhook's dead letter", lambda: nc.publish("hookline.dead.team-b.billing", b"{}")
        )
        await client.refused("redrive", lambda: nc.publish("hookline.redrive.team-b.billing", b"{}"))
        other_record = json.dumps({"last_by_subj": f"hookline.failed.{other.consumer}.1"}).encode()
        await client.refused(
            "read another Webhook's failed attempts",
            lambda: nc.request("$JS.API.STREAM.MSG.GET.HOOKLINE_FAILED_ATTEMPTS", other_record, timeout=0.5),
        )
        await client.refused("subscribe to every event", lambda: nc.subscribe("hookline.events.>"))
        await client.refused("subscribe to another's inbox", lambda: nc.subscribe(f"{other.inbox}.>"))
        await client.refused("subscribe to the system account's subjects", lambda: nc.subscribe("$SYS.>"))
    finally:
        await client.close()


async def test_ingest_credentials_publish_events_and_nothing_else(authed: AuthedNats):
    client = await Client().connect(authed.url, authed.creds["ingest"], "ingest")
    nc, js = client.nc, client.nc.jetstream()
    try:
        ack = await js.publish("hookline.events.open.shop.people", b"{}", headers={"Nats-Msg-Id": "e-1"})
        assert ack.stream == bus.STREAM
        await client.refused(
            "read a consumer",
            lambda: nc.request(
                f"$JS.API.CONSUMER.MSG.NEXT.{bus.STREAM}.hookline_team-a_orders", b"{}", timeout=1
            ),
        )
        await client.refused("stream info", lambda: js.stream_info(bus.STREAM))
        await client.refused(
            "create a consumer",
            lambda: js.add_consumer(bus.STREAM, api.ConsumerConfig(durable_name="x"), timeout=0.5),
        )
        await client.refused(
            "write a bucket", lambda: nc.request("$KV.HOOKLINE_POOLS.default.x", b"{}", timeout=0.5)
        )
        await client.refused("redrive", lambda: nc.publish("hookline.redrive.team-a.orders", b"{}"))
        await client.refused("subscribe to the events", lambda: nc.subscribe("hookline.events.>"))
        # What bundling lets it do touches the reservations' stream only.
        await client.refused(
            "read an event by direct get",
            lambda: nc.request(f"$JS.API.DIRECT.GET.{bus.STREAM}", b'{"seq": 1}', timeout=0.5),
        )
        await client.refused("purge the events", lambda: js.purge_stream(bus.STREAM))
    finally:
        await client.close()


def spawn(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    command = [str(Path(sys.executable).with_name("hookline")), *args]
    with log.open("wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)


async def test_the_delivery_flow_runs_with_every_component_on_its_own_user(authed: AuthedNats, tmp_path):
    receiver = await Receiver().start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKLINE_")}
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    _, creds = authed.sender_creds("team-a", "orders")
    cfg = sender_config(
        authed.url, receiver.url, namespace="team-a", name="orders", delivery={"maxAttempts": 2}
    )
    doc = cfg.to_document()
    doc["nats"]["credsFile"] = str(creds)
    config = tmp_path / "sender.yaml"
    config.write_text(yaml.safe_dump(doc))
    port = free_port()
    ingest = spawn(
        [
            "ingest",
            "--listen",
            f"127.0.0.1:{port}",
            "--nats-url",
            authed.url,
            "--token-file",
            str(token_file),
            "--bundle-events",  # ids reserved and bundles kept on ingest's own user too
            "10",
        ],
        tmp_path / "ingest.log",
        {**env, "HOOKLINE_NATS_CREDS": str(authed.creds["ingest"])},
    )
    sender = spawn(["sender", "--config", str(config)], tmp_path / "sender.log", env)
    try:
        async with aiohttp.ClientSession() as http:
            await wait_until_ready(http, f"http://127.0.0.1:{port}/readyz", ingest)
            await wait_until_ready(http, f"http://{cfg.listen}/readyz", sender)
            headers = {"Authorization": f"Bearer {TOKEN}"}
            # The first answered 500 twice (maxAttempts 2, 5 s apart): its failed-attempt record written
            # and read back (a direct get of its own subject), then a dead letter; then a success.
            receiver.status = 500
            event = {"id": "auth-0", "type": "open", "recipient": "a@shop.example", "ip": "192.0.2.1"}
            async with http.post(
                f"http://127.0.0.1:{port}/v1/events", json=event, headers=headers
            ) as response:
                assert response.status == 202, await response.text()
            await wait_until(lambda: receiver.ids().count("auth-0") == 2, 30, "both failing attempts")
            admin = await bus.connect(
                authed.url,
                auth=BusAuth(creds_file=str(authed.creds["operator"]), inbox_prefix=inbox_prefix("operator")),
            )
            js = admin.jetstream()
            for _ in range(300):
                if (await js.stream_info("HOOKLINE_DEAD_LETTERS")).state.messages:
                    break
                await asyncio.sleep(0.1)
            assert (await js.stream_info("HOOKLINE_DEAD_LETTERS")).state.messages == 1
            receiver.status = 200
            event = {"id": "auth-1", "type": "open", "recipient": "a@shop.example", "ip": "192.0.2.1"}
            async with http.post(
                f"http://127.0.0.1:{port}/v1/events", json=event, headers=headers
            ) as response:
                assert response.status == 202, await response.text()
            await wait_until(lambda: "auth-1" in receiver.delivered(), 30, "the event delivered")
            bundle = [{**event, "id": f"auth-b{i}"} for i in range(3)]  # stored as one bundle
            async with http.post(
                f"http://127.0.0.1:{port}/v1/events", json=bundle, headers=headers
            ) as response:
                assert response.status == 202, await response.text()
            await wait_until(
                lambda: {"auth-b0", "auth-b1", "auth-b2"} <= set(receiver.delivered()),
                30,
                "the bundle delivered",
            )
            # Its health report, under its own key.
            health = await js.key_value("HOOKLINE_HEALTH")
            for _ in range(300):
                try:
                    await health.get("team-a.orders")
                    break
                except Exception:
                    await asyncio.sleep(0.1)
            assert (await health.get("team-a.orders")).value
            await admin.close()
        assert receiver.delivered()["auth-1"].fields["id"] == "auth-1"
        log = authed.log()
        assert "Violation" not in log, [line for line in log.splitlines() if "Violation" in line]
    finally:
        for proc in (sender, ingest):
            proc.send_signal(signal.SIGTERM)
        for proc in (sender, ingest):
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        await receiver.stop()
    assert sender.returncode == 0, (tmp_path / "sender.log").read_text()[-3000:]


async def test_a_consumer_deleted_behind_hooklines_back_is_made_again_by_the_operators_user(
    authed: AuthedNats,
):
    """The least-privileged sender may not make its consumer again: the operator does (its loop acts on
    the sender's health report saying consumerMissing)."""
    cfg = sender_config(authed.url, "http://127.0.0.1:9/", namespace="team-a", name="orders")
    operator_auth = BusAuth(creds_file=str(authed.creds["operator"]))
    admin = await bus.connect(authed.url, auth=operator_auth.with_inbox(inbox_prefix("operator")))
    js = admin.jetstream()
    await js.delete_consumer(bus.STREAM, cfg.nats.consumer)
    consumers = Consumers(authed.url, auth=operator_auth)
    try:
        await remake_consumer(consumers, cfg)
        info = await js.consumer_info(bus.STREAM, cfg.nats.consumer)
        assert info.name == cfg.nats.consumer
    finally:
        await consumers.close()
        await admin.close()


async def test_a_pool_replica_on_its_pool_user_delivers_and_touches_nothing_else(
    authed: AuthedNats, tmp_path
):
    """`hookline pool` with the chart's pool.creds: it reads its assignments, writes its roster, runs the
    engines and delivers, with no permission refused along the way."""
    pool_key = "k" * 16 + "pool-key-for-tests-only-0123456789"
    (tmp_path / "pool-key").write_text(pool_key + "\n")
    receiver = await Receiver().start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKLINE_")}
    port = free_port()
    args = ["pool", "--pool", "default", "--replica", "0", "--nats-url", authed.url]
    args += ["--pool-key-file", str(tmp_path / "pool-key"), "--listen", f"127.0.0.1:{port}"]
    args += ["--allow-network", "127.0.0.0/8", "--allow-http", "--nats-creds", str(authed.creds["pool"])]
    proc = spawn(args, tmp_path / "pool.log", env)
    consumers = Consumers(authed.url, auth=BusAuth(creds_file=str(authed.creds["operator"])))
    ingest = await bus.connect(
        authed.url, auth=BusAuth(creds_file=str(authed.creds["ingest"]), inbox_prefix=inbox_prefix("ingest"))
    )
    try:
        async with aiohttp.ClientSession() as http:
            await wait_until_ready(http, f"http://127.0.0.1:{port}/readyz", proc)
        cfg = sender_config(authed.url, f"{receiver.url}/hook", namespace="team-c", name="pooled")
        await consumers.ensure(cfg)
        directory = PoolDirectory(consumers, PoolKey(pool_key))
        await directory.place(
            cfg.nats.consumer, pool_entry(cfg, None, PoolKey(pool_key)).to_bytes(), "default", 0, None
        )
        event = parse_event(
            {"id": "pooled-1", "type": "open", "recipient": "a@shop.example", "ip": "192.0.2.1"}
        )
        # The consumer exists (interest retention keeps the event); the engine may start a little later.
        for attempt in range(100):
            if "pooled-1" in receiver.delivered():
                break
            if attempt % 20 == 0:
                await bus.publish_events(ingest, ingest.jetstream(), [event])
            await asyncio.sleep(0.1)
        await wait_until(lambda: "pooled-1" in receiver.delivered(), 30, "the pooled delivery")
        log = authed.log()
        assert "Violation" not in log, [line for line in log.splitlines() if "Violation" in line]
    finally:
        await ingest.close()
        await consumers.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        await receiver.stop()


async def test_the_attempts_and_redrive_commands_work_on_the_operators_creds(authed: AuthedNats):
    """`hookline attempts` / `hookline redrive --nats-creds operator.creds`: their replies come on the
    inbox the user's JWT allows (read from the creds file), nothing refused."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKLINE_")}
    for command in (["attempts", "orders"], ["redrive", "orders", "--dry-run"]):
        args = [*command, "-n", "team-a", "--nats-only", "--nats-url", authed.url]
        args += ["--nats-creds", str(authed.creds["operator"])]
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).with_name("hookline")),
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        assert "team-a/orders" in out.decode()
    assert "Violation" not in authed.log()


async def test_a_senders_410_stop_is_recorded_on_its_consumer_by_the_operators_user(authed: AuthedNats):
    """A least-privileged sender may not update its consumer: its health report carries the stop and
    the operator records it (once per stop, so that a resume is not undone)."""
    cfg = sender_config(authed.url, "http://127.0.0.1:9/", namespace="team-a", name="orders")
    consumers = Consumers(authed.url, auth=BusAuth(creds_file=str(authed.creds["operator"])))
    state = GoneState(gone=True, since=1_700_000_000.0, event_id="e-410", url_sha256="ab" * 32)
    try:
        await mirror_gone(consumers, cfg.nats.consumer, state)
        stored = await consumers.call("read", lambda js: bus.read_gone(js, cfg.nats.consumer))
        assert stored.gone and stored.event_id == "e-410"
        info = await consumers.call("info", lambda js: js.consumer_info(bus.STREAM, cfg.nats.consumer))
        assert info.paused
    finally:
        await consumers.close()
