"""Every write the reconcile makes to a Webhook, decided from gathered facts. Pure.

The reconcile (handlers/webhooks.py) runs in three stages, each gather -> plan -> apply:

1. ``intake``: from the Webhook alone: observedGeneration, the scope labels, the verification
   instructions (the token is made once), the Pending condition of a new Webhook, InvalidSpec; and,
   while spec.url is not verified, holding the old sender (out of its pool, or its Deployment at 0
   replicas) and checking ownership.
2. ``checked``: from the ownership check: status.verification, Verified and Ready, and when to check
   again.
3. ``sender_plan``: from the consumer (made or refused), the placement (pool or Deployment), the
   pool entry and where the pool assigns it: the pool step, the sender objects to apply or remove,
   status.sender, Verified and Ready; or ``held_back``, Ready saying why the sender cannot run yet.

A stage's ``WebhookWrite`` goes into Kopf's patch (written when the handler returns, a retry too); its
conditions are merged and announced as Events once per stage, as they change. ``observed`` is the
fourth writer of conditions: on every Webhook event, Ready and Delivering from the facts in status.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from hookline.api import Condition, ReadyReason, SenderMode, WebhookSpec
from hookline.api.policy import Grant
from hookline.operator.rules import delivery, desired, verification
from hookline.operator.rules.domains import DomainEntry
from hookline.operator.rules.placement import (
    Place,
    Placement,
    dedicated_sender_status,
    pool_place,
    pool_seen,
    pool_sender_status,
    scaled_sender_status,
)
from hookline.operator.rules.status import (
    DELIVERING,
    READY,
    VERIFIED,
    Announcement,
    BusProblem,
    find,
    ready_condition,
)
from hookline.operator.settings import NOT_VERIFIED_YET, OperatorConfig, ReconcileTiming, VerificationSchedule
from hookline.sender.model.config import SenderConfig
from hookline.sender.transport.ownership import OwnershipResult
from hookline.timestamps import rfc3339


@dataclass(frozen=True)
class Facts:
    """What the reconcile knows of one Webhook when it starts."""

    owner: Mapping[str, Any]  # the Webhook as Kopf gave it: its sender objects are owned by it
    namespace: str
    name: str
    generation: int | None
    labels: Mapping[str, str]
    status: Mapping[str, Any]
    spec: WebhookSpec | None  # None: invalid, see spec_error
    spec_error: str | None = None
    token: str = ""
    token_is_new: bool = False
    place: Place | None = None  # where its pool engine runs: the operator's memory, else status
    bus_problem: BusProblem | None = None  # why its consumer could not be made, on an earlier pass
    stopped: str | None = None  # why its namespace's grant does not let it run (rules/tenancy.py)
    grant: Grant | None = None  # its namespace's grant (None: tenancy not enforced)
    domain: DomainEntry | None = None  # the verified WebhookDomain of its namespace covering spec.url


@dataclass(frozen=True)
class EngineFacts:
    """What the sender stage learned before it writes anything."""

    config: SenderConfig
    placement: Placement
    consumer_problem: BusProblem | None = None  # None: the JetStream consumer exists
    place: Place | None = None  # where its pool engine runs now (the intake may have held it)
    entry: bytes | None = None  # the pool entry, its signing key sealed
    entry_problem: BusProblem | None = None
    replica: int | None = None  # the pool replica that serves it (None: the pool has no replicas)
    running: bool = False  # that replica's roster says it runs the engine
    # A digest of the Secrets the Webhook reads (adapters/secrets.py): in a dedicated sender's config
    # hash, so a changed Secret rolls its pods (they drain first) within seconds of the Secret watch.
    secrets_digest: str = ""


@dataclass(frozen=True)
class WebhookWrite:
    """A merge patch for the Webhook: labels, status parts, and condition updates. status.verification
    is merged with what an earlier stage wrote (instructions, then the check); other parts replace."""

    labels: Mapping[str, str | None] = field(default_factory=dict)
    status: Mapping[str, Any] = field(default_factory=dict)
    conditions: tuple[Condition, ...] = ()


@dataclass(frozen=True)
class Retry:
    """End the handler: Kopf runs it again after ``delay`` seconds (None: not until the spec changes)."""

    message: str
    delay: float | None


@dataclass(frozen=True)
class Hold:
    """Stop the sender of a URL that is not verified (events wait in the stream): take its engine out
    of its pool, or scale its Deployment to 0; then write ``write``."""

    write: WebhookWrite
    pool: Place | None = None
    deployment: str | None = None


@dataclass(frozen=True)
class Plan:
    write: WebhookWrite = field(default_factory=WebhookWrite)
    retry: Retry | None = None


@dataclass(frozen=True)
class Intake(Plan):
    hold: Hold | None = None
    check_due: bool = False  # spec.url is not verified: check ownership now


@dataclass(frozen=True)
class PoolPlace:
    """Store the Webhook's pool entry and assign it to ``replica`` (old assignment removed after)."""

    consumer: str
    entry: bytes
    pool: str
    replica: int | None
    old: Place | None
    seen: dict[str, Any]  # what status.sender mirrors of the engine once placed


