"""Kopf handlers: thin glue between Kubernetes events and the pure decisions.

Who writes what, so that no two writers race on a list:
- `reconcile_webhook` (create/resume/spec change) owns the token, verification, labels, the sender
  objects, status.sender.deployment/replicas and both conditions;
- `sender_observed` (any sender Deployment change) mirrors availability into status.sender of the
  owning Webhook, a dict field that merge patches cleanly;
- `write_delivery_health` (one loop for all Webhooks) mirrors the senders' health reports, the 410
  Gone / circuit-breaker stop included, into status.delivery, another dict field, within a write
  budget; `follow_resumes` (one loop) lifts a stop when the user asks for it or spec.url moved. No
  per-Webhook timer: memory and NATS calls do not grow with idle Webhooks;
- for pooled Webhooks `reconcile_webhook` writes status.sender mode/pool/replica; poolsync.py's
  `rebalance` rewrites replica when the pool's StatefulSet is scaled and `mirror_pool_senders`
  mirrors the replicas' rosters into status.sender.readyReplicas/engineProblem (one loop, a budget);
- `webhook_seen` (every Webhook event) recomputes Ready and Delivering from those facts with the same
  pure functions and writes the conditions only when one changed. It runs in the same per-object
  worker as the reconcile, so their writes are serialized by Kopf.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from hookline.api import (
    GROUP,
    RESUME_ANNOTATION,
    VERSION,
    WEBHOOK_LABEL,
    WEBHOOK_PLURAL,
    WEBHOOKTEST_PLURAL,
    Condition,
    DeliveringReason,
    ReadyReason,
    SenderMode,
    SpecError,
    VerifiedReason,
    WebhookSpec,
    parse_webhook_spec,
)
from hookline.operator.adapters import kubeapi, pools
from hookline.operator.adapters.consumers import ConsumerError, Consumers
from hookline.operator.handlers.webhooktest import TestOutcome, run_test, signing_key
from hookline.operator.loops import poolsync
from hookline.operator.metrics import OperatorMetrics
from hookline.operator.rules import delivery, desired, verification
from hookline.operator.rules.status import (
    DELIVERING,
    READY,
    VERIFIED,
    BusProblem,
    deployment_sender_status,
    find,
    merge_conditions,
    now_iso,
    ready_condition,
    status_of,
    transitions,
)
from hookline.operator.settings import NOT_VERIFIED_YET, OperatorConfig
from hookline.sender.bus import BusUnavailable
from hookline.sender.bus.poolproto import PoolKey, Roster
from hookline.sender.model.config import SenderConfig, consumer_name
from hookline.sender.model.deliveryhealth import HealthReport
from hookline.sender.model.outcomes import GoneState
from hookline.sender.transport import ownership
from hookline.sender.transport.client import SafeHTTPClient

log = logging.getLogger(__name__)

WEBHOOKS = (GROUP, VERSION, WEBHOOK_PLURAL)
TESTS = (GROUP, VERSION, WEBHOOKTEST_PLURAL)
DEPLOYMENTS = ("apps", "v1", "deployments")
SENDER_SELECTOR = {
    "app.kubernetes.io/managed-by": desired.MANAGED_BY,
    "app.kubernetes.io/component": "sender",
}
FINISHED = ("Succeeded", "Failed")
REPLACE_ATTEMPTS = 3
BUS_RETRY_SECONDS = 10.0  # a NATS outage passes by itself
BUS_REFUSED_RETRY_SECONDS = 60.0  # a NATS limit needs a person; look again now and then


@dataclass
class Runtime:
    """Everything handlers share; reached through Kopf's memo as ``memo.runtime``."""

    config: OperatorConfig
    api: kubeapi.KubeAPI
    http: SafeHTTPClient
    consumers: Consumers
    metrics: OperatorMetrics
    new_token: Callable[[], str] = ownership.new_token
    sender_seen: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    # Why a Webhook's consumer could not be made, until it can: a fact for Ready next to the others.
    bus_problems: dict[tuple[str, str], BusProblem] = field(default_factory=dict)
    # Finished WebhookTests and when they finished, for the one expiry loop (expire_webhook_tests).
    finished_tests: dict[tuple[str, str], str] = field(default_factory=dict)
    # The senders' latest health reports, and what of them is in each Webhook's status.
    health_reports: dict[tuple[str, str], HealthReport] = field(default_factory=dict)
    health_written: dict[tuple[str, str], delivery.WriteState] = field(default_factory=dict)
    # What webhook_seen last saw of each verified Webhook: status.delivery, and the resume
    # annotation with spec.url (follow_resumes acts on them).
    delivery_seen: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    resume_asks: dict[tuple[str, str], tuple[str | None, str]] = field(default_factory=dict)
    background: list[asyncio.Task[None]] = field(default_factory=list)
    # Sender pools: replicas of each pool (its StatefulSet's spec.replicas), where each pooled
    # Webhook is assigned (replica None: its pool does not run), and each replica's latest roster.
    pool_directory: pools.PoolDirectory | None = None
    pool_key: PoolKey | None = None
    pool_replicas: dict[str, int] = field(default_factory=dict)
    pooled: dict[tuple[str, str], tuple[str, int | None]] = field(default_factory=dict)
    rosters: dict[tuple[str, int], Roster] = field(default_factory=dict)
    pools_listed: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        if self.pool_directory is None:
            self.pool_directory = pools.PoolDirectory(self.consumers)

    @property
    def directory(self) -> pools.PoolDirectory:
        assert self.pool_directory is not None
        return self.pool_directory


