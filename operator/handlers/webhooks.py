"""Webhook handlers: gather the facts, let rules/reconcile.py decide, apply what it planned.

Who writes what, so that no two writers race on a list:
- `reconcile_webhook` (create/resume/spec change) owns the token, verification, labels, the sender
  objects, status.sender.deployment/replicas (and mode/pool/replica of pooled Webhooks) and both
  conditions; every one of those writes is planned in rules/reconcile.py;
- `sender_observed` (any sender Deployment change) mirrors availability into status.sender of the
  owning Webhook, a dict field that merge patches cleanly;
- the loops (loops/health.py, loops/resumes.py, loops/poolsync.py) write status.delivery and the
  pooled Webhooks' status.sender.readyReplicas/engineProblem, within write budgets;
- `webhook_seen` (every Webhook event) recomputes Ready and Delivering from those facts with the same
  pure functions and writes the conditions only when one changed. It runs in the same per-object
  worker as the reconcile, so their writes are serialized by Kopf.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import kopf

from hookline.api import (
    RESUME_ANNOTATION,
    WEBHOOK_LABEL,
    ReadyReason,
    SenderMode,
    SpecError,
    WebhookStatus,
    checked_status,
    parse_webhook_spec,
)
from hookline.operator.adapters import kubeapi
from hookline.operator.adapters.consumers import ConsumerError
from hookline.operator.adapters.natsauth import ensure_sender_secret, revoke_sender
from hookline.operator.adapters.pools import pool_entry
from hookline.operator.adapters.proofs import check_webhook
from hookline.operator.handlers import grants
from hookline.operator.handlers.credentials import Gathered, ownership_client, show_credentials
from hookline.operator.handlers.events import post, write_conditions
from hookline.operator.handlers.ownership import DOMAIN_INDEX, domains_in, webhook_proof_seen
from hookline.operator.rules import desired, reconcile, verification
from hookline.operator.rules.domains import covering, domain_result
from hookline.operator.rules.placement import assigned_replica, placement, pool_place
from hookline.operator.rules.reconcile import (
    ApplyObject,
    EngineFacts,
    Facts,
    Hold,
    PoolPlace,
    PoolRemove,
    RemoveSender,
    Retry,
    SenderPlan,
    WebhookWrite,
)
from hookline.operator.rules.status import BusProblem, deployment_sender_status
from hookline.operator.runtime import Runtime, WebhookKey, runtime_of
from hookline.sender.bus import BusUnavailable
from hookline.sender.model.config import consumer_name
from hookline.sender.transport.ownership import OwnershipResult

# --- Webhook: reconcile --------------------------------------------------------------------------------


async def reconcile_webhook(
    body: kopf.Body,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    patch: kopf.Patch,
    memo: Any,
    logger: kopf.Logger,
    **kwargs: Any,
) -> None:
    rt = runtime_of(memo)
    started = time.perf_counter()
    try:
        domains = kwargs.get(DOMAIN_INDEX)
        await _reconcile(rt, body, spec, status, meta, patch, logger, domains, indexes=kwargs)
    finally:
        rt.metrics.reconcile.observe(time.perf_counter() - started)


async def _reconcile(
    rt: Runtime,
    body: kopf.Body,
    raw_spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    patch: kopf.Patch,
    logger: kopf.Logger,
    domain_index: Any = None,
    indexes: Mapping[str, Any] | None = None,
) -> None:
    facts = _gather(rt, body, raw_spec, status, meta)
    facts = _granted(rt, facts, indexes or {})
    facts = (
        replace(facts, domain=covering(domains_in(domain_index, facts.namespace), facts.spec.url))
        if facts.spec
        else facts
    )
    # 1. The Webhook alone: generation, labels, instructions; hold the sender of an unverified URL.
    intake = reconcile.intake(facts)
    _write(body, status, patch, intake.write, facts.generation)
    _raise(intake.retry)
    assert facts.spec is not None  # an invalid spec ended the pass above
    # Keys first, verified or not: a receiver can fetch the public key before its first delivery.
    creds = await show_credentials(rt, facts, body, patch)
    if intake.hold is not None:
        await _hold(rt, facts, intake.hold)
        _write(body, status, patch, intake.hold.write, facts.generation)
    if facts.stopped is not None:  # outside its grant: stopped like a pause, Ready says why
        blocked = reconcile.not_allowed(facts)
        if blocked.hold is not None:
            await _hold(rt, facts, blocked.hold)
            _write(body, status, patch, blocked.hold.write, facts.generation)
        _write(body, status, patch, blocked.write, facts.generation)
        return
    # 2. The ownership check, while spec.url is not verified.
    if intake.check_due:
        result = await _check_proof(rt, facts)
        rt.metrics.checks.labels(reason=result.reason).inc()
        checked = reconcile.checked(
            facts,
            result,
            schedule=rt.config.verification,
            sender=_sender_so_far(status, patch),
            now=datetime.now(UTC),
        )
        _write(body, status, patch, checked.write, facts.generation)
        _raise(checked.retry)
    # 3. The sender of a verified Webhook.
    engine = await _gather_engine(rt, facts, creds)
    plan = reconcile.sender_plan(
        facts,
        engine,
        config=rt.config,
        sender=_sender_so_far(status, patch),
        verified_url=_verified_url(status, patch),
        proof=_proof_so_far(status, patch),
    )
    await _apply_sender(rt, body, status, patch, facts, plan, logger)


async def _check_proof(rt: Runtime, facts: Facts) -> OwnershipResult:
    """A verified domain of the namespace covering spec.url proves it without a request; else the
    Webhook's own method (spec.verification.method): the file, or the TXT record."""
    assert facts.spec is not None
    if facts.domain is not None:
        return domain_result(facts.domain)
    method = facts.spec.verification.method
    # One tenant's hanging receivers cannot hold the client; spec.tls: its client certificate and CAs.
    async with rt.shares.slot(facts.namespace), ownership_client(rt, facts) as http:
        return await check_webhook(
            http, rt.dns, facts.spec.url, facts.token, method, check_timeout=rt.config.check_timeout
        )