@dataclass(frozen=True)
class PoolRemove:
    """Take the Webhook's engine out of its pool (``where`` unknown: wherever it is assigned)."""

    consumer: str
    where: Place | None


@dataclass(frozen=True)
class ApplyObject:
    """Create the object, or replace it when it differs from ``want``."""

    kind: Literal["ConfigMap", "Deployment"]
    want: dict[str, Any]
    config_hash: str = ""  # of the sender config it carries, for the Event that says it changed


@dataclass(frozen=True)
class RemoveSender:
    """Delete the Webhook's own Deployment and ConfigMap (its engine runs in a pool now)."""

    namespace: str
    name: str


@dataclass(frozen=True)
class SenderPlan(Plan):
    """In order: the pool step, the objects, then ``write``. A failed pool step is ``held_back``."""

    pool_step: PoolPlace | PoolRemove | None = None
    objects: tuple[ApplyObject | RemoveSender, ...] = ()
    bus_problem: BusProblem | None = None  # remembered for Ready until a pass makes the consumer


# --- stage 1: intake -------------------------------------------------------------------------------------


def intake(facts: Facts) -> Intake:
    parts: dict[str, Any] = {"observedGeneration": facts.generation}
    spec = facts.spec
    if spec is None:
        invalid = Condition(
            READY, "False", ReadyReason.INVALID_SPEC, f"{facts.spec_error}; fix the Webhook's spec"
        )
        retry = Retry(f"invalid spec: {facts.spec_error}", None)
        return Intake(WebhookWrite(status=parts, conditions=(invalid,)), retry)
    info = verification.instructions(facts.token, spec.url)
    current = dict(facts.status.get("verification") or {})
    if facts.token_is_new or any(current.get(k) != v for k, v in info.items()):
        parts["verification"] = dict(info)
    method = spec.verification.method
    pending = (verification.pending_condition(facts.token, spec.url, method),) if facts.token_is_new else ()
    write = WebhookWrite(desired.labels_patch(facts.labels, spec), parts, pending)
    if verification.is_verified_for(facts.status, spec.url) and _proof_stands(facts, current):
        return Intake(write)
    return Intake(write, hold=_hold(facts), check_due=True)


def _proof_stands(facts: Facts, current: Mapping[str, Any]) -> bool:
    """A Webhook proven by a domain stays proven while that domain covers it verified; one proven by
    its own file or record stays so until the re-check loop says it lapsed."""
    if current.get("method") != "Domain":
        return True
    return facts.domain is not None and facts.domain.name == current.get("record")


def _hold(facts: Facts) -> Hold | None:
    if facts.place is not None:
        stopped = pool_sender_status(facts.place[0], None, running=False, stopped=True)
        return Hold(WebhookWrite(status={"sender": stopped}), pool=facts.place)
    sender = facts.status.get("sender") or {}
    if sender.get("deployment") and sender.get("replicas"):
        write = WebhookWrite(status={"sender": scaled_sender_status(0)})
        return Hold(write, deployment=str(sender["deployment"]))
    return None


# --- stage 2: the ownership check -------------------------------------------------------------------------


