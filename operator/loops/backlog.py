"""Capacity isolation: stuck Webhooks' backlogs moved to their dead letters before the stream fills.

One loop for all Webhooks. Every tick it reads the events stream's fill (one request); below the
high-water mark it lists every consumer only every ``scan_seconds`` (pages of 256: the ack floors that
tell a stuck Webhook from a slow one, and what is over the per-Webhook cap), above it every tick.
rules/backlog.decide picks the moves, at most ``moves_per_tick`` events per tick in all; each
becomes dead letters with reason ``backlog_limit`` through sender/bus/backlog.move_aside, counted
(hookline_events_moved_aside_total), announced (an Event on the Webhook) and shown
(status.delivery.deadLetters). A move the dead-letter stream refuses stops the tick: the events
stay, hookline_backlog_moves_refused_total and a warning say so.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from hookline.operator.adapters import kubeapi
from hookline.operator.adapters.backlog import BacklogBus
from hookline.operator.adapters.consumers import ConsumerError
from hookline.operator.metrics import OperatorMetrics, WebhookSnapshot
from hookline.operator.rules.backlog import (
    BacklogSettings,
    Move,
    Progress,
    WebhookKey,
    decide,
    stop_of,
    track_progress,
)
from hookline.operator.runtime import Runtime
from hookline.sender.bus.backlog import MoveResult
from hookline.sender.bus.deadletter import count_dead_letters
from hookline.sender.model.config import consumer_name
from hookline.timestamps import rfc3339

log = logging.getLogger(__name__)

Report = Callable[[Move, MoveResult], Awaitable[None]]

# API writes for moves are bounded: a Webhook is reported (Event, status.delivery.deadLetters) at most
# once per interval (its moves are added up meanwhile), and at most this many Webhooks per tick.
REPORT_INTERVAL_SECONDS = 300.0
REPORTS_PER_TICK = 20


class BacklogMover:
    """The loop's state between ticks: each consumer's ack-floor progress and the last full scan."""

    def __init__(
        self,
        bus: BacklogBus,
        settings: BacklogSettings,
        metrics: OperatorMetrics,
        webhooks: Callable[[], Mapping[WebhookKey, WebhookSnapshot]],
        report: Report | None = None,
    ) -> None:
        self.bus = bus
        self.settings = settings
        self.metrics = metrics
        self.webhooks = webhooks
        self.report = report
        self.progress: dict[str, Progress] = {}
        self.scanned_at = -math.inf
        self.moved: set[str] = set()
        self.reported_at: dict[WebhookKey, float] = {}
        self.unreported: dict[WebhookKey, int] = {}  # events moved since the Webhook was last reported

    async def tick(self, now: float | None = None) -> list[tuple[Move, MoveResult]]:
        """One tick: read, decide, move (bounded); what was moved, per Webhook."""
        now = time.time() if now is None else now
        settings = self.settings
        fill = await self.bus.fill()
        if not fill.above(settings.high_water) and now - self.scanned_at < settings.scan_seconds:
            return []
        snapshots = self.webhooks()
        known = {consumer_name(*key): key for key in snapshots}
        stopped = {key: why for key, snap in snapshots.items() if (why := stop_of(snap.ready_reason))}
        states = await self.bus.states(known, stopped)
        self.scanned_at = now
        self.progress = track_progress(self.progress, states, now, self.moved)
        self.moved = set()
        done: list[tuple[Move, MoveResult]] = []
        for move in decide(fill, states, self.progress, now, settings):
            namespace, name = move.webhook
            before = self.unreported.get(move.webhook, 0)
            try:
                result = await self.bus.move(move, functools.partial(self._count_moved, move.webhook))
            except ConsumerError as exc:  # cut short: what its acknowledged batches moved is counted
                result = MoveResult(self.unreported.get(move.webhook, 0) - before, str(exc))
            done.append((move, result))
            self.moved.add(move.consumer)  # its mark moves by our fetches and acks, not its sender's
            if result.moved:
                log.warning(
                    "%s/%s: %d events moved to its dead letters (backlog_limit): %s",
                    namespace,
                    name,
                    result.moved,
                    move.why,
                )
            if result.refused:
                self.metrics.moves_refused.inc()
                log.warning("%s/%s: backlog not moved aside: %s", namespace, name, result.refused)
                break  # the dead letters have no room: the next tick looks again
        await self._report_due(done, now)
        return done

    def _count_moved(self, webhook: WebhookKey, events: int) -> None:
        """Per acknowledged batch of a move: what a timeout or a stop cuts short is counted all the same."""
        self.metrics.moved_aside.labels(*webhook).inc(events)
        self.unreported[webhook] = self.unreported.get(webhook, 0) + events

    async def _report_due(self, done: list[tuple[Move, MoveResult]], now: float) -> None:
        """Report the Webhooks moved this tick that are due, with all they had moved since last time."""
        self.reported_at = {k: t for k, t in self.reported_at.items() if now - t < REPORT_INTERVAL_SECONDS}
        budget = REPORTS_PER_TICK
        for move, _ in done:
            count = self.unreported.get(move.webhook, 0)
            if not count or move.webhook in self.reported_at or budget <= 0 or self.report is None:
                continue
            await self.report(move, MoveResult(count))
            self.reported_at[move.webhook] = now
            self.unreported.pop(move.webhook, None)
            budget -= 1


def runtime_reporter(rt: Runtime) -> Report:
    """status.delivery.deadLetters recounted (a paused or gone Webhook has no sender to recount them)
    and a Warning Event on the Webhook (posted directly: Kopf's event queue serves handlers only)."""

    async def report(move: Move, result: MoveResult) -> None:
        namespace, name = move.webhook
        try:
            count = await rt.consumers.call(
                f"counting the dead letters of {namespace}/{name}",
                lambda js: count_dead_letters(js, namespace, name),
            )
            patch = {"status": {"delivery": {"deadLetters": count}}}
            webhook = await rt.api.patch(kubeapi.webhook(namespace, name, sub="status"), patch)
            if webhook is None:
                return  # deleted meanwhile
            message = (
                f"{result.moved} events moved to this Webhook's dead letters (reason backlog_limit): "
                f"{move.why}; hookline redrive {name} -n {namespace} delivers them again"
            )
            await rt.api.create(kubeapi.path("", "v1", "events", namespace), warning(webhook, message))
        except (ConsumerError, kubeapi.APIError) as exc:
            log.warning("move of %s/%s not reported: %s", namespace, name, exc)

    return report


def warning(webhook: Mapping[str, Any], message: str) -> dict[str, Any]:
    """A core/v1 Warning Event ``BacklogMovedAside`` about the Webhook (what kopf.event would post)."""
    meta = webhook.get("metadata") or {}
    now = rfc3339()
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": "hookline-backlog-", "namespace": meta.get("namespace")},
        "type": "Warning",
        "reason": "BacklogMovedAside",
        "message": message[:1000],
        "source": {"component": "hookline-operator"},
        "involvedObject": {
            "apiVersion": webhook.get("apiVersion", "hookline.io/v1alpha1"),
            "kind": "Webhook",
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
        },
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


async def move_backlogs(rt: Runtime) -> None:
    """The operator's backlog loop (main.start_background)."""
    settings = rt.config.backlog
    if not settings.enabled:
        return
    mover = BacklogMover(
        BacklogBus(rt.consumers),
        settings,
        rt.metrics,
        rt.metrics.webhooks.snapshots,
        runtime_reporter(rt),
    )
    while True:
        await asyncio.sleep(settings.tick_seconds)
        try:
            await mover.tick()
        except ConsumerError as exc:  # NATS away: the next tick tries again
            log.debug("backlog not checked: %s", exc)