def _proof_so_far(status: Mapping[str, Any], patch: kopf.Patch) -> dict[str, Any]:
    return {**(status.get("verification") or {}), **(patch.status.get("verification") or {})}


def _gather(rt: Runtime, body: kopf.Body, raw_spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta) -> Facts:
    """The facts at hand: the Webhook itself and what this operator remembers of it."""
    namespace, name = meta["namespace"], meta["name"]
    common: dict[str, Any] = {
        "owner": dict(body),
        "namespace": namespace,
        "name": name,
        "generation": meta.get("generation"),
        "labels": meta.get("labels") or {},
        "status": status,
    }
    try:
        spec = parse_webhook_spec(dict(raw_spec))
    except SpecError as exc:
        return Facts(**common, spec=None, spec_error=str(exc))
    token, is_new = verification.ensure_token(status, rt.new_token)
    return Facts(
        **common,
        spec=spec,
        token=token,
        token_is_new=is_new,
        place=_pool_place(rt, (namespace, name), status),
        bus_problem=rt.senders.bus_problems.get((namespace, name)),
    )


def _granted(rt: Runtime, facts: Facts, indexes: Mapping[str, Any]) -> Facts:
    """The facts with the namespace's grant and, outside it, why the Webhook may not run."""
    if facts.spec is None:
        return facts
    verdict = grants.verdict_for(rt, facts.namespace, facts.name, facts.spec, indexes)
    if verdict is None:
        return facts
    return replace(facts, grant=verdict.grant, stopped=verdict.problem)