def _runtime(memo: Any) -> Runtime:
    return memo.runtime  # type: ignore[no-any-return]


# --- events on transitions -----------------------------------------------------------------------------

_EVENT_REASONS = {
    (VERIFIED, "True"): ("Normal", "Verified"),
    (VERIFIED, "False"): ("Warning", "NotVerified"),
    (READY, "True"): ("Normal", "SenderReady"),
    (READY, "False"): ("Warning", "SenderNotReady"),
    (DELIVERING, "True"): ("Normal", "DeliveryResumed"),
    (DELIVERING, "False"): ("Warning", "DeliveryStopped"),  # named after the reason, see _announce
}


def _announce(body: Any, before: Any, after: list[dict[str, Any]]) -> None:
    for condition in transitions(before, after):
        resumed = condition["type"] == DELIVERING and status_of(before, DELIVERING) == "False"
        if condition["type"] == DELIVERING and condition["status"] == "True" and not resumed:
            continue  # the first look at a Webhook that was never stopped: nothing happened
        kind, reason = _EVENT_REASONS[(condition["type"], condition["status"])]
        if condition["reason"] in (
            ReadyReason.PAUSED,
            ReadyReason.NOT_VERIFIED,
            ReadyReason.SENDER_PENDING,
            VerifiedReason.PENDING,
        ):
            kind = "Normal"
        if condition["type"] == DELIVERING and condition["status"] == "False":
            reason = str(condition["reason"])  # Failing, Backlogged, ReceiverGone, ConsumerMissing, ...
            if reason == DeliveringReason.PAUSED:
                continue  # Ready=False/Paused already said so
        elif condition["reason"] == ReadyReason.PAUSED:
            reason = "SenderPaused"
        kopf.event(body, type=kind, reason=reason, message=condition["message"])


def _write_conditions(
    body: Any, status: Mapping[str, Any], patch: kopf.Patch, updates: list[Condition], generation: int | None
) -> None:
    before = patch.status.get("conditions") or status.get("conditions")
    after = merge_conditions(before, updates, generation=generation, now=now_iso())
    if after != list(before or []):
        patch.status["conditions"] = after
        _announce(body, before, after)


def _sender_facts(status: Mapping[str, Any], patch: kopf.Patch) -> dict[str, Any]:
    return {**(status.get("sender") or {}), **(patch.status.get("sender") or {})}


def _ready(
    rt: Runtime, key: tuple[str, str], spec: WebhookSpec, verified: bool, sender: Mapping[str, Any] | None
) -> Condition:
    """Ready from every fact, for every handler: the spec, verification, the bus, the Deployment."""
    return ready_condition(
        verified=verified,
        paused=spec.paused,
        desired_replicas=spec.sender.replicas,
        sender=sender,
        bus=rt.bus_problems.get(key),
    )