def checked(
    facts: Facts,
    result: OwnershipResult,
    *,
    schedule: VerificationSchedule,
    sender: Mapping[str, Any],
    now: datetime,
) -> Plan:
    """What one ownership check writes; a failed one asks to be run again on the schedule."""
    assert facts.spec is not None
    url = facts.spec.url
    checks = verification.checks_so_far(facts.status, url) + 1
    delay = None if result.verified else verification.check_delay(checks, schedule)
    next_at = None if delay is None else rfc3339(now + timedelta(seconds=delay))
    lapsed = not result.verified and verification.was_verified_for(facts.status, url)
    lapsed_at = (facts.status.get("verification") or {}).get("lapsedAt") or rfc3339(now) if lapsed else None
    fields = verification.result_fields(
        result, url=url, now=rfc3339(now), checks=checks, next_check_at=next_at, lapsed_at=lapsed_at
    )
    ready = _ready(facts.spec, result.verified, sender, facts.bus_problem, facts.stopped)
    verified = verification.verified_condition(result, delay, lapsed=lapsed)
    paused = (verification.lapsed_delivering(),) if lapsed else ()
    write = WebhookWrite(status={"verification": fields}, conditions=(verified, ready, *paused))
    # Kopf's only way to run a handler again later; settings.QuietVerificationRetries keeps this
    # expected state out of the ERROR log and the Events.
    retry = None if delay is None else Retry(f"{NOT_VERIFIED_YET} ({result.reason})", delay)
    return Plan(write, retry)


# --- stage 3: the sender ----------------------------------------------------------------------------------


def sender_plan(
    facts: Facts,
    engine: EngineFacts,
    *,
    config: OperatorConfig,
    sender: Mapping[str, Any],
    verified_url: str | None,
    proof: Mapping[str, Any] | None = None,
) -> SenderPlan:
    """The sender of a verified Webhook: where it runs, what exists for it, what status says.

    ``sender`` is status.sender as this pass has it so far (the intake may have held the sender);
    ``proof`` status.verification so far (what proved it: the Verified condition says so).
    """
    proof = dict(proof or {"verifiedURL": verified_url})
    if engine.consumer_problem is not None:
        return held_back(facts, engine.consumer_problem, sender=sender, timing=config.reconcile)
    if engine.placement.mode == SenderMode.POOL:
        return _pool_plan(facts, engine, config=config, sender=sender, proof=proof)
    assert facts.spec is not None
    spec = facts.spec
    rendered = desired.render_config(engine.config)
    digest = desired.config_hash(rendered + engine.secrets_digest)
    want = desired.deployment(facts.owner, spec, digest, config)
    part = dedicated_sender_status(want["metadata"]["name"], desired.desired_replicas(spec), digest)
    return SenderPlan(
        _running(facts, part, proof),
        pool_step=None if engine.place is None else PoolRemove(engine.config.nats.consumer, engine.place),
        objects=(
            ApplyObject("ConfigMap", desired.config_map(facts.owner, rendered)),
            ApplyObject("Deployment", want, digest),
        ),
    )


def _pool_plan(
    facts: Facts,
    engine: EngineFacts,
    *,
    config: OperatorConfig,
    sender: Mapping[str, Any],
    proof: Mapping[str, Any],
) -> SenderPlan:
    """A pooled Webhook: its entry in HOOKLINE_POOLS, assigned to a replica; no Deployment."""
    assert facts.spec is not None and engine.placement.pool is not None
    pool, consumer = engine.placement.pool, engine.config.nats.consumer
    old = pool_place(facts.status)
    step: PoolPlace | PoolRemove
    if desired.desired_replicas(facts.spec) == 0:
        step = PoolRemove(consumer, old)
        part = pool_sender_status(pool, None, running=False, stopped=True)
    else:
        if engine.entry_problem is not None:
            problem = engine.entry_problem
            return held_back(
                facts,
                problem,
                sender=sender,
                timing=config.reconcile,
                delay=config.reconcile.bus_retry_seconds,
            )
        assert engine.entry is not None
        known = old if old is not None and old[1] is not None else None
        seen = pool_seen(engine.running and engine.replica is not None)
        step = PoolPlace(consumer, engine.entry, pool, engine.replica, known, seen)
        digest = desired.config_hash(desired.render_config(engine.config))
        part = pool_sender_status(pool, engine.replica, running=engine.running, config_hash=digest)
    had_deployment = (facts.status.get("sender") or {}).get("deployment")
    objects = (RemoveSender(facts.namespace, facts.name),) if had_deployment else ()
    return SenderPlan(_running(facts, part, proof), pool_step=step, objects=objects)


def _running(facts: Facts, part: dict[str, Any], proof: Mapping[str, Any]) -> WebhookWrite:
    """status.sender becomes ``part``; Verified and Ready say so (the consumer exists: no bus problem)."""
    assert facts.spec is not None
    after = {**(facts.status.get("sender") or {}), **part}
    ready = _ready(facts.spec, True, after, None, facts.stopped)
    conditions = (verification.verified_by(proof), ready, *_resumed(facts))
    return WebhookWrite(status={"sender": part}, conditions=conditions)


