"""Per-namespace egress for pool replicas (sender/bus/poolgrants.py) on a real nats-server: a replica
widens its own flags only by the operator's signed grant record of the Webhook's namespace; a forged or
moved record, or an entry's own egress fields, widen nothing."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import aiohttp
import pytest
from dataplane_helpers import Receiver, sender_config, wait_until, wait_until_ready

from hookline.operator.adapters.consumers import Consumers
from hookline.operator.adapters.pools import PoolDirectory, pool_entry
from hookline.sender import bus
from hookline.sender.bus.natsserver import free_port, terminate
from hookline.sender.bus.poolgrants import GrantRecord, GrantTable, grant_key, publish_grant
from hookline.sender.bus.poolproto import PoolKey, pool_bucket
from hookline.sender.model.events import parse_event
from hookline.sender.transport.egress import EgressPolicy

POOL_KEY_TEXT = "pool key used by the grant record tests, 32+ chars"
KEY = POOL_KEY_OBJ = PoolKey(POOL_KEY_TEXT)
FLOOR = EgressPolicy(["192.0.2.0/24"])


async def test_a_replica_takes_egress_only_from_authentic_grant_records(nats_server):
    nc = await bus.connect(nats_server.url)
    try:
        kv = await pool_bucket(nc.jetstream())
        await publish_grant(kv, KEY, "shop", GrantRecord("shop", ("10.1.0.0/16",), allow_http=True))
        # Someone with write access to the bucket but without the pool key:
        forged = PoolKey("another key that is long enough to be a pool key").sign_record(
            grant_key("crm"), GrantRecord("crm", ("0.0.0.0/0",), True).to_bytes()
        )
        await kv.put(grant_key("crm"), forged)
        moved = KEY.sign_record(grant_key("shop"), GrantRecord("shop", ("10.0.0.0/8",)).to_bytes())
        await kv.put(grant_key("ads"), moved)  # a genuine record copied under another namespace
        table = GrantTable(KEY, FLOOR)
        changes: list[str] = []
        follower = asyncio.create_task(table.follow(kv, changes.append))
        await asyncio.wait_for(table.loaded.wait(), 10)

        shop = table.policy("shop")
        assert shop.address_problem("10.1.2.3") is None and shop.allow_http
        assert shop.address_problem("192.0.2.9") is None  # the replica's own flags stay
        for namespace in ("crm", "ads", "other"):
            assert table.policy(namespace) == FLOOR, namespace
            assert table.policy(namespace).address_problem("10.1.2.3") is not None

        await publish_grant(kv, KEY, "shop", None)  # the grant no longer adds egress
        for _ in range(100):
            if changes:
                break
            await asyncio.sleep(0.05)
        assert changes == ["shop"] and table.policy("shop") == FLOOR
        follower.cancel()
    finally:
        await nc.close()


@pytest.mark.slow
async def test_a_pool_replica_reaches_a_namespaces_grant_egress_and_nothing_else(tmp_path, nats_server):
    """`hookline pool` with only --allow-http (loopback refused): namespace shop's record adds
    127.0.0.0/8 and its Webhook is delivered; namespace other has no record and gets nothing, though its
    entry says allowNetworks 127.0.0.0/8; once other is granted too, its engine restarts and delivers."""
    nc = await bus.connect(nats_server.url)
    receiver = await Receiver().start()
    key_file = tmp_path / "pool-key"
    key_file.write_text(POOL_KEY_TEXT)
    port = free_port()
    log = (tmp_path / "pool.log").open("wb")
    command = [sys.executable, "-m", "hookline.cli", "pool", "--pool", "default", "--replica", "0"]
    command += ["--nats-url", nats_server.url, "--pool-key-file", str(key_file), "--allow-http"]
    proc = subprocess.Popen(  # noqa: ASYNC220 (started once, before anything is awaited)
        [*command, "--listen", f"127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT
    )
    consumers = Consumers(nats_server.url)
    try:
        js = nc.jetstream()
        await bus.ensure_stream(js)
        kv = await pool_bucket(js)
        await publish_grant(kv, POOL_KEY_OBJ, "shop", GrantRecord("shop", ("127.0.0.0/8",)))
        async with aiohttp.ClientSession() as http:
            await wait_until_ready(http, f"http://127.0.0.1:{port}/readyz", proc)
        directory = PoolDirectory(consumers, POOL_KEY_OBJ)
        for namespace in ("shop", "other"):
            cfg = sender_config(
                nats_server.url, f"{receiver.url}/{namespace}", namespace=namespace, database=namespace
            )
            await directory.place(
                cfg.nats.consumer, pool_entry(cfg, None, POOL_KEY_OBJ).to_bytes(), "default", 0, None
            )
        await asyncio.sleep(1.0)  # both engines consuming
        await bus.publish_events(nc, js, [event(ns, f"ev-{ns}") for ns in ("shop", "other")])
        await wait_until(lambda: "ev-shop" in receiver.delivered(), 30, "shop's delivery")
        await asyncio.sleep(1.0)
        assert "ev-other" not in receiver.delivered()  # refused: loopback is not other's to reach
        # (ev-other went to its dead letters as refused by the egress policy: kept, redrivable.)
        await publish_grant(kv, POOL_KEY_OBJ, "other", GrantRecord("other", ("127.0.0.0/8",)))
        for probe in range(60):  # the replica restarts other's engine under the new record
            await bus.publish_events(nc, js, [event("other", f"probe-{probe}")])
            await asyncio.sleep(0.5)
            if f"probe-{probe}" in receiver.delivered():
                break
        assert any(i.startswith("probe-") for i in receiver.delivered()), "other's grant never applied"
    finally:
        terminate(proc, timeout=30)
        log.close()
        await consumers.close()
        await receiver.stop()
        await nc.close()


def event(database: str, event_id: str) -> object:
    return parse_event(
        {
            "id": event_id,
            "type": "open",
            "time": 1_700_000_000,
            "recipient": "a@example.com",
            "ip": "192.0.2.7",
            "database": database,
        }
    )