def _held_back(
    rt: Runtime,
    body: kopf.Body,
    status: Mapping[str, Any],
    patch: kopf.Patch,
    spec: WebhookSpec,
    problem: BusProblem,
    generation: int | None,
    *,
    delay: float | None = None,
) -> kopf.TemporaryError:
    """Record why the Webhook's sender cannot run, put it in Ready, and return the retry to raise
    (a NATS limit is looked at again rarely, an outage or a missing Secret soon)."""
    key = (body["metadata"]["namespace"], body["metadata"]["name"])
    rt.bus_problems[key] = problem
    _write_conditions(
        body, status, patch, [_ready(rt, key, spec, True, _sender_facts(status, patch))], generation
    )
    if delay is None:
        delay = BUS_REFUSED_RETRY_SECONDS if problem.permanent else BUS_RETRY_SECONDS
    return kopf.TemporaryError(problem.message, delay=delay)


# --- Webhook: reconcile --------------------------------------------------------------------------------


async def reconcile_webhook(
    body: kopf.Body,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    patch: kopf.Patch,
    memo: Any,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    rt = _runtime(memo)
    started = time.perf_counter()
    try:
        await _reconcile(rt, body, spec, status, meta, patch, logger)
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
) -> None:
    namespace, name, generation = meta["namespace"], meta["name"], meta.get("generation")
    patch.status["observedGeneration"] = generation
    try:
        spec = parse_webhook_spec(dict(raw_spec))
    except SpecError as exc:
        _write_conditions(
            body,
            status,
            patch,
            [Condition(READY, "False", ReadyReason.INVALID_SPEC, f"{exc}; fix the Webhook's spec")],
            generation,
        )
        raise kopf.PermanentError(f"invalid spec: {exc}") from None

    labels = desired.labels_patch(meta.get("labels"), spec)
    if labels:
        patch.metadata["labels"] = labels

    token, is_new = verification.ensure_token(status, rt.new_token)
    info = verification.instructions(token, spec.url)
    current = dict(status.get("verification") or {})
    if is_new or any(current.get(k) != v for k, v in info.items()):
        patch.status["verification"] = dict(info)
    if is_new:
        _write_conditions(body, status, patch, [verification.pending_condition(token, spec.url)], generation)

    if not verification.is_verified_for(status, spec.url):
        await _hold_sender(rt, namespace, name, status, patch)
        await _verify(rt, body, spec, status, patch, token, generation)
    await _run_sender(rt, body, spec, status, patch, namespace, name, generation, logger)


async def _verify(
    rt: Runtime,
    body: kopf.Body,
    spec: WebhookSpec,
    status: kopf.Status,
    patch: kopf.Patch,
    token: str,
    generation: int | None,
) -> None:
    result = await ownership.check_ownership(
        rt.http, spec.url, token, per_location_timeout=rt.config.check_timeout
    )
    rt.metrics.checks.labels(reason=result.reason).inc()
    checks = verification.checks_so_far(status, spec.url) + 1
    now = now_iso()
    delay = None if result.verified else verification.check_delay(checks, rt.config.verification)
    next_at = None if delay is None else now_iso_in(delay)
    fields = verification.result_fields(result, url=spec.url, now=now, checks=checks, next_check_at=next_at)
    patch.status["verification"] = {**(patch.status.get("verification") or {}), **fields}
    key = (body["metadata"]["namespace"], body["metadata"]["name"])
    ready = _ready(rt, key, spec, result.verified, _sender_facts(status, patch))
    verified = verification.verified_condition(result, delay)
    _write_conditions(body, status, patch, [verified, ready], generation)
    if delay is not None:
        # Kopf's only way to run a handler again later; settings.QuietVerificationRetries keeps this
        # expected state out of the ERROR log and the Events.
        raise kopf.TemporaryError(f"{NOT_VERIFIED_YET} ({result.reason})", delay=delay)


