"""Conditions of a Webhook (Verified, Ready, Delivering): pure functions over plain dicts.

A condition's lastTransitionTime records when its status last flipped, so it is kept when a
reconcile computes the same status again (only reason or message may change). Ready is derived from
all the facts (verification, the NATS consumer, the sender Deployment) by one function,
``ready_condition``, every time: two handlers that write conditions cannot disagree on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hookline.api import (
    CONDITION_ORDER,
    Condition,
    ConditionType,
    DeliveringReason,
    ReadyReason,
    SenderMode,
    SenderStatus,
    VerifiedReason,
)

VERIFIED = ConditionType.VERIFIED
READY = ConditionType.READY
DELIVERING = ConditionType.DELIVERING


@dataclass(frozen=True)
class BusProblem:
    """Why the Webhook's JetStream consumer could not be made: ``permanent`` when retrying alone
    cannot help (a NATS limit or configuration), else an outage that passes by itself."""

    message: str
    permanent: bool = False
    reason: ReadyReason | None = None  # None: BusRefused or BusUnavailable, from `permanent`


def find(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    for condition in conditions or ():
        if condition.get("type") == type_:
            return condition
    return None


def status_of(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> str | None:
    found = find(conditions, type_)
    return None if found is None else str(found.get("status"))


def merge_conditions(
    current: Sequence[Mapping[str, Any]] | None,
    updates: Sequence[Condition],
    *,
    generation: int | None,
    now: str,
) -> list[dict[str, Any]]:
    """The full list after applying ``updates``; untouched conditions are kept as they are."""
    result = [dict(c) for c in current or ()]
    for update in updates:
        old = find(result, update.type)
        flipped = old is None or old.get("status") != update.status
        transition = now if flipped else old.get("lastTransitionTime")  # type: ignore[union-attr]
        new: dict[str, Any] = {
            "type": str(update.type),
            "status": update.status,
            "reason": str(update.reason),
            "message": update.message,
            "lastTransitionTime": transition or now,
        }
        if generation is not None:
            new["observedGeneration"] = generation
        if old is None:
            result.append(new)
        else:
            result[result.index(old)] = new  # type: ignore[arg-type]
    order = {str(t): i for i, t in enumerate(CONDITION_ORDER)}
    return sorted(result, key=lambda c: order.get(str(c.get("type")), len(order)))


def transitions(
    before: Sequence[Mapping[str, Any]] | None, after: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """Conditions whose status or reason changed: each deserves a Kubernetes Event."""
    changed = []
    for condition in after:
        old = find(before, str(condition["type"]))
        now_ = (condition["status"], condition["reason"])
        if old is None or (old.get("status"), old.get("reason")) != now_:
            changed.append(condition)
    return changed


# The Kubernetes Event of a condition that changed: (condition, status) -> (Event type, reason).
_EVENT_REASONS = {
    (VERIFIED, "True"): ("Normal", "Verified"),
    (VERIFIED, "False"): ("Warning", "NotVerified"),
    (READY, "True"): ("Normal", "SenderReady"),
    (READY, "False"): ("Warning", "SenderNotReady"),
    (DELIVERING, "True"): ("Normal", "DeliveryResumed"),
    (DELIVERING, "False"): ("Warning", "DeliveryStopped"),  # named after the reason, see announcements
}
# Expected states on the way to Ready: told as Normal events, not Warnings.
_EXPECTED = (ReadyReason.PAUSED, ReadyReason.NOT_VERIFIED, ReadyReason.SENDER_PENDING, VerifiedReason.PENDING)


@dataclass(frozen=True)
class Announcement:
    """A Kubernetes Event to post about the Webhook: ``kind`` is Normal or Warning."""

    kind: str
    reason: str
    message: str


def announcements(
    before: Sequence[Mapping[str, Any]] | None, after: Sequence[Mapping[str, Any]]
) -> list[Announcement]:
    """The Events that the change from ``before`` to ``after`` deserves, in words a user acts on."""
    out = []
    for condition in transitions(before, after):
        resumed = condition["type"] == DELIVERING and status_of(before, DELIVERING) == "False"
        if condition["type"] == DELIVERING and condition["status"] == "True" and not resumed:
            continue  # the first look at a Webhook that was never stopped: nothing happened
        kind, reason = _EVENT_REASONS[(condition["type"], condition["status"])]
        if condition["reason"] in _EXPECTED:
            kind = "Normal"
        if condition["type"] == DELIVERING and condition["status"] == "False":
            reason = str(condition["reason"])  # Failing, Backlogged, ReceiverGone, ConsumerMissing, ...
            if reason == DeliveringReason.PAUSED:
                continue  # Ready=False/Paused already said so
        elif condition["reason"] == ReadyReason.PAUSED:
            reason = "SenderPaused"
        out.append(Announcement(kind, reason, str(condition["message"])))
    return out


def ready_condition(
    *,
    verified: bool,
    paused: bool,
    desired_replicas: int,
    sender: Mapping[str, Any] | None,
    bus: BusProblem | None = None,
    stopped: str | None = None,
) -> Condition:
    """Ready from every fact there is, in words a user can act on; the first problem wins.
    ``stopped``: why the namespace's grant does not let it run (ScopeNotAllowed)."""
    if stopped is not None:
        return Condition(READY, "False", ReadyReason.SCOPE_NOT_ALLOWED, stopped)
    if not verified:
        return Condition(
            READY,
            "False",
            ReadyReason.NOT_VERIFIED,
            "no sender runs until the URL is verified; see condition Verified",
        )
    if paused or desired_replicas == 0:
        why = "spec.paused is true" if paused else "spec.sender.replicas is 0"
        return Condition(
            READY,
            "False",
            ReadyReason.PAUSED,
            f"deliveries are stopped because {why}; events are kept in the stream",
        )
    if bus is not None:
        reason = bus.reason or (ReadyReason.BUS_REFUSED if bus.permanent else ReadyReason.BUS_UNAVAILABLE)
        return Condition(READY, "False", reason, bus.message)
    sender = sender or {}
    if sender.get("mode") == SenderMode.POOL:
        return pool_ready_condition(sender)
    deployment = sender.get("deployment")
    if not deployment:
        return Condition(READY, "False", ReadyReason.SENDER_PENDING, "the sender Deployment is being created")
    available = int(sender.get("availableReplicas") or 0)
    if available >= desired_replicas:
        return Condition(
            READY,
            "True",
            ReadyReason.SENDER_AVAILABLE,
            f"{available} of {desired_replicas} sender pods are available",
        )
    return Condition(
        READY,
        "False",
        ReadyReason.SENDER_UNAVAILABLE,
        f"{available} of {desired_replicas} sender pods of Deployment {deployment} are available; "
        f"check `kubectl describe deployment {deployment}` and the pods' logs",
    )


