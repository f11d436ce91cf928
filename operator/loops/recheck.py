"""Periodic re-verification of every proof: one loop for the whole installation.

No per-object timer (10,000 Kopf timers would be 10,000 tasks waking on their own): the proofs live in
``Runtime.ownership.proofs`` (kept from each object's status by webhook_seen and domain_seen), and
this loop takes the due ones, longest overdue first, from a token bucket
(``RecheckSchedule.checks_per_second``), so customers' servers and DNS see a bounded, jittered load
whatever the number of Webhooks. What a re-check writes and says is decided in rules/recheck.py; a
Webhook whose proof lapsed is handed to its reconcile (which pauses its sender and checks it on the
reconcile's schedule until the proof is back); a domain's change re-evaluates its Webhooks through
domain_seen.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from typing import Any

from hookline.api import API_VERSION, WEBHOOK_KIND, WebhookStatus, checked_status
from hookline.api.domain import DomainStatus
from hookline.operator.adapters import kubeapi
from hookline.operator.adapters.proofs import check_domain, check_webhook, post_event
from hookline.operator.handlers.ownership import domain_path, domain_ref, poke
from hookline.operator.rules import domains
from hookline.operator.rules.recheck import Proof, ProofKey, TokenBucket, after_recheck, due_now, rfc3339_at
from hookline.operator.rules.status import Announcement, announcements, merge_conditions
from hookline.operator.runtime import Runtime
from hookline.sender.transport.ownership import OwnershipResult

log = logging.getLogger(__name__)


async def recheck_proofs(rt: Runtime) -> None:
    """Check every due proof again, within the installation's rate."""
    schedule = rt.config.recheck
    bucket = TokenBucket(schedule.checks_per_second, schedule.burst)
    running: dict[ProofKey, asyncio.Task[None]] = {}
    while True:
        await asyncio.sleep(schedule.tick)
        now = time.time()
        due = due_now(
            list(rt.ownership.proofs.values()),
            now,
            schedule,
            first_delay=rt.config.verification.first_delay,
            max_delay=rt.config.verification.max_delay,
        )
        for proof in due:
            if proof.key in running:
                continue
            if not bucket.take(now):
                break
            task = asyncio.create_task(_recheck(rt, proof), name=f"recheck {'/'.join(proof.key)}")
            running[proof.key] = task
            task.add_done_callback(lambda _, key=proof.key: running.pop(key, None))


async def check_proof(rt: Runtime, proof: Proof) -> OwnershipResult:
    """The one outbound check of a proof (a file's GETs, or one TXT lookup)."""
    timeout = rt.config.check_timeout
    async with rt.shares.slot(proof.namespace):  # the namespace's share of the outbound client
        if proof.kind == "Webhook":
            return await check_webhook(
                rt.http, rt.dns, proof.target, proof.token, proof.method, check_timeout=timeout
            )
        seen = rt.ownership.domains[(proof.namespace, proof.name)]
        allow_http = rt.config.egress.allow_http
        return await check_domain(
            rt.http, rt.dns, seen.spec, proof.token, allow_http=allow_http, check_timeout=timeout
        )


async def _recheck(rt: Runtime, proof: Proof) -> None:
    now = time.time()
    try:
        result = await check_proof(rt, proof)
    except Exception as exc:  # a bug or a vanished domain: log it, try again next time it is due
        log.warning("re-check of %s failed to run: %s", "/".join(proof.key), exc)
        _keep(rt, replace(proof, last_checked=now))
        return
    rt.metrics.checks.labels(reason=result.reason).inc()
    if not result.verified:
        rt.metrics.recheck_failures.labels(kind=proof.kind).inc()
    try:
        if proof.kind == "Webhook":
            await _webhook_rechecked(rt, proof, result, now)
        else:
            await _domain_rechecked(rt, proof, result, now)
    except kubeapi.APIError as exc:
        log.warning("re-check of %s not written: %s; again when due", "/".join(proof.key), exc)
        _keep(rt, replace(proof, last_checked=now))


def _keep(rt: Runtime, proof: Proof) -> None:
    """Remember a re-checked proof, unless its object went meanwhile (deleted, or handed to its
    reconcile): a late re-check must not bring it back."""
    if proof.key in rt.ownership.proofs:
        rt.ownership.proofs[proof.key] = proof


async def _post(rt: Runtime, ref: dict[str, Any], event: Announcement | None) -> None:
    if event is not None:
        await post_event(rt.api, ref, event.kind, event.reason, event.message)


async def _webhook_rechecked(rt: Runtime, proof: Proof, result: OwnershipResult, now: float) -> None:
    outcome = after_recheck(proof, result, now, rt.config.recheck)
    patch = checked_status(WebhookStatus, {"verification": outcome.fields})
    url = kubeapi.webhook(proof.namespace, proof.name, sub="status")
    if await rt.api.patch(url, {"status": patch}) is None:
        rt.ownership.forget_webhook(proof.namespace, proof.name)
        return
    failing = None if result.verified else (proof.failing_since or now)
    _keep(rt, replace(proof, last_checked=now, failing_since=failing))
    ref = {
        "apiVersion": API_VERSION,
        "kind": WEBHOOK_KIND,
        "metadata": {"namespace": proof.namespace, "name": proof.name, "uid": proof.uid},
    }
    await _post(rt, ref, outcome.event)
    if outcome.lapsed:
        rt.ownership.proofs.pop(proof.key, None)  # the reconcile pauses it and checks until it is back
        rt.ownership.lapsed[proof.key] = True
        await poke(rt, [(proof.namespace, proof.name)], "its proof lapsed")


async def _domain_rechecked(rt: Runtime, proof: Proof, result: OwnershipResult, now: float) -> None:
    seen = rt.ownership.domains.get((proof.namespace, proof.name))
    if seen is None:
        return
    stamp = rfc3339_at(now)
    updates = []
    event = None
    if proof.verified and not proof.lapsed:
        outcome = after_recheck(proof, result, now, rt.config.recheck)
        fields, event = dict(outcome.fields), outcome.event
        if outcome.lapsed:
            updates.append(domains.lapsed_condition(seen.spec, result.message))
            event = None  # the condition's change is announced below
    else:
        fields, condition = domains.checked(seen.spec, seen.status, result, stamp)
        updates.append(condition)
    ref = domain_ref(proof.namespace, proof.name, seen.uid)
    if updates:
        before = seen.status.get("conditions")
        after = merge_conditions(before, updates, generation=None, now=stamp)
        if after != list(before or []):
            fields["conditions"] = after
            for announcement in announcements(before, after):
                await _post(rt, ref, announcement)
    patch = DomainStatus.model_validate(fields).patch()
    patch.update({k: None for k, v in fields.items() if v is None})
    if await rt.api.patch(domain_path(proof.namespace, proof.name, "status"), {"status": patch}) is None:
        rt.ownership.proofs.pop(proof.key, None)
        return
    await _post(rt, ref, event)
    checks = proof.checks if result.verified else proof.checks + 1
    _keep(rt, replace(proof, last_checked=now, checks=checks))