async def _hold_sender(
    rt: Runtime, namespace: str, name: str, status: kopf.Status, patch: kopf.Patch
) -> None:
    """A changed URL is not verified yet: the old sender stops (events wait in the stream)."""
    key = (namespace, name)
    place = rt.pooled.get(key) or poolsync.pool_place(status)
    if place is not None:
        try:
            await rt.directory.remove(consumer_name(namespace, name), place)
        except ConsumerError as exc:
            raise kopf.TemporaryError(exc.problem.message, delay=BUS_RETRY_SECONDS) from None
        rt.pooled.pop(key, None)
        rt.sender_seen.pop(key, None)
        patch.status["sender"] = pools.pool_sender_status(place[0], None, running=False, stopped=True)
        return
    deployment = (status.get("sender") or {}).get("deployment")
    if deployment and (status.get("sender") or {}).get("replicas"):
        await rt.api.patch(f"{kubeapi.deployments(namespace)}/{deployment}", {"spec": {"replicas": 0}})
        patch.status["sender"] = {**(patch.status.get("sender") or {}), "replicas": 0}


def now_iso_in(seconds: float) -> str:
    from datetime import UTC, datetime, timedelta

    return now_iso(datetime.now(UTC) + timedelta(seconds=seconds))


async def _run_sender(
    rt: Runtime,
    body: kopf.Body,
    spec: WebhookSpec,
    status: kopf.Status,
    patch: kopf.Patch,
    namespace: str,
    name: str,
    generation: int | None,
    logger: kopf.Logger,
) -> None:
    cfg = desired.sender_config(namespace, name, spec, rt.config)
    key = (namespace, name)
    try:
        await rt.consumers.ensure(cfg)
    except ConsumerError as exc:
        raise _held_back(rt, body, status, patch, spec, exc.problem, generation) from None
    rt.bus_problems.pop(key, None)

    rendered = desired.render_config(cfg)
    digest = desired.config_hash(rendered)
    place = pools.placement(spec, rt.config)
    if place.mode == SenderMode.POOL:
        assert place.pool is not None
        await _run_in_pool(rt, body, spec, status, patch, cfg, place.pool, digest, generation)
        return
    if key in rt.pooled or poolsync.pool_place(status) is not None:  # moved out of a pool
        await _stop_in_pool(rt, key, status, patch, body, spec, generation)
        rt.pooled.pop(key, None)
    owner = dict(body)
    await _apply(rt, kubeapi.configmaps(namespace), desired.config_map(owner, rendered))
    want = desired.deployment(owner, spec, digest, rt.config)
    outcome = await _apply(rt, kubeapi.deployments(namespace), want)
    deployment_name = want["metadata"]["name"]
    if outcome == "created":
        kopf.info(body, reason="SenderCreated", message=f"created Deployment {deployment_name}")
    elif outcome == "updated":
        message = f"updated Deployment {deployment_name} (config {digest})"
        kopf.info(body, reason="SenderUpdated", message=message)
    patch.status["sender"] = {
        "mode": SenderMode.DEDICATED.value,
        "pool": None,
        "replica": None,
        "engineProblem": None,
        "deployment": deployment_name,
        "replicas": desired.desired_replicas(spec),
        "configHash": digest,
    }
    verified = verification.verified_at(_verified_url(status, patch))
    ready = _ready(rt, key, spec, True, _sender_facts(status, patch))
    _write_conditions(body, status, patch, [verified, ready], generation)
    logger.debug(f"sender {deployment_name}: {outcome}")


