"""Per-namespace egress for pool replicas (sender/bus/poolgrants.py) on a real nats-server: a replica
widens its own flags only by the operator's signed grant record of the Webhook's namespace; a forged or
moved record, or an entry's own egress fields, widen nothing."""

from __future__ import annotations

import asyncio

from hookline.sender import bus
from hookline.sender.bus.poolgrants import GrantRecord, GrantTable, grant_key, publish_grant
from hookline.sender.bus.poolproto import PoolKey, pool_bucket
from hookline.sender.transport.egress import EgressPolicy

KEY = PoolKey("pool key used by the grant record tests, 32+ chars")
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
