"""Tenancy end to end on the strict API (tenancy enforced, as the chart runs it): a WebhookPolicy
grants namespace shop one database; a Webhook outside it never starts (Ready=False ScopeNotAllowed,
no request out); a grant revoked while events flow stops the granted Webhook's engine within seconds
and nothing is delivered after that is noticed; granted again, it resumes where it stopped and every
event is delivered (counted)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import yaml
from operator_helpers import (
    CONFIGMAPS,
    DEPLOYMENTS,
    NS,
    STATEFULSETS,
    TESTS,
    WEBHOOKS,
    api_path,
    condition,
    create_webhook,
    make_available,
    token_of,
    wait_for,
)
from test_pool_flow import POOL_KEY, Replicas, statefulset, webhook

from hookline.sender import bus
from hookline.sender.bus.poolgrants import GrantTable, grant_key
from hookline.sender.bus.poolproto import PoolKey, pool_bucket
from hookline.sender.model.config import consumer_name
from hookline.sender.model.events import parse_event
from hookline.sender.transport.egress import EgressPolicy

POLICIES = "/apis/hookline.io/v1alpha1/webhookpolicies"


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


def grant(*databases: str) -> dict[str, Any]:
    return {
        "apiVersion": "hookline.io/v1alpha1",
        "kind": "WebhookPolicy",
        "metadata": {"name": "shop-data"},
        "spec": {
            "namespaces": [NS],
            "databases": [{"name": d, "collections": ["*"]} for d in databases],
            "egress": {"allowNetworks": ["10.9.0.0/16"]},
        },
    }


def reason(cluster, name: str) -> str | None:
    return condition(webhook(cluster, name), "Ready").get("reason")


def delivered(site) -> list[str]:
    return [p["headers"].get("webhook-id", "") for p in site.posts() if p["path"] == "/hooks/news.php"]


@pytest.mark.slow
async def test_a_revoked_grant_stops_deliveries_and_a_new_one_resumes_them_losing_nothing(
    cluster,
    site,
    start_operator,
    replicas,
    nats_server,
    pool_key_file,
):
    await cluster.call("POST", POLICIES, grant("newsletter"))
    await cluster.call("POST", api_path(STATEFULSETS), statefulset("default", 1))
    member = await replicas.start(0)
    await start_operator(pool_key_file=pool_key_file, tenancy_enforce=True, grants_configmap=f"{NS}/grants")

    # Outside the grant: never verified, never started, Ready names the field and the missing grant.
    await create_webhook(cluster, "crm", url=site.url("/hooks/crm.php"), events=["open"], database="crm")
    await wait_for(lambda: reason(cluster, "crm") == "ScopeNotAllowed", "crm: ScopeNotAllowed")
    message = condition(webhook(cluster, "crm"), "Ready")["message"]
    assert message.startswith("spec.database: 'crm' is not granted to namespace 'shop'"), message
    assert "databases[].name 'crm'" in message
    # The admission policy's record: what the operator compiled from the policy.
    compiled = await wait_for(
        lambda: (cluster.get(CONFIGMAPS, "grants") or {}).get("data"), "grants compiled"
    )
    assert compiled["shop.scopes"] == ";newsletter/*/*;" and compiled["shop.policies"] == "shop-data"

    # The pool replicas' egress for shop: a record signed with the pool key (bus/poolgrants.py).
    nc = await bus.connect(nats_server.url)
    try:
        kv = await pool_bucket(nc.jetstream())
        table = GrantTable(PoolKey(POOL_KEY), EgressPolicy())
        for _ in range(100):
            with contextlib.suppress(Exception):
                entry = await kv.get(grant_key(NS))
                table.apply(entry.key, entry.value)
                break
            await asyncio.sleep(0.1)
        assert table.policy(NS).address_problem("10.9.1.1") is None
    finally:
        await nc.close()

    # Inside it: verified and running in the pool.
    await create_webhook(
        cluster,
        "news",
        url=site.url("/hooks/news.php"),
        events=["open"],
        database="newsletter",
        sender={"mode": "Pool"},
    )
    token = await wait_for(lambda: token_of(cluster, "news"), "news's token")
    site.files[f"/hooks/hookline-{token}.txt"] = token
    await wait_for(lambda: reason(cluster, "news") == "SenderAvailable", "news Ready", within=60)
    assert not [g for g in site.gets() if "crm" in g], "an ungranted Webhook made a request out"
    for _ in range(100):  # the policy's status counts its namespaces and their Webhooks
        if (await cluster.call("GET", f"{POLICIES}/shop-data")).get("status") == {
            "namespaces": 1,
            "webhooks": 2,
        }:
            break
        await asyncio.sleep(0.1)
    assert (await cluster.call("GET", f"{POLICIES}/shop-data"))["status"] == {"namespaces": 1, "webhooks": 2}

    nc = await bus.connect(nats_server.url)
    published: list[str] = []

    async def produce() -> None:
        n = 0
        while True:
            ids = [f"ev-{n + i}" for i in range(10)]
            n += 10
            events = [
                parse_event(
                    {
                        "id": i,
                        "type": "open",
                        "time": 1_700_000_000,
                        "recipient": "a@example.com",
                        "ip": "192.0.2.7",
                        "database": "newsletter",
                    }
                )
                for i in ids
            ]
            await bus.publish_events(nc, nc.jetstream(), events)
            published.extend(ids)
            await asyncio.sleep(0.05)

    producer = asyncio.create_task(produce())
    try:
        await wait_for(lambda: len(delivered(site)) >= 50, "deliveries flowing")
        # Revoked while events flow.
        await cluster.call("PATCH", f"{POLICIES}/shop-data", {"spec": grant("other")["spec"]})
        await wait_for(
            lambda: reason(cluster, "news") == "ScopeNotAllowed", "news: ScopeNotAllowed", within=15
        )
        at_notice = len(delivered(site))
        consumer = consumer_name(NS, "news")
        await wait_for(lambda: consumer not in member.roster(0).running, "the engine stopped")
        stopped_at = len(delivered(site))
        await asyncio.sleep(1.5)  # events keep coming: none may be delivered
        assert len(delivered(site)) == stopped_at, "delivered after its grant was revoked"
        print(
            f"\ntenancy: {at_notice} delivered when Ready said ScopeNotAllowed, {stopped_at} when the "
            f"engine had stopped, {len(published)} published so far"
        )
        assert (
            "spec.database: 'newsletter' is not granted"
            in condition(webhook(cluster, "news"), "Ready")["message"]
        )

        # Granted again: resumes from where it stopped.
        await cluster.call("PATCH", f"{POLICIES}/shop-data", {"spec": grant("newsletter")["spec"]})
        await wait_for(lambda: reason(cluster, "news") == "SenderAvailable", "news Ready again", within=30)
    finally:
        producer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await producer
        await nc.close()
    await wait_for(lambda: set(published) <= set(delivered(site)), "every event delivered", within=60)
    ids = delivered(site)
    print(f"tenancy: {len(published)} published, {len(set(ids))} delivered, {len(ids) - len(set(ids))} twice")
    assert set(ids) == set(published)


async def test_max_webhooks_stops_the_newest_and_a_deletion_lets_it_start(cluster, site, start_operator):
    limited = grant("newsletter")
    limited["spec"]["maxWebhooks"] = 1
    await cluster.call("POST", POLICIES, limited)
    await start_operator(tenancy_enforce=True)
    for name in ("first", "second"):
        await create_webhook(
            cluster, name, url=site.url(f"/hooks/{name}.php"), events=["open"], database="newsletter"
        )
        token = await wait_for(lambda n=name: token_of(cluster, n), f"{name}'s token")
        site.files[f"/hooks/hookline-{token}.txt"] = token
    await wait_for(lambda: cluster.get(DEPLOYMENTS, "first-sender"), "first's sender Deployment")
    await wait_for(lambda: reason(cluster, "second") == "ScopeNotAllowed", "second: over the limit")
    message = condition(webhook(cluster, "second"), "Ready")["message"]
    assert "may have 1 Webhooks" in message and "maxWebhooks" in message, message
    assert cluster.get(DEPLOYMENTS, "second-sender") is None

    # A dedicated sender outside its grant is scaled to 0, its Deployment kept for when it comes back.
    await cluster.call(
        "PATCH", f"{POLICIES}/shop-data", {"spec": {"databases": [{"name": "x", "collections": ["*"]}]}}
    )
    await wait_for(lambda: reason(cluster, "first") == "ScopeNotAllowed", "first: not granted")
    await wait_for(
        lambda: (cluster.get(DEPLOYMENTS, "first-sender") or {}).get("spec", {}).get("replicas") == 0,
        "first's sender scaled to 0",
    )
    await cluster.call("PATCH", f"{POLICIES}/shop-data", {"spec": limited["spec"]})
    await wait_for(
        lambda: (cluster.get(DEPLOYMENTS, "first-sender") or {}).get("spec", {}).get("replicas") == 1,
        "first's sender back to 1 replica",
    )
    await cluster.call("DELETE", api_path(WEBHOOKS, name="first"))
    await wait_for(lambda: cluster.get(DEPLOYMENTS, "second-sender"), "second starts once first is gone")


async def test_a_grants_egress_reaches_what_the_installation_floor_refuses(cluster, site, start_operator):
    """The site is on loopback; the installation allows only http, not loopback: the namespace's grant
    adds 127.0.0.0/8 for its Webhooks alone, for the ownership check and in the sender's config."""
    loopback = grant("newsletter")
    loopback["spec"]["egress"] = {"allowNetworks": ["127.0.0.0/8"]}
    await cluster.call("POST", POLICIES, loopback)
    await start_operator(tenancy_enforce=True, egress=EgressPolicy([], allow_http=True))
    await create_webhook(
        cluster, "news", url=site.url("/hooks/news.php"), events=["open"], database="newsletter"
    )
    token = await wait_for(lambda: token_of(cluster, "news"), "news's token")
    site.files[f"/hooks/hookline-{token}.txt"] = token
    await wait_for(
        lambda: condition(webhook(cluster, "news"), "Verified").get("status") == "True", "Verified"
    )
    rendered = await wait_for(
        lambda: (cluster.get(CONFIGMAPS, "news-sender") or {}).get("data"), "sender config"
    )
    config = yaml.safe_load(next(iter(rendered.values())))
    assert config["allowNetworks"] == ["127.0.0.0/8"] and config["allowHttp"] is True
    # A WebhookTest reaches the receiver through the grant's egress too ...
    await send_test(cluster, "t1")
    assert (await wait_for(lambda: phase_of(cluster, "t1"), "t1 finished")) == "Succeeded"
    # ... and none goes out once the grant is withdrawn.
    await cluster.call(
        "PATCH", f"{POLICIES}/shop-data", {"spec": {"databases": [{"name": "x", "collections": ["*"]}]}}
    )
    await wait_for(lambda: reason(cluster, "news") == "ScopeNotAllowed", "news: not granted")
    posts = len(site.posts())
    await send_test(cluster, "t2")
    assert (await wait_for(lambda: phase_of(cluster, "t2"), "t2 finished")) == "Failed"
    assert (cluster.get(TESTS, "t2") or {})["status"]["reason"] == "ScopeNotAllowed"
    assert len(site.posts()) == posts