def pool_ready_condition(sender: Mapping[str, Any]) -> Condition:
    """Ready of a pooled Webhook: its engine runs and consumes in the replica it is assigned to."""
    pool, replica = sender.get("pool"), sender.get("replica")
    if replica is None:
        return Condition(
            READY,
            "False",
            ReadyReason.POOL_NOT_FOUND,
            f"no sender pool {pool!r} with replicas runs in this installation; add it to the chart's "
            "senderPools (or scale its StatefulSet up), or set spec.sender.pool to a pool that runs",
        )
    if int(sender.get("readyReplicas") or 0) >= 1:
        return Condition(
            READY,
            "True",
            ReadyReason.SENDER_AVAILABLE,
            f"its engine runs in sender pool {pool}, replica {replica}",
        )
    return Condition(
        READY,
        "False",
        ReadyReason.SENDER_UNAVAILABLE,
        f"its engine does not run in sender pool {pool}, replica {replica}"
        + (f": {sender['engineProblem']}" if sender.get("engineProblem") else " yet")
        + f"; see that pool pod's log (kubectl logs -l hookline.io/pool={pool})",
    )


def deployment_sender_status(deployment: Mapping[str, Any]) -> dict[str, Any]:
    """What the Webhook's status.sender mirrors from its Deployment's status (a merge patch)."""
    status = deployment.get("status") or {}
    return SenderStatus(
        ready_replicas=int(status.get("readyReplicas") or 0),
        available_replicas=int(status.get("availableReplicas") or 0),
    ).patch()
