"""Whether a verified Webhook's deliveries run, or are stopped because the receiver answered 410 Gone.

The stop lives on the Webhook's JetStream consumer (docs/internals.md, "Gone"): a 410 changes nothing
on the Webhook, so a timer reads it and mirrors it into ``status.delivery``; the Delivering condition
is derived from that dict by the same handler that derives Ready. Resuming is a user's decision: the
annotation ``hookline.io/resume-delivery`` (any new value) or ``hookline redrive --resume``; pointing
spec.url at a new, verified URL resumes as well. Pure functions only.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from hookline.api import RESUME_ANNOTATION, Condition, ConditionType, DeliveringReason
from hookline.operator.status import now_iso
from hookline.sender.retry import GoneState


def resume_reason(state: GoneState, url: str, request: str | None, handled: str | None) -> str | None:
    """Why the operator should lift a 410 stop now, or None to leave it."""
    if not state.gone:
        return None
    if request is not None and request != handled:
        return f"resumed on request (annotation {RESUME_ANNOTATION}={request})"
    if not state.answered_by(url):
        return "resumed because spec.url changed to a verified URL that has not answered 410 Gone"
    return None


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
    out: dict[str, Any] = {"gone": state.gone}
    if state.gone:
        since = None if state.since is None else now_iso(datetime.fromtimestamp(state.since, UTC))
        out["goneSince"] = since or current.get("goneSince") or now
    if request is not None:
        out["resumeHandled"] = request  # a value seen once is never acted on again
    elif current.get("resumeHandled"):
        out["resumeHandled"] = current["resumeHandled"]
    if resumed is None and current.get("gone") and not state.gone:
        resumed = "resumed outside the operator (hookline redrive --resume)"
    if resumed is not None:
        out["resumedAt"], out["resumeReason"] = now, resumed
    else:
        out.update({k: current[k] for k in ("resumedAt", "resumeReason") if k in current})
    return out


def delivering_condition(delivery: Mapping[str, Any], namespace: str, name: str) -> Condition:
    """Delivering from ``status.delivery``, with what to do when the receiver said 410 Gone."""
    if delivery.get("gone"):
        since = delivery.get("goneSince") or "an unknown time"
        return Condition(
            ConditionType.DELIVERING,
            "False",
            DeliveringReason.RECEIVER_GONE,
            f"the receiver answered 410 Gone at {since}: deliveries are stopped, undelivered events are "
            "kept and the event that got the 410 is a dead letter. Once the receiver accepts events "
            f"again, resume with `kubectl -n {namespace} annotate wh {name} "
            f"{RESUME_ANNOTATION}=$(date +%s) --overwrite` and put that event back with "
            f"`hookline redrive {name} -n {namespace}` (or do both with "
            f"`hookline redrive {name} -n {namespace} --resume`). If the endpoint was retired on "
            f"purpose, delete the Webhook.",
        )
    if delivery.get("resumedAt"):
        reason = delivery.get("resumeReason") or "resumed"
        message = f"deliveries run: {reason} at {delivery['resumedAt']}"
    else:
        message = "deliveries run: the receiver has not answered 410 Gone"
    return Condition(ConditionType.DELIVERING, "True", DeliveringReason.DELIVERING, message)