def _resumed(facts: Facts) -> tuple[Condition, ...]:
    """Delivering again from the facts once a lapsed proof is back (webhook_seen derives it only when
    status.delivery exists)."""
    assert facts.spec is not None
    current = find(facts.status.get("conditions"), DELIVERING) or {}
    if current.get("message") != verification.LAPSED_DELIVERING:
        return ()
    paused = facts.spec.paused or facts.spec.sender.replicas == 0
    facts_now = facts.status.get("delivery") or {}
    return (delivery.delivering_condition(facts_now, facts.namespace, facts.name, paused=paused),)


def held_back(
    facts: Facts,
    problem: BusProblem,
    *,
    sender: Mapping[str, Any],
    timing: ReconcileTiming,
    delay: float | None = None,
) -> SenderPlan:
    """The sender cannot run: Ready says why, and the pass is retried (a NATS limit is looked at again
    rarely; an outage, a failed pool write or a missing Secret soon)."""
    assert facts.spec is not None
    if delay is None:
        delay = timing.bus_refused_retry_seconds if problem.permanent else timing.bus_retry_seconds
    write = WebhookWrite(conditions=(_ready(facts.spec, True, sender, problem, facts.stopped),))
    return SenderPlan(write, Retry(problem.message, delay), bus_problem=problem)


def sender_event(outcome: str, deployment: str, digest: str) -> Announcement | None:
    """The Event for what applying the sender Deployment did (none when it was in step already)."""
    if outcome == "created":
        return Announcement("Normal", "SenderCreated", f"created Deployment {deployment}")
    if outcome == "updated":
        return Announcement("Normal", "SenderUpdated", f"updated Deployment {deployment} (config {digest})")
    return None


def _ready(
    spec: WebhookSpec,
    verified: bool,
    sender: Mapping[str, Any] | None,
    bus: BusProblem | None,
    stopped: str | None = None,
) -> Condition:
    """Ready from every fact, for every stage: the grant, the spec, verification, the bus, the sender."""
    return ready_condition(
        verified=verified,
        paused=spec.paused,
        desired_replicas=spec.sender.replicas,
        sender=sender,
        bus=bus,
        stopped=stopped,
    )


def not_allowed(facts: Facts) -> Intake:
    """Its namespace's grant does not let it run: its sender stops as if paused (its consumer and the
    events are kept, so it resumes where it stopped once granted); Ready says ScopeNotAllowed and why.
    No ownership check either: a namespace without a grant gets nothing, not even a request out."""
    assert facts.stopped is not None
    ready = Condition(READY, "False", ReadyReason.SCOPE_NOT_ALLOWED, facts.stopped)
    return Intake(WebhookWrite(conditions=(ready,)), hold=_hold(facts))


# --- every event: Ready and Delivering from status ---------------------------------------------------------


def verified_now(status: Mapping[str, Any], spec: WebhookSpec) -> bool:
    """Verified for spec.url and said so: until then the reconcile alone writes Ready."""
    current = find(status.get("conditions"), VERIFIED)
    return (
        verification.is_verified_for(status, spec.url)
        and current is not None
        and current.get("status") == "True"
    )


def observed(
    namespace: str,
    name: str,
    spec: WebhookSpec,
    status: Mapping[str, Any],
    bus: BusProblem | None,
    stopped: str | None = None,
) -> list[Condition]:
    """Ready and Delivering of a verified Webhook from the facts in its status, where they changed
    (a new status.sender from the sender's side, a new status.delivery from its health reports)."""
    conditions = status.get("conditions")
    derived = [_ready(spec, True, status.get("sender"), bus, stopped)]
    paused = spec.paused or spec.sender.replicas == 0 or stopped is not None
    if status.get("delivery") is not None or paused:  # something is known about the deliveries
        facts = status.get("delivery") or {}
        derived.append(delivery.delivering_condition(facts, namespace, name, paused=paused))
    return [c for c in derived if _stated(conditions, c) != (c.status, c.reason, c.message)]


def _stated(conditions: Any, condition: Condition) -> tuple[Any, Any, Any]:
    old = find(conditions, condition.type) or {}
    return old.get("status"), old.get("reason"), old.get("message")