async def _gather_engine(rt: Runtime, facts: Facts, creds: Gathered) -> EngineFacts:
    """Make the consumer; for a pooled Webhook read its signing key, seal its entry and find its
    replica. The first thing that fails ends the gathering: the plan holds the sender back."""
    assert facts.spec is not None
    key = (facts.namespace, facts.name)
    cfg = desired.sender_config(facts.namespace, facts.name, facts.spec, rt.config, facts.grant)
    place = placement(facts.spec, rt.config)
    engine = EngineFacts(cfg, place, place=_pool_place(rt, key, facts.status), secrets_digest=creds.digest)
    try:
        await rt.consumers.ensure(cfg)
    except ConsumerError as exc:
        return _with(engine, consumer_problem=exc.problem)
    if place.mode != SenderMode.POOL or desired.desired_replicas(facts.spec) == 0:
        return engine
    assert place.pool is not None
    try:
        if creds.problem is not None:
            raise LookupError(creds.problem)
        secret = creds.credentials
        uid = str((facts.owner.get("metadata") or {}).get("uid") or "")
        entry = pool_entry(cfg, secret, rt.pool_key, uid=uid, generation=facts.generation or 0).to_bytes()
    except (LookupError, ValueError) as exc:
        problem = BusProblem(
            f"{exc}; the pool engine starts once it can be read",
            permanent=True,
            reason=ReadyReason.SIGNING_SECRET_UNAVAILABLE,
        )
        return _with(engine, entry_problem=problem)
    if not rt.pools.listed.is_set():  # just started: place it once the pools are known
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(rt.pools.listed.wait(), rt.config.pool_sync.listed_wait_seconds)
    replica = assigned_replica(cfg.nats.consumer, rt.pools.replicas.get(place.pool, 0))
    running = rt.pools.running(place.pool, replica, cfg.nats.consumer)
    return _with(engine, entry=entry, replica=replica, running=running)


def _with(engine: EngineFacts, **changes: Any) -> EngineFacts:
    return replace(engine, **changes)


def _pool_place(rt: Runtime, key: WebhookKey, status: Mapping[str, Any]) -> tuple[str, int | None] | None:
    return rt.pools.placed.get(key) or pool_place(status)


async def _hold(rt: Runtime, facts: Facts, hold: Hold) -> None:
    """A changed URL is not verified yet: the old sender stops (events wait in the stream)."""
    key = (facts.namespace, facts.name)
    if hold.pool is not None:
        try:
            await rt.directory.remove(consumer_name(*key), hold.pool)
        except ConsumerError as exc:
            raise kopf.TemporaryError(
                exc.problem.message, delay=rt.config.reconcile.bus_retry_seconds
            ) from None
        rt.pools.placed.pop(key, None)
        rt.senders.seen.pop(key, None)
    elif hold.deployment is not None:
        await rt.api.patch(
            f"{kubeapi.deployments(facts.namespace)}/{hold.deployment}", {"spec": {"replicas": 0}}
        )


async def _apply_sender(
    rt: Runtime,
    body: kopf.Body,
    status: kopf.Status,
    patch: kopf.Patch,
    facts: Facts,
    plan: SenderPlan,
    logger: kopf.Logger,
) -> None:
    """The pool step, the objects, then the writes; a failed pool step holds the sender back."""
    key = (facts.namespace, facts.name)
    if plan.retry is None and plan.pool_step is not None:
        try:
            await _pool_step(rt, key, plan.pool_step)
        except ConsumerError as exc:
            plan = reconcile.held_back(
                facts,
                exc.problem,
                sender=_sender_so_far(status, patch),
                timing=rt.config.reconcile,
                delay=rt.config.reconcile.bus_retry_seconds,
            )
    if plan.bus_problem is None:
        rt.senders.bus_problems.pop(key, None)
    else:
        rt.senders.bus_problems[key] = plan.bus_problem
    if plan.retry is None:
        for step in plan.objects:
            await _apply_object(rt, body, step, logger)
    _write(body, status, patch, plan.write, facts.generation)
    _raise(plan.retry)