async def _run_in_pool(
    rt: Runtime,
    body: kopf.Body,
    spec: WebhookSpec,
    status: kopf.Status,
    patch: kopf.Patch,
    cfg: SenderConfig,
    pool: str,
    digest: str,
    generation: int | None,
) -> None:
    """A pooled Webhook: its entry in HOOKLINE_POOLS, assigned to a replica; no Deployment."""
    namespace, name = cfg.webhook.namespace, cfg.webhook.name
    key = (namespace, name)
    consumer = cfg.nats.consumer
    old = poolsync.pool_place(status)
    known = old if old is not None and old[1] is not None else None
    try:
        if desired.desired_replicas(spec) == 0:
            await rt.directory.remove(consumer, old)
            rt.pooled.pop(key, None)
            patch.status["sender"] = pools.pool_sender_status(pool, None, running=False, stopped=True)
        else:
            try:
                secret = await signing_key(rt.api, namespace, spec)
                entry = pools.pool_entry(cfg, secret, rt.pool_key).to_bytes()
            except (LookupError, ValueError) as exc:
                problem = BusProblem(
                    f"{exc}; the pool engine starts once it can be read",
                    permanent=True,
                    reason=ReadyReason.SIGNING_SECRET_UNAVAILABLE,
                )
                raise _held_back(
                    rt, body, status, patch, spec, problem, generation, delay=BUS_RETRY_SECONDS
                ) from None
            if not rt.pools_listed.is_set():  # just started: place it once the pools are known
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(rt.pools_listed.wait(), poolsync.POOLS_LISTED_WAIT_SECONDS)
            replica = pools.assigned_replica(consumer, rt.pool_replicas.get(pool, 0))
            await rt.directory.place(consumer, entry, pool, replica, known)
            rt.pooled[key] = (pool, replica)
            running = poolsync.roster_running(rt, pool, replica, consumer)
            patch.status["sender"] = {
                **pools.pool_sender_status(pool, replica, running=running),
                "configHash": digest,
            }
            rt.sender_seen[key] = pools.pool_seen(running and replica is not None)
    except ConsumerError as exc:
        raise _held_back(
            rt, body, status, patch, spec, exc.problem, generation, delay=BUS_RETRY_SECONDS
        ) from None
    rt.bus_problems.pop(key, None)
    await _remove_dedicated(rt, namespace, name, status)
    verified = verification.verified_at(_verified_url(status, patch))
    ready = _ready(rt, key, spec, True, _sender_facts(status, patch))
    _write_conditions(body, status, patch, [verified, ready], generation)


async def _stop_in_pool(
    rt: Runtime,
    key: tuple[str, str],
    status: Mapping[str, Any],
    patch: kopf.Patch,
    body: kopf.Body,
    spec: WebhookSpec,
    generation: int | None,
) -> None:
    """Take the Webhook's engine out of its pool (moved to a dedicated sender, or unverified)."""
    try:
        await rt.directory.remove(consumer_name(*key), rt.pooled.get(key) or poolsync.pool_place(status))
    except ConsumerError as exc:
        raise _held_back(
            rt, body, status, patch, spec, exc.problem, generation, delay=BUS_RETRY_SECONDS
        ) from None
    rt.pooled.pop(key, None)
    rt.sender_seen.pop(key, None)


async def _remove_dedicated(rt: Runtime, namespace: str, name: str, status: Mapping[str, Any]) -> None:
    """A Webhook moved into a pool: its own Deployment and ConfigMap go (its pool engine runs)."""
    if not (status.get("sender") or {}).get("deployment"):
        return
    sender = desired.sender_name(name)
    for collection in (kubeapi.deployments(namespace), kubeapi.configmaps(namespace)):
        with contextlib.suppress(kubeapi.NotFound):
            await rt.api.delete(f"{collection}/{sender}")


def _verified_url(status: Mapping[str, Any], patch: kopf.Patch) -> str | None:
    fresh = patch.status.get("verification") or {}
    return fresh.get("verifiedURL") or (status.get("verification") or {}).get("verifiedURL")


async def _apply(rt: Runtime, collection: str, want: dict[str, Any]) -> str:
    """Create, or replace when something differs: 'created', 'updated' or 'unchanged'.

    A replace, not a merge patch: a merge patch keeps fields the operator no longer sets. The
    resourceVersion guards the replace; on a Conflict (the Deployment controller writes status all the
    time) the object is read again and the decision made afresh.
    """
    url = f"{collection}/{want['metadata']['name']}"
    for _ in range(REPLACE_ATTEMPTS):
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
    raise kopf.TemporaryError(f"{url} kept changing while being updated; retrying", delay=5)


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
    rt = _runtime(memo)
    namespace, name = meta["namespace"], meta["name"]
    if event.get("type") == "DELETED":
        rt.metrics.webhooks.forget(namespace, name)
        rt.sender_seen.pop((namespace, name), None)
        rt.bus_problems.pop((namespace, name), None)
        rt.pooled.pop((namespace, name), None)
        for table in (rt.health_reports, rt.health_written, rt.delivery_seen, rt.resume_asks):
            table.pop((namespace, name), None)  # type: ignore[attr-defined]
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
    verified = verification.is_verified_for(status, parsed.url)
    current = find(status.get("conditions"), VERIFIED)
    if not verified or current is None or current.get("status") != "True":
        return  # the reconcile owns Ready until the Webhook is verified
    rt.delivery_seen[(namespace, name)] = dict(status.get("delivery") or {})
    rt.resume_asks[(namespace, name)] = ((meta.get("annotations") or {}).get(RESUME_ANNOTATION), parsed.url)
    conditions = status.get("conditions")
    derived = [_ready(rt, (namespace, name), parsed, True, status.get("sender"))]
    paused = parsed.paused or parsed.sender.replicas == 0
    if status.get("delivery") is not None or paused:  # something is known about the deliveries
        facts = status.get("delivery") or {}
        derived.append(delivery.delivering_condition(facts, namespace, name, paused=paused))
    changed = [c for c in derived if _stated(conditions, c) != (c.status, c.reason, c.message)]
    if changed:
        _write_conditions(body, status, patch, changed, meta.get("generation"))


