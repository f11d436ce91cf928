"""Sender pools, kept in step from the operator's side: each pool's replica count (its StatefulSet),
the pooled Webhooks' assignments when it changes (`rebalance`), and their status.sender from the
replicas' rosters (`mirror_pool_senders`, within a write budget). The placement decisions are pure
(operator/pools.py); the reconcile that places a Webhook is in handlers.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import kopf

from hookline.api import SenderMode
from hookline.operator.adapters import kubeapi, pools
from hookline.operator.adapters.consumers import ConsumerError
from hookline.sender.model.config import consumer_name

if TYPE_CHECKING:
    from hookline.operator.handlers.webhooks import Runtime

log = logging.getLogger(__name__)

STATEFULSETS = ("apps", "v1", "statefulsets")
POOL_SELECTOR = {"app.kubernetes.io/name": "hookline", "app.kubernetes.io/component": "sender-pool"}
POOL_LABEL = "hookline.io/pool"


def pool_place(status: Mapping[str, Any]) -> tuple[str, int | None] | None:
    """Where status says the Webhook's pool engine was assigned (what the operator wrote last)."""
    sender = status.get("sender") or {}
    if sender.get("mode") != SenderMode.POOL or not sender.get("pool"):
        return None
    replica = sender.get("replica")
    return str(sender["pool"]), (int(replica) if isinstance(replica, int) else None)


def roster_running(rt: Runtime, pool: str, replica: int | None, consumer: str) -> bool:
    roster = rt.rosters.get((pool, replica)) if replica is not None else None
    return roster is not None and roster.alive(time.time()) and consumer in roster.consuming


def roster_problem(rt: Runtime, pool: str, replica: int | None, consumer: str) -> str | None:
    """Why the replica does not run this engine, as its roster says (or that it reports nothing)."""
    if replica is None:
        return None
    roster = rt.rosters.get((pool, replica))
    if roster is None or not roster.alive(time.time()):
        return f"replica {replica} of pool {pool} reports nothing (down, or not started)"
    problem = roster.problems.get(consumer)
    return problem[:512] if problem else None


def _pool_replicas_of(statefulset: Mapping[str, Any]) -> tuple[str | None, int]:
    meta = statefulset.get("metadata") or {}
    pool = (meta.get("labels") or {}).get(POOL_LABEL)
    replicas = (statefulset.get("spec") or {}).get("replicas")
    return pool, int(replicas) if isinstance(replicas, int) else 1


async def pool_observed(event: Mapping[str, Any], body: kopf.Body, memo: Any, **_: Any) -> None:
    """A pool StatefulSet was created, scaled or removed: reassign its Webhooks where that changed."""
    rt: Runtime = memo.runtime
    pool, replicas = _pool_replicas_of(body)
    if not pool:
        return
    if event.get("type") == "DELETED":
        replicas = 0
    if rt.pool_replicas.get(pool) == replicas:
        return
    rt.pool_replicas[pool] = replicas
    await rebalance(rt, pool)


async def rebalance(rt: Runtime, pool: str) -> None:
    """Move the pool's Webhooks whose replica changed (about 1/N of them when a replica is added)."""
    replicas = rt.pool_replicas.get(pool, 0)
    moves = [
        (key, old, pools.assigned_replica(consumer_name(*key), replicas))
        for key, (where, old) in list(rt.pooled.items())
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
        rt.pooled[key] = (pool, new)
        running = roster_running(rt, pool, new, consumer)
        moved += 1
        body = {"status": {"sender": pools.pool_sender_status(pool, new, running=running)}}
        try:
            written = await rt.api.patch(kubeapi.webhook(*key, sub="status"), body)
        except kubeapi.APIError as exc:  # the mirror loop writes readyReplicas; replica waits for a reconcile
            log.warning("status.sender of %s/%s not written after its move: %s", *key, exc)
            continue
        if written is not None:
            rt.sender_seen[key] = pools.pool_seen(running and new is not None)
    if moved:
        log.info("pool %s: %d replicas; %d Webhooks moved", pool, replicas, moved)


async def list_pools(rt: Runtime) -> None:
    """The pools there are before a pooled Webhook is placed, so a restart does not flap them."""
    selector = ",".join(f"{k}%3D{v}" for k, v in POOL_SELECTOR.items())
    try:
        listing = await rt.api.get(f"/apis/apps/v1/statefulsets?labelSelector={selector}")
        for item in (listing or {}).get("items") or []:
            pool, replicas = _pool_replicas_of(item)
            if pool:
                rt.pool_replicas.setdefault(pool, replicas)  # the watch may have been first
    except kubeapi.APIError as exc:
        log.warning("sender pools not listed: %s; learned from the watch instead", exc)
    finally:
        rt.pools_listed.set()


ROSTER_WATCH_RETRY_SECONDS = 5.0
POOLS_LISTED_WAIT_SECONDS = 30.0
POOL_MIRROR_TICK_SECONDS = 1.0


async def watch_pool_rosters(rt: Runtime) -> None:
    """Keep every pool replica's latest roster (one NATS watch for all pools)."""
    while True:
        try:
            async for roster in rt.directory.rosters():
                rt.rosters[(roster.pool, roster.replica)] = roster
        except Exception as exc:
            log.debug("pool rosters not watched: %s; again in %g s", exc, ROSTER_WATCH_RETRY_SECONDS)
        await asyncio.sleep(ROSTER_WATCH_RETRY_SECONDS)


async def mirror_pool_senders(rt: Runtime) -> None:
    """status.sender.readyReplicas of each pooled Webhook from its replica's roster, within the
    status write budget; webhook_seen then derives Ready from it."""
    tick = POOL_MIRROR_TICK_SECONDS
    budget = max(1, int(rt.config.pool_status_writes_per_second * tick))
    while True:
        await asyncio.sleep(tick)
        writes = 0
        for key, (pool, replica) in list(rt.pooled.items()):
            if writes >= budget:
                break
            consumer = consumer_name(*key)
            running = roster_running(rt, pool, replica, consumer)
            seen = pools.pool_seen(running, None if running else roster_problem(rt, pool, replica, consumer))
            if rt.sender_seen.get(key) == seen:
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
                rt.pooled.pop(key, None)
                continue
            rt.sender_seen[key] = seen
            rt.metrics.status_writes.inc()
