"""Lifting a 410 Gone or circuit-breaker stop: one loop for all Webhooks.

A stop is lifted when the user asks (a new value of the annotation hookline.io/resume-delivery) or
spec.url moved to a URL that has not answered 410. webhook_seen records both asks; the stop is read
from NATS only for such Webhooks, and a failed try is tried again on the next round.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from hookline.api import DeliveryStatus, checked_status
from hookline.operator.adapters import kubeapi
from hookline.operator.rules import delivery
from hookline.operator.runtime import Runtime, WebhookKey
from hookline.sender.bus import BusUnavailable
from hookline.sender.model.config import consumer_name
from hookline.sender.model.outcomes import GoneState
from hookline.timestamps import rfc3339

log = logging.getLogger(__name__)


async def follow_resumes(rt: Runtime) -> None:
    while True:
        await asyncio.sleep(rt.config.delivery_check_interval)
        for key, (request, url) in list(rt.delivery.resume_asks.items()):
            current = rt.delivery.seen.get(key, {})
            report = rt.delivery.reports.get(key)
            asked = request is not None and request != current.get("resumeHandled")
            moved = report is not None and report.gone and not report.gone_state().answered_by(url)
            if asked or moved:
                await _resume_if_asked(rt, key, request, url, current)


async def _resume_if_asked(
    rt: Runtime, key: WebhookKey, request: str | None, url: str, current: dict[str, Any]
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
    fresh = delivery.delivery_status(mine, state, request=request, resumed=why, now=rfc3339())
    if fresh == mine:
        return
    # A merge patch keeps keys it does not mention; the typed model refuses a field the CRD lacks.
    patch = checked_status(DeliveryStatus, {**dict.fromkeys(mine), **fresh})
    try:
        written = await rt.api.patch(kubeapi.webhook(*key, sub="status"), {"status": {"delivery": patch}})
    except kubeapi.APIError as exc:
        log.warning("status.delivery of %s/%s not written: %s; trying again", *key, exc)
        return
    if written is not None:
        rt.delivery.seen[key] = {**current, **patch}