async def _pool_step(rt: Runtime, key: WebhookKey, step: PoolPlace | PoolRemove) -> None:
    if isinstance(step, PoolRemove):
        await rt.directory.remove(step.consumer, step.where)
        rt.pools.placed.pop(key, None)
        rt.senders.seen.pop(key, None)
        return
    await rt.directory.place(step.consumer, step.entry, step.pool, step.replica, step.old)
    rt.pools.placed[key] = (step.pool, step.replica)
    rt.senders.seen[key] = step.seen


async def _apply_object(
    rt: Runtime, body: kopf.Body, step: ApplyObject | RemoveSender, logger: kopf.Logger
) -> None:
    if isinstance(step, RemoveSender):
        sender = desired.sender_name(step.name)
        for collection in (kubeapi.deployments(step.namespace), kubeapi.configmaps(step.namespace)):
            with contextlib.suppress(kubeapi.NotFound):
                await rt.api.delete(f"{collection}/{sender}")
        return
    meta = step.want["metadata"]
    if step.kind == "ConfigMap":
        await _create_or_replace(rt, kubeapi.configmaps(meta["namespace"]), step.want)
        return
    if rt.nats_minter is not None:  # the sender's own NATS user, before the pods that mount it
        await ensure_sender_secret(rt.api, rt.nats_minter, dict(body))
    outcome = await _create_or_replace(rt, kubeapi.deployments(meta["namespace"]), step.want)
    event = reconcile.sender_event(outcome, meta["name"], step.config_hash)
    if event is not None:
        post(body, event)
    logger.debug(f"sender {meta['name']}: {outcome}")


async def _create_or_replace(rt: Runtime, collection: str, want: dict[str, Any]) -> str:
    """Create, or replace when something differs: 'created', 'updated' or 'unchanged'.

    A replace, not a merge patch: a merge patch keeps fields the operator no longer sets. The
    resourceVersion guards the replace; on a Conflict (the Deployment controller writes status all the
    time) the object is read again and the decision made afresh.
    """
    url = f"{collection}/{want['metadata']['name']}"
    timing = rt.config.reconcile
    for _ in range(timing.replace_attempts):
        have = await rt.api.get(url)
        if have is None:
            try:
                await rt.api.create(collection, want)
                return "created"
            except kubeapi.Conflict:
                continue  # created meanwhile: read it and compare
        if not desired.differs(want, have):
            return "unchanged"
        try:
            await rt.api.replace(url, desired.replacement(want, have))
            return "updated"
        except kubeapi.Conflict:
            continue  # changed meanwhile: read it again
    raise kopf.TemporaryError(
        f"{url} kept changing while being updated; retrying", delay=timing.replace_retry_seconds
    )


def _write(
    body: kopf.Body, status: Mapping[str, Any], patch: kopf.Patch, write: WebhookWrite, generation: int | None
) -> None:
    """One stage's writes into Kopf's patch (see WebhookWrite)."""
    if write.labels:
        patch.metadata["labels"] = dict(write.labels)
    for part, value in write.status.items():
        if part == "verification":
            value = {**(patch.status.get("verification") or {}), **value}
        # Through the typed status model: a field the CRD does not declare fails here, not in the API.
        patch.status[part] = checked_status(WebhookStatus, {part: value})[part]
    if write.conditions:
        write_conditions(body, status, patch, write.conditions, generation)


def _raise(retry: Retry | None) -> None:
    if retry is None:
        return
    if retry.delay is None:
        raise kopf.PermanentError(retry.message)
    raise kopf.TemporaryError(retry.message, delay=retry.delay)


def _sender_so_far(status: Mapping[str, Any], patch: kopf.Patch) -> dict[str, Any]:
    return {**(status.get("sender") or {}), **(patch.status.get("sender") or {})}


def _verified_url(status: Mapping[str, Any], patch: kopf.Patch) -> str | None:
    fresh = patch.status.get("verification") or {}
    return fresh.get("verifiedURL") or (status.get("verification") or {}).get("verifiedURL")


# --- Webhook: every event (Ready from the facts; metrics) ---------------------------------------------


