"""The senders' health reports into status.delivery: one NATS watch and one writer for all Webhooks.

No per-Webhook timer: memory and NATS calls do not grow with idle Webhooks. The writer spends a write
budget (rules/delivery.due_writes): a Webhook whose Delivering reason changes goes first, the others
at most every delivery_status_interval; the watch event that follows lets webhook_seen derive the
Delivering condition.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from hookline.api import DeliveryStatus, checked_status
from hookline.operator.adapters import kubeapi
from hookline.operator.rules import delivery
from hookline.operator.runtime import DeliveryMemory, Runtime
from hookline.sender.model.deliveryhealth import HealthReport
from hookline.timestamps import rfc3339

log = logging.getLogger(__name__)


async def watch_health_reports(rt: Runtime) -> None:
    """Keep the latest health report of every Webhook (one NATS watch for all of them); first make
    the attempt log's limits the configured ones."""
    retry = rt.config.health_loop.watch_retry_seconds
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
                rt.delivery.reports[(report.namespace, report.name)] = report
        except Exception as exc:  # NATS away: watch again; status.delivery just stays as it is
            log.debug("health reports not watched: %s; again in %g s", exc, retry)
        await asyncio.sleep(retry)


def report_delivery(memory: DeliveryMemory, report: HealthReport) -> dict[str, Any]:
    """The status.delivery merge patch for a report: its health fields and its 410/breaker stop
    (a stop that went away without the operator was lifted by `hookline redrive --resume`)."""
    key = (report.namespace, report.name)
    mine = delivery.gone_part(memory.seen.get(key, {}))
    stop = delivery.delivery_status(mine, report.gone_state(), request=None, resumed=None, now=rfc3339())
    return checked_status(DeliveryStatus, {**report.delivery_status(), **dict.fromkeys(mine), **stop})


def report_reason(report: HealthReport) -> str:
    state = report.gone_state()
    facts = {
        **report.delivery_status(),
        "gone": state.gone and not state.disabled,
        "disabled": state.disabled,
    }
    return str(delivery.delivering_condition(facts, report.namespace, report.name).reason)


async def write_delivery_health(rt: Runtime) -> None:
    """Mirror health reports into status.delivery within the write budget (delivery.due_writes)."""
    tick = rt.config.health_loop.write_tick_seconds
    memory = rt.delivery
    while True:
        await asyncio.sleep(tick)
        now = time.time()
        due = delivery.due_writes(
            memory.reports,
            memory.written,
            now,
            interval=rt.config.delivery_status_interval,
            writes_per_second=rt.config.delivery_status_writes_per_second,
            tick=tick,
            reason_of=report_reason,
        )
        for key in due:
            report = memory.reports[key]
            patch = report_delivery(memory, report)
            body = {"status": {"delivery": patch}}
            try:
                written = await rt.api.patch(kubeapi.webhook(*key, sub="status"), body)
            except kubeapi.APIError as exc:
                log.warning("status.delivery of %s/%s not written: %s; trying again", *key, exc)
                continue
            if written is None:  # the Webhook is gone; a late report of its sender
                memory.reports.pop(key, None)
                continue
            memory.written[key] = delivery.WriteState(report, now, report_reason(report))
            memory.seen[key] = {**memory.seen.get(key, {}), **patch}
            rt.metrics.status_writes.inc()
