"""Pooled Webhooks end to end on the strict API: the operator places each in a replica of its pool
(a StatefulSet as the chart renders it), the replicas (real supervisors on a real nats-server) run
them, Ready and status.sender follow the replicas' rosters, a scale-up moves about 1/N, and a
Webhook moves between a dedicated Deployment and a pool both ways."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from operator_helpers import (
    CONFIGMAPS,
    DEPLOYMENTS,
    NS,
    SECRETS,
    STATEFULSETS,
    WEBHOOKS,
    api_path,
    condition,
    create_webhook,
    make_available,
    token_of,
    wait_for,
)
from prometheus_client import CollectorRegistry

from hookline.operator.loops.poolsync import POOL_LABEL, POOL_SELECTOR
from hookline.sender import bus
from hookline.sender.bus.poolproto import PoolKey, assignment_key, pool_bucket, replica_of
from hookline.sender.delivery.poolreplica import PoolReplica
from hookline.sender.delivery.supervisor import Supervisor, prepare_streams
from hookline.sender.model.config import consumer_name
from hookline.sender.model.events import parse_event
from hookline.sender.observe.metrics import SenderMetrics
from hookline.sender.transport.egress import EgressPolicy

POOL_KEY = "pool key used by the operator tests, 32+ characters long"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def statefulset(pool: str, replicas: int) -> dict[str, Any]:
    labels = {**POOL_SELECTOR, POOL_LABEL: pool}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": f"hookline-pool-{pool}", "namespace": NS, "labels": labels},
        "spec": {
            "replicas": replicas,
            "serviceName": f"hookline-pool-{pool}",
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "pool", "image": "x"}]},
            },
        },
    }


class Replicas:
    """Pool replicas in this process: each a supervisor following its assignments, as `hookline pool` does."""

    def __init__(self, nats_url: str) -> None:
        self.nats_url = nats_url
        self.running: dict[int, tuple[Any, PoolReplica, list[asyncio.Task[None]]]] = {}

    async def start(self, replica: int, pool: str = "default") -> PoolReplica:
        nc = await bus.connect(self.nats_url)
        await prepare_streams(nc)
        supervisor = Supervisor(
            nc, EgressPolicy(["127.0.0.0/8"], allow_http=True), SenderMetrics(CollectorRegistry())
        )
        member = PoolReplica(nc, pool, replica, PoolKey(POOL_KEY), supervisor)
        kv = await pool_bucket(nc.jetstream())
        tasks = [asyncio.create_task(member.follow(kv)), asyncio.create_task(member.report(kv))]
        self.running[replica] = (nc, member, tasks)
        return member

    async def close(self) -> None:
        for nc, member, tasks in self.running.values():
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await member.supervisor.close()
            await nc.close()


@pytest.fixture
async def replicas(nats_server) -> AsyncIterator[Replicas]:
    handle = Replicas(nats_server.url)
    yield handle
    await handle.close()


@pytest.fixture
def pool_key_file(tmp_path) -> str:
    path = tmp_path / "pool-key"
    path.write_text(POOL_KEY)
    return str(path)


def webhook(cluster, name):
    return cluster.get(WEBHOOKS, name) or {}


def sender_of(cluster, name) -> dict[str, Any]:
    return (webhook(cluster, name).get("status") or {}).get("sender") or {}


def ready(cluster, name) -> bool:
    return condition(webhook(cluster, name), "Ready").get("status") == "True"


async def verified_pooled(cluster, site, name: str, **spec: Any) -> None:
    await create_webhook(
        cluster, name, url=site.url(f"/hooks/{name}.php"), events=["open"], database=name, **spec
    )
    token = await wait_for(lambda: token_of(cluster, name), f"{name}'s token")
    site.files[f"/hooks/hookline-{token}.txt"] = token


async def stored_keys(nats_url: str) -> set[str]:
    nc = await bus.connect(nats_url)
    try:
        kv = await pool_bucket(nc.jetstream())
        with contextlib.suppress(Exception):
            return set(await kv.keys())
        return set()
    finally:
        await nc.close()


async def test_pooled_webhooks_run_in_their_replicas_and_a_scale_up_moves_about_one_in_n(
    cluster, site, start_operator, replicas, nats_server, pool_key_file
):
    await cluster.call("POST", api_path(STATEFULSETS), statefulset("default", 2))
    await cluster.call(
        "POST",
        api_path(SECRETS),
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "hook-secret", "namespace": NS},
            "data": {"secret": base64.b64encode(SECRET.encode()).decode()},
        },
    )
    for replica in range(3):
        await replicas.start(replica)
    await start_operator(pool_key_file=pool_key_file)
    names = [f"shop-{i}" for i in range(12)]
    for name in names:
        signing = (
            {"signing": {"secretRef": {"name": "hook-secret", "key": "secret"}}} if name == "shop-0" else {}
        )
        await verified_pooled(cluster, site, name, sender={"mode": "Pool"}, **signing)
    for name in names:
        await wait_for(lambda n=name: ready(cluster, n), f"{name} Ready", within=60)
        consumer = consumer_name(NS, name)
        sender = sender_of(cluster, name)
        assert (sender["mode"], sender["pool"], sender["replica"]) == (
            "Pool",
            "default",
            replica_of(consumer, 2),
        )
        assert sender["readyReplicas"] == 1 and "deployment" not in sender
        assert "sender pool default" in condition(webhook(cluster, name), "Ready")["message"]
        assert cluster.get(DEPLOYMENTS, f"{name}-sender") is None  # no pod per pooled Webhook
    keys = await stored_keys(nats_server.url)
    for name in names:
        consumer = consumer_name(NS, name)
        assert assignment_key("default", replica_of(consumer, 2), consumer) in keys

    # Events flow through the pool: the signed Webhook's request carries a signature.
    nc = await bus.connect(nats_server.url)
    try:
        event = {
            "type": "open",
            "time": 1_700_000_000,
            "recipient": "a@example.com",
            "profile": 1,
            "ip": "192.0.2.7",
            "useragent": "x",
            "referer": "",
        }
        await bus.publish_events(
            nc, nc.jetstream(), [parse_event({**event, "id": f"ev-{n}", "database": n}) for n in names]
        )
        await wait_for(lambda: len(site.posts()) >= len(names), "a delivery per pooled Webhook", within=60)
        signed = [p for p in site.posts() if p["path"] == "/hooks/shop-0.php"]
        assert signed and "webhook-signature" in {k.lower() for k in signed[0]["headers"]}
    finally:
        await nc.close()

    # A third replica: the Webhooks it wins move to it, the others stay where they were.
    before = {name: sender_of(cluster, name)["replica"] for name in names}
    await cluster.call(
        "PATCH", api_path(STATEFULSETS, name="hookline-pool-default"), {"spec": {"replicas": 3}}
    )
    want = {name: replica_of(consumer_name(NS, name), 3) for name in names}
    await wait_for(lambda: all(sender_of(cluster, n).get("replica") == want[n] for n in names), "the moves")
    assert all(want[n] == 2 for n in names if want[n] != before[n])
    await wait_for(lambda: all(ready(cluster, n) for n in names), "Ready after the moves", within=60)
    keys = await stored_keys(nats_server.url)
    for name in names:
        consumer = consumer_name(NS, name)
        assert assignment_key("default", want[name], consumer) in keys
        assert all(assignment_key("default", r, consumer) not in keys for r in range(3) if r != want[name])

    # Deleted: its entries go with its consumer.
    await cluster.call("DELETE", api_path(WEBHOOKS, name="shop-1"))
    await wait_for(lambda: cluster.get(WEBHOOKS, "shop-1") is None, "shop-1 deleted")
    keys = await stored_keys(nats_server.url)
    assert not any(k.endswith(consumer_name(NS, "shop-1")) for k in keys)


async def test_a_pool_that_does_not_run_says_so_until_its_statefulset_appears(
    cluster, site, start_operator, replicas, pool_key_file
):
    await replicas.start(0, pool="bulk")
    await start_operator(pool_key_file=pool_key_file)
    await verified_pooled(cluster, site, "orders", sender={"pool": "bulk"})
    await wait_for(
        lambda: condition(webhook(cluster, "orders"), "Ready").get("reason") == "PoolNotFound", "PoolNotFound"
    )
    message = condition(webhook(cluster, "orders"), "Ready")["message"]
    assert "'bulk'" in message and "senderPools" in message
    await cluster.call("POST", api_path(STATEFULSETS), statefulset("bulk", 1))
    await wait_for(lambda: ready(cluster, "orders"), "Ready once the pool runs", within=60)
    assert sender_of(cluster, "orders")["replica"] == 0


async def test_a_webhook_moves_from_its_own_deployment_into_a_pool_and_back(
    cluster, site, start_operator, replicas, nats_server, pool_key_file
):
    await cluster.call("POST", api_path(STATEFULSETS), statefulset("default", 1))
    await replicas.start(0)
    await start_operator(pool_key_file=pool_key_file)
    await verified_pooled(cluster, site, "crm")
    await wait_for(lambda: cluster.get(DEPLOYMENTS, "crm-sender"), "the dedicated Deployment")
    await make_available(cluster, "crm-sender", 1)
    await wait_for(lambda: ready(cluster, "crm"), "Ready (dedicated)")

    await cluster.call("PATCH", api_path(WEBHOOKS, name="crm"), {"spec": {"sender": {"mode": "Pool"}}})
    await wait_for(
        lambda: sender_of(cluster, "crm").get("mode") == "Pool" and ready(cluster, "crm"), "Ready in the pool"
    )
    await wait_for(lambda: cluster.get(DEPLOYMENTS, "crm-sender") is None, "the Deployment removed")
    assert cluster.get(CONFIGMAPS, "crm-sender") is None
    consumer = consumer_name(NS, "crm")
    assert assignment_key("default", 0, consumer) in await stored_keys(nats_server.url)

    await cluster.call("PATCH", api_path(WEBHOOKS, name="crm"), {"spec": {"sender": {"mode": "Dedicated"}}})
    await wait_for(lambda: sender_of(cluster, "crm").get("mode") == "Dedicated", "status: dedicated again")
    assert cluster.get(DEPLOYMENTS, "crm-sender") is not None and "pool" not in sender_of(cluster, "crm")
    assert not any(k.endswith(consumer) for k in await stored_keys(nats_server.url))