async def webhook_seen(
    event: Mapping[str, Any],
    body: kopf.Body,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    patch: kopf.Patch,
    memo: Any,
    **_: Any,
) -> None:
    rt = runtime_of(memo)
    key = namespace, name = meta["namespace"], meta["name"]
    if event.get("type") == "DELETED":
        rt.metrics.webhooks.forget(namespace, name)
        rt.forget(key)
        rt.tenancy.dirty.set()  # under maxWebhooks, a newer one may start now
        return
    database = spec.get("database")
    rt.metrics.webhooks.observe(
        namespace, name, str(database) if database else None, status.get("conditions")
    )
    if meta.get("deletionTimestamp"):
        return
    try:
        parsed = parse_webhook_spec(dict(spec))
    except SpecError:
        return  # the reconcile reports it
    rt.credentials.watch(namespace, name, parsed)  # the Secrets it reads wake it (handlers/credentials.py)
    if status.get("signing"):
        rt.credentials.public[key] = dict(status["signing"])  # the JWKS endpoint's source
    webhook_proof_seen(rt, namespace, name, str(meta.get("uid") or ""), parsed, status)
    if not reconcile.verified_now(status, parsed):
        return  # the reconcile owns Ready until the Webhook is verified
    rt.delivery.seen[key] = dict(status.get("delivery") or {})
    rt.delivery.resume_asks[key] = ((meta.get("annotations") or {}).get(RESUME_ANNOTATION), parsed.url)
    stopped = rt.tenancy.stopped.get(key)
    changed = reconcile.observed(namespace, name, parsed, status, rt.senders.bus_problems.get(key), stopped)
    if changed:
        write_conditions(body, status, patch, changed, meta.get("generation"))


# --- sender Deployments: mirror availability into the Webhook ------------------------------------------


async def sender_observed(event: Mapping[str, Any], body: kopf.Body, memo: Any, **_: Any) -> None:
    rt = runtime_of(memo)
    meta = body.get("metadata") or {}
    webhook = (meta.get("labels") or {}).get(WEBHOOK_LABEL)
    if not webhook:
        return
    key = (meta["namespace"], webhook)
    if event.get("type") == "DELETED":
        rt.senders.seen.pop(key, None)
        return
    seen = deployment_sender_status(body)
    if rt.senders.seen.get(key) == seen:
        return
    if await rt.api.patch(kubeapi.webhook(*key, sub="status"), {"status": {"sender": seen}}) is not None:
        rt.senders.seen[key] = seen


# --- Webhook: deletion ---------------------------------------------------------------------------------


async def webhook_deleted(
    body: kopf.Body, meta: kopf.Meta, memo: Any, retry: int, logger: kopf.Logger, **_: Any
) -> None:
    """Remove the JetStream consumer; a NATS outage delays deletion a little, never forever."""
    rt = runtime_of(memo)
    name = consumer_name(meta["namespace"], meta["name"])
    key = (meta["namespace"], meta["name"])
    try:
        place = _pool_place(rt, key, body.get("status") or {})
        if place is not None:
            await rt.directory.remove(name, place)
            rt.pools.placed.pop(key, None)
        removed = await rt.consumers.delete(name)
    except BusUnavailable as exc:
        if retry + 1 < rt.config.consumer_delete_attempts:
            raise kopf.TemporaryError(str(exc), delay=rt.config.consumer_delete_delay) from None
        kopf.warn(
            body,
            reason="ConsumerNotRemoved",
            message=f"{exc}; gave up after {retry + 1} attempts. Remove it by hand: "
            f"nats consumer rm HOOKLINE_EVENTS {name}",
        )
        return
    logger.info(f"consumer {name} {'removed' if removed else 'was already gone'}")
    if rt.nats_minter is not None:  # a copied creds file stops working now, not at garbage collection
        attempts, delay = rt.config.consumer_delete_attempts, rt.config.consumer_delete_delay
        await revoke_sender(rt.nats_minter, body, retry=retry, attempts=attempts, delay=delay)
    with contextlib.suppress(BusUnavailable):
        await rt.consumers.forget_health(meta["namespace"], meta["name"])