async def send_test(cluster, name: str) -> None:
    body = {
        "apiVersion": "hookline.io/v1alpha1",
        "kind": "WebhookTest",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"webhook": "news", "event": "open", "data": {"recipient": "a@b.example", "ip": "192.0.2.1"}},
    }
    await cluster.call("POST", api_path(TESTS), body)


def phase_of(cluster, name: str) -> str | None:
    phase = ((cluster.get(TESTS, name) or {}).get("status") or {}).get("phase")
    return phase if phase in ("Succeeded", "Failed") else None


async def test_an_operator_restart_never_stops_a_granted_webhook(cluster, site, start_operator):
    """Kopf fills the grant indexes from full lists before any handler runs: the restarted operator's
    first reconcile already sees the grant (no ScopeNotAllowed in between, no sender scaled to 0)."""
    await cluster.call("POST", POLICIES, grant("newsletter"))
    first = await start_operator(tenancy_enforce=True)
    await create_webhook(
        cluster, "news", url=site.url("/hooks/news.php"), events=["open"], database="newsletter"
    )
    token = await wait_for(lambda: token_of(cluster, "news"), "news's token")
    site.files[f"/hooks/hookline-{token}.txt"] = token
    await wait_for(lambda: cluster.get(DEPLOYMENTS, "news-sender"), "the sender Deployment")
    await make_available(cluster, "news-sender", 1)
    await wait_for(lambda: reason(cluster, "news") == "SenderAvailable", "news Ready")
    await first.stop()
    await start_operator(tenancy_enforce=True)
    for _ in range(30):  # 1.5 s of the restarted operator's reconciles and grants loop
        assert reason(cluster, "news") == "SenderAvailable"
        assert cluster.get(DEPLOYMENTS, "news-sender")["spec"]["replicas"] == 1
        await asyncio.sleep(0.05)
    said = [e.get("message", "") for e in cluster.events_for("news")]
    assert not [m for m in said if "not granted" in m or "WebhookPolicy" in m], said