def _stated(conditions: Any, condition: Condition) -> tuple[Any, Any, Any]:
    old = find(conditions, condition.type) or {}
    return old.get("status"), old.get("reason"), old.get("message")


# --- sender Deployments: mirror availability into the Webhook ------------------------------------------


async def sender_observed(event: Mapping[str, Any], body: kopf.Body, memo: Any, **_: Any) -> None:
    rt = _runtime(memo)
    meta = body.get("metadata") or {}
    webhook = (meta.get("labels") or {}).get(WEBHOOK_LABEL)
    if not webhook:
        return
    key = (meta["namespace"], webhook)
    if event.get("type") == "DELETED":
        rt.sender_seen.pop(key, None)
        return
    seen = deployment_sender_status(body)
    if rt.sender_seen.get(key) == seen:
        return
    if await rt.api.patch(kubeapi.webhook(*key, sub="status"), {"status": {"sender": seen}}) is not None:
        rt.sender_seen[key] = seen


# --- Webhook: deletion ---------------------------------------------------------------------------------


async def webhook_deleted(
    body: kopf.Body, meta: kopf.Meta, memo: Any, retry: int, logger: kopf.Logger, **_: Any
) -> None:
    """Remove the JetStream consumer; a NATS outage delays deletion a little, never forever."""
    rt = _runtime(memo)
    name = consumer_name(meta["namespace"], meta["name"])
    key = (meta["namespace"], meta["name"])
    try:
        status = body.get("status") or {}
        if key in rt.pooled or poolsync.pool_place(status) is not None:
            await rt.directory.remove(name, rt.pooled.get(key) or poolsync.pool_place(status))
            rt.pooled.pop(key, None)
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
    with contextlib.suppress(BusUnavailable):
        await rt.consumers.forget_health(meta["namespace"], meta["name"])


# --- WebhookTest ----------------------------------------------------------------------------------------


async def webhook_test_created(
    body: kopf.Body,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    patch: kopf.Patch,
    memo: Any,
    **_: Any,
) -> None:
    if status.get("phase") in FINISHED:
        return  # sent once, never again (a resume after a restart must not repeat it)
    rt = _runtime(memo)
    outcome: TestOutcome = await run_test(
        rt.api, rt.http, meta["namespace"], dict(spec), max_timeout=rt.config.test_timeout
    )
    patch.status.update(outcome.status)
    if outcome.succeeded:
        kopf.info(body, reason="TestSucceeded", message=outcome.summary)
    else:
        kopf.warn(body, reason="TestFailed", message=outcome.summary)


async def webhook_test_seen(
    event: Mapping[str, Any], status: kopf.Status, meta: kopf.Meta, memo: Any, **_: Any
) -> None:
    """Keep the index of finished WebhookTests that the expiry loop reads (rebuilt from the first
    list after a restart, like every Kopf watch)."""
    rt = _runtime(memo)
    key = (meta["namespace"], meta["name"])
    if event.get("type") == "DELETED" or status.get("phase") not in FINISHED:
        rt.finished_tests.pop(key, None)
    else:
        rt.finished_tests[key] = str(status.get("sentAt") or meta.get("creationTimestamp") or "")


def expiry_interval(config: OperatorConfig) -> float:
    return min(max(config.test_ttl / 4, 0.5), 300.0)


