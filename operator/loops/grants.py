"""The grants loop: after a WebhookPolicy, a namespace's labels or a namespace's Webhooks changed,
(1) bump ``tenancy.hookline.io/grant`` on every Webhook whose standing changed, so its reconcile stops or
starts its sender within seconds; (2) compile every namespace's grant into the ConfigMap the chart's
ValidatingAdmissionPolicy reads (CEL cannot take a union over several objects); (3) count each
policy's namespaces and Webhooks into its status. Woken by handlers/grants.py, coalesced over
``grants_debounce_seconds``; it writes only what changed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from hookline.api import API_VERSION
from hookline.api.policy import GRANT_ANNOTATION, POLICY_PLURAL, grant_record
from hookline.operator.adapters import kubeapi
from hookline.operator.handlers.grants import NAMESPACES, WEBHOOKS, grant_of, policies, webhooks_in
from hookline.operator.rules import tenancy
from hookline.operator.runtime import Runtime
from hookline.sender.bus.poolgrants import GrantRecord, publish_grant
from hookline.sender.bus.poolproto import pool_bucket

log = logging.getLogger(__name__)


async def follow_grants(rt: Runtime) -> None:
    while True:
        await rt.tenancy.dirty.wait()
        await asyncio.sleep(rt.config.grants_debounce_seconds)
        rt.tenancy.dirty.clear()
        try:
            await apply_grants(rt)
        except Exception as exc:  # the next change (or the retry below) tries again
            log.warning("grants not applied: %s; again in a few seconds", exc)
            await asyncio.sleep(5)
            rt.tenancy.dirty.set()


async def apply_grants(rt: Runtime) -> None:
    indexes = rt.tenancy.indexes
    if WEBHOOKS not in indexes or NAMESPACES not in indexes:
        return
    webhook_index = indexes[WEBHOOKS]
    await _publish_pool_grants(rt)  # before any engine is placed again under a changed grant
    for namespace in list(webhook_index):
        grant = grant_of(rt, namespace)
        by_age = webhooks_in(rt, namespace)
        ranked = by_age if grant.max_webhooks is not None else []  # as verdict_for ranks them
        await asyncio.sleep(0)  # thousands of namespaces: let the handlers run in between
        for name in by_age:
            key = (namespace, name)
            known = rt.tenancy.digests.get(key)
            if known is None:
                continue  # not reconciled yet: its reconcile reads the grant as it is now
            standing = tenancy.standing(grant, ranked, name)
            if standing != known:
                await _bump(rt, namespace, name, standing)
    if rt.config.grants_configmap:
        await _compile(rt)
    await _count(rt)


async def _bump(rt: Runtime, namespace: str, name: str, standing: str) -> None:
    """A new annotation value runs the Webhook's reconcile (the time keeps a flip back a change)."""
    value = f"{standing}.{int(time.time() * 1000)}"
    body = {"metadata": {"annotations": {GRANT_ANNOTATION: value}}}
    try:
        await rt.api.patch(kubeapi.webhook(namespace, name), body)
    except kubeapi.APIError as exc:
        log.warning("%s/%s: grant change not signalled: %s; trying again", namespace, name, exc)
        rt.tenancy.dirty.set()


async def _publish_pool_grants(rt: Runtime) -> None:
    """One authenticated record per namespace whose grant adds egress (``g.<namespace>`` in
    HOOKLINE_POOLS): pool replicas take egress from it, never from an entry (bus/poolgrants.py)."""
    if rt.pool_key is None:
        return
    want: dict[str, GrantRecord] = {}
    for namespace in list(rt.tenancy.indexes[WEBHOOKS]):
        grant = grant_of(rt, namespace)
        if grant.allow_networks or grant.allow_http:
            want[namespace] = GrantRecord(namespace, grant.allow_networks, grant.allow_http)
    changed = {ns: r for ns, r in want.items() if rt.tenancy.published.get(ns) != r}
    gone = [ns for ns in rt.tenancy.published if ns not in want]
    if not changed and not gone:
        return

    async def write(js: Any) -> None:
        kv = await pool_bucket(js)
        for namespace, record in changed.items():
            await publish_grant(kv, rt.pool_key, namespace, record)
        for namespace in gone:
            await publish_grant(kv, rt.pool_key, namespace, None)

    await rt.consumers.call("writing the pools' grant records", write)
    rt.tenancy.published = dict(want)


async def _compile(rt: Runtime) -> None:
    assert rt.config.grants_configmap
    namespace, _, name = rt.config.grants_configmap.partition("/")
    data: dict[str, str] = {}
    named = {ns for _, spec in policies(rt) for ns in spec.namespaces}
    for ns in sorted(set(rt.tenancy.indexes[NAMESPACES]) | set(rt.tenancy.indexes[WEBHOOKS]) | named):
        data.update(grant_record(ns, grant_of(rt, ns)))
        await asyncio.sleep(0)
    if data == rt.tenancy.compiled:
        return
    url = kubeapi.configmaps(namespace, name)
    have = await rt.api.get(url)
    if have is None:
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace}}
        await rt.api.create(kubeapi.configmaps(namespace), {**body, "data": data})
    else:
        old = have.get("data") or {}
        await rt.api.patch(url, {"data": {**dict.fromkeys(k for k in old if k not in data), **data}})
    rt.tenancy.compiled = data
    log.info("grants compiled for the admission policy: %d namespaces granted", len(data) // 3)


async def _count(rt: Runtime) -> None:
    webhook_index = rt.tenancy.indexes[WEBHOOKS]
    per_namespace = {ns: len(webhook_index[ns]) for ns in list(webhook_index)}
    namespaces = {ns: dict(next(iter(v), {})) for ns, v in rt.tenancy.indexes[NAMESPACES].items()}
    counts = tenancy.policy_counts(policies(rt), namespaces, per_namespace)
    for name, (selected, webhooks) in counts.items():
        if rt.tenancy.counted.get(name) == (selected, webhooks):
            continue
        url = f"/apis/{API_VERSION}/{POLICY_PLURAL}/{name}/status"
        try:
            written = await rt.api.patch(url, {"status": {"namespaces": selected, "webhooks": webhooks}})
        except kubeapi.APIError as exc:
            log.warning("WebhookPolicy %s: status not written: %s", name, exc)
            continue
        if written is not None:
            rt.tenancy.counted[name] = (selected, webhooks)
