"""Sender pools, kept in step from the operator's side: each pool's replica count (its StatefulSet),
the pooled Webhooks' assignments when it changes (`rebalance`), and their status.sender from the
replicas' rosters (`mirror_pool_senders`, within a write budget). The placement decisions are pure
(rules/placement.py); the reconcile that places a Webhook is in handlers/webhooks.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from hookline.operator.adapters import kubeapi
from hookline.operator.adapters.consumers import ConsumerError
from hookline.operator.rules.placement import assigned_replica, pool_seen, pool_sender_status
from hookline.operator.runtime import Runtime, runtime_of
from hookline.sender.model.config import consumer_name

log = logging.getLogger(__name__)

STATEFULSETS = ("apps", "v1", "statefulsets")
POOL_SELECTOR = {"app.kubernetes.io/name": "hookline", "app.kubernetes.io/component": "sender-pool"}
POOL_LABEL = "hookline.io/pool"


def _pool_replicas_of(statefulset: Mapping[str, Any]) -> tuple[str | None, int]:
    meta = statefulset.get("metadata") or {}
    pool = (meta.get("labels") or {}).get(POOL_LABEL)
    replicas = (statefulset.get("spec") or {}).get("replicas")
    return pool, int(replicas) if isinstance(replicas, int) else 1


async def pool_observed(event: Mapping[str, Any], body: kopf.Body, memo: Any, **_: Any) -> None:
    """A pool StatefulSet was created, scaled or removed: reassign its Webhooks where that changed."""
    rt = runtime_of(memo)
    pool, replicas = _pool_replicas_of(body)
    if not pool:
        return
    if event.get("type") == "DELETED":
        replicas = 0
    if rt.pools.replicas.get(pool) == replicas:
        return
    rt.pools.replicas[pool] = replicas
    await rebalance(rt, pool)


async def rebalance(rt: Runtime, pool: str) -> None:
    """Move the pool's Webhooks whose replica changed (about 1/N of them when a replica is added)."""
    replicas = rt.pools.replicas.get(pool, 0)
    moves = [
        (key, old, assigned_replica(consumer_name(*key), replicas))
        for key, (where, old) in list(rt.pools.placed.items())
        if where == pool
    ]
    moved = 0
    for key, old, new in moves:
        if old == new:
            continue
        consumer = consumer_name(*key)
        try:
            stored = await rt.directory.move(consumer, pool, new, old)
        except ConsumerError as exc:
            log.warning("pool %s: %s/%s not moved: %s; moved at its next reconcile", pool, *key, exc)
            continue
        if not stored:
            continue
        rt.pools.placed[key] = (pool, new)
        running = rt.pools.running(pool, new, consumer)
        moved += 1
        body = {"status": {"sender": pool_sender_status(pool, new, running=running)}}
        try:
            written = await rt.api.patch(kubeapi.webhook(*key, sub="status"), body)
        except kubeapi.APIError as exc:  # the mirror loop writes readyReplicas; replica waits for a reconcile
            log.warning("status.sender of %s/%s not written after its move: %s", *key, exc)
            continue
        if written is not None:
            rt.senders.seen[key] = pool_seen(running and new is not None)
    if moved:
        log.info("pool %s: %d replicas; %d Webhooks moved", pool, replicas, moved)


async def list_pools(rt: Runtime) -> None:
    """The pools there are before a pooled Webhook is placed, so a restart does not flap them."""
    selector = ",".join(f"{k}%3D{v}" for k, v in POOL_SELECTOR.items())
    # Serving listed namespaces (chart operator.watchNamespaces: Roles, no cluster-wide list), each
    # of them; glob patterns are left to the watch.
    scopes = [f"namespaces/{ns}/" for ns in rt.config.namespaces if not any(c in ns for c in "*?[")]
    if not rt.config.namespaces:
        scopes = [""]
    try:
        for scope in scopes:
            listing = await rt.api.get(f"/apis/apps/v1/{scope}statefulsets?labelSelector={selector}")
            for item in (listing or {}).get("items") or []:
                pool, replicas = _pool_replicas_of(item)
                if pool:
                    rt.pools.replicas.setdefault(pool, replicas)  # the watch may have been first
    except kubeapi.APIError as exc:
        log.warning("sender pools not listed: %s; learned from the watch instead", exc)
    finally:
        rt.pools.listed.set()


async def watch_pool_rosters(rt: Runtime) -> None:
    """Keep every pool replica's latest roster (one NATS watch for all pools)."""
    retry = rt.config.pool_sync.roster_watch_retry_seconds
    while True:
        try:
            async for roster in rt.directory.rosters():
                rt.pools.rosters[(roster.pool, roster.replica)] = roster
        except Exception as exc:
            log.debug("pool rosters not watched: %s; again in %g s", exc, retry)
        await asyncio.sleep(retry)


async def mirror_pool_senders(rt: Runtime) -> None:
    """status.sender.readyReplicas of each pooled Webhook from its replica's roster, within the
    status write budget; webhook_seen then derives Ready from it."""
    tick = rt.config.pool_sync.mirror_tick_seconds
    budget = max(1, int(rt.config.pool_status_writes_per_second * tick))
    while True:
        await asyncio.sleep(tick)
        writes = 0
        for key, (pool, replica) in list(rt.pools.placed.items()):
            if writes >= budget:
                break
            consumer = consumer_name(*key)
            running = rt.pools.running(pool, replica, consumer)
            seen = pool_seen(running, None if running else rt.pools.problem(pool, replica, consumer))
            if rt.senders.seen.get(key) == seen:
                continue
            writes += 1
            try:
                written = await rt.api.patch(
                    kubeapi.webhook(*key, sub="status"), {"status": {"sender": seen}}
                )
            except kubeapi.APIError as exc:
                log.warning("status.sender of %s/%s not written: %s; trying again", *key, exc)
                continue
            if written is None:
                rt.pools.placed.pop(key, None)
                continue
            rt.senders.seen[key] = seen
            rt.metrics.status_writes.inc()