async def expire_webhook_tests(rt: Runtime) -> None:
    """Delete finished WebhookTests older than the TTL: one loop for all of them.

    Not a Kopf timer: a timer needs a finalizer on every WebhookTest, and without the operator such
    objects (and their namespace) could never be deleted.
    """
    while True:
        await asyncio.sleep(expiry_interval(rt.config))
        for key, finished_at in list(rt.finished_tests.items()):
            if _age(finished_at) < rt.config.test_ttl:
                continue
            try:
                await rt.api.delete(kubeapi.webhook_test(*key))
            except kubeapi.APIError as exc:
                log.warning("could not delete expired WebhookTest %s/%s: %s; trying again later", *key, exc)
                continue
            rt.finished_tests.pop(key, None)


HEALTH_WATCH_RETRY_SECONDS = 5.0
HEALTH_WRITE_TICK_SECONDS = 1.0


async def watch_health_reports(rt: Runtime) -> None:
    """Keep the latest health report of every Webhook (one NATS watch for all of them); first make
    the attempt log's limits the configured ones."""
    limits_set = False
    while True:
        try:
            if not limits_set:
                config = rt.config
                await rt.consumers.ensure_attempt_limits(
                    config.attempts_max_age_seconds, config.attempts_max_bytes
                )
                limits_set = True
            async for report in rt.consumers.health_reports():
                rt.health_reports[(report.namespace, report.name)] = report
        except Exception as exc:  # NATS away: watch again; status.delivery just stays as it is
            log.debug("health reports not watched: %s; again in %g s", exc, HEALTH_WATCH_RETRY_SECONDS)
        await asyncio.sleep(HEALTH_WATCH_RETRY_SECONDS)


def _report_delivery(rt: Runtime, report: HealthReport) -> dict[str, Any]:
    """The status.delivery merge patch for a report: its health fields and its 410/breaker stop
    (a stop that went away without the operator was lifted by `hookline redrive --resume`)."""
    key = (report.namespace, report.name)
    mine = delivery.gone_part(rt.delivery_seen.get(key, {}))
    stop = delivery.delivery_status(mine, report.gone_state(), request=None, resumed=None, now=now_iso())
    return {**report.delivery_status(), **dict.fromkeys(mine), **stop}


def _report_reason(report: HealthReport) -> str:
    state = report.gone_state()
    facts = {
        **report.delivery_status(),
        "gone": state.gone and not state.disabled,
        "disabled": state.disabled,
    }
    return str(delivery.delivering_condition(facts, report.namespace, report.name).reason)


async def write_delivery_health(rt: Runtime) -> None:
    """Mirror health reports into status.delivery within the write budget (delivery.due_writes);
    the watch event that follows lets webhook_seen derive the Delivering condition."""
    tick = HEALTH_WRITE_TICK_SECONDS
    while True:
        await asyncio.sleep(tick)
        now = time.time()
        due = delivery.due_writes(
            rt.health_reports,
            rt.health_written,
            now,
            interval=rt.config.delivery_status_interval,
            writes_per_second=rt.config.delivery_status_writes_per_second,
            tick=tick,
            reason_of=_report_reason,
        )
        for key in due:
            report = rt.health_reports[key]
            patch = _report_delivery(rt, report)
            body = {"status": {"delivery": patch}}
            try:
                written = await rt.api.patch(kubeapi.webhook(*key, sub="status"), body)
            except kubeapi.APIError as exc:
                log.warning("status.delivery of %s/%s not written: %s; trying again", *key, exc)
                continue
            if written is None:  # the Webhook is gone; a late report of its sender
                rt.health_reports.pop(key, None)
                continue
            rt.health_written[key] = delivery.WriteState(report, now, _report_reason(report))
            rt.delivery_seen[key] = {**rt.delivery_seen.get(key, {}), **patch}
            rt.metrics.status_writes.inc()


