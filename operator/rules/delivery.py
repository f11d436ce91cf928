"""How a verified Webhook's deliveries go: stopped by a 410 Gone, paused, failing, backlogged, or fine.

The stop lives on the Webhook's JetStream consumer (docs/internals.md, "Gone"): a 410 changes nothing
on the Webhook, so a timer reads it and mirrors it into ``status.delivery``; the Delivering condition
is derived from that dict by the same handler that derives Ready. Resuming is a user's decision: the
annotation ``hookline.io/resume-delivery`` (any new value) or ``hookline redrive --resume``; pointing
spec.url at a new, verified URL resumes as well.

The rest of ``status.delivery`` comes from the senders' health reports (sender/model/deliveryhealth.py,
sender/bus/attemptlog.py), which
the operator mirrors at a bounded rate (``due_writes``); ``delivering_condition`` turns all of it into
one condition. Pure functions only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hookline.api import RESUME_ANNOTATION, Condition, ConditionType, DeliveringReason
from hookline.sender.model.deliveryhealth import LOSS_SHOWN_SECONDS
from hookline.sender.model.outcomes import GoneState
from hookline.timestamps import parse_rfc3339, rfc3339


def resume_reason(state: GoneState, url: str, request: str | None, handled: str | None) -> str | None:
    """Why the operator should lift a 410 stop now, or None to leave it."""
    if not state.gone:
        return None
    if request is not None and request != handled:
        return f"resumed on request (annotation {RESUME_ANNOTATION}={request})"
    if not state.answered_by(url):
        return "resumed because spec.url changed to a verified URL that has not answered 410 Gone"
    return None


# The keys of status.delivery that the 410 Gone stop owns; the health report owns the others.
GONE_KEYS = ("gone", "goneSince", "disabled", "disabledSince", "resumeHandled", "resumedAt", "resumeReason")
FAILING_MIN_ATTEMPTS = 3  # fewer recent attempts say too little to call a receiver failing
BACKLOG_MIN_PENDING = 100  # a smaller backlog is a burst, not a receiver that cannot keep up


def lost_recently(delivery: Mapping[str, Any]) -> bool:
    """Whether the last report came less than LOSS_SHOWN_SECONDS after events were found lost (the
    sender reports again when that time passes)."""
    lost_at, reported_at = delivery.get("eventsLostAt"), delivery.get("reportedAt")
    if not delivery.get("eventsLost") or not isinstance(lost_at, str) or not isinstance(reported_at, str):
        return False
    try:
        age = (parse_rfc3339(reported_at) - parse_rfc3339(lost_at)).total_seconds()
    except ValueError:
        return False
    return age < LOSS_SHOWN_SECONDS


def gone_part(delivery: Mapping[str, Any]) -> dict[str, Any]:
    return {k: delivery[k] for k in GONE_KEYS if k in delivery}


def delivery_status(
    current: Mapping[str, Any],
    state: GoneState,
    *,
    request: str | None,
    resumed: str | None,
    now: str,
) -> dict[str, Any]:
    """The new ``status.delivery``: the stop as read from the consumer, and the last resume.

    ``resumed`` is the reason the operator just lifted the stop (then ``state`` is the state after).
    A stop that disappeared without the operator was lifted by `hookline redrive --resume`.
    """
    out: dict[str, Any] = {"gone": state.gone and not state.disabled}
    if state.disabled:
        out["disabled"] = True
    if state.gone:
        since = None if state.since is None else rfc3339(state.since)
        key = "disabledSince" if state.disabled else "goneSince"
        out[key] = since or current.get(key) or now
    if request is not None:
        out["resumeHandled"] = request  # a value seen once is never acted on again
    elif current.get("resumeHandled"):
        out["resumeHandled"] = current["resumeHandled"]
    if resumed is None and (current.get("gone") or current.get("disabled")) and not state.gone:
        resumed = "resumed outside the operator (hookline redrive --resume)"
    if resumed is not None:
        out["resumedAt"], out["resumeReason"] = now, resumed
    else:
        out.update({k: current[k] for k in ("resumedAt", "resumeReason") if k in current})
    return out


def delivering_condition(
    delivery: Mapping[str, Any], namespace: str, name: str, *, paused: bool = False
) -> Condition:
    """Delivering from ``status.delivery`` and the spec: the first problem found, with what to do."""
    attempts_hint = f"`hookline attempts {name} -n {namespace} --failed` lists the failed attempts"
    annotate = f"`kubectl -n {namespace} annotate wh {name} {RESUME_ANNOTATION}=$(date +%s) --overwrite`"
    if delivery.get("gone"):
        since = delivery.get("goneSince") or "an unknown time"
        return Condition(
            ConditionType.DELIVERING,
            "False",
            DeliveringReason.RECEIVER_GONE,
            f"the receiver answered 410 Gone at {since}: deliveries are stopped, undelivered events are "
            "kept and the event that got the 410 is a dead letter. Once the receiver accepts events "
            f"again, resume with {annotate} and put that event back with "
            f"`hookline redrive {name} -n {namespace}` (or do both with "
            f"`hookline redrive {name} -n {namespace} --resume`). If the endpoint was retired on "
            f"purpose, delete the Webhook.",
        )
    if delivery.get("disabled"):
        since = delivery.get("disabledSince") or "an unknown time"
        return Condition(
            ConditionType.DELIVERING,
            "False",
            DeliveringReason.DISABLED,
            f"only failed attempts for spec.delivery.disableAfter: deliveries were stopped at {since}; "
            f"undelivered events are kept within the stream's retention. {attempts_hint}. Once the "
            f"receiver works again, resume with {annotate} or `hookline redrive {name} -n {namespace} "
            "--resume`",
        )
    if paused:
        return Condition(
            ConditionType.DELIVERING,
            "False",
            DeliveringReason.PAUSED,
            "deliveries are stopped by spec.paused or spec.sender.replicas 0; events are kept in the stream",
        )
    if delivery.get("consumerMissing"):
        return Condition(
            ConditionType.DELIVERING,
            "False",
            DeliveringReason.CONSUMER_MISSING,
            "the Webhook's JetStream consumer was deleted outside hookline; the sender is recreating it "
            "and puts back the events it had not acknowledged from the recovery stream",
        )
    if lost_recently(delivery):
        return Condition(
            ConditionType.DELIVERING,
            "False",
            DeliveringReason.EVENTS_LOST,
            f"{delivery.get('eventsLost')} events (at most) were lost, the last at "
            f"{delivery.get('eventsLostAt')}: the Webhook's JetStream consumer was deleted outside "
            "hookline and the recovery window (ingest --recovery-window) no longer held the events it had "
            "not acknowledged, so they cannot be delivered (hookline_events_lost_total counts them). "
            "Deliveries go on; this shows for a day",
        )
    attempts = int(delivery.get("recentAttempts") or 0)
    failures = int(delivery.get("recentFailures") or 0)
    if attempts >= FAILING_MIN_ATTEMPTS and failures * 2 > attempts:
        window = int(delivery.get("windowSeconds") or 0) // 60 or 1
        since = delivery.get("failingSince") or delivery.get("lastFailureAt") or "an unknown time"
        return Condition(
            ConditionType.DELIVERING,
            "False",
            DeliveringReason.FAILING,
            f"{failures} of {attempts} attempts in the last {window} min failed, failing since {since}; "
            f"the last answer: {delivery.get('lastFailure') or 'unknown'}. Events are retried on the "
            f"Standard Webhooks schedule; {attempts_hint}",
        )
    pending = int(delivery.get("pending") or 0)
    growth = delivery.get("pendingGrowthPerMinute")
    if pending >= BACKLOG_MIN_PENDING and isinstance(growth, int) and growth > 0:
        return Condition(
            ConditionType.DELIVERING,
            "False",
            DeliveringReason.BACKLOGGED,
            f"{pending} events wait and the backlog grew by {growth} in the last minute: the receiver "
            "answers too slowly for the events coming in, or spec.delivery.maxRequestsPerSecond or "
            "maxInFlight is too low for them",
        )
    if delivery.get("resumedAt"):
        reason = delivery.get("resumeReason") or "resumed"
        message = f"deliveries run: {reason} at {delivery['resumedAt']}"
    elif delivery.get("lastSuccessAt"):
        # No time in here: the condition is rewritten only when its text changes (status.delivery has it).
        message = "deliveries run: the receiver answers 2xx (status.delivery.lastSuccessAt says when last)"
    else:
        message = "deliveries run: the receiver has not answered 410 Gone"
    return Condition(ConditionType.DELIVERING, "True", DeliveringReason.DELIVERING, message)


@dataclass(frozen=True)
class WriteState:
    """The health report last written into a Webhook's status, when, and the reason it gave."""

    report: Any
    at: float
    reason: str


def due_writes(
    reports: Mapping[tuple[str, str], Any],
    written: Mapping[tuple[str, str], WriteState],
    now: float,
    *,
    interval: float,
    writes_per_second: float,
    tick: float,
    reason_of: Any,
) -> list[tuple[str, str]]:
    """Which Webhooks get their status.delivery written on this tick.

    A report equal to the written one is never written (an idle Webhook costs nothing). One whose
    Delivering reason changed goes first; the others wait until ``interval`` passed since their last
    write, and that interval stretches so the whole operator stays within ``writes_per_second``.
    """
    changed = [k for k, r in reports.items() if not r.same_as(getattr(written.get(k), "report", None))]
    per_webhook = max(interval, len(changed) / writes_per_second)
    urgent, routine = [], []
    for key in changed:
        last = written.get(key)
        if last is None or reason_of(reports[key]) != last.reason:
            urgent.append(key)
        elif now - last.at >= per_webhook:
            routine.append(key)
    routine.sort(key=lambda k: written[k].at)
    return (urgent + routine)[: max(1, int(writes_per_second * tick))]