async def follow_resumes(rt: Runtime) -> None:
    """Lift a 410 Gone or circuit-breaker stop when the user asks (a new value of the annotation
    hookline.io/resume-delivery) or spec.url moved to a URL that has not answered 410. The stop is
    read from NATS only for such Webhooks; a failed try is tried again on the next round."""
    while True:
        await asyncio.sleep(rt.config.delivery_check_interval)
        for key, (request, url) in list(rt.resume_asks.items()):
            current = rt.delivery_seen.get(key, {})
            report = rt.health_reports.get(key)
            asked = request is not None and request != current.get("resumeHandled")
            moved = report is not None and report.gone and not report.gone_state().answered_by(url)
            if asked or moved:
                await _resume_if_asked(rt, key, request, url, current)


async def _resume_if_asked(
    rt: Runtime, key: tuple[str, str], request: str | None, url: str, current: dict[str, Any]
) -> None:
    consumer = consumer_name(*key)
    try:
        state = await rt.consumers.gone_state(consumer)
        why = delivery.resume_reason(state, url, request, current.get("resumeHandled"))
        if why is not None:
            await rt.consumers.clear_gone(consumer)
            state = GoneState()
            log.info("%s/%s: deliveries %s", *key, why)
    except BusUnavailable as exc:
        log.debug("%s/%s: stop not read: %s; again next round", *key, exc)
        return
    mine = delivery.gone_part(current)
    fresh = delivery.delivery_status(mine, state, request=request, resumed=why, now=now_iso())
    if fresh == mine:
        return
    patch = {**dict.fromkeys(mine), **fresh}  # a merge patch keeps keys it does not mention
    try:
        written = await rt.api.patch(kubeapi.webhook(*key, sub="status"), {"status": {"delivery": patch}})
    except kubeapi.APIError as exc:
        log.warning("status.delivery of %s/%s not written: %s; trying again", *key, exc)
        return
    if written is not None:
        rt.delivery_seen[key] = {**current, **patch}


async def start_background(memo: Any, **_: Any) -> None:
    rt = _runtime(memo)
    # Not awaited here: Kopf logs in only after its startup handlers, and the list needs the API.
    rt.background.append(asyncio.create_task(poolsync.list_pools(rt), name="list sender pools"))
    for job, name in (
        (expire_webhook_tests, "expire WebhookTests"),
        (watch_health_reports, "watch health reports"),
        (write_delivery_health, "write status.delivery"),
        (follow_resumes, "follow resume requests"),
        (poolsync.watch_pool_rosters, "watch pool rosters"),
        (poolsync.mirror_pool_senders, "mirror pool senders"),
    ):
        rt.background.append(asyncio.create_task(job(rt), name=name))


async def stop_background(memo: Any, **_: Any) -> None:
    rt = _runtime(memo)
    for task in rt.background:
        task.cancel()
    await asyncio.gather(*rt.background, return_exceptions=True)
    rt.background.clear()


def _age(timestamp: str) -> float:
    from datetime import UTC, datetime

    try:
        then = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return 0.0
    return (datetime.now(UTC) - then).total_seconds()


# --- registration ---------------------------------------------------------------------------------------


def register(registry: kopf.OperatorRegistry, config: OperatorConfig) -> None:
    """Put every handler into ``registry`` (tests run several operators, each with its own)."""
    on = kopf.on
    for cause in (on.create, on.resume):
        cause(*WEBHOOKS, id="reconcile", registry=registry)(reconcile_webhook)
    on.update(*WEBHOOKS, id="reconcile", field="spec", registry=registry)(reconcile_webhook)
    on.event(*WEBHOOKS, id="observe", registry=registry)(webhook_seen)
    on.delete(*WEBHOOKS, id="consumer", registry=registry)(webhook_deleted)
    on.event(*DEPLOYMENTS, id="sender", labels=SENDER_SELECTOR, registry=registry)(sender_observed)
    on.event(*poolsync.STATEFULSETS, id="pool", labels=poolsync.POOL_SELECTOR, registry=registry)(
        poolsync.pool_observed
    )
    for cause in (on.create, on.resume):
        cause(*TESTS, id="send", registry=registry)(webhook_test_created)
    on.event(*TESTS, id="track", registry=registry)(webhook_test_seen)
    on.startup(id="background", registry=registry)(start_background)
    on.cleanup(id="background", registry=registry)(stop_background)


async def close(runtime: Runtime) -> None:
    await asyncio.gather(runtime.http.close(), runtime.consumers.close())
